"""The simulated endpoint, over real loopback HTTP."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
import types
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from fastagent.cli import Parser
from fastagent.errors import ExitCode
from fastagent.sim import server
from fastagent.sim.app import SimApp
from fastagent.sim.data import WRONG_BODY, Outcome, TaskIndex, plan, tokenize, wrong_code
from fastagent.sim.faults import FAULTS, HUGE_LINE_BYTES, NO_CODE_REPLY, FaultKind, pick_fault
from fastagent.sim.profile import SimProfile, parse_fault, parse_faults, parse_profile
from fastagent.speedups import SSEParser

ROOT = Path(__file__).resolve().parent.parent
DATASET = ROOT / "dataset" / "humaneval_100.json"
SOLUTIONS = ROOT / "dataset" / "humaneval_100_solutions.json"

_TASKS: list[tuple[str, str, str, str]] = [
    (
        "T/0",
        "add_one",
        'def add_one(x: int) -> int:\n    """Return x plus one.\n    >>> add_one(1)\n    2\n'
        '    """\n',
        "    return x + 1\n",
    ),
    (
        "T/1",
        "area",
        "def area(a, h):\n"
        '    """Area of a triangle from a side and its height.\n    >>> area(4, 2)\n    4.0\n'
        '    """\n',
        "    return a * h / 2.0\n",
    ),
    (
        "T/2",
        "area",
        'def area(a, b):\n    """Area of a rectangle.\n    >>> area(4, 2)\n    8\n    """\n',
        "    return a * b\n",
    ),
    (
        "T/3",
        "shout",
        "def _upper(s: str) -> str:\n    return s.upper()\n\n\n"
        "def shout(s: str) -> str:\n"
        "    '''Upper-case s and add an exclamation mark.\n    >>> shout('hi')\n    'HI!'\n"
        "    '''\n",
        "    return _upper(s) + '!'\n",
    ),
    (
        "T/4",
        "double",
        'def double(xs: list) -> list:\n    """Double every item.\n    >>> double([1])\n    [2]\n'
        '    """\n',
        "    return [x * 2 for x in xs]\n",
    ),
    (
        "T/5",
        "is_even",
        'def is_even(n: int) -> bool:\n    """True when n is even.\n    """\n',
        "    return n % 2 == 0\n",
    ),
    (
        "T/6",
        "last",
        'def last(xs):\n    """The last item of xs.\n    """\n',
        "    return xs[-1]\n",
    ),
    (
        "T/7",
        "count_a",
        "from collections import Counter\n\n\n"
        'def count_a(s):\n    """How many a letters s holds.\n    """\n',
        "    return Counter(s)['a']\n",
    ),
]
_CHECKS = {
    "add_one": "def check(candidate):\n    assert candidate(1) == 2\n",
    "area": "def check(candidate):\n    assert candidate(4, 2) in (4.0, 8)\n",
    "shout": "def check(candidate):\n    assert candidate('hi') == 'HI!'\n",
    "double": "def check(candidate):\n    assert candidate([1, 2]) == [2, 4]\n",
    "is_even": "def check(candidate):\n    assert candidate(4) is True\n",
    "last": "def check(candidate):\n    assert candidate([1, 2]) == 2\n",
    "count_a": "def check(candidate):\n    assert candidate('banana') == 3\n",
}


PROFILE = SimProfile(p_first=0.5, p_recover=0.25, ttft_ms=0.0, itl_ms=0.0)
_CODE_RE = re.compile(r"```python\n(.*?)```", re.S)


@dataclass
class Fixture:
    tasks: Path
    solutions: Path
    specs: dict[str, str]
    solutions_by_id: dict[str, str]


@dataclass
class Completion:
    status: int
    headers: dict[str, str]
    text: str = ""
    finish_reason: str | None = None
    usage: dict[str, int] = field(default_factory=dict)
    timing: dict[str, float] = field(default_factory=dict)
    content_chunks: list[str] = field(default_factory=list)
    events: list[Any] = field(default_factory=list)
    sent_at: float = 0.0
    first_content_at: float | None = None
    body: Any = None


@pytest.fixture
def data(tmp_path: Path) -> Fixture:
    tasks = [{"id": tid, "spec": spec, "test": _CHECKS[ep]} for tid, ep, spec, _ in _TASKS]
    solutions = [
        {"id": tid, "entry_point": ep, "solution": spec + body} for tid, ep, spec, body in _TASKS
    ]
    tasks_path = tmp_path / "tasks.json"
    solutions_path = tmp_path / "solutions.json"
    tasks_path.write_text(json.dumps(tasks))
    solutions_path.write_text(json.dumps(solutions))
    return Fixture(
        tasks_path,
        solutions_path,
        {t["id"]: t["spec"] for t in tasks},
        {s["id"]: s["solution"] for s in solutions},
    )


#: Seconds after which a test that waits for something gives up: a guard against a hang,
#: never a claim about speed.
HANG_GUARD = 30.0


class TrackedApp(SimApp):
    """A SimApp that reports the end of each chat exchange (its response over, or its client
    gone) on ``returned``."""

    def __init__(self, profile: SimProfile, data: Fixture) -> None:
        super().__init__(profile, data.tasks, data.solutions)
        self.returned: asyncio.Queue[None] = asyncio.Queue()

    def chat_done(self) -> None:
        self.returned.put_nowait(None)

    async def handler_returned(self) -> None:
        await asyncio.wait_for(self.returned.get(), HANG_GUARD)


def with_sim(
    data: Fixture,
    profile: SimProfile | SimApp,
    body: Callable[[str, aiohttp.ClientSession], Awaitable[Any]],
) -> Any:
    """Serve ``profile`` (or that app) on loopback; ``body(base_url, session)``'s result."""

    async def run() -> Any:
        if isinstance(profile, SimApp):
            runner, base = await server.start_app(profile)
        else:
            runner, base = await server.start_sim(profile, data.tasks, data.solutions)
        try:
            async with aiohttp.ClientSession() as session:
                return await body(base, session)
        finally:
            await runner.cleanup()

    return asyncio.run(run())


def prompt_for(spec: str) -> str:
    return f"Complete this Python function.\n\n```python\n{spec}```\n\nReply with one code block."


def conversation(spec: str, attempt: int) -> list[dict[str, str]]:
    messages = [
        {"role": "system", "content": "You are a careful Python programmer."},
        {"role": "user", "content": prompt_for(spec)},
    ]
    for _ in range(attempt):
        messages.append({"role": "assistant", "content": "```python\npass\n```"})
        messages.append({"role": "user", "content": "The tests failed: AssertionError"})
    return messages


async def complete(
    session: aiohttp.ClientSession,
    base: str,
    messages: list[dict[str, str]],
    stream: bool = True,
    **extra: Any,
) -> Completion:
    payload = {"model": "fastagent-sim", "messages": messages, "stream": stream, **extra}
    sent_at = time.monotonic()
    async with session.post(f"{base}/chat/completions", json=payload) as resp:
        result = Completion(resp.status, dict(resp.headers), sent_at=sent_at)
        if not stream or resp.status != HTTPStatus.OK:
            result.body = await resp.json()
            if resp.status == HTTPStatus.OK:
                choice = result.body["choices"][0]
                result.text = choice["message"]["content"]
                result.finish_reason = choice["finish_reason"]
                result.usage = result.body["usage"]
                result.timing = result.body["fastagent_timing"]
            return result
        parser = SSEParser()
        async for piece in resp.content.iter_any():
            for payload_bytes in parser.feed(piece):
                if payload_bytes == b"[DONE]":
                    result.events.append("[DONE]")
                    continue
                chunk = json.loads(payload_bytes)
                result.events.append(chunk)
                for choice in chunk["choices"]:
                    content = choice["delta"].get("content")
                    if content:
                        if result.first_content_at is None:
                            result.first_content_at = time.monotonic()
                        result.content_chunks.append(content)
                    if choice["finish_reason"]:
                        result.finish_reason = choice["finish_reason"]
                if "usage" in chunk:
                    result.usage = chunk["usage"]
                    result.timing = chunk["fastagent_timing"]
        assert parser.close() == []
        result.text = "".join(result.content_chunks)
        return result


