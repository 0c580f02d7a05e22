"""The write → pytest → retry loop for one task.

>>> async def demo(client, config, task):
...     loop = AgentLoop(client, config, workspace_root="/tmp/ws")
...     result = await loop.run(task, index=0)
...     return result.status            # "passed", "failed" or "error"

Attempt 1 sends the spec and the pytest module; every later attempt sends the previous
code and the (bounded) pytest output back. At most ``config.max_retries`` retries.
Before each attempt the workspace is emptied, so pytest sees only solution.py and
test_solution.py. A pass counts only when pytest itself reports test_humaneval passed:
the ``fastagent._pytest_probe`` plugin says so over a private channel (see ``passed``),
never the exit code alone nor text the solution could print. The test process runs in the
run's :class:`~fastagent.sandbox.Sandbox` (``--no-sandbox`` turns it off).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from pathlib import Path

import msgspec

from .config import Config
from .dataset import Task
from .llm import Completion, LLMClient, LLMError, Message
from .sandbox import Sandbox
from .speedups import extract_code
from .telemetry import Telemetry
from .tools import ExecResult, ToolDispatcher, ToolError, scrubbed_env

SYSTEM_PROMPT = (
    "You are a careful Python programmer. Implement the requested function so that the "
    "given pytest module passes. Reply with the complete module (imports, helpers and the "
    "function) in a single ```python code block."
)
SOLUTION_FILE = "solution.py"
TEST_FILE = "test_solution.py"
PASS_MARKER = b"PASSED " + TEST_FILE.encode() + b"::test_humaneval"  # for people, not judging
_INHERITED_ENV = (
    "PYTEST_ADDOPTS",
    "PYTEST_PLUGINS",
    "PYTHONPATH",
    "PYTHONSTARTUP",
    "PYTHONUSERBASE",
)


def pytest_argv(python: str) -> tuple[str, ...]:
    """The verification command: no cwd on sys.path (-P), no user site (-s), no ini file,
    conftest files only from the workspace, and the probe plugin loaded from the package."""
    return (
        python, "-B", "-P", "-s", "-m", "pytest", "-q", "-rA", "--tb=short",
        "-c", os.devnull, "--rootdir", ".", "--confcutdir", ".", "-p", "no:cacheprovider",
        "-p", "fastagent._pytest_probe", TEST_FILE,
    )  # fmt: skip


#: What the simulated endpoint's wrong answers raise (fastagent/sim.py writes it).
WRONG_ANSWER_MARKER = "simulated wrong answer"
VERIFY_MODES = ("pytest", "trivial")


def trivial_argv() -> tuple[str, ...]:
    """``--verify trivial``: one cheap process per attempt standing in for pytest at scale.

    It fails exactly the code that carries the simulated endpoint's wrong-answer marker, so
    on that endpoint it reaches pytest's verdicts (every canonical solution passes its test
    and every simulated wrong answer fails it: scripts/build_humaneval_dataset.py
    --validate) for about 1/100 of pytest's CPU. It means nothing against a real model.
    """
    script = (
        f'if grep -q "{WRONG_ANSWER_MARKER}" {SOLUTION_FILE}; '
        'then echo "1 failed (trivial check)"; exit 1; fi; echo "1 passed (trivial check)"'
    )
    return ("/bin/sh", "-c", script)


def passed(result: ExecResult, probed: bool = True) -> bool:
    """A pass: exit status 0 and (for pytest) the probe's nonce-signed report that
    test_humaneval passed."""
    if result.exit_code != 0 or result.cause != "exit":
        return False
    return result.probe == "passed" if probed else True


class TaskResult(msgspec.Struct, frozen=True, gc=False):
    """One row of the results CSV: how a task ended and where its time went (seconds)."""

    task_id: str
    status: str
    reason: str
    attempts: int
    retries: int
    first_attempt_pass: bool
    wall_s: float
    model_s: float
    tool_s: float
    queued_s: float
    overhead_s: float
    agent_wait_s: float
    llm_calls: int
    llm_retries: int
    prompt_tokens: int
    completion_tokens: int
    ttft_ms: float | None
    tool_spawn_ms: float | None
    test_exit: str
    test_cpu_s: float


def build_prompt(task: Task) -> str:
    """The first user message: the spec to implement and the pytest module that judges it."""
    return (
        f"Implement this function in `{SOLUTION_FILE}`:\n\n```python\n{task.spec}```\n\n"
        f"It must pass this pytest module (`{TEST_FILE}`):\n\n```python\n{task.test}```\n"
    )


def build_feedback(code: str | None, outcome: str) -> tuple[Message, Message]:
    """The assistant turn (the previous code) and the user turn (what went wrong)."""
    if code is None:
        return (
            Message("assistant", "(no code block)"),
            Message("user", f"{outcome}\nReply with the complete module in one ```python block."),
        )
    return (
        Message("assistant", f"```python\n{code}```"),
        Message(
            "user",
            f"The tests failed:\n\n```\n{outcome}\n```\n\n"
            "Fix the code and reply with the complete corrected module in one ```python block.",
        ),
    )


def describe_run(result: ExecResult, limit: int) -> str:
    """pytest's output for the model: stdout then stderr, bounded to ``limit`` characters."""
    text = result.stdout.decode("utf-8", "replace")
    if result.stderr:
        text += "\n" + result.stderr.decode("utf-8", "replace")
    if result.cause == "timeout":
        text += "\n(the test run was killed: it exceeded its time limit)"
    elif result.cause == "signal":
        text += f"\n(the test process was killed by signal {-result.exit_code})"
    text = text.strip()
    if len(text) > limit:
        head = limit * 2 // 3
        text = f"{text[:head]}\n… [{len(text) - limit} characters cut] …\n{text[-(limit - head) :]}"
    return text


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
        self.env = {k: v for k, v in scrubbed_env().items() if k not in _INHERITED_ENV}
        self.probed = config.verify == "pytest"
        self.argv = pytest_argv(config.python) if self.probed else trivial_argv()
        self.sandbox = Sandbox.from_config(config)
        self.system = Message("system", SYSTEM_PROMPT)
        # One first-turn prompt per distinct task text, shared by every agent working on
        # it (the dataset repeated), dropped when the last of them finishes.
        self._prompts: dict[tuple[str, str], _SharedPrompt] = {}

    async def run(self, task: Task, index: int, agent_wait_s: float = 0.0) -> TaskResult:
        """Take ``task`` to passed, failed or error; never raises for a task-level failure."""
        stats = _Stats(task.id, agent_wait_s)
        workspace = self.root / f"task-{index:05d}"
        self.telemetry.agent_started()
        try:
            async with self.client.deadlines.timeout(self.config.task_timeout):
                return await self._loop(task, workspace, stats)
        except TimeoutError:
            return stats.finish("error", f"task deadline of {self.config.task_timeout:g}s passed")
        except LLMError as exc:
            self.telemetry.count(self.telemetry.error_causes, exc.cause)
            stats.llm_calls += exc.retries + 1
            stats.llm_retries += exc.retries
            return stats.finish("error", f"llm: {exc}")
        except (ToolError, OSError) as exc:
            self.telemetry.count(self.telemetry.error_causes, "tool")
            return stats.finish("error", f"tool: {exc}")
        except Exception as exc:  # a bug must still leave this task's row, not kill the run
            self.telemetry.count(self.telemetry.error_causes, "internal")
            return stats.finish("error", f"internal error: {type(exc).__name__}: {exc}")
        finally:
            self.telemetry.agent_finished()
            if not self.config.keep_workspaces:
                shutil.rmtree(workspace, ignore_errors=True)

    async def _loop(self, task: Task, workspace: Path, stats: _Stats) -> TaskResult:
        config = self.config
        tools = ToolDispatcher(
            workspace,
            env=self.env,
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
                    feedback = build_feedback(None, "Your reply had no ```python block.")
                    continue
                result = await self._verify(tools, task, code, stats)
                if passed(result, self.probed):
                    return stats.finish("passed", "", first=attempt == 0)
                reason = "test timeout" if result.timed_out else "tests failed"
                feedback = build_feedback(code, describe_run(result, config.feedback_chars))
                del result, code
            return stats.finish("failed", f"{reason} after {stats.attempts} attempts")
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
                result = await tools.exec(self.argv, probe=self.probed)
            except ToolError as exc:
                raise ToolError(f"{exc} (is {self.config.python!r} installed?)") from exc
        t1 = time.monotonic()
        stats.tool_s += (t_wait - t0) + (t1 - t_slot)
        telemetry.tool_calls += 1
        telemetry.hist["tool_spawn"].add(result.spawn_s)
        telemetry.hist["tool_wall"].add(result.wall_s)
        stats.test_exit = cause = (
            result.cause if result.cause != "exit" else f"exit_{result.exit_code}"
        )
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
    """Accumulates one task's figures while it runs; frozen into a TaskResult at the end."""

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

    def finish(self, status: str, reason: str, first: bool = False) -> TaskResult:
        wall = time.monotonic() - self.started
        overhead = wall - self.model_s - self.tool_s - self.queued_s
        return TaskResult(
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
