"""The write → pytest → retry loop for one task.

::

    loop = AgentLoop(client, config, workspace_root="/tmp/ws")
    row = await loop.run(task, index=0)   # a TaskRow; row.status: PASSED, FAILED or ERROR

What the model is told is :mod:`fastagent.prompts`'; how an attempt is judged is
:mod:`fastagent.verify`'s. Before each attempt the workspace is emptied, so the test sees
only solution.py and test_solution.py. At most ``config.max_retries`` retries. The test
process runs in the run's :class:`~fastagent.sandbox.policy.Sandbox` (``--no-sandbox``
turns it off).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from pathlib import Path

from .config import Config
from .dataset import Task
from .errors import LLMError, ToolError
from .llm import Completion, LLMClient, Message
from .prompts import NO_CODE_FEEDBACK, SYSTEM_PROMPT, build_feedback, build_prompt, describe_run
from .sandbox.policy import Sandbox
from .sandbox.tools import ExecResult, ToolDispatcher
from .schema import TaskRow, TaskStatus
from .speedups import extract_code
from .telemetry import Telemetry
from .verify import SOLUTION_FILE, TEST_FILE, Verification

__all__ = ["AgentLoop"]


class AgentLoop:
    """Runs tasks against one client; shares the run's process slots and telemetry."""

    def __init__(
        self,
        client: LLMClient,
        config: Config,
        *,
        workspace_root: str | os.PathLike[str],
        proc_slots: asyncio.Semaphore | None = None,
        telemetry: Telemetry | None = None,
    ) -> None:
        self.client = client
        self.config = config
        self.root = Path(workspace_root)
        self.proc_slots = proc_slots or asyncio.Semaphore(config.max_procs)
        self.telemetry = telemetry or client.telemetry
        self.verification = Verification(config)
        self.sandbox = Sandbox.from_config(config)
        self.system = Message("system", SYSTEM_PROMPT)
        # One first-turn prompt per distinct task text, shared by every agent working on
        # it (the dataset repeated), dropped when the last of them finishes.
        self._prompts: dict[tuple[str, str], _SharedPrompt] = {}

    async def run(self, task: Task, index: int, agent_wait_s: float = 0.0) -> TaskRow:
        """Take ``task`` to passed, failed or error; never raises for a task-level failure."""
        stats = _Stats(task.id, agent_wait_s)
        workspace = self.root / f"task-{index:05d}"
        self.telemetry.agent_started()
        try:
            async with self.client.deadlines.timeout(self.config.task_timeout):
                return await self._loop(task, workspace, stats)
        except TimeoutError:
            reason = f"task deadline of {self.config.task_timeout:g}s passed"
            return stats.finish(TaskStatus.ERROR, reason)
        except LLMError as exc:
            self.telemetry.count(self.telemetry.error_causes, exc.cause)
            stats.llm_calls += exc.retries + 1
            stats.llm_retries += exc.retries
            return stats.finish(TaskStatus.ERROR, f"llm: {exc}")
        except (ToolError, OSError) as exc:
            self.telemetry.count(self.telemetry.error_causes, "tool")
            return stats.finish(TaskStatus.ERROR, f"tool: {exc}")
        except Exception as exc:  # a bug must still leave this task's row, not kill the run
            self.telemetry.count(self.telemetry.error_causes, "internal")
            return stats.finish(TaskStatus.ERROR, f"internal error: {type(exc).__name__}: {exc}")
        finally:
            self.telemetry.agent_finished()
            if not self.config.keep_workspaces:
                shutil.rmtree(workspace, ignore_errors=True)

    async def _loop(self, task: Task, workspace: Path, stats: _Stats) -> TaskRow:
        config = self.config
        tools = ToolDispatcher(
            workspace,
            env=self.verification.env,
            output_cap=config.output_cap,
            timeout=config.test_timeout,
            sandbox=self.sandbox,
        )
        # Only what the next turn needs survives between turns (the feedback pair); the
        # prompt is shared, and the client encodes each request as it sends it, so a
        # streaming or waiting agent holds no copy of the spec, the test or pytest's output.
        key = (task.spec, task.test)
        shared = self._prompts.get(key)
        if shared is None:
            shared = self._prompts[key] = _SharedPrompt(Message("user", build_prompt(task)))
        shared.users += 1
        feedback: tuple[Message, Message] | None = None
        reason = ""
        try:
            for attempt in range(config.max_retries + 1):
                stats.attempts = attempt + 1
                t0 = time.monotonic()
                try:
                    messages = [self.system, shared.message, *(feedback or ())]
                    completion = await self.client.complete(messages, task=task.id)
                    del messages
                finally:
                    stats.model_s += time.monotonic() - t0
                stats.add_completion(completion)
                code = extract_code(completion.text)
                del completion
                if code is None or not code.strip():
                    reason = "no code block in the reply"
                    feedback = build_feedback(None, NO_CODE_FEEDBACK)
                    continue
                result = await self._verify(tools, task, code, stats)
                if self.verification.passed(result):
                    return stats.finish(TaskStatus.PASSED, "", first=attempt == 0)
                reason = "test timeout" if result.timed_out else "tests failed"
                feedback = build_feedback(code, describe_run(result, config.feedback_chars))
                del result, code
            return stats.finish(TaskStatus.FAILED, f"{reason} after {stats.attempts} attempts")
        finally:
            shared.users -= 1
            if not shared.users:
                del self._prompts[key]

    async def _verify(
        self, tools: ToolDispatcher, task: Task, code: str, stats: _Stats
    ) -> ExecResult:
        telemetry = self.telemetry
        t0 = time.monotonic()
        tools.reset()
        tools.write_file(SOLUTION_FILE, code)
        tools.write_file(TEST_FILE, task.test)
        t_wait = time.monotonic()
        async with self.proc_slots:
            t_slot = time.monotonic()
            stats.queued_s += t_slot - t_wait
            telemetry.event("tool_start", task=task.id, attempt=stats.attempts)
            try:
                result = await tools.exec(self.verification.argv, probe=self.verification.probed)
            except ToolError as exc:
                raise ToolError(f"{exc} (is {self.config.python!r} installed?)") from exc
        t1 = time.monotonic()
        stats.tool_s += (t_wait - t0) + (t1 - t_slot)
        telemetry.hist["tool_spawn"].add(result.spawn_s)
        telemetry.hist["tool_wall"].add(result.wall_s)
        stats.test_exit = cause = result.exit_label
        telemetry.count(telemetry.exit_causes, cause)
        if stats.tool_spawn_ms is None:
            stats.tool_spawn_ms = round(result.spawn_s * 1000, 3)
        if result.test_cpu_s is not None:
            stats.test_cpu_s += result.test_cpu_s
        telemetry.event(
            "tool_end",
            task=task.id,
            attempt=stats.attempts,
            cause=cause,
            spawn=round(result.spawn_s, 6),
            wall=round(result.wall_s, 6),
            dropped=result.stdout_dropped + result.stderr_dropped,
        )
        return result


