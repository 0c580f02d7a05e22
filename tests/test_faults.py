"""The runtime against a faulty endpoint: the real sim's injected faults, the real LLMClient.

Each fault kind of ``fastagent sim --fault`` gets a defined outcome: a bounded number of
retries then an LLMError with the right ``cause`` (rate 1), a success after seeded
retries (rate 0.5), or, for replies that are well-formed but useless, a failed attempt
the agent feeds back. Timeouts are short so every test ends in a few seconds; a test
asserts how long something took only from below (a deadline or a wait that must have
passed), never from above, so a busy machine cannot fail it.
"""

from __future__ import annotations

import asyncio
import csv
import json
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import pytest
import uvloop
from _child import child_env, read_summary

from fastagent.agent import AgentLoop
from fastagent.config import Config
from fastagent.dataset import Task, default_dataset_path, default_solutions_path, load_tasks
from fastagent.errors import ExitCode, LLMError
from fastagent.llm import Completion, LLMClient, Message
from fastagent.prompts import build_prompt
from fastagent.schema import Summary
from fastagent.sim.faults import NO_CODE_REPLY, FaultKind, pick_fault
from fastagent.sim.profile import SimProfile
from fastagent.sim.server import start_sim
from fastagent.speedups import extract_code
from fastagent.telemetry import Telemetry

DATASET = default_dataset_path()
SOLUTIONS = default_solutions_path()
N_TASKS = 3

pytestmark = pytest.mark.skipif(
    not (DATASET.is_file() and SOLUTIONS.is_file()), reason="dataset not built"
)

# Quick retries and a real sim that answers at once and right on the first attempt.
FAST: dict[str, Any] = {
    "model": "fastagent-sim",
    "concurrency": 8,
    "backoff_base": 0.01,
    "backoff_max": 0.05,
    "read_timeout": 5.0,
    "call_timeout": 10.0,
    "llm_retries": 2,
}

# What the client makes of each transport-level fault of a streamed request.
STREAM_CAUSES = {
    FaultKind.HTTP_429: "http_429",
    FaultKind.HTTP_500: "http_500",
    FaultKind.HTTP_502: "http_502",
    FaultKind.HTTP_503: "http_503",
    FaultKind.REFUSE: "connection",
    FaultKind.RESET: "connection",
    FaultKind.CUT_JSON: "malformed_stream",
    FaultKind.MALFORMED_JSON: "malformed_stream",
    FaultKind.INVALID_UTF8: "malformed_stream",
    FaultKind.HUGE_LINE: "line_too_long",
    FaultKind.STALL: "read_timeout",
    FaultKind.NO_DONE: "call_timeout",
}
# Per-kind settings that make the slow faults end quickly: the silence of ``stall`` trips
# the read timeout; ``no_done``'s keep-alive comment every second defeats a read timeout
# longer than that, so only the call deadline ends it.
SLOW_FAULT_CONFIG: dict[FaultKind, dict[str, Any]] = {
    FaultKind.STALL: {"read_timeout": 0.3},
    FaultKind.NO_DONE: {"read_timeout": 1.5, "call_timeout": 1.2},
}


@dataclass
class Outcome:
    """How one ``complete`` call ended, what it cost and what the sim says it did."""

    completion: Completion | None
    error: LLMError | None
    elapsed: float
    llm_calls: int
    retry_causes: dict[str, int]
    sim_stats: dict[str, Any] = field(default_factory=dict)


@pytest.fixture(scope="module")
def small_data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, list[Task]]:
    """The first few real tasks and their solutions, so each sim starts in milliseconds."""
    root = tmp_path_factory.mktemp("faults-data")
    tasks = load_tasks(DATASET, N_TASKS)
    ids = {task.id for task in tasks}
    solutions = [row for row in json.loads(SOLUTIONS.read_bytes()) if row["id"] in ids]
    tasks_path, solutions_path = root / "tasks.json", root / "solutions.json"
    tasks_path.write_bytes(msgspec.json.encode(tasks))
    solutions_path.write_bytes(msgspec.json.encode(solutions))
    return tasks_path, solutions_path, tasks