def code_of(text: str) -> str | None:
    match = _CODE_RE.search(text)
    return match.group(1) if match else None


def ids_by_outcome(task_ids: list[str], profile: SimProfile = PROFILE) -> dict[str, list[str]]:
    by: dict[str, list[str]] = {outcome: [] for outcome in Outcome}
    for tid, outcome in plan(profile, task_ids).items():
        by[outcome].append(tid)
    return by


def run_check(code: str, test: str, entry_point: str) -> BaseException | None:
    """Run a task's test against ``code`` imported as module ``solution``; the error or None."""
    module = types.ModuleType("solution")
    saved = sys.modules.get("solution")
    sys.modules["solution"] = module
    try:
        exec(code, module.__dict__)
        namespace: dict[str, Any] = {}
        exec(test, namespace)
        if "test_humaneval" in namespace:
            namespace["test_humaneval"]()
        else:
            namespace["check"](module.__dict__[entry_point])
    except Exception as exc:
        return exc
    finally:
        if saved is None:
            sys.modules.pop("solution", None)
        else:
            sys.modules["solution"] = saved
    return None


def test_plan_counts_are_exact_and_seeded() -> None:
    ids = [f"HumanEval/{i}" for i in range(100)]
    outcomes = plan(SimProfile(), ids)
    assert list(outcomes) == ids
    counts = {k: list(outcomes.values()).count(k) for k in Outcome}
    assert counts == {Outcome.FIRST: 87, Outcome.RECOVER: 6, Outcome.WRONG: 7}
    assert plan(SimProfile(seed=7), ids) == plan(SimProfile(seed=7), ids)
    assert plan(SimProfile(seed=7), ids) != plan(SimProfile(seed=8), ids)
    everything = plan(SimProfile(p_first=1.0, p_recover=0.0), ids)
    assert set(everything.values()) == {Outcome.FIRST}
    assert plan(SimProfile(), []) == {}


