"""AgentLoop end to end in one process: real loopback endpoints, real pytest processes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import msgspec
import pytest
import uvloop
from aiohttp import web

from fastagent.agent import AgentLoop
from fastagent.config import Config
from fastagent.dataset import Task, default_dataset_path, load_tasks
from fastagent.llm import LLMClient
from fastagent.prompts import build_prompt
from fastagent.schema import TaskRow
from fastagent.telemetry import Telemetry

TASK = Task(
    id="Toy/0",
    spec='def add(a: int, b: int) -> int:\n    """Return a + b."""\n',
    test="from solution import add\n\n\ndef test_humaneval():\n    assert add(2, 3) == 5\n",
)
RIGHT = "def add(a, b):\n    return a + b\n"
WRONG = "def add(a, b):\n    return a - b\n"
LOOP = "def add(a, b):\n    while True:\n        pass\n"


def reply(code: str | None) -> str:
    return "No code today." if code is None else f"Sure.\n\n```python\n{code}```\nDone."


def answering(script: Callable[[int, list[dict]], tuple[int, str]]) -> Callable:
    """A chat endpoint whose n-th call (0-based) answers ``script(n, messages)``."""
    calls: list[int] = []

    async def handler(request: web.Request) -> web.Response:
        body = await request.json()
        status, text = script(len(calls), body["messages"])
        calls.append(status)
        if status != 200:
            return web.json_response({"error": {"message": text}}, status=status)
        return web.json_response({"choices": [{"message": {"content": text}}]})

    handler.calls = calls  # type: ignore[attr-defined]
    return handler


@contextlib.asynccontextmanager
async def serving(handler: Callable) -> AsyncIterator[str]:
    """Serve ``handler`` at /v1/chat/completions on a free loopback port; yield the base URL."""
    app = web.Application()
    app.router.add_post("/v1/chat/completions", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/v1"
    finally:
        await runner.cleanup()


def run_agent(handler: Callable, tmp_path: Path, task: Task = TASK, **config: object) -> TaskRow:
    async def main() -> TaskRow:
        settings: dict[str, object] = {
            "model": "m",
            "python": sys.executable,
            "backoff_base": 0.01,
            "backoff_max": 0.05,
            "test_timeout": 20.0,
        }
        settings.update(config)
        async with serving(handler) as base_url:
            cfg = Config(base_url=base_url, **settings)  # type: ignore[arg-type]
            async with LLMClient(cfg, Telemetry()) as client:
                agent = AgentLoop(client, cfg, workspace_root=tmp_path / "ws")
                return await agent.run(task, index=0)

    return uvloop.run(main())


def test_pass_on_first_attempt(tmp_path: Path) -> None:
    result = run_agent(answering(lambda n, m: (200, reply(RIGHT))), tmp_path)
    assert (result.status, result.attempts, result.retries) == ("passed", 1, 0)
    assert result.first_attempt_pass and result.test_exit == "exit_0"
    assert result.wall_s >= result.model_s + result.tool_s
    assert not (tmp_path / "ws" / "task-00000").exists()


def test_failure_is_fed_back_and_recovered(tmp_path: Path) -> None:
    seen: list[list[dict]] = []

    def script(n: int, messages: list[dict]) -> tuple[int, str]:
        seen.append(messages)
        return 200, reply(WRONG if n == 0 else RIGHT)

    result = run_agent(answering(script), tmp_path)
    assert (result.status, result.attempts, result.first_attempt_pass) == ("passed", 2, False)
    first, second = seen
    assert [m["role"] for m in first] == ["system", "user"]
    assert first[1]["content"] == build_prompt(TASK)
    assert [m["role"] for m in second] == ["system", "user", "assistant", "user"]
    assert WRONG in second[2]["content"]
    assert "assert -1 == 5" in second[3]["content"] or "AssertionError" in second[3]["content"]


def test_always_wrong_fails_after_three_retries(tmp_path: Path) -> None:
    handler = answering(lambda n, m: (200, reply(WRONG)))
    result = run_agent(handler, tmp_path)
    assert (result.status, result.attempts, result.retries) == ("failed", 4, 3)
    assert result.reason == "tests failed after 4 attempts"
    assert len(handler.calls) == 4


def test_no_code_block_is_a_failed_attempt(tmp_path: Path) -> None:
    result = run_agent(answering(lambda n, m: (200, reply(None if n == 0 else RIGHT))), tmp_path)
    assert (result.status, result.attempts) == ("passed", 2)


def test_an_empty_code_block_counts_as_no_code(tmp_path: Path) -> None:
    seen: list[list[dict]] = []

    def script(n: int, messages: list[dict]) -> tuple[int, str]:
        seen.append(messages)
        return 200, "```python\n\n```" if n == 0 else reply(RIGHT)

    result = run_agent(answering(script), tmp_path)
    assert (result.status, result.attempts) == ("passed", 2)
    assert "no ```python block" in seen[1][3]["content"]
    assert "tests failed" not in seen[1][3]["content"]


def test_endpoint_500_then_answer_is_retried(tmp_path: Path) -> None:
    handler = answering(lambda n, m: (500, "overloaded") if n < 2 else (200, reply(RIGHT)))
    result = run_agent(handler, tmp_path)
    assert result.status == "passed" and result.llm_retries == 2 and result.llm_calls == 3
    assert handler.calls == [500, 500, 200]


def test_non_retryable_error_ends_task_with_server_message(tmp_path: Path) -> None:
    result = run_agent(answering(lambda n, m: (401, "invalid api key")), tmp_path)
    assert result.status == "error" and "invalid api key" in result.reason
    assert "401" in result.reason


def test_infinite_loop_is_killed_by_the_timeout(tmp_path: Path) -> None:
    result = run_agent(
        answering(lambda n, m: (200, reply(LOOP))), tmp_path, test_timeout=2.0, max_retries=1
    )
    assert result.status == "failed" and result.test_exit == "timeout"
    assert result.reason == "test timeout after 2 attempts"
    assert result.tool_s >= 4.0  # both attempts ran to their 2 s limit
    leftovers = [p for p in os.listdir("/proc") if p.isdigit() and _is_our_pytest(p, tmp_path)]
    assert leftovers == []


def _is_our_pytest(pid: str, tmp_path: Path) -> bool:
    try:
        return str(tmp_path) in os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        return False


def test_workspace_holds_only_what_the_loop_put_there(tmp_path: Path) -> None:
    leak = "import os\nopen('stray.py', 'w').write('x')\n" + WRONG
    probe = "import os\nprint(sorted(os.listdir('.')))\n" + WRONG

    def script(n: int, messages: list[dict]) -> tuple[int, str]:
        if n == 1:
            assert "stray.py" not in messages[3]["content"]
        return 200, reply(leak if n == 0 else probe)

    result = run_agent(answering(script), tmp_path, max_retries=1, keep_workspaces=True)
    assert result.status == "failed"
    files = sorted(os.listdir(tmp_path / "ws" / "task-00000"))
    assert files == ["solution.py", "test_solution.py"]


@pytest.mark.parametrize("index", [32, 38, 50])
def test_tasks_with_prompt_helpers_pass_with_canonical_code(tmp_path: Path, index: int) -> None:
    task = load_tasks(default_dataset_path())[index]
    from fastagent.dataset import default_solutions_path

    solutions = {row["id"]: row["solution"] for row in msgspec.json.decode(
        default_solutions_path().read_bytes()
    )}  # fmt: skip
    code = solutions[task.id]
    result = run_agent(answering(lambda n, m: (200, reply(code))), tmp_path, task=task)
    assert result.status == "passed", result


def test_concurrent_agents_share_process_slots(tmp_path: Path) -> None:
    async def main() -> list[TaskRow]:
        async with serving(answering(lambda n, m: (200, reply(RIGHT)))) as base_url:
            cfg = Config(base_url=base_url, model="m", python=sys.executable, max_procs=1)
            async with LLMClient(cfg) as client:
                agent = AgentLoop(client, cfg, workspace_root=tmp_path)
                tasks = [Task(id=f"Toy/{i}", spec=TASK.spec, test=TASK.test) for i in range(4)]
                return await asyncio.gather(*(agent.run(t, i) for i, t in enumerate(tasks)))

    results = uvloop.run(main())
    assert [r.status for r in results] == ["passed"] * 4
    assert sum(r.queued_s > 0.05 for r in results) >= 2
    assert all(re.fullmatch(r"Toy/\d", r.task_id) for r in results)


def test_an_unexpected_exception_still_leaves_an_error_row(tmp_path: Path) -> None:
    class Broken(LLMClient):
        async def complete(self, messages: list, *, task: str = "") -> object:
            raise RuntimeError("boom")

    async def main() -> TaskRow:
        cfg = Config(base_url="http://127.0.0.1:9/v1", model="m", python=sys.executable)
        agent = AgentLoop(Broken(cfg), cfg, workspace_root=tmp_path)
        return await agent.run(TASK, 0)

    result = uvloop.run(main())
    assert result.status == "error" and result.reason == "internal error: RuntimeError: boom"