Faults = tuple[tuple[FaultKind, float], ...]


def sim_profile(faults: Faults, seed: int = 0) -> SimProfile:
    return SimProfile(
        seed=seed,
        p_first=1.0,
        p_recover=0.0,
        ttft_ms=0.0,
        itl_ms=0.0,
        tokens_per_chunk=4,
        faults=faults,
    )


def with_sim_client(
    data: tuple[Path, Path, list[Task]],
    profile: SimProfile,
    body: Callable[[LLMClient], Awaitable[Any]],
    telemetry: Telemetry | None = None,
    **config: Any,
) -> tuple[Any, dict[str, Any]]:
    """Serve ``profile`` in-process, run ``body`` with a client; its result and sim stats."""
    tasks_path, solutions_path, _ = data

    async def main() -> tuple[Any, dict[str, Any]]:
        runner, base = await start_sim(profile, tasks_path, solutions_path)
        try:
            cfg = Config(base_url=base, **{**FAST, **config})
            async with LLMClient(cfg, telemetry or Telemetry()) as client:
                result = await body(client)
                status, raw = await client.fetch("/sim/stats", 5.0)
                assert status == 200
                stats = msgspec.json.decode(raw)
            return result, stats
        finally:
            await runner.cleanup()

    return uvloop.run(main())


def call(
    data: tuple[Path, Path, list[Task]],
    faults: Faults,
    seed: int = 0,
    telemetry: Telemetry | None = None,
    **config: Any,
) -> Outcome:
    """One chat completion for the first task through a sim injecting ``faults``."""
    prompt = build_prompt(data[2][0])

    async def body(client: LLMClient) -> Outcome:
        t0 = time.monotonic()
        completion = error = None
        try:
            completion = await client.complete([Message("user", prompt)], task="t")
        except LLMError as exc:
            error = exc
        telemetry = client.telemetry
        return Outcome(
            completion,
            error,
            time.monotonic() - t0,
            telemetry.llm_calls,
            dict(telemetry.retry_causes),
        )

    outcome, stats = with_sim_client(data, sim_profile(faults, seed), body, telemetry, **config)
    outcome.sim_stats = stats
    return outcome


def seed_for(kind: FaultKind, rate: float, hits: tuple[bool, ...]) -> int:
    """The smallest seed whose first requests meet ``kind`` exactly as ``hits`` says."""
    faults = ((kind, rate),)
    for seed in range(10_000):
        if all((pick_fault(faults, seed, n) is not None) == hit for n, hit in enumerate(hits, 1)):
            return seed
    raise AssertionError(f"no seed gives {hits} for {kind}:{rate}")


def free_closed_port() -> int:
    """A loopback port nothing listens on (bound, then closed)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def has_code(completion: Completion | None) -> bool:
    return completion is not None and extract_code(completion.text) is not None


# ---- rate 1: every attempt faults, the call ends in LLMError after the configured retries ----


@pytest.mark.parametrize(
    "kind", [FaultKind.HTTP_429, FaultKind.HTTP_500, FaultKind.HTTP_502, FaultKind.HTTP_503]
)
def test_http_fault_is_retried_then_reported(small_data: Any, kind: FaultKind) -> None:
    outcome = call(small_data, ((kind, 1.0),), llm_retries=2)
    error = outcome.error
    assert error is not None and outcome.completion is None
    assert error.cause == kind and error.retryable
    assert error.retries == 2 and "after 2 retries" in str(error)
    assert f"simulated fault {kind}" in str(error)
    assert outcome.llm_calls == 3 and outcome.retry_causes == {kind: 2}
    assert outcome.sim_stats == {"requests": 3, "faults": {kind: 3}}


class EventLog(Telemetry):
    """Telemetry that keeps every event it is told of."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list[tuple[str, dict[str, Any]]] = []

    def event(self, kind: str, **fields: Any) -> None:
        self.events.append((kind, fields))