def test_parse_profile() -> None:
    assert parse_profile("") == SimProfile()
    profile = parse_profile(" seed=3, p-first=0.5,p_recover=0.25,ttft_ms=10,itl_ms=0,model=m ")
    assert profile.as_dict() == {
        "seed": 3,
        "p_first": 0.5,
        "p_recover": 0.25,
        "ttft_ms": 10.0,
        "itl_ms": 0.0,
        "start_delay_ms": 0.0,
        "tokens_per_chunk": 1,
        "model": "m",
        "faults": (),
    }
    assert parse_profile("tokens_per_chunk=4").tokens_per_chunk == 4
    faulty = parse_profile("faults=http_429:0.2+reset + cut-json:0 ,seed=1")
    assert faulty.faults == (
        (FaultKind.HTTP_429, 0.2),
        (FaultKind.RESET, 1.0),
        (FaultKind.CUT_JSON, 0.0),
    )
    assert faulty.seed == 1
    assert parse_profile("faults=", base=faulty).faults == ()


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        ("speed=3", r"unknown profile key 'speed' \(valid keys: seed, p_first, .*model, faults\)"),
        ("seed=x", r"profile key 'seed' expects an integer, got 'x'"),
        ("ttft_ms=fast", r"profile key 'ttft_ms' expects a number, got 'fast'"),
        ("seed", r"profile item 'seed' is not KEY=VALUE \(valid keys: "),
        ("p_first=1.5", r"'p_first' must be within \[0, 1\]"),
        ("p_first=0.9,p_recover=0.2", r"'p_first' \+ 'p_recover' must not exceed 1"),
        ("itl_ms=-1", r"'itl_ms' must be a finite number >= 0"),
        ("ttft_ms=inf", r"'ttft_ms' must be a finite number >= 0, got inf"),
        ("seed=1.5", r"profile key 'seed' expects an integer, got '1.5'"),
        ("tokens_per_chunk=0", r"'tokens_per_chunk' must be >= 1"),
        ("model=", r"'model' must not be empty"),
        ("faults=gremlins", r"unknown fault 'gremlins' \(kinds: http_429, .*no_done\)"),
        ("faults=reset:1.5", r"fault 'reset': rate must be within \[0, 1\], got 1.5"),
        ("faults=reset:-0.1", r"fault 'reset': rate must be within \[0, 1\]"),
        ("faults=reset:nan", r"fault 'reset': rate must be within \[0, 1\]"),
        ("faults=reset:often", r"fault 'reset': rate must be a number, got 'often'"),
        ("faults=reset+reset:0.5", r"fault 'reset' is given twice"),
    ],
)
def test_parse_profile_errors(text: str, pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        parse_profile(text)


def test_tokenize_round_trips() -> None:
    text = "Here is   the implementation.\n\n```python\ndef f(x):\n    return x\n```\n"
    tokens = tokenize(text)
    assert "".join(tokens) == text
    assert all(len(t.lstrip()) <= 4 for t in tokens)
    assert 0.2 * len(text) <= len(tokens) <= 0.5 * len(text)


def test_models_and_plan_endpoints(data: Fixture) -> None:
    async def body(base: str, session: aiohttp.ClientSession) -> None:
        async with session.get(f"{base}/models") as resp:
            assert resp.status == HTTPStatus.OK
            models = await resp.json()
        assert models["object"] == "list"
        assert [m["id"] for m in models["data"]] == ["fastagent-sim"]
        assert models["data"][0]["object"] == "model"
        assert models["data"][0]["owned_by"] == "fastagent"
        assert isinstance(models["data"][0]["created"], int)
        async with session.get(f"{base}/sim/plan") as resp:
            got = await resp.json()
        assert got["profile"] == json.loads(json.dumps(PROFILE.as_dict()))
        assert got["plan"] == plan(PROFILE, list(data.solutions_by_id))
        counts = [list(got["plan"].values()).count(k) for k in Outcome]
        assert counts == [4, 2, 2]

    with_sim(data, PROFILE, body)


def test_stream_first_task_gives_the_solution(data: Fixture) -> None:
    tid = ids_by_outcome(list(data.specs))[Outcome.FIRST][0]

    async def body(base: str, session: aiohttp.ClientSession) -> Completion:
        return await complete(session, base, conversation(data.specs[tid], 0))

    result = with_sim(data, PROFILE, body)
    assert result.status == HTTPStatus.OK
    assert result.headers["Content-Type"] == "text/event-stream"
    assert code_of(result.text) == data.solutions_by_id[tid]
    assert result.text.startswith("Here is the implementation.\n\n```python\n")
    assert result.finish_reason == "stop"

    first, *middle, finish, usage, done = result.events
    assert first["object"] == "chat.completion.chunk"
    assert first["model"] == "fastagent-sim"
    assert first["choices"] == [
        {"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}
    ]
    assert all(len(e["choices"]) == 1 and e["choices"][0]["finish_reason"] is None for e in middle)
    assert finish["choices"] == [{"index": 0, "delta": {}, "finish_reason": "stop"}]
    assert usage["choices"] == []
    assert done == "[DONE]"
    assert len({e["id"] for e in result.events[:-1]}) == 1
    assert len(result.content_chunks) == result.usage["completion_tokens"]
    assert result.usage["completion_tokens"] == len(tokenize(result.text))
    prompt_chars = sum(len(m["content"]) for m in conversation(data.specs[tid], 0))
    assert result.usage["prompt_tokens"] == prompt_chars // 4
    assert result.usage["total_tokens"] == prompt_chars // 4 + result.usage["completion_tokens"]


def test_outcomes_follow_the_plan(data: Fixture) -> None:
    by = ids_by_outcome(list(data.specs))

    async def body(base: str, session: aiohttp.ClientSession) -> dict[tuple[str, int], str]:
        texts = {}
        for tid in data.specs:
            for attempt in range(3):
                result = await complete(session, base, conversation(data.specs[tid], attempt))
                texts[tid, attempt] = result.text
        return texts

    texts = with_sim(data, PROFILE, body)
    entry_points = {tid: ep for tid, ep, _, _ in _TASKS}
    for tid, spec in data.specs.items():
        test, ep = _CHECKS[entry_points[tid]], entry_points[tid]
        outcomes = [run_check(code_of(texts[tid, a]) or "", test, ep) is None for a in range(3)]
        expected = {
            Outcome.FIRST: [True] * 3,
            Outcome.RECOVER: [False, True, True],
            Outcome.WRONG: [False] * 3,
        }
        assert outcomes == expected[plan(PROFILE, list(data.specs))[tid]], tid
        for attempt in range(3):
            code = code_of(texts[tid, attempt])
            assert code is not None
            if code != data.solutions_by_id[tid]:
                assert code.startswith(spec)
                assert code.endswith('    raise NotImplementedError("simulated wrong answer")\n')
        assert texts[tid, 1].startswith("Here is the corrected implementation.")
    assert by[Outcome.RECOVER] and by[Outcome.WRONG]


def test_tasks_sharing_an_entry_point_are_told_apart(data: Fixture) -> None:
    profile = SimProfile(p_first=1.0, p_recover=0.0, ttft_ms=0, itl_ms=0)

    async def body(base: str, session: aiohttp.ClientSession) -> list[str]:
        return [
            (await complete(session, base, conversation(data.specs[tid], 0))).text
            for tid in ("T/1", "T/2")
        ]

    triangle, rectangle = with_sim(data, profile, body)
    assert code_of(triangle) == data.solutions_by_id["T/1"]
    assert code_of(rectangle) == data.solutions_by_id["T/2"]


def test_unknown_prompt_gets_no_code(data: Fixture) -> None:
    async def body(base: str, session: aiohttp.ClientSession) -> list[Completion]:
        near_miss = data.specs["T/0"].replace("plus one", "plus two")
        return [
            await complete(session, base, [{"role": "user", "content": "Write me a poem."}]),
            await complete(session, base, [{"role": "user", "content": prompt_for(near_miss)}]),
            await complete(session, base, [{"role": "system", "content": "hi"}], stream=False),
        ]

    for result in with_sim(data, PROFILE, body):
        assert result.status == HTTPStatus.OK
        assert "I could not find a task in this prompt." in result.text
        assert "```" not in result.text
        assert result.finish_reason == "stop"


def test_non_stream_body(data: Fixture) -> None:
    tid = ids_by_outcome(list(data.specs))[Outcome.FIRST][0]

    async def body(base: str, session: aiohttp.ClientSession) -> Completion:
        return await complete(session, base, conversation(data.specs[tid], 0), stream=False)

    result = with_sim(data, PROFILE, body)
    assert result.status == HTTPStatus.OK
    assert result.headers["Content-Type"].startswith("application/json")
    assert result.body["object"] == "chat.completion"
    assert result.body["model"] == "fastagent-sim"
    assert result.body["choices"][0]["message"]["role"] == "assistant"
    assert code_of(result.text) == data.solutions_by_id[tid]
    assert result.finish_reason == "stop"
    assert result.usage["completion_tokens"] == len(tokenize(result.text))
    timing = result.timing
    assert set(timing) == {"accepted", "started", "first_byte", "last_byte", "received"}
    assert timing["received"] == timing["started"]
    assert result.sent_at <= timing["accepted"] <= timing["started"]
    assert timing["started"] <= timing["first_byte"] == timing["last_byte"]


def test_timing_is_ordered_and_on_the_shared_clock(data: Fixture) -> None:
    profile = SimProfile(ttft_ms=20, itl_ms=1)

    async def body(base: str, session: aiohttp.ClientSession) -> tuple[Completion, float]:
        result = await complete(session, base, conversation(data.specs["T/0"], 0))
        return result, time.monotonic()

    result, done_at = with_sim(data, profile, body)
    timing = result.timing
    assert set(timing) == {"accepted", "started", "first_byte", "last_byte", "received"}
    assert timing["received"] == timing["started"]
    assert result.sent_at <= timing["accepted"] <= timing["started"]
    assert timing["started"] <= timing["first_byte"] <= timing["last_byte"]
    assert timing["last_byte"] <= done_at
    assert timing["first_byte"] - timing["started"] >= 0.02
    n_chunks = len(result.content_chunks)
    assert timing["last_byte"] - timing["first_byte"] >= 0.001 * (n_chunks - 1) * 0.95


def test_ttft_delays_the_first_content_chunk(data: Fixture) -> None:
    profile = SimProfile(p_first=1.0, p_recover=0.0, ttft_ms=200, itl_ms=0)

    async def body(base: str, session: aiohttp.ClientSession) -> tuple[Completion, float]:
        stream = await complete(session, base, conversation(data.specs["T/0"], 0))
        started = time.monotonic()
        await complete(session, base, conversation(data.specs["T/0"], 0), stream=False)
        return stream, time.monotonic() - started

    result, non_stream_elapsed = with_sim(data, profile, body)
    assert result.first_content_at is not None
    assert result.first_content_at - result.sent_at >= 0.2
    assert non_stream_elapsed >= 0.2


def test_tokens_per_chunk(data: Fixture) -> None:
    profile = SimProfile(p_first=1.0, p_recover=0.0, ttft_ms=0, itl_ms=0, tokens_per_chunk=3)

    async def body(base: str, session: aiohttp.ClientSession) -> Completion:
        return await complete(session, base, conversation(data.specs["T/3"], 0))

    result = with_sim(data, profile, body)
    tokens = tokenize(result.text)
    expected = ["".join(tokens[i : i + 3]) for i in range(0, len(tokens), 3)]
    assert result.content_chunks == expected
    assert result.usage["completion_tokens"] == len(tokens)
    assert code_of(result.text) == data.solutions_by_id["T/3"]


@pytest.mark.parametrize("stream", [True, False])
@pytest.mark.parametrize("tokens_per_chunk", [1, 4])
def test_max_tokens_truncates(data: Fixture, stream: bool, tokens_per_chunk: int) -> None:
    profile = SimProfile(
        p_first=1.0, p_recover=0.0, ttft_ms=0, itl_ms=0, tokens_per_chunk=tokens_per_chunk
    )

    async def body(base: str, session: aiohttp.ClientSession) -> tuple[Completion, Completion]:
        messages = conversation(data.specs["T/0"], 0)
        full = await complete(session, base, messages, stream=stream)
        cut = await complete(session, base, messages, stream=stream, max_tokens=7)
        return full, cut

    full, cut = with_sim(data, profile, body)
    assert cut.finish_reason == "length"
    assert cut.usage["completion_tokens"] == 7
    assert cut.text == "".join(tokenize(full.text)[:7])
    if stream:
        assert len(cut.content_chunks) == -(-7 // tokens_per_chunk)


@pytest.mark.parametrize(
    ("payload", "needle"),
    [
        (b"{not json", "invalid request body"),
        (b"[]", "invalid request body"),
        (b'{"model": "m"}', "messages"),
        (b'{"messages": []}', "messages"),
        (b'{"messages": [{"content": "x"}]}', "role"),
        (b'{"messages": [{"role": "user", "content": "x"}], "max_tokens": 0}', "max_tokens"),
    ],
)
def test_bad_requests_get_400(data: Fixture, payload: bytes, needle: str) -> None:
    async def body(base: str, session: aiohttp.ClientSession) -> tuple[int, Any]:
        headers = {"Content-Type": "application/json"}
        async with session.post(f"{base}/chat/completions", data=payload, headers=headers) as r:
            return r.status, await r.json()

    status, error = with_sim(data, PROFILE, body)
    assert status == HTTPStatus.BAD_REQUEST
    assert error["error"]["type"] == "invalid_request_error"
    assert needle in error["error"]["message"]


def test_content_parts_and_concurrency(data: Fixture) -> None:
    profile = SimProfile(p_first=1.0, p_recover=0.0, ttft_ms=5, itl_ms=0)
    ids = list(data.specs)

    async def body(base: str, session: aiohttp.ClientSession) -> list[Completion]:
        parted = [
            {"role": "user", "content": [{"type": "text", "text": prompt_for(data.specs["T/4"])}]}
        ]
        jobs = [
            complete(session, base, conversation(data.specs[ids[i % 8]], 0)) for i in range(100)
        ]
        jobs.append(complete(session, base, parted))
        return await asyncio.gather(*jobs)

    *results, parted = with_sim(data, profile, body)
    for i, result in enumerate(results):
        assert code_of(result.text) == data.solutions_by_id[ids[i % 8]]
    assert code_of(parted.text) == data.solutions_by_id["T/4"]


def test_client_disconnect_mid_stream(data: Fixture) -> None:
    """The handler of a stream whose client left returns quietly; the sim serves on."""
    app = TrackedApp(SimProfile(p_first=1.0, p_recover=0.0, ttft_ms=0, itl_ms=5), data)

    async def body(base: str, session: aiohttp.ClientSession) -> Completion:
        payload = {"messages": conversation(data.specs["T/0"], 0), "stream": True}
        async with session.post(f"{base}/chat/completions", json=payload) as resp:
            await resp.content.readany()
            resp.close()
        await app.handler_returned()
        return await complete(session, base, conversation(data.specs["T/0"], 0), stream=False)

    result = with_sim(data, app, body)
    assert code_of(result.text) == data.solutions_by_id["T/0"]


def test_wrong_code_keeps_helpers_and_compiles() -> None:
    spec = _TASKS[3][2]
    code = wrong_code(spec, "shout")
    assert code == spec + '    raise NotImplementedError("simulated wrong answer")\n'
    namespace: dict[str, Any] = {}
    exec(code, namespace)
    assert namespace["_upper"]("a") == "A"
    with pytest.raises(NotImplementedError):
        namespace["shout"]("a")
    tabbed = wrong_code('def f(x):\n\t"""Tabs."""', "f")
    assert tabbed == 'def f(x):\n\t"""Tabs."""\n\t' + WRONG_BODY + "\n"
    assert compile(wrong_code("def broken(:", "broken"), "<t>", "exec")


@pytest.mark.skipif(not (DATASET.exists() and SOLUTIONS.exists()), reason="dataset not built")
def test_real_dataset_right_passes_and_wrong_fails() -> None:
    tasks = json.loads(DATASET.read_text())
    solutions = {row["id"]: row for row in json.loads(SOLUTIONS.read_text())}
    assert len(tasks) == 100
    counts = list(plan(SimProfile(), solutions).values())
    assert [counts.count(k) for k in Outcome] == [87, 6, 7]
    index = TaskIndex({t["id"]: t["spec"] for t in tasks})
    for task in tasks:
        row = solutions[task["id"]]
        assert index.find(prompt_for(task["spec"])) == task["id"]
        wrong = wrong_code(task["spec"], row["entry_point"])
        assert wrong.startswith(task["spec"])
        error = run_check(wrong, task["test"], row["entry_point"])
        assert isinstance(error, NotImplementedError), (task["id"], error)
        assert run_check(row["solution"], task["test"], row["entry_point"]) is None, task["id"]


def _launch(*argv: str) -> subprocess.Popen[str]:
    """The ``fastagent sim`` command module run with ``argv``, as the CLI runs it."""
    code = (
        "import sys; from fastagent.cli import Parser; from fastagent.sim import server; "
        "p = Parser(prog='fastagent sim'); server.add_arguments(p); "
        "sys.exit(server.main(p.parse_args(sys.argv[1:])))"
    )
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    return subprocess.Popen(
        [sys.executable, "-c", code, *argv],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_subprocess_ready_line_and_sigterm(data: Fixture) -> None:
    proc = _launch(
        "--port",
        "0",
        "--dataset",
        str(data.tasks),
        "--solutions",
        str(data.solutions),
        "--profile",
        "ttft_ms=0,itl_ms=0,model=x",
        "--model",
        "sim-y",
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        match = re.fullmatch(r"FASTAGENT_SIM_READY (http://127\.0\.0\.1:(\d+)/v1)\n", line)
        assert match, (line, proc.stderr.read() if proc.poll() is not None else "")
        base = match.group(1)
        assert int(match.group(2)) > 0

        async def models() -> Any:
            async with aiohttp.ClientSession() as session, session.get(f"{base}/models") as r:
                return await r.json()

        assert asyncio.run(models())["data"][0]["id"] == "sim-y"
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=HANG_GUARD)
        assert proc.returncode == ExitCode.OK, err
        assert out == ""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--profile", "warp=9"], "unknown profile key 'warp'"),
        (["--p-first", "2"], "argument --p-first: expected a number >= 0 and <= 1, got '2'"),
        (["--port", "99999"], "argument --port: expected an integer >= 0 and <= 65535"),
        (["--p-first", "0.9", "--p-recover", "0.2"], "'p_first' + 'p_recover' must not exceed 1"),
        (["--dataset", "/nonexistent/tasks.json"], "dataset file not found: /nonexistent"),
        (["--fault", "gremlins:0.5"], "unknown fault 'gremlins'"),
        (["--fault", "stall:2"], "fault 'stall': rate must be within [0, 1]"),
        (["--fault", "reset", "--fault", "reset:0.5"], "fault 'reset' is given twice"),
    ],
)
def test_subprocess_bad_input_exits_2(data: Fixture, argv: list[str], needle: str) -> None:
    base = ["--port", "0", "--dataset", str(data.tasks), "--solutions", str(data.solutions)]
    proc = _launch(*base, *argv)
    out, err = proc.communicate(timeout=HANG_GUARD)
    assert proc.returncode == ExitCode.BAD_INPUT
    assert out == ""
    assert len(err.strip().splitlines()) == 1, err
    assert needle in err
    assert err.startswith("fastagent sim: error: ")


def sim_parser() -> Parser:
    parser = Parser(prog="fastagent sim")
    server.add_arguments(parser)
    return parser


def test_flags_take_the_profile_fields_types() -> None:
    argv = [
        "--seed", "3", "--p-first", "0.5", "--p-recover", "0", "--ttft-ms", "0",
        "--itl-ms", "1.5", "--tokens-per-chunk", "2", "--model", "m", "--port", "65535",
    ]  # fmt: skip
    args = sim_parser().parse_args(argv)
    assert args.port == 65535
    assert server.profile_from_args(args) == SimProfile(
        seed=3, p_first=0.5, p_recover=0.0, ttft_ms=0.0, itl_ms=1.5, tokens_per_chunk=2, model="m"
    )
    assert sim_parser().parse_args([]).port == 8800
    assert server.profile_from_args(sim_parser().parse_args([])) == SimProfile()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["--port", "99999"],
            "argument --port: expected an integer >= 0 and <= 65535, got '99999'",
        ),
        (["--port", "-1"], "argument --port: expected an integer >= 0 and <= 65535, got '-1'"),
        (["--seed", "x"], "argument --seed: expected an integer, got 'x'"),
        (
            ["--p-recover", "1.5"],
            "argument --p-recover: expected a number >= 0 and <= 1, got '1.5'",
        ),
        (["--ttft-ms", "-1"], "argument --ttft-ms: expected a number >= 0, got '-1'"),
        (["--itl-ms", "fast"], "argument --itl-ms: expected a number >= 0, got 'fast'"),
        (
            ["--tokens-per-chunk", "0"],
            "argument --tokens-per-chunk: expected an integer >= 1, got '0'",
        ),
        (["--fault", "stall:x"], "argument --fault: fault 'stall': rate must be a number, got 'x'"),
    ],
)
def test_bad_flag_is_one_line_exit_2(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    with pytest.raises(SystemExit) as info:
        sim_parser().parse_args(argv)
    assert info.value.code == ExitCode.BAD_INPUT
    assert capsys.readouterr().err == f"fastagent sim: error: {message} (see --help)\n"


def test_importing_the_launcher_loads_no_simulator() -> None:
    """The measured process imports fastagent.sim.launcher: that must not load the sim."""
    code = (
        "import sys, fastagent.sim.launcher; "
        "loaded = [m for m in sys.modules if m.startswith('fastagent.sim.') or m == 'aiohttp']; "
        "assert loaded == ['fastagent.sim.launcher'], loaded"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=HANG_GUARD
    )
    assert proc.returncode == 0, proc.stderr


@pytest.mark.skipif(not (DATASET.exists() and SOLUTIONS.exists()), reason="dataset not built")
def test_real_dataset_pass_counts_over_http() -> None:
    tasks = json.loads(DATASET.read_text())
    entry = {row["id"]: row["entry_point"] for row in json.loads(SOLUTIONS.read_text())}
    real = Fixture(DATASET, SOLUTIONS, {}, {})
    profile = SimProfile(ttft_ms=0, itl_ms=0, tokens_per_chunk=8)

    async def body(base: str, session: aiohttp.ClientSession) -> list[list[Completion]]:
        return [
            await asyncio.gather(
                *(complete(session, base, conversation(t["spec"], attempt)) for t in tasks)
            )
            for attempt in (0, 1)
        ]

    passed = [
        sum(
            run_check(code_of(r.text) or "", t["test"], entry[t["id"]]) is None
            for r, t in zip(results, tasks, strict=True)
        )
        for results in with_sim(real, profile, body)
    ]
    assert passed == [87, 93]


# ---- fault injection --------------------------------------------------------------------------


def faulty(kind: FaultKind, **extra: Any) -> SimProfile:
    """Right answers at once and no delays, with ``kind`` hitting every request."""
    settings: dict[str, Any] = {"p_first": 1.0, "p_recover": 0.0, "ttft_ms": 0, "itl_ms": 0}
    return SimProfile(**{**settings, "faults": ((kind, 1.0),), **extra})


@dataclass
class Raw:
    """A response read as bytes until it ended or broke."""

    status: int
    headers: dict[str, str]
    body: bytes
    error: BaseException | None


async def raw_post(
    session: aiohttp.ClientSession, base: str, spec: str, stream: bool = True
) -> Raw:
    payload = {"messages": conversation(spec, 0), "stream": stream}
    async with session.post(f"{base}/chat/completions", json=payload) as resp:
        body = bytearray()
        error: BaseException | None = None
        try:
            async with asyncio.timeout(HANG_GUARD):
                async for piece in resp.content.iter_any():
                    body += piece
        except aiohttp.ClientError as exc:
            error = exc
        return Raw(resp.status, dict(resp.headers), bytes(body), error)


async def raw_exchange(
    base: str, spec: str, stream: bool = True, until: Callable[[bytes], bool] | None = None
) -> tuple[bytes, BaseException | None]:
    """Send one request over a bare socket; the bytes that came back and the error.

    With ``until``, read until ``until(bytes so far)`` holds, then leave: shut down the
    sending side, which the sim sees as the client gone, and read what it still sends until
    it closes the connection. Without, read until the sim ends the connection.
    """
    url = urllib.parse.urlsplit(base)
    body = json.dumps({"messages": conversation(spec, 0), "stream": stream}).encode()
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: {url.netloc}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    reader, writer = await asyncio.open_connection(url.hostname, url.port)
    got = bytearray()
    error: BaseException | None = None
    try:
        writer.write(head.encode() + body)
        async with asyncio.timeout(HANG_GUARD):
            while until is not None and not until(bytes(got)):
                piece = await reader.read(65536)
                assert piece, f"the sim ended the connection first: {bytes(got)!r}"
                got += piece
            if until is not None:
                writer.write_eof()
            while piece := await reader.read(65536):
                got += piece
    except ConnectionError as exc:
        error = exc
    finally:
        writer.close()
    return bytes(got), error


def http_response(raw: bytes) -> tuple[dict[str, str], bytes, bool]:
    """The headers (names lower-cased), the body (chunked framing undone) and whether the body
    came whole, of an HTTP/1.1 response read as bytes."""
    head, _, rest = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")[1:]
    headers = {name.lower(): value for name, _, value in (line.partition(": ") for line in lines)}
    if headers.get("transfer-encoding") != "chunked":
        length = headers.get("content-length")
        return headers, rest, length is not None and len(rest) == int(length)
    body = bytearray()
    while True:
        size_line, sep, rest = rest.partition(b"\r\n")
        if not sep:
            return headers, bytes(body), False
        size = int(size_line, 16)
        if size == 0:
            return headers, bytes(body), True
        body += rest[:size]
        rest = rest[size + 2 :]


def events_of(body: bytes) -> list[bytes]:
    return [event for event in body.split(b"\n\n") if event]


def test_fault_table_describes_every_kind() -> None:
    assert {kind.value for kind in FaultKind} == {
        *("http_429", "http_500", "http_502", "http_503", "refuse", "reset", "cut_json"),
        *("malformed_json", "stall", "huge_line", "invalid_utf8", "empty", "no_code", "no_done"),
    }
    assert list(FAULTS) == list(FaultKind)
    assert all(kind is fault.kind for kind, fault in FAULTS.items())
    http = {kind for kind, fault in FAULTS.items() if fault.http_error is not None}
    assert http == {FaultKind.HTTP_429, FaultKind.HTTP_500, FaultKind.HTTP_502, FaultKind.HTTP_503}


def test_pick_fault_is_seeded_and_follows_rates() -> None:
    faults = ((FaultKind.HTTP_503, 0.3), (FaultKind.RESET, 0.5))
    seq = [pick_fault(faults, 7, n) for n in range(1, 2001)]
    assert seq == [pick_fault(faults, 7, n) for n in range(1, 2001)]
    assert seq != [pick_fault(faults, 8, n) for n in range(1, 2001)]
    assert 0.25 < seq.count(FaultKind.HTTP_503) / len(seq) < 0.35
    # (1 - 0.3) * 0.5: the first wins
    assert 0.30 < seq.count(FaultKind.RESET) / len(seq) < 0.40
    first_wins = ((FaultKind.STALL, 1.0), (FaultKind.RESET, 1.0))
    assert {pick_fault(first_wins, 0, n) for n in range(1, 100)} == {FaultKind.STALL}
    assert {pick_fault(((FaultKind.STALL, 0.0),), 0, n) for n in range(1, 100)} == {None}
    assert pick_fault((), 0, 1) is None


def test_profile_faults_are_checked_and_normalised() -> None:
    profile = SimProfile(faults=[["reset", 1], ("stall", 0.5)])  # type: ignore[arg-type]
    assert profile.faults == ((FaultKind.RESET, 1.0), (FaultKind.STALL, 0.5))
    assert isinstance(profile.faults[0], tuple) and isinstance(profile.faults[0][1], float)
    assert profile.faults[0][0] is FaultKind.RESET
    assert hash(profile) == hash(
        SimProfile(faults=((FaultKind.RESET, 1.0), (FaultKind.STALL, 0.5)))
    )
    assert parse_fault("http-503") == (FaultKind.HTTP_503, 1.0)
    assert parse_fault(" reset:0.25 ") == (FaultKind.RESET, 0.25)
    assert parse_faults("") == ()
    with pytest.raises(ValueError, match=r"unknown fault 'boom'"):
        SimProfile(faults=(("boom", 1.0),))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"is not a \(kind, rate\) pair"):
        SimProfile(faults=("reset",))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"fault 'reset': rate must be a number"):
        SimProfile(faults=(("reset", "1"),))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"fault 'reset': rate must be within \[0, 1\], got 2$"):
        SimProfile(faults=((FaultKind.RESET, 2),))