class _SharedPrompt:
    __slots__ = ("message", "users")

    def __init__(self, message: Message) -> None:
        self.message = message
        self.users = 0


class _Stats:
    """Accumulates one task's figures while it runs; frozen into a TaskRow at the end."""

    __slots__ = (
        "agent_wait_s", "attempts", "completion_tokens", "llm_calls", "llm_retries", "model_s",
        "prompt_tokens", "queued_s", "started", "task_id", "test_cpu_s", "test_exit", "tool_s",
        "tool_spawn_ms",
        "ttft_ms",
    )  # fmt: skip

    def __init__(self, task_id: str, agent_wait_s: float) -> None:
        self.task_id = task_id
        self.agent_wait_s = agent_wait_s
        self.started = time.monotonic()
        self.attempts = 0
        self.model_s = self.tool_s = self.queued_s = 0.0
        self.llm_calls = self.llm_retries = self.prompt_tokens = self.completion_tokens = 0
        self.ttft_ms: float | None = None
        self.tool_spawn_ms: float | None = None
        self.test_exit = ""
        self.test_cpu_s = 0.0

    def add_completion(self, completion: Completion) -> None:
        self.llm_calls += 1 + completion.retries
        self.llm_retries += completion.retries
        self.prompt_tokens += completion.prompt_tokens or 0
        self.completion_tokens += completion.completion_tokens or completion.chunks
        if self.ttft_ms is None and completion.ttft is not None:
            self.ttft_ms = round(completion.ttft * 1000, 3)

    def finish(self, status: TaskStatus, reason: str, first: bool = False) -> TaskRow:
        wall = time.monotonic() - self.started
        overhead = wall - self.model_s - self.tool_s - self.queued_s
        return TaskRow(
            task_id=self.task_id,
            status=status,
            reason=reason,
            attempts=self.attempts,
            retries=max(0, self.attempts - 1),
            first_attempt_pass=first,
            wall_s=round(wall, 6),
            model_s=round(self.model_s, 6),
            tool_s=round(self.tool_s, 6),
            queued_s=round(self.queued_s, 6),
            overhead_s=round(max(0.0, overhead), 6),
            agent_wait_s=round(self.agent_wait_s, 6),
            llm_calls=self.llm_calls,
            llm_retries=self.llm_retries,
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens,
            ttft_ms=self.ttft_ms,
            tool_spawn_ms=self.tool_spawn_ms,
            test_exit=self.test_exit,
            test_cpu_s=round(self.test_cpu_s, 6),
        )