def test_http_429_retry_after_is_honoured(small_data: Any) -> None:
    """The retry waits the 1 s of Retry-After, not the jitter under backoff_base (0.01 s)."""
    log = EventLog()
    outcome = call(
        small_data, ((FaultKind.HTTP_429, 1.0),), telemetry=log, llm_retries=1, backoff_max=5.0
    )
    assert outcome.error is not None and outcome.error.cause == "http_429"
    retries = [fields for kind, fields in log.events if kind == "retry"]
    assert [r["delay"] for r in retries] == [1.0]
    assert outcome.elapsed >= 0.95


def test_refuse_is_a_connection_error(small_data: Any) -> None:
    outcome = call(small_data, ((FaultKind.REFUSE, 1.0),), llm_retries=2)
    assert outcome.error is not None and outcome.error.cause == "connection"
    assert "server closed the connection" in str(outcome.error)
    assert outcome.llm_calls == 3 and outcome.retry_causes == {"connection": 2}


def test_closed_port_is_a_connect_error() -> None:
    """A true TCP refusal (nothing listens) is a ``connect`` error, retried like the rest."""
    cfg = Config(base_url=f"http://127.0.0.1:{free_closed_port()}/v1", **{**FAST})

    async def main() -> tuple[LLMError, int, dict[str, int]]:
        async with LLMClient(cfg, Telemetry()) as client:
            with pytest.raises(LLMError) as info:
                await client.complete([Message("user", "hi")])
            return info.value, client.telemetry.llm_calls, client.telemetry.retry_causes

    error, calls, causes = uvloop.run(main())
    assert error.cause == "connect" and error.retries == 2
    assert calls == 3 and causes == {"connect": 2}


def test_reset_mid_stream_is_a_connection_error(small_data: Any) -> None:
    outcome = call(small_data, ((FaultKind.RESET, 1.0),), llm_retries=2)
    assert outcome.error is not None and outcome.error.cause == "connection"
    assert outcome.llm_calls == 3 and outcome.retry_causes == {"connection": 2}


@pytest.mark.parametrize(
    "kind", [FaultKind.CUT_JSON, FaultKind.MALFORMED_JSON, FaultKind.INVALID_UTF8]
)
def test_broken_event_is_a_malformed_stream(small_data: Any, kind: FaultKind) -> None:
    outcome = call(small_data, ((kind, 1.0),), llm_retries=2)
    assert outcome.error is not None and outcome.error.cause == "malformed_stream"
    assert outcome.error.retryable
    assert outcome.llm_calls == 3 and outcome.retry_causes == {"malformed_stream": 2}
    if kind is FaultKind.INVALID_UTF8:
        assert "utf-8" in str(outcome.error).lower()


def test_huge_line_is_cut_off_at_the_line_cap(small_data: Any) -> None:
    """An 8 MiB event line is refused once the parser's 1 MiB cap is passed, not read whole."""
    outcome = call(small_data, ((FaultKind.HUGE_LINE, 1.0),), llm_retries=2)
    assert outcome.error is not None and outcome.error.cause == "line_too_long"
    assert "longer than" in str(outcome.error)
    assert outcome.llm_calls == 3 and outcome.retry_causes == {"line_too_long": 2}


def test_huge_line_with_a_bigger_completion_cap_still_hits_the_line_cap(small_data: Any) -> None:
    outcome = call(
        small_data, ((FaultKind.HUGE_LINE, 1.0),), llm_retries=0, max_completion_bytes=16 << 20
    )
    assert outcome.error is not None and outcome.error.cause == "line_too_long"


def test_completion_cap_is_terminal(small_data: Any) -> None:
    """A reply over ``max_completion_bytes`` is not retried: the same prompt would repeat it."""
    outcome = call(small_data, (), max_completion_bytes=64)
    assert outcome.error is not None and outcome.error.cause == "too_large"
    assert not outcome.error.retryable and outcome.llm_calls == 1


def test_stall_ends_at_the_read_timeout(small_data: Any) -> None:
    outcome = call(small_data, ((FaultKind.STALL, 1.0),), llm_retries=1, read_timeout=0.3)
    assert outcome.error is not None and outcome.error.cause == "read_timeout"
    assert outcome.retry_causes == {"read_timeout": 1}
    assert outcome.elapsed >= 0.55  # two attempts, each silent for the read timeout