def test_fault_flags_replace_the_profile_faults() -> None:
    parser = sim_parser()
    args = parser.parse_args(["--profile", "faults=reset,seed=2"])
    assert server.profile_from_args(args).faults == ((FaultKind.RESET, 1.0),)
    args = parser.parse_args(
        ["--profile", "faults=reset,seed=2", "--fault", "http_429:0.5", "--fault", "stall"]
    )
    profile = server.profile_from_args(args)
    assert profile.faults == ((FaultKind.HTTP_429, 0.5), (FaultKind.STALL, 1.0))
    assert profile.seed == 2


@pytest.mark.parametrize(
    ("kind", "status"),
    [
        (FaultKind.HTTP_429, HTTPStatus.TOO_MANY_REQUESTS),
        (FaultKind.HTTP_500, HTTPStatus.INTERNAL_SERVER_ERROR),
        (FaultKind.HTTP_502, HTTPStatus.BAD_GATEWAY),
        (FaultKind.HTTP_503, HTTPStatus.SERVICE_UNAVAILABLE),
    ],
)
def test_http_fault_is_an_openai_error(data: Fixture, kind: FaultKind, status: HTTPStatus) -> None:
    async def body(base: str, session: aiohttp.ClientSession) -> Completion:
        return await complete(session, base, conversation(data.specs["T/0"], 0))

    result = with_sim(data, faulty(kind), body)
    rate_limited = status is HTTPStatus.TOO_MANY_REQUESTS
    assert result.status == status
    assert result.headers.get("Retry-After") == ("1" if rate_limited else None)
    error = result.body["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert f"simulated fault {kind}" in error["message"]
    assert error["code"] == ("rate_limit_exceeded" if rate_limited else None)


def test_refuse_closes_the_connection_without_a_byte(data: Fixture) -> None:
    async def body(base: str, session: aiohttp.ClientSession) -> Any:
        return await raw_exchange(base, data.specs["T/0"])

    got, error = with_sim(data, faulty(FaultKind.REFUSE), body)
    assert got == b"" and error is None  # an orderly close, nothing sent


def test_reset_sends_some_content_then_a_tcp_reset(data: Fixture) -> None:
    async def body(base: str, session: aiohttp.ClientSession) -> Any:
        return await raw_exchange(base, data.specs["T/0"])

    got, error = with_sim(data, faulty(FaultKind.RESET), body)
    assert got.startswith(b"HTTP/1.1 200 OK\r\n")
    assert got.count(b'"delta":{"content":') >= 1
    assert b"[DONE]" not in got and b'"finish_reason":"stop"' not in got
    assert isinstance(error, ConnectionResetError)


def test_cut_json_ends_the_body_inside_an_event(data: Fixture) -> None:
    async def body(base: str, session: aiohttp.ClientSession) -> Raw:
        return await raw_post(session, base, data.specs["T/0"])

    raw = with_sim(data, faulty(FaultKind.CUT_JSON), body)
    assert raw.error is None and raw.headers.get("Connection", "").lower() == "close"
    *whole, last = raw.body.split(b"\n\n")
    assert len(whole) >= 2  # the role chunk and at least one content chunk
    for event in whole:
        json.loads(event.removeprefix(b"data: "))
    assert re.fullmatch(rb'data: \{.*"choices":\[\{"index":0,"delta":\{"content":"[^"]*', last)


def test_malformed_json_event_mid_stream(data: Fixture) -> None:
    async def body(base: str, session: aiohttp.ClientSession) -> Raw:
        return await raw_post(session, base, data.specs["T/0"])

    raw = with_sim(data, faulty(FaultKind.MALFORMED_JSON), body)
    events = events_of(raw.body)
    assert raw.error is None and events[-1] == b"data: [DONE]"
    bad = events.index(b"data: {not json}")
    assert b'"content":"' in events[bad - 1] and b'"content":"' in events[bad + 1]
    text = "".join(
        json.loads(e[6:])["choices"][0]["delta"].get("content") or ""
        for e in events[:-3]
        if e != b"data: {not json}"
    )
    assert code_of(text) == data.solutions_by_id["T/0"]


def test_invalid_utf8_event_mid_stream(data: Fixture) -> None:
    async def body(base: str, session: aiohttp.ClientSession) -> Raw:
        return await raw_post(session, base, data.specs["T/0"])

    raw = with_sim(data, faulty(FaultKind.INVALID_UTF8), body)
    events = events_of(raw.body)
    assert raw.error is None and events[-1] == b"data: [DONE]"
    bad = []
    for event in events:
        try:
            event.decode("utf-8")
        except UnicodeDecodeError:
            bad.append(event)
    assert len(bad) == 1 and bad[0].startswith(b"data: {") and b"\xff" in bad[0]


def test_huge_line_is_one_multi_megabyte_event(data: Fixture) -> None:
    async def body(base: str, session: aiohttp.ClientSession) -> Raw:
        return await raw_post(session, base, data.specs["T/0"])

    raw = with_sim(data, faulty(FaultKind.HUGE_LINE), body)
    events = events_of(raw.body)
    assert raw.error is None and events[-1] == b"data: [DONE]"
    (huge,) = [event for event in events if len(event) > 1 << 20]
    assert b"\n" not in huge
    assert json.loads(huge[6:])["choices"][0]["delta"]["content"] == "x" * HUGE_LINE_BYTES


def test_stall_sends_one_chunk_then_nothing_and_lets_go(data: Fixture) -> None:
    """Role chunk and one content chunk, then nothing until the client leaves, when the
    handler returns (so the sim's shutdown does not wait for it)."""
    app = TrackedApp(faulty(FaultKind.STALL), data)

    def two_events(got: bytes) -> bool:
        return len(events_of(http_response(got)[1])) >= 2

    async def body(base: str, session: aiohttp.ClientSession) -> Any:
        got = await raw_exchange(base, data.specs["T/0"], until=two_events)
        await app.handler_returned()
        return got

    got, error = with_sim(data, app, body)
    headers, stream, whole = http_response(got)
    assert headers["content-type"] == "text/event-stream"
    assert error is None and not whole  # the sim closed the stream unfinished
    events = events_of(stream)
    assert len(events) == 2  # the role chunk and one content chunk: nothing after them
    assert json.loads(events[0][6:])["choices"][0]["delta"]["role"] == "assistant"
    assert json.loads(events[1][6:])["choices"][0]["delta"]["content"]


def test_no_done_sends_keepalives_and_never_ends(data: Fixture) -> None:
    """Every content chunk, then a ``: ping`` comment every second and never a finish, usage
    or ``[DONE]``, until the client leaves, when the handler returns."""
    app = TrackedApp(faulty(FaultKind.NO_DONE), data)

    async def body(base: str, session: aiohttp.ClientSession) -> Any:
        got = await raw_exchange(base, data.specs["T/0"], until=lambda got: b": ping" in got)
        await app.handler_returned()
        return got

    got, error = with_sim(data, app, body)
    _, stream, whole = http_response(got)
    assert error is None and not whole
    events = events_of(stream)
    assert events[-1] == b": ping"
    chunks = [json.loads(e[6:]) for e in events if e.startswith(b"data: ")]
    assert all(e in (b": ping", b"data: [DONE]") or e.startswith(b"data: {") for e in events)
    assert b"data: [DONE]" not in events
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks)
    assert not any("usage" in c for c in chunks)
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    assert code_of(text) == data.solutions_by_id["T/0"]  # the pings come after all content


