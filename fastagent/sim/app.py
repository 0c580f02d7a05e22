"""A simulated OpenAI-compatible chat endpoint: the benchmark's default model.

It runs in its own process so that its CPU and memory never count against the runtime
being measured, and it is cheap enough to serve thousands of concurrent streams::

    $ fastagent sim --port 8800 --ttft-ms 200
    FASTAGENT_SIM_READY http://127.0.0.1:8800/v1

    $ fastagent sim --port 0 --profile seed=3,p_first=0.9,itl_ms=0
    $ fastagent sim --port 0 --fault http_503:0.2 --fault reset:0.05

The sim recognises a HumanEval task by finding the task's ``spec`` verbatim in the first
user message, and answers from a fixed plan: with ``N`` tasks in the solutions file, a
``random.Random(seed)`` permutation of their ids makes the first ``round(p_first * N)``
right on every attempt ("first"), the next ``round(p_recover * N)`` wrong on the first
attempt and right once the conversation holds an assistant message ("recover"), and the
rest wrong on every attempt ("wrong"). A wrong answer is the task's prompt with
``raise NotImplementedError("simulated wrong answer")`` as the body, so every test fails.

Streams wait ``ttft_ms`` from the request's arrival before the role chunk and the first
content chunk, then follow a schedule: content chunk ``i`` is due ``i * itl_ms`` after the
first, so timer slack never accumulates (a late chunk goes out at once). Each SSE event
is its own write; after the finish chunk there is always a usage chunk (``choices: []``),
then ``data: [DONE]``.

Endpoints: ``GET /v1/models``, ``GET /v1/sim/plan``, ``GET /v1/sim/stats``,
``POST /v1/chat/completions``
(streamed or not) and ``GET /health``. Both kinds of completion carry
``fastagent_timing`` ({"received", "first_byte", "last_byte"}, ``time.monotonic()``
seconds, shared with the client on Linux) and the header ``X-Fastagent-Received``.

Fault injection (``--fault KIND[:RATE]``, repeatable, or the profile key
``faults=KIND:RATE+KIND:RATE``) makes the endpoint misbehave on purpose, to test how a
runtime copes. Each valid chat request ``n`` (counted from 1 since the sim started) draws
each configured fault in order with a ``random.Random(f"{seed}:{n}")`` and the first whose
draw falls under its rate hits that request, so a run's sequence of faults is reproducible
(which task meets request ``n`` still depends on arrival order). The kinds:

``http_429``
    429 with ``Retry-After: 1`` and an OpenAI error body.
``http_500``, ``http_502``, ``http_503``
    That status with an OpenAI error body.
``refuse``
    The connection is closed once the request has been read, with no response at all. A
    true TCP refusal cannot be decided per request (the client's pooled connections are
    already open): point a client at a closed port for that.
``reset``
    Headers and about half the content chunks, then a TCP reset (``SO_LINGER`` 0).
``cut_json``
    Half the content chunks, then an event cut off inside its JSON
    (``data: {..."delta":{"content":"ab``), then the end of the body, and the connection
    is closed.
``malformed_json``
    ``data: {not json}`` halfway through, then the rest of the stream as usual.
``stall``
    Headers, the role chunk and one content chunk, then nothing until the client leaves.
``huge_line``
    Halfway through, one content event of 8 MiB written without a line end until its
    last byte, then the rest of the stream as usual.
``invalid_utf8``
    Halfway through, a content event whose JSON string holds invalid UTF-8, then the rest.
``empty``
    A well-formed completion with no content: role chunk, finish, usage, ``[DONE]``.
``no_code``
    A well-formed completion of prose without a code block.
``no_done``
    All content chunks, then neither finish, usage nor ``[DONE]``: the stream stays open
    with a ``: ping`` comment every second until the client leaves, so only a deadline on
    the whole call ends it.

A non-streamed request meets the same faults in body form: ``reset`` sends half the body
then resets, ``cut_json`` sends a body cut in half (its Content-Length matching),
``malformed_json`` the body ``{not json}``, ``huge_line`` a valid body with 8 MiB of
content, ``invalid_utf8`` a body with invalid UTF-8 in the content, ``stall`` headers only,
``no_done`` all but the body's last byte followed by a space every second. ``GET
/v1/sim/stats`` reports the chat requests served and the faults injected, by kind.

In-process use (tests)::

    runner, base_url = await start_sim(SimProfile(ttft_ms=0), tasks_path, solutions_path)
    ...
    await runner.cleanup()
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import math
import os
import random
import re
import resource
import signal
import socket
import struct
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
import orjson

from ..dataset import DATASET_NAME, SOLUTIONS_NAME, data_path
from ..errors import SimDataError
from ..verify import WRONG_ANSWER_MARKER
from .launcher import ready_line

if TYPE_CHECKING:
    from aiohttp import web

__all__ = [
    "FAULT_KINDS",
    "FIRST",
    "PROFILE_KEYS",
    "RECOVER",
    "WRONG",
    "SimDataError",
    "SimProfile",
    "add_arguments",
    "build_app",
    "main",
    "parse_fault",
    "parse_faults",
    "parse_profile",
    "pick_fault",
    "plan",
    "profile_from_args",
    "start_sim",
    "tokenize",
    "wrong_code",
]

FIRST = "first"
RECOVER = "recover"
WRONG = "wrong"
WRONG_BODY = f'raise NotImplementedError("{WRONG_ANSWER_MARKER}")'
UNKNOWN_REPLY = (
    "I could not find a task in this prompt. Please include the function signature and "
    "docstring you would like me to implement.\n"
)
_FIRST_TEMPLATE = (
    "Here is the implementation.\n\n```python\n{code}```\n\n"
    "It handles the edge cases in the docstring.\n"
)
_RETRY_TEMPLATE = (
    "Here is the corrected implementation.\n\n```python\n{code}```\n\n"
    "This version addresses the failing test from your feedback.\n"
)

NO_CODE_REPLY = (
    "I looked at the function and the docstring. The approach is to walk through the "
    "input once, keep the running result in a local variable and return it at the end, "
    "taking care of the empty input and the edge cases the examples show.\n"
)

# kind -> (status, OpenAI error type, message)
HTTP_FAULTS: dict[str, tuple[int, str, str]] = {
    "http_429": (
        429,
        "requests",
        "Rate limit reached for requests (simulated fault http_429). Please try again in 1s.",
    ),
    "http_500": (
        500,
        "server_error",
        "The server had an error while processing your request (simulated fault http_500).",
    ),
    "http_502": (502, "server_error", "Bad gateway (simulated fault http_502)."),
    "http_503": (
        503,
        "server_error",
        "The engine is currently overloaded, please try again later (simulated fault http_503).",
    ),
}
FAULT_KINDS: tuple[str, ...] = (
    *HTTP_FAULTS,
    "refuse",
    "reset",
    "cut_json",
    "malformed_json",
    "stall",
    "huge_line",
    "invalid_utf8",
    "empty",
    "no_code",
    "no_done",
)
# Faults that strike partway through a stream, before the content chunk at index
# max(1, n_chunks // 2) (or after the last one when there are fewer).
_MID_STREAM = frozenset({"reset", "cut_json", "malformed_json", "huge_line", "invalid_utf8"})
HUGE_LINE_BYTES = 8 << 20
_HUGE_PIECE = b"x" * (256 << 10)
_KEEPALIVE_S = 1.0
_DISCONNECT_POLL_S = 0.05
_DISCONNECT_POLL_MAX_S = 0.5
_RESET_GRACE_S = 0.01

_LISTEN_BACKLOG = 16384
_SHUTDOWN_TIMEOUT = 2.0
_MAX_BODY = 64 * 1024 * 1024
_CACHE_LIMIT = 8192

_TOKEN_RE = re.compile(r"\s*\S{1,4}|\s+")
_DEF_RE = re.compile(r"\bdef\s+([A-Za-z_]\w*)\s*\(")


class SimProfile(msgspec.Struct, frozen=True):
    """How the simulated model behaves: its accuracy, its speed and the faults it injects."""

    seed: int = 0
    p_first: float = 0.87
    p_recover: float = 0.06
    ttft_ms: float = 50.0
    itl_ms: float = 2.0
    tokens_per_chunk: int = 1
    model: str = "fastagent-sim"
    faults: tuple[tuple[str, float], ...] = ()

    def __post_init__(self) -> None:
        msgspec.structs.force_setattr(self, "faults", _check_faults(self.faults))
        for key in ("p_first", "p_recover"):
            value = getattr(self, key)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"profile key {key!r} must be within [0, 1], got {value!r}")
        if self.p_first + self.p_recover > 1.0 + 1e-9:
            raise ValueError(
                f"profile keys 'p_first' + 'p_recover' must not exceed 1, "
                f"got {self.p_first!r} + {self.p_recover!r}"
            )
        for key in ("ttft_ms", "itl_ms"):
            value = getattr(self, key)
            if not (value >= 0.0 and math.isfinite(value)):
                raise ValueError(f"profile key {key!r} must be a finite number >= 0, got {value!r}")
        if self.tokens_per_chunk < 1:
            raise ValueError(
                f"profile key 'tokens_per_chunk' must be >= 1, got {self.tokens_per_chunk!r}"
            )
        if not self.model:
            raise ValueError("profile key 'model' must not be empty")

    def as_dict(self) -> dict[str, Any]:
        return msgspec.structs.asdict(self)


def _check_faults(faults: Any) -> tuple[tuple[str, float], ...]:
    """``faults`` as a tuple of ``(kind, rate)`` with float rates; ValueError when invalid."""
    if isinstance(faults, str | bytes) or not isinstance(faults, Iterable):
        raise ValueError(f"profile key 'faults' must be (kind, rate) pairs, got {faults!r}")
    checked: list[tuple[str, float]] = []
    for item in faults:
        try:
            kind, rate = item
        except (TypeError, ValueError):
            raise ValueError(f"fault {item!r} is not a (kind, rate) pair") from None
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault {kind!r} (kinds: {', '.join(FAULT_KINDS)})")
        if isinstance(rate, bool) or not isinstance(rate, int | float):
            raise ValueError(f"fault {kind!r}: rate must be a number, got {rate!r}")
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"fault {kind!r}: rate must be within [0, 1], got {rate!r}")
        if any(kind == seen for seen, _ in checked):
            raise ValueError(f"fault {kind!r} is given twice")
        checked.append((kind, float(rate)))
    return tuple(checked)


def parse_fault(text: str) -> tuple[str, float]:
    """Parse ``"KIND"`` or ``"KIND:RATE"`` (RATE in [0, 1], default 1) into ``(kind, rate)``."""
    kind, sep, raw = text.strip().partition(":")
    kind = kind.strip().replace("-", "_")
    rate = 1.0
    if sep:
        try:
            rate = float(raw)
        except ValueError:
            raise ValueError(
                f"fault {kind!r}: rate must be a number, got {raw.strip()!r}"
            ) from None
    return _check_faults([(kind, rate)])[0]


def parse_faults(text: str) -> tuple[tuple[str, float], ...]:
    """Parse ``"KIND[:RATE]+KIND[:RATE]..."`` (the profile's ``faults`` value); ``""`` is none."""
    return _check_faults([parse_fault(item) for item in text.split("+") if item.strip()])


def pick_fault(faults: tuple[tuple[str, float], ...], seed: int, n: int) -> str | None:
    """The fault that hits chat request ``n`` (1-based), or None: the first whose draw hits.

    Each request has its own ``random.Random(f"{seed}:{n}")``, so the decision for request
    ``n`` depends on nothing else, and a fault of rate 1 always hits, of rate 0 never.
    """
    if not faults:
        return None
    rng = random.Random(f"{seed}:{n}")
    for kind, rate in faults:
        if rng.random() < rate:
            return kind
    return None


_PROFILE_TYPES: dict[str, Any] = {f.name: f.type for f in msgspec.structs.fields(SimProfile)}
PROFILE_KEYS: tuple[str, ...] = tuple(_PROFILE_TYPES)


def parse_profile(text: str, base: SimProfile | None = None) -> SimProfile:
    """Parse ``"key=value,key=value"`` (dashes in keys allowed) over ``base`` or the defaults.

    ``faults`` takes ``KIND[:RATE]`` items joined by ``+``, e.g. ``faults=http_429:0.2+reset``.
    """
    valid = ", ".join(PROFILE_KEYS)
    values = (base or SimProfile()).as_dict()
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        key, sep, raw = item.partition("=")
        key = key.strip().replace("-", "_")
        raw = raw.strip()
        if not sep:
            raise ValueError(f"profile item {item!r} is not KEY=VALUE (valid keys: {valid})")
        kind = _PROFILE_TYPES.get(key)
        if kind is None:
            raise ValueError(f"unknown profile key {key!r} (valid keys: {valid})")
        if key == "faults":
            values[key] = parse_faults(raw)
            continue
        try:
            values[key] = kind(raw)
        except ValueError:
            expected = {int: "an integer", float: "a number", str: "a string"}[kind]
            raise ValueError(f"profile key {key!r} expects {expected}, got {raw!r}") from None
    return SimProfile(**values)


def plan(profile: SimProfile, task_ids: Iterable[str]) -> dict[str, str]:
    """Map each task id to its fixed outcome: ``"first"``, ``"recover"`` or ``"wrong"``.

    Counts are exact: a ``random.Random(profile.seed)`` shuffle of the ids (in the order
    given, duplicates dropped) puts ``round(p_first * N)`` first, ``round(p_recover * N)``
    next, and the rest are wrong. The result keeps the given order.
    """
    ids = list(dict.fromkeys(task_ids))
    order = ids[:]
    random.Random(profile.seed).shuffle(order)
    n = len(order)
    n_first = min(n, round(profile.p_first * n))
    n_recover = min(n - n_first, round(profile.p_recover * n))
    outcome = {tid: FIRST for tid in order[:n_first]}
    outcome.update((tid, RECOVER) for tid in order[n_first : n_first + n_recover])
    outcome.update((tid, WRONG) for tid in order[n_first + n_recover :])
    return {tid: outcome[tid] for tid in ids}


def tokenize(text: str) -> list[str]:
    """Split text into ~4-character "tokens" that concatenate back to ``text``."""
    return _TOKEN_RE.findall(text)


def wrong_code(spec: str, entry_point: str) -> str:
    """The task's prompt completed with a body that raises, keeping any helpers intact."""
    code = spec if spec.endswith("\n") else spec + "\n"
    defs = list(re.finditer(rf"^([ \t]*)def\s+{re.escape(entry_point)}\s*\(", code, re.M))
    def_indent = defs[-1].group(1) if defs else ""
    last = next((line for line in reversed(code.splitlines()) if line.strip()), "")
    indent = last[: len(last) - len(last.lstrip())]
    if len(indent) <= len(def_indent):
        indent = def_indent + "    "
    candidates = [
        f"{code}{indent}{WRONG_BODY}\n",
        f"{code}{def_indent}    {WRONG_BODY}\n",
        f"def {entry_point}(*args, **kwargs):\n    {WRONG_BODY}\n",
    ]
    for candidate in candidates:
        try:
            compile(candidate, "<wrong>", "exec")
        except (SyntaxError, ValueError):
            continue
        return candidate
    return candidates[-1]


_json_str = msgspec.json.Encoder().encode


class _Reply:
    """A canned reply, tokenised and pre-encoded once."""

    __slots__ = ("chunks", "text", "tokens")

    def __init__(self, text: str, tokens_per_chunk: int) -> None:
        self.text = text
        self.tokens = tokenize(text)
        step = tokens_per_chunk
        self.chunks = [
            _json_str("".join(self.tokens[i : i + step])) for i in range(0, len(self.tokens), step)
        ]


class _SpecRow(msgspec.Struct):
    id: str
    spec: str


class _SolutionRow(msgspec.Struct):
    id: str
    entry_point: str
    solution: str


def _load_rows(path: Path, row_type: type, what: str) -> list[Any]:
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        raise SimDataError(f"{what} file not found: {path}") from None
    except OSError as exc:
        raise SimDataError(f"cannot read {what} file {path}: {exc.strerror or exc}") from None
    try:
        rows = msgspec.json.decode(raw, type=list[row_type])
    except msgspec.DecodeError as exc:
        raise SimDataError(f"malformed {what} file {path}: {exc}") from None
    if not rows:
        raise SimDataError(f"{what} file {path} holds no tasks")
    return rows


class _TaskIndex:
    """Finds which task's spec occurs verbatim in a prompt, via the ``def name(`` lines."""

    def __init__(self, specs: dict[str, str]) -> None:
        self._by_name: dict[str, list[tuple[str, str]]] = {}
        self._nameless: list[tuple[str, str]] = []
        for tid, spec in specs.items():
            needle = spec.strip()
            names = set(_DEF_RE.findall(needle))
            for name in names:
                self._by_name.setdefault(name, []).append((tid, needle))
            if not names:
                self._nameless.append((tid, needle))
        self._cache: dict[str, str | None] = {}

    def find(self, text: str) -> str | None:
        try:
            return self._cache[text]
        except KeyError:
            pass
        best: tuple[str, str] | None = None
        seen: set[str] = set()
        for name in _DEF_RE.findall(text):
            for tid, needle in self._by_name.get(name, ()):
                if tid in seen:
                    continue
                seen.add(tid)
                if needle in text and (best is None or len(needle) > len(best[1])):
                    best = (tid, needle)
        if best is None:
            for tid, needle in self._nameless:
                if needle in text and (best is None or len(needle) > len(best[1])):
                    best = (tid, needle)
        found = best[0] if best else None
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()
        self._cache[text] = found
        return found


class _SimData:
    """Everything the handlers need, computed once at startup."""

    def __init__(self, profile: SimProfile, tasks_path: Path, solutions_path: Path) -> None:
        specs_rows: list[_SpecRow] = _load_rows(tasks_path, _SpecRow, "dataset")
        solution_rows: list[_SolutionRow] = _load_rows(solutions_path, _SolutionRow, "solutions")
        solutions = {row.id: row for row in solution_rows}
        specs = {row.id: row.spec for row in specs_rows}
        missing = [tid for tid in specs if tid not in solutions]
        if missing:
            shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
            raise SimDataError(
                f"{len(missing)} dataset task(s) have no entry in {solutions_path}: {shown}"
            )
        self.profile = profile
        self.plan = plan(profile, solutions)
        self.index = _TaskIndex(specs)
        tpc = profile.tokens_per_chunk
        self.replies: dict[tuple[str, bool], _Reply] = {}
        for tid, spec in specs.items():
            row = solutions[tid]
            right = row.solution if row.solution.endswith("\n") else row.solution + "\n"
            wrong = wrong_code(spec, row.entry_point)
            outcome = self.plan[tid]
            first_code = right if outcome == FIRST else wrong
            retry_code = wrong if outcome == WRONG else right
            self.replies[tid, False] = _Reply(_FIRST_TEMPLATE.format(code=first_code), tpc)
            self.replies[tid, True] = _Reply(_RETRY_TEMPLATE.format(code=retry_code), tpc)
        self.unknown = _Reply(UNKNOWN_REPLY, tpc)
        self.empty = _Reply("", tpc)
        self.no_code = _Reply(NO_CODE_REPLY, tpc)
        self.model_json = _json_str(profile.model)
        self.models_body = orjson.dumps(
            {
                "object": "list",
                "data": [
                    {
                        "id": profile.model,
                        "object": "model",
                        "created": int(time.time()),
                        "owned_by": "fastagent",
                    }
                ],
            }
        )
        self.plan_body = orjson.dumps({"profile": profile.as_dict(), "plan": self.plan})


class _Message(msgspec.Struct):
    role: str
    content: str | list[Any] | None = None


class _ChatRequest(msgspec.Struct):
    messages: list[_Message]
    stream: bool | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None


_decode_request = msgspec.json.Decoder(_ChatRequest).decode


def _content_text(content: str | list[Any] | None) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "\n".join(
        part["text"]
        for part in content
        if isinstance(part, dict) and isinstance(part.get("text"), str)
    )


async def _gone_within(request: web.Request, seconds: float = math.inf) -> bool:
    """Wait up to ``seconds`` for the client to leave; True once it has.

    aiohttp does not cancel a handler when its client disconnects, so a handler that
    writes nothing polls the transport instead, ever less often (at most every 0.5 s, so
    thousands of stalled streams cost the sim little).
    """
    deadline = time.monotonic() + seconds
    poll = _DISCONNECT_POLL_S
    while True:
        transport = request.transport
        if transport is None or transport.is_closing():
            return True
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        await asyncio.sleep(min(poll, left))
        poll = min(poll * 2, _DISCONNECT_POLL_MAX_S)


def _reset(request: web.Request) -> None:
    """Drop the connection with a TCP RST (``SO_LINGER`` 0) rather than an orderly FIN."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


def _http_fault_body(kind: str) -> bytes:
    status, kind_type, message = HTTP_FAULTS[kind]
    code = "rate_limit_exceeded" if status == 429 else None
    error = {"message": message, "type": kind_type, "param": None, "code": code}
    return orjson.dumps({"error": error})


def build_app(
    profile: SimProfile, tasks_path: str | Path, solutions_path: str | Path
) -> web.Application:
    """Load the data and build the aiohttp application (raises SimDataError on bad data)."""
    from aiohttp import web

    data = _SimData(profile, Path(tasks_path), Path(solutions_path))
    ttft = profile.ttft_ms / 1000.0
    itl = profile.itl_ms / 1000.0
    tpc = profile.tokens_per_chunk
    ids = itertools.count(1)
    id_prefix = f"chatcmpl-sim{os.getpid():x}x".encode()
    json_headers = {"Content-Type": "application/json"}
    stream_tail = b'},"finish_reason":null}]}\n\n'
    done_event = b"data: [DONE]\n\n"
    monotonic = time.monotonic
    sleep = asyncio.sleep
    faults = profile.faults
    fault_bodies = {kind: _http_fault_body(kind) for kind in HTTP_FAULTS}
    stats: dict[str, Any] = {"requests": 0, "faults": dict.fromkeys(FAULT_KINDS, 0)}

    def bad_request(message: str) -> web.Response:
        body = {
            "error": {
                "message": message,
                "type": "invalid_request_error",
                "param": None,
                "code": None,
            }
        }
        return web.Response(status=400, body=orjson.dumps(body), headers=json_headers)

    async def models(request: web.Request) -> web.Response:
        return web.Response(body=data.models_body, headers=json_headers)

    async def sim_plan(request: web.Request) -> web.Response:
        return web.Response(body=data.plan_body, headers=json_headers)

    async def health(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def sim_stats(request: web.Request) -> web.Response:
        injected = {kind: n for kind, n in stats["faults"].items() if n}
        body = {"requests": stats["requests"], "faults": injected}
        return web.Response(body=orjson.dumps(body), headers=json_headers)

    def http_fault(kind: str, received_header: dict[str, str]) -> web.Response:
        headers = {**json_headers, **received_header}
        if kind == "http_429":
            headers["Retry-After"] = "1"
        return web.Response(status=HTTP_FAULTS[kind][0], body=fault_bodies[kind], headers=headers)

    async def faulty_body(
        request: web.Request, fault: str, raw: bytes, headers: dict[str, str]
    ) -> web.StreamResponse:
        """A non-streamed completion ``raw`` sent the way ``fault`` says."""
        resp = web.StreamResponse(headers=headers)
        pieces = 0
        if fault == "malformed_json":
            raw = b"{not json}"
        elif fault == "invalid_utf8":
            raw = raw.replace(b'"content":"', b'"content":"\xff\xfe not utf-8 \xc3\x28 ', 1)
        elif fault == "cut_json":
            raw = raw[: len(raw) // 2]
            resp.force_close()
        elif fault == "huge_line":
            pieces = HUGE_LINE_BYTES // len(_HUGE_PIECE)
        if fault not in ("stall", "no_done"):
            resp.content_length = len(raw) + pieces * len(_HUGE_PIECE)
        try:
            await resp.prepare(request)
            if fault == "stall":
                await _gone_within(request)
            elif fault == "no_done":
                await resp.write(raw[:-1])
                while not await _gone_within(request, _KEEPALIVE_S):
                    await resp.write(b" ")
            elif fault == "reset":
                await resp.write(raw[: len(raw) // 2])
                await sleep(_RESET_GRACE_S)
                _reset(request)
            elif pieces:
                start, _, end = raw.partition(b'"content":"')
                await resp.write(start + b'"content":"')
                for _ in range(pieces):
                    await resp.write(_HUGE_PIECE)
                await resp.write(end)
                await resp.write_eof()
            else:
                await resp.write(raw)
                await resp.write_eof()
        except ConnectionError:
            pass
        return resp

    async def inject(
        request: web.Request,
        resp: web.StreamResponse,
        fault: str,
        content_head: bytes,
        next_chunk: bytes | None,
        finish_event: bytes,
    ) -> bool:
        """Write a mid-stream fault; True when the stream ends with it."""
        if fault == "malformed_json":
            await resp.write(b"data: {not json}\n\n")
            return False
        if fault == "invalid_utf8":
            await resp.write(content_head + b'"\xff\xfe not utf-8 \xc3\x28"' + stream_tail)
            return False
        if fault == "huge_line":
            await resp.write(content_head + b'"')
            for _ in range(HUGE_LINE_BYTES // len(_HUGE_PIECE)):
                await resp.write(_HUGE_PIECE)
            await resp.write(b'"' + stream_tail)
            return False
        if fault == "cut_json":
            if next_chunk is not None:
                cut = content_head + next_chunk[: max(2, len(next_chunk) // 2)]
            else:
                cut = finish_event[: len(finish_event) // 2]
            await resp.write(cut)
            await resp.write_eof()
            return True
        await sleep(_RESET_GRACE_S)
        _reset(request)
        return True

    async def chat(request: web.Request) -> web.StreamResponse:
        received = monotonic()
        try:
            req = _decode_request(await request.read())
        except msgspec.DecodeError as exc:
            return bad_request(f"invalid request body: {exc}")
        if not req.messages:
            return bad_request("'messages' must be a non-empty array")
        max_tokens = req.max_tokens if req.max_tokens is not None else req.max_completion_tokens
        if max_tokens is not None and max_tokens < 1:
            return bad_request(f"'max_tokens' must be at least 1, got {max_tokens}")

        prompt_chars = 0
        attempt = 0
        first_user: str | None = None
        for message in req.messages:
            text = _content_text(message.content)
            prompt_chars += len(text)
            if message.role == "assistant":
                attempt += 1
            elif first_user is None and message.role == "user":
                first_user = text
        task_id = data.index.find(first_user) if first_user else None
        reply = data.replies[task_id, attempt > 0] if task_id is not None else data.unknown
        stats["requests"] = n_request = stats["requests"] + 1
        fault = pick_fault(faults, profile.seed, n_request) if faults else None
        if fault is not None:
            stats["faults"][fault] += 1
            if fault == "empty":
                reply = data.empty
            elif fault == "no_code":
                reply = data.no_code

        n_tokens = len(reply.tokens)
        finish = "stop"
        if max_tokens is not None and max_tokens < n_tokens:
            n_tokens = max_tokens
            finish = "length"
        usage = {
            "prompt_tokens": prompt_chars // 4,
            "completion_tokens": n_tokens,
            "total_tokens": prompt_chars // 4 + n_tokens,
        }
        n_full, rest = divmod(n_tokens, tpc)
        n_chunks = n_full + (1 if rest else 0)
        cid = id_prefix + b"%08x" % next(ids)
        created = int(time.time())
        received_header = {"X-Fastagent-Received": repr(received)}
        if fault in HTTP_FAULTS:
            return http_fault(fault, received_header)
        if fault == "refuse":
            transport = request.transport
            if transport is not None:
                transport.close()
            return web.Response()

        if not req.stream:
            delay = ttft + itl * max(0, n_chunks - 1) - (monotonic() - received)
            if delay > 0:
                await sleep(delay)
            text = reply.text if n_tokens == len(reply.tokens) else "".join(reply.tokens[:n_tokens])
            sent = monotonic()
            body = {
                "id": cid.decode(),
                "object": "chat.completion",
                "created": created,
                "model": data.profile.model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text},
                        "finish_reason": finish,
                    }
                ],
                "usage": usage,
                "fastagent_timing": {"received": received, "first_byte": sent, "last_byte": sent},
            }
            headers = {**json_headers, **received_header}
            if fault is not None and fault not in ("empty", "no_code"):
                if fault == "huge_line":
                    body["choices"][0]["message"]["content"] = ""  # type: ignore[index]
                return await faulty_body(request, fault, orjson.dumps(body), headers)
            return web.Response(body=orjson.dumps(body), headers=headers)

        chunks = reply.chunks[:n_full]
        if rest:
            chunks.append(_json_str("".join(reply.tokens[n_full * tpc : n_tokens])))
        head = (
            b'data: {"id":"'
            + cid
            + b'","object":"chat.completion.chunk","created":'
            + str(created).encode()
            + b',"model":'
            + data.model_json
            + b","
        )
        content_head = head + b'"choices":[{"index":0,"delta":{"content":'
        resp = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                **received_header,
            }
        )
        finish_event = (
            head
            + b'"choices":[{"index":0,"delta":{},"finish_reason":"'
            + finish.encode()
            + b'"}]}\n\n'
        )
        inject_at = -1
        if fault in _MID_STREAM:
            inject_at = min(len(chunks), max(1, len(chunks) // 2))
        if fault == "cut_json":
            resp.force_close()
        try:
            await resp.prepare(request)
            due = received + ttft
            delay = due - monotonic()
            if delay > 0:
                await sleep(delay)
            await resp.write(
                head + b'"choices":[{"index":0,"delta":{"role":"assistant","content":""},'
                b'"finish_reason":null}]}\n\n'
            )
            first_byte = monotonic()
            if fault == "stall":
                if chunks:
                    await resp.write(content_head + chunks[0] + stream_tail)
                await _gone_within(request)
                return resp
            due = first_byte
            for i, chunk in enumerate(chunks):
                if i and itl:
                    due += itl
                    delay = due - monotonic()
                    if delay > 0:
                        await sleep(delay)
                if i == inject_at and await inject(
                    request, resp, fault, content_head, chunk, finish_event
                ):
                    return resp
                await resp.write(content_head + chunk + stream_tail)
            if inject_at == len(chunks) and await inject(
                request, resp, fault, content_head, None, finish_event
            ):
                return resp
            if fault == "no_done":
                while not await _gone_within(request, _KEEPALIVE_S):
                    await resp.write(b": ping\n\n")
                return resp
            await resp.write(finish_event)
            last_byte = monotonic()
            tail = {
                "usage": usage,
                "fastagent_timing": {
                    "received": received,
                    "first_byte": first_byte,
                    "last_byte": last_byte,
                },
            }
            await resp.write(head + b'"choices":[],' + orjson.dumps(tail)[1:] + b"\n\n")
            await resp.write(done_event)
            await resp.write_eof()
        except ConnectionError:
            pass
        return resp

    app = web.Application(client_max_size=_MAX_BODY)
    app.router.add_get("/v1/models", models)
    app.router.add_get("/v1/sim/plan", sim_plan)
    app.router.add_get("/v1/sim/stats", sim_stats)
    app.router.add_get("/health", health)
    app.router.add_post("/v1/chat/completions", chat)
    return app


def _base_url(host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/v1"


async def start_sim(
    profile: SimProfile,
    tasks_path: str | Path,
    solutions_path: str | Path,
    host: str = "127.0.0.1",
    port: int = 0,
) -> tuple[web.AppRunner, str]:
    """Serve the sim on the running loop; returns the runner and ``http://HOST:PORT/v1``."""
    from aiohttp import web

    app = build_app(profile, tasks_path, solutions_path)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=_SHUTDOWN_TIMEOUT)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, backlog=_LISTEN_BACKLOG, reuse_address=True)
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    bound_port = runner.addresses[0][1]
    return runner, _base_url(host, bound_port)