def test_stall_ends_at_the_call_deadline(small_data: Any) -> None:
    outcome = call(small_data, ((FaultKind.STALL, 1.0),), llm_retries=1, call_timeout=0.5)
    assert outcome.error is not None and outcome.error.cause == "call_timeout"
    assert "no complete answer within 0.5s of its first byte (after 1 retries)" in str(
        outcome.error
    )
    assert outcome.elapsed >= 0.95  # two attempts, each ended by the call deadline


def test_no_done_keepalives_defeat_the_read_timeout_but_not_the_call_deadline(
    small_data: Any,
) -> None:
    # The read timeout (3 s) is shorter than the call deadline (4 s), yet it never fires: the
    # sim sends a ": ping" comment every second after its last content chunk (a read timeout
    # of three intervals, so a ping that a busy machine delays by a second still comes).
    outcome = call(
        small_data, ((FaultKind.NO_DONE, 1.0),), llm_retries=0, read_timeout=3.0, call_timeout=4.0
    )
    assert outcome.error is not None and outcome.error.cause == "call_timeout"
    assert outcome.elapsed >= 3.9  # well past the read timeout: the deadline ended it
    assert outcome.sim_stats["faults"] == {FaultKind.NO_DONE: 1}


# ---- well-formed but useless replies: not transport errors --------------------------------


def test_empty_reply_is_a_completion_without_text(small_data: Any) -> None:
    outcome = call(small_data, ((FaultKind.EMPTY, 1.0),))
    assert outcome.error is None and outcome.completion is not None
    assert outcome.completion.text == "" and outcome.completion.retries == 0
    assert outcome.completion.completion_tokens == 0
    assert outcome.retry_causes == {}


def test_no_code_reply_is_prose_without_a_code_block(small_data: Any) -> None:
    outcome = call(small_data, ((FaultKind.NO_CODE, 1.0),))
    assert outcome.error is None and outcome.completion is not None
    assert outcome.completion.text == NO_CODE_REPLY
    assert extract_code(outcome.completion.text) is None
    assert outcome.retry_causes == {}


@pytest.mark.parametrize("kind", [FaultKind.EMPTY, FaultKind.NO_CODE])
def test_agent_feeds_back_a_reply_without_code(
    small_data: Any, kind: FaultKind, tmp_path: Path
) -> None:
    """Every attempt lacks code: the task fails (not errors) after all its attempts."""
    task = small_data[2][0]

    async def body(client: LLMClient) -> Any:
        agent = AgentLoop(client, client.config, workspace_root=tmp_path)
        return await agent.run(task, 0), dict(client.telemetry.error_causes)

    (result, errors), stats = with_sim_client(
        small_data, sim_profile(((kind, 1.0),)), body, max_retries=2, python=sys.executable
    )
    assert result.status == "failed"
    assert result.reason == "no code block in the reply after 3 attempts"
    assert result.attempts == 3 and result.llm_calls == 3 and result.llm_retries == 0
    assert result.test_exit == ""  # pytest never ran
    assert errors == {}
    assert stats == {"requests": 3, "faults": {kind: 3}}


def test_agent_recovers_after_a_reply_without_code(small_data: Any, tmp_path: Path) -> None:
    task = small_data[2][0]
    seed = seed_for(FaultKind.NO_CODE, 0.5, (True, False))

    async def body(client: LLMClient) -> Any:
        return await AgentLoop(client, client.config, workspace_root=tmp_path).run(task, 0)

    result, stats = with_sim_client(
        small_data,
        sim_profile(((FaultKind.NO_CODE, 0.5),), seed),
        body,
        max_retries=2,
        python=sys.executable,
    )
    assert result.status == "passed", result.reason
    assert result.attempts == 2 and not result.first_attempt_pass
    assert stats == {"requests": 2, "faults": {FaultKind.NO_CODE: 1}}