@pytest.mark.parametrize("stream", [True, False])
def test_empty_and_no_code_replies_are_well_formed(data: Fixture, stream: bool) -> None:
    async def body(base: str, session: aiohttp.ClientSession) -> Completion:
        return await complete(session, base, conversation(data.specs["T/0"], 0), stream=stream)

    empty = with_sim(data, faulty(FaultKind.EMPTY), body)
    assert empty.status == HTTPStatus.OK and empty.text == "" and empty.finish_reason == "stop"
    assert empty.usage["completion_tokens"] == 0
    if stream:
        assert empty.content_chunks == [] and empty.events[-1] == "[DONE]"
    prose = with_sim(data, faulty(FaultKind.NO_CODE), body)
    assert prose.text == NO_CODE_REPLY and "`" not in prose.text
    assert prose.finish_reason == "stop"


def test_non_streamed_faults_in_body_form(data: Fixture) -> None:
    spec = data.specs["T/0"]

    def post(kind: FaultKind) -> Raw:
        async def body(base: str, session: aiohttp.ClientSession) -> Raw:
            return await raw_post(session, base, spec, stream=False)

        return with_sim(data, faulty(kind), body)

    def leave(kind: FaultKind, until: Callable[[bytes], bool]) -> tuple[dict[str, str], bytes]:
        """Read until ``until``, leave; the headers and the body, once the handler returned."""
        app = TrackedApp(faulty(kind), data)

        async def body(base: str, session: aiohttp.ClientSession) -> Any:
            got, error = await raw_exchange(base, spec, stream=False, until=until)
            await app.handler_returned()
            assert error is None
            return got

        headers, content, _ = http_response(with_sim(data, app, body))
        return headers, content

    raw = post(FaultKind.CUT_JSON)
    assert raw.error is None and int(raw.headers["Content-Length"]) == len(raw.body)
    with pytest.raises(json.JSONDecodeError):
        json.loads(raw.body)
    assert post(FaultKind.MALFORMED_JSON).body == b"{not json}"
    with pytest.raises(UnicodeDecodeError):
        post(FaultKind.INVALID_UTF8).body.decode("utf-8")
    huge = post(FaultKind.HUGE_LINE)
    assert len(json.loads(huge.body)["choices"][0]["message"]["content"]) == HUGE_LINE_BYTES
    reset = post(FaultKind.RESET)
    assert isinstance(reset.error, aiohttp.ClientPayloadError) and reset.body
    # stall: the headers (no Content-Length), then nothing until the client leaves
    headers, stalled = leave(FaultKind.STALL, lambda got: b"\r\n\r\n" in got)
    assert stalled == b"" and "content-length" not in headers
    # no_done: all but the body's last byte, then a space every second
    headers, trickle = leave(FaultKind.NO_DONE, lambda got: http_response(got)[1].endswith(b"} "))
    assert trickle.startswith(b'{"id":') and trickle.endswith(b"} ")
    assert "content-length" not in headers
    completion = json.loads(trickle.rstrip(b" ") + b"}")
    assert code_of(completion["choices"][0]["message"]["content"]) == data.solutions_by_id["T/0"]