def _default_path(name: str) -> Path:
    return data_path(name)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the sim's options to ``parser`` (used by ``fastagent sim``)."""
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8800, help="port to listen on; 0 = any free")
    parser.add_argument(
        "--dataset", type=Path, default=None, help=f"tasks JSON (default: bundled {DATASET_NAME})"
    )
    parser.add_argument(
        "--solutions",
        type=Path,
        default=None,
        help=f"solutions JSON (default: bundled {SOLUTIONS_NAME})",
    )
    parser.add_argument(
        "--profile",
        default="",
        metavar="KEY=VAL,...",
        help=f"sim profile; keys: {', '.join(PROFILE_KEYS)} (faults=KIND:RATE+KIND:RATE)",
    )
    group = parser.add_argument_group("profile overrides (win over --profile)")
    group.add_argument("--seed", type=int, default=None)
    group.add_argument("--p-first", type=float, default=None, help="share right at once")
    group.add_argument("--p-recover", type=float, default=None, help="share right after feedback")
    group.add_argument("--ttft-ms", type=float, default=None, help="delay to the first chunk")
    group.add_argument("--itl-ms", type=float, default=None, help="delay between chunks")
    group.add_argument("--tokens-per-chunk", type=int, default=None)
    group.add_argument("--model", default=None, help="model name to report")
    group.add_argument(
        "--fault",
        dest="faults",
        action="append",
        default=None,
        metavar="KIND[:RATE]",
        help="inject a fault into that share of chat requests (RATE in [0, 1], default 1); "
        "repeatable, the first that hits a request wins; given at all, these replace the "
        f"profile's faults. Kinds: {', '.join(FAULT_KINDS)}",
    )