def test_task_deadline_ends_a_stalled_task(small_data: Any, tmp_path: Path) -> None:
    """With call and read timeouts far away, the per-task deadline still ends the task."""
    task = small_data[2][0]

    async def body(client: LLMClient) -> Any:
        t0 = time.monotonic()
        result = await AgentLoop(client, client.config, workspace_root=tmp_path).run(task, 0)
        return result, time.monotonic() - t0

    (result, elapsed), _ = with_sim_client(
        small_data,
        sim_profile(((FaultKind.STALL, 1.0),)),
        body,
        task_timeout=0.5,
        read_timeout=60.0,
        call_timeout=60.0,
        python=sys.executable,
    )
    assert result.status == "error"
    assert result.reason == "task deadline of 0.5s passed"
    assert elapsed >= 0.5


# ---- rate 0.5 with a fixed seed: retried, then the call succeeds --------------------------


@pytest.mark.parametrize("kind", sorted(STREAM_CAUSES))
def test_seeded_half_rate_fault_is_retried_then_succeeds(small_data: Any, kind: FaultKind) -> None:
    seed = seed_for(kind, 0.5, (True, False))
    outcome = call(small_data, ((kind, 0.5),), seed, **SLOW_FAULT_CONFIG.get(kind, {}))
    assert outcome.error is None, outcome.error
    assert has_code(outcome.completion)
    assert outcome.completion is not None and outcome.completion.retries == 1
    assert outcome.retry_causes == {STREAM_CAUSES[kind]: 1}
    assert outcome.sim_stats == {"requests": 2, "faults": {kind: 1}}


def test_seeded_half_rate_can_still_exhaust_the_retries(small_data: Any) -> None:
    seed = seed_for(FaultKind.RESET, 0.5, (True, True, True))
    outcome = call(small_data, ((FaultKind.RESET, 0.5),), seed, llm_retries=2)
    assert outcome.error is not None and outcome.error.cause == "connection"
    assert outcome.llm_calls == 3


def test_fault_sequence_is_reproducible(small_data: Any) -> None:
    """The same seed gives the same faults in the same order: the same retries by cause."""
    faults = ((FaultKind.HTTP_503, 0.3), (FaultKind.RESET, 0.3), (FaultKind.CUT_JSON, 0.3))
    prompt = build_prompt(small_data[2][0])

    async def body(client: LLMClient) -> list[int]:
        retries = []
        for _ in range(12):  # one at a time, so arrival order is fixed
            retries.append((await client.complete([Message("user", prompt)])).retries)
        return retries

    runs = [
        with_sim_client(small_data, sim_profile(faults, seed=5), body, llm_retries=10)
        for _ in range(2)
    ]
    assert runs[0] == runs[1]
    assert sum(runs[0][0]) > 0


def test_mixed_faults_under_concurrency_all_succeed_and_add_up(small_data: Any) -> None:
    """Every injected fault costs exactly one retry; the client's and the sim's counts agree."""
    faults = (
        (FaultKind.HTTP_429, 0.05),
        (FaultKind.HTTP_503, 0.05),
        (FaultKind.REFUSE, 0.03),
        (FaultKind.RESET, 0.05),
        (FaultKind.CUT_JSON, 0.03),
        (FaultKind.MALFORMED_JSON, 0.03),
        (FaultKind.INVALID_UTF8, 0.03),
        (FaultKind.HUGE_LINE, 0.02),
    )
    prompts = [build_prompt(task) for task in small_data[2]]

    async def body(client: LLMClient) -> tuple[list[Completion], Telemetry]:
        calls = [
            client.complete([Message("user", prompts[i % len(prompts)])], task=str(i))
            for i in range(60)
        ]
        return list(await asyncio.gather(*calls)), client.telemetry

    (completions, telemetry), stats = with_sim_client(
        small_data, sim_profile(faults, seed=11), body, llm_retries=10, concurrency=20
    )
    assert all(has_code(c) for c in completions)
    retries = sum(c.retries for c in completions)
    assert retries == sum(telemetry.retry_causes.values()) == sum(stats["faults"].values())
    assert retries > 0
    assert stats["requests"] == telemetry.llm_calls == 60 + retries