def test_stats_count_requests_and_injected_faults(data: Fixture) -> None:
    faults = ((FaultKind.HTTP_503, 0.4), (FaultKind.EMPTY, 0.2))
    profile = SimProfile(seed=3, ttft_ms=0, itl_ms=0, faults=faults)

    async def body(base: str, session: aiohttp.ClientSession) -> tuple[list[Completion], Any]:
        results = [
            await complete(session, base, conversation(data.specs["T/1"], 0), stream=False)
            for _ in range(30)
        ]
        async with session.get(f"{base}/sim/stats") as resp:
            return results, await resp.json()

    results, stats = with_sim(data, profile, body)
    expected = [pick_fault(faults, 3, n) for n in range(1, 31)]
    unavailable = [r.status == HTTPStatus.SERVICE_UNAVAILABLE for r in results]
    assert unavailable == [kind is FaultKind.HTTP_503 for kind in expected]
    empty = [r.status == HTTPStatus.OK and r.text == "" for r in results]
    assert empty == [kind is FaultKind.EMPTY for kind in expected]
    assert stats == {
        "requests": 30,
        "faults": {
            k: expected.count(k) for k in (FaultKind.HTTP_503, FaultKind.EMPTY) if k in expected
        },
    }


# ---- the lean HTTP/1.1 server ------------------------------------------------------------