def profile_from_args(args: argparse.Namespace) -> SimProfile:
    """``--profile`` with the individual flags applied on top (``--fault`` flags replace
    the profile's ``faults``)."""
    profile = parse_profile(getattr(args, "profile", "") or "")
    overrides = {
        key: getattr(args, key)
        for key in PROFILE_KEYS
        if key != "faults" and getattr(args, key, None) is not None
    }
    fault_flags = getattr(args, "faults", None)
    if fault_flags:
        overrides["faults"] = tuple(parse_fault(text) for text in fault_flags)
    return SimProfile(**{**profile.as_dict(), **overrides}) if overrides else profile


def _raise_nofile_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    for target in (hard, 1 << 20, 65536):
        if (
            target == resource.RLIM_INFINITY
            or target <= soft
            or (hard != resource.RLIM_INFINITY and target > hard)
        ):
            continue
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            continue
        return


async def _serve(profile: SimProfile, tasks: Path, solutions: Path, host: str, port: int) -> None:
    runner, url = await start_sim(profile, tasks, solutions, host, port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        sys.stdout.write(ready_line(url))
        sys.stdout.flush()
        await stop.wait()
    finally:
        await runner.cleanup()


def main(args: argparse.Namespace) -> int:
    """Serve until SIGINT/SIGTERM; 0 on a clean stop, 2 on bad input or a failed bind."""
    try:
        profile = profile_from_args(args)
        tasks = Path(args.dataset) if args.dataset else _default_path(DATASET_NAME)
        solutions = Path(args.solutions) if args.solutions else _default_path(SOLUTIONS_NAME)
        for what, path in (("dataset", tasks), ("solutions", solutions)):
            if not path.is_file():
                raise SimDataError(f"{what} file not found: {path}")
    except ValueError as exc:
        print(f"fastagent sim: error: {exc}", file=sys.stderr)
        return 2
    _raise_nofile_limit()
    try:
        import uvloop

        run = uvloop.run
    except ImportError:
        run = asyncio.run
    try:
        run(_serve(profile, tasks, solutions, args.host, args.port))
    except (SimDataError, ValueError) as exc:
        print(f"fastagent sim: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(
            f"fastagent sim: error: cannot listen on {args.host}:{args.port}: "
            f"{exc.strerror or exc}",
            file=sys.stderr,
        )
        return 2
    except KeyboardInterrupt:
        pass
    return 0