# ---- non-streamed requests meet the same faults in body form -----------------------------

BODY_CAUSES = {
    **STREAM_CAUSES,
    FaultKind.RESET: "connection",
    # a complete 8 MiB body passes max_completion_bytes: terminal
    FaultKind.HUGE_LINE: "too_large",
}


@pytest.mark.parametrize("kind", sorted(BODY_CAUSES))
def test_non_streamed_request_faults(small_data: Any, kind: FaultKind) -> None:
    settings = {"stream": False, "llm_retries": 1, **SLOW_FAULT_CONFIG.get(kind, {})}
    outcome = call(small_data, ((kind, 1.0),), **settings)
    assert outcome.error is not None, kind
    assert outcome.error.cause == BODY_CAUSES[kind]
    expected_calls = 1 if kind is FaultKind.HUGE_LINE else 2
    assert outcome.llm_calls == expected_calls


@pytest.mark.parametrize("kind", [FaultKind.EMPTY, FaultKind.NO_CODE])
def test_non_streamed_useless_replies(small_data: Any, kind: FaultKind) -> None:
    outcome = call(small_data, ((kind, 1.0),), stream=False)
    assert outcome.completion is not None
    assert outcome.completion.text == ("" if kind is FaultKind.EMPTY else NO_CODE_REPLY)


# ---- the whole bench, as a user runs it ----------------------------------------------------


def run_bench_cli(tmp_path: Path, *args: str, timeout: float = 60) -> tuple[int, str, Path]:
    """``python -m fastagent bench --tasks 4 --concurrency 4 ARGS`` in ``tmp_path``."""
    env = child_env()
    argv = [sys.executable, "-m", "fastagent", "bench", "--tasks", "4", "--concurrency", "4"]
    proc = subprocess.run(
        [*argv, "--results-dir", "out", *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    return proc.returncode, proc.stdout + proc.stderr, tmp_path / "out"


def read_results(out: Path) -> tuple[list[dict[str, str]], Summary]:
    (csv_path,) = out.glob("*.csv")
    (summary_path,) = out.glob("*_summary.json")
    with csv_path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    return rows, read_summary(summary_path)


def test_bench_cli_with_transient_faults_finishes(tmp_path: Path) -> None:
    code, output, out = run_bench_cli(
        tmp_path, "--sim-profile", "faults=http_503:0.3+reset:0.2,seed=1"
    )
    assert code == ExitCode.OK, output
    rows, summary = read_results(out)
    assert len(rows) == 4
    assert {row["status"] for row in rows} <= {"passed", "failed"}
    causes = summary.totals.retries_by_cause
    assert causes and set(causes) <= {"http_503", "connection"}, causes
    assert summary.totals.errors_by_cause == {}
    assert summary.endpoint.sim_profile is not None
    assert summary.endpoint.sim_profile["faults"] == [
        [FaultKind.HTTP_503, 0.3],
        [FaultKind.RESET, 0.2],
    ]


def test_bench_cli_with_a_stalling_endpoint_ends_every_task_in_error(tmp_path: Path) -> None:
    code, output, out = run_bench_cli(
        tmp_path,
        "--sim-profile",
        "faults=stall:1.0,ttft_ms=0",
        "--call-timeout",
        "2",
        "--llm-retries",
        "1",
    )
    assert code == ExitCode.FAILED, output  # every task errored
    rows, summary = read_results(out)
    assert len(rows) == 4
    for row in rows:
        assert row["status"] == "error"
        assert (
            row["reason"] == "llm: no complete answer within 2s of its first byte (after 1 retries)"
        )
    assert summary.totals.errors_by_cause == {"call_timeout": 4}
    assert summary.totals.retries_by_cause == {"call_timeout": 4}


def test_bench_cli_rejects_an_unknown_fault(tmp_path: Path) -> None:
    code, output, _ = run_bench_cli(tmp_path, "--sim-profile", "faults=gremlins:0.5")
    assert code == ExitCode.BAD_INPUT
    assert "unknown fault 'gremlins'" in output