async def raw_http(base: str, payload: bytes, until: Callable[[bytes], bool]) -> bytes:
    """Write ``payload`` on a fresh connection; read until ``until(bytes so far)`` holds or the
    server closes the connection."""
    url = urllib.parse.urlsplit(base)
    reader, writer = await asyncio.open_connection(url.hostname, url.port)
    got = bytearray()
    try:
        writer.write(payload)
        async with asyncio.timeout(HANG_GUARD):
            while not until(bytes(got)):
                piece = await reader.read(65536)
                if not piece:
                    break
                got += piece
    finally:
        writer.close()
    return bytes(got)


def chat_request(spec: str, stream: bool = True, extra_headers: str = "") -> bytes:
    body = json.dumps({"messages": conversation(spec, 0), "stream": stream}).encode()
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: sim\r\nContent-Type: application/json\r\n"
        f"{extra_headers}Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def test_routes_404_405_head_and_query(data: Fixture) -> None:
    async def body(base: str, session: aiohttp.ClientSession) -> list[Any]:
        root = base.removesuffix("/v1")
        out = []
        for method, path in [
            ("GET", "/v1/nope"),
            ("GET", "/v1/chat/completions"),
            ("POST", "/v1/models"),
            ("HEAD", "/health"),
            ("GET", "/health"),
            ("GET", "/v1/models?x=1"),
        ]:
            async with session.request(method, root + path) as resp:
                out.append((resp.status, dict(resp.headers), await resp.read()))
        return out

    missing, get_chat, post_models, head, health, query = with_sim(data, PROFILE, body)
    assert missing[0] == HTTPStatus.NOT_FOUND and missing[2] == b"404: Not Found"
    assert get_chat[0] == HTTPStatus.METHOD_NOT_ALLOWED and get_chat[1]["Allow"] == "POST"
    assert post_models[0] == HTTPStatus.METHOD_NOT_ALLOWED and post_models[1]["Allow"] == "GET"
    assert head[0] == HTTPStatus.OK and head[2] == b"" and head[1]["Content-Length"] == "2"
    assert health[0] == HTTPStatus.OK and health[2] == b"ok"
    assert health[1]["Content-Type"].startswith("text/plain") and "Date" in health[1]
    assert query[0] == HTTPStatus.OK and json.loads(query[2])["object"] == "list"


def test_keep_alive_and_pipelined_requests(data: Fixture) -> None:
    """Requests written back to back on one connection are answered in order, each whole."""
    health = b"GET /health HTTP/1.1\r\nHost: sim\r\n\r\n"
    spec = data.specs["T/0"]
    payload = health + chat_request(spec) + health + chat_request(spec, stream=False) + health

    async def body(base: str, session: aiohttp.ClientSession) -> bytes:
        return await raw_http(base, payload, lambda got: got.count(b"\r\n\r\nok") == 3)

    got = with_sim(data, PROFILE, body)
    assert got.count(b"HTTP/1.1 200 OK\r\n") == 5
    stream_end = got.index(b"data: [DONE]\n\n\r\n0\r\n\r\n")
    second_health = got.index(b"\r\n\r\nok", got.index(b"\r\n\r\nok") + 1)
    assert stream_end < second_health < got.index(b'"object":"chat.completion"')


def test_bad_http_is_400_and_closes(data: Fixture) -> None:
    async def body(base: str, session: aiohttp.ClientSession) -> bytes:
        return await raw_http(base, b"NOT HTTP AT ALL\r\n\r\n", lambda got: False)

    got = with_sim(data, PROFILE, body)
    assert got.startswith(b"HTTP/1.1 400 Bad Request\r\n") and b"Connection: close" in got


def test_connection_close_and_expect_continue(data: Fixture) -> None:
    """``Connection: close`` is honoured (the sim ends the connection after the response);
    ``Expect: 100-continue`` gets its interim answer before the body is sent."""
    spec = data.specs["T/0"]

    async def body(base: str, session: aiohttp.ClientSession) -> tuple[bytes, bytes]:
        closing = await raw_http(
            base, chat_request(spec, False, "Connection: close\r\n"), lambda got: False
        )
        request = chat_request(spec, False, "Expect: 100-continue\r\n")
        head, _, rest = request.partition(b"\r\n\r\n")
        url = urllib.parse.urlsplit(base)
        reader, writer = await asyncio.open_connection(url.hostname, url.port)
        try:
            writer.write(head + b"\r\n\r\n")
            async with asyncio.timeout(HANG_GUARD):
                interim = await reader.readuntil(b"\r\n\r\n")
                writer.write(rest)
                final = await reader.readuntil(b"\r\n\r\n")
        finally:
            writer.close()
        return closing, interim + final

    closing, continued = with_sim(data, PROFILE, body)
    assert closing.startswith(b"HTTP/1.1 200 OK\r\n") and b"Connection: close\r\n" in closing
    assert json.loads(http_response(closing)[1])["object"] == "chat.completion"
    assert continued.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n")


def test_start_delay_shows_between_accepted_and_started(data: Fixture) -> None:
    profile = SimProfile(p_first=1.0, p_recover=0.0, ttft_ms=0, itl_ms=0, start_delay_ms=50)

    async def body(base: str, session: aiohttp.ClientSession) -> list[Completion]:
        messages = conversation(data.specs["T/0"], 0)
        return [await complete(session, base, messages, stream=s) for s in (True, False)]

    for result in with_sim(data, profile, body):
        timing = result.timing
        assert result.status == HTTPStatus.OK and code_of(result.text)
        assert timing["started"] - timing["accepted"] >= 0.05
        assert timing["started"] <= timing["first_byte"] <= timing["last_byte"]


def test_start_delay_blocks_no_other_request(data: Fixture) -> None:
    """A chat request waiting out a long start delay holds nothing up, and ends when its
    client leaves."""
    app = TrackedApp(SimProfile(ttft_ms=0, itl_ms=0, start_delay_ms=600_000), data)

    async def body(base: str, session: aiohttp.ClientSession) -> bytes:
        url = urllib.parse.urlsplit(base)
        _, writer = await asyncio.open_connection(url.hostname, url.port)
        writer.write(chat_request(data.specs["T/0"]))
        await writer.drain()
        health = b"GET /health HTTP/1.1\r\nHost: sim\r\n\r\n"
        got = await raw_http(base, health, lambda got: got.endswith(b"\r\n\r\nok"))
        writer.close()
        await app.handler_returned()
        return got

    assert with_sim(data, app, body).startswith(b"HTTP/1.1 200 OK\r\n")


def test_workers_share_request_numbers_and_stats(data: Fixture) -> None:
    """``--workers 2``: two processes on one port, request n meets the fault of request n of
    a single process, and /v1/sim/stats counts both workers' requests."""
    faults = ((FaultKind.HTTP_503, 0.5),)
    proc = _launch(
        "--port", "0", "--dataset", str(data.tasks), "--solutions", str(data.solutions),
        "--profile", "ttft_ms=0,itl_ms=0,seed=4,faults=http_503:0.5", "--workers", "2",
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("FASTAGENT_SIM_READY "), proc.stderr.read()
        base = line.split()[1]

        async def run() -> tuple[list[int], set[str], Any]:
            connector = aiohttp.TCPConnector(force_close=True)  # a new connection each
            async with aiohttp.ClientSession(connector=connector) as session:
                results = [
                    await complete(session, base, conversation(data.specs["T/1"], 0), False)
                    for _ in range(24)
                ]
                async with session.get(f"{base}/sim/stats") as resp:
                    stats = await resp.json()
            ids = {r.body["id"].rpartition("x")[0] for r in results if r.status == HTTPStatus.OK}
            return [r.status for r in results], ids, stats

        statuses, id_prefixes, stats = asyncio.run(run())
        expected = [pick_fault(faults, 4, n) for n in range(1, 25)]
        assert statuses == [503 if kind else 200 for kind in expected]
        assert stats == {"requests": 24, "faults": {"http_503": expected.count(FaultKind.HTTP_503)}}
        assert len(id_prefixes) == 2  # both workers answered (each id holds its pid)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=HANG_GUARD)
        assert proc.returncode == ExitCode.OK, err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_body_over_the_limit_is_413(data: Fixture, monkeypatch: pytest.MonkeyPatch) -> None:
    from fastagent.sim import conn

    monkeypatch.setattr(conn, "MAX_BODY", 100)

    async def body(base: str, session: aiohttp.ClientSession) -> bytes:
        return await raw_http(base, chat_request(data.specs["T/0"]), lambda got: False)

    got = with_sim(data, PROFILE, body)
    assert got.startswith(b"HTTP/1.1 413 Request Entity Too Large\r\n")
    assert b"Connection: close\r\n" in got


def test_http_1_0_stream_is_unframed_and_ends_with_the_connection(data: Fixture) -> None:
    request = chat_request(data.specs["T/0"]).replace(b" HTTP/1.1\r\n", b" HTTP/1.0\r\n", 1)

    async def body(base: str, session: aiohttp.ClientSession) -> bytes:
        return await raw_http(base, request, lambda got: False)  # until the sim closes

    profile = SimProfile(p_first=1.0, p_recover=0.0, ttft_ms=0, itl_ms=0)
    head, _, stream = with_sim(data, profile, body).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n") and b"Connection: close" in head
    assert b"Transfer-Encoding" not in head and b"Content-Length" not in head
    events = events_of(stream)
    assert events[-1] == b"data: [DONE]"
    text = "".join(
        json.loads(e[6:])["choices"][0]["delta"].get("content") or ""
        for e in events[:-1]
        if json.loads(e[6:])["choices"]
    )
    assert code_of(text) == data.solutions_by_id["T/0"]
