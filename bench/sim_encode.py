"""Does orjson earn its place in the simulated endpoint? orjson vs msgspec on what the sim encodes.

Run it from the project root::

    $ .venv/bin/python bench/sim_encode.py            # ~10 s
    $ .venv/bin/python bench/sim_encode.py --quick    # ~1 s

Each payload is one the sim builds per request (or per start), made here the way the sim makes
it: the usage/timing tail of every streamed completion, the whole body of a non-streamed one
(a median-length reply of the bundled solutions), a 400 error body, the stats body, and the
plan body (once per start). Each is built and encoded each of these ways, interleaved within
every one of ``--repeats`` repeats (the build counts: the sim builds a fresh value per request):

- ``orjson dict``: a dict through ``orjson.dumps`` (what the sim did);
- ``orjson dataclass``: slotted dataclasses through ``orjson.dumps`` (orjson's typed path; it
  cannot encode msgspec Structs), for the per-request payloads;
- ``msgspec dict``: the dict through a ``msgspec.json.Encoder``;
- ``msgspec Struct``: ``msgspec.Struct`` values of the same shape through that encoder.

The table shows the median ns per call and its ratio to ``orjson dict``; the bytes of every
way are checked to be identical first.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

try:
    import orjson
except ImportError:  # the sim no longer needs it; this comparison does
    sys.exit("bench/sim_encode.py compares against orjson: pip install orjson")

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fastagent.dataset import SOLUTIONS_NAME, data_path  # noqa: E402

_ENCODE = msgspec.json.Encoder().encode


class Usage(msgspec.Struct, gc=False):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class Timing(msgspec.Struct, gc=False):
    accepted: float
    started: float
    first_byte: float
    last_byte: float


class Tail(msgspec.Struct, gc=False):
    usage: Usage
    fastagent_timing: Timing


class Message(msgspec.Struct, gc=False):
    role: str
    content: str


class Choice(msgspec.Struct, gc=False):
    index: int
    message: Message
    finish_reason: str


class Body(msgspec.Struct, gc=False):
    id: str
    object: str
    created: int
    model: str
    choices: list[Choice]
    usage: Usage
    fastagent_timing: Timing


class Error(msgspec.Struct, gc=False):
    message: str
    type: str
    param: None
    code: str | None


class ErrorBody(msgspec.Struct, gc=False):
    error: Error


class Stats(msgspec.Struct, gc=False):
    requests: int
    faults: dict[str, int]


class Profile(msgspec.Struct, frozen=True):
    seed: int
    p_first: float
    p_recover: float
    ttft_ms: float
    itl_ms: float
    tokens_per_chunk: int
    model: str
    faults: tuple[tuple[str, float], ...]


class Plan(msgspec.Struct, gc=False):
    profile: Profile
    plan: dict[str, str]


# orjson's own typed path: slotted dataclasses (it cannot encode msgspec Structs).
@dataclasses.dataclass(slots=True)
class UsageDC:
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


@dataclasses.dataclass(slots=True)
class TimingDC:
    accepted: float
    started: float
    first_byte: float
    last_byte: float


@dataclasses.dataclass(slots=True)
class TailDC:
    usage: UsageDC
    fastagent_timing: TimingDC


@dataclasses.dataclass(slots=True)
class MessageDC:
    role: str
    content: str


@dataclasses.dataclass(slots=True)
class ChoiceDC:
    index: int
    message: MessageDC
    finish_reason: str


@dataclasses.dataclass(slots=True)
class BodyDC:
    id: str
    object: str
    created: int
    model: str
    choices: list[ChoiceDC]
    usage: UsageDC
    fastagent_timing: TimingDC


@dataclasses.dataclass(slots=True)
class ErrorDC:
    message: str
    type: str
    param: None
    code: str | None


@dataclasses.dataclass(slots=True)
class ErrorBodyDC:
    error: ErrorDC


def _reply_text() -> str:
    rows = json.loads(data_path(SOLUTIONS_NAME).read_text())
    texts = sorted((row["solution"] for row in rows), key=len)
    code = texts[len(texts) // 2]
    return f"Here is the implementation.\n\n```python\n{code}```\n\nIt handles the edge cases.\n"


def cases() -> list[tuple[str, dict[str, Callable[[], bytes]]]]:
    """(payload, {way: build-and-encode}) for each payload the sim encodes."""
    t = time.monotonic()
    accepted, started, first, last = t, t + 0.0001234, t + 0.0512345, t + 0.3251234
    text = _reply_text()
    n_tokens = len(text) // 4
    usage = (1234 // 4, n_tokens, 1234 // 4 + n_tokens)
    cid, created, model = "chatcmpl-sim1a2bx0000002a", 1764579600, "fastagent-sim"

    def tail_dict() -> dict[str, Any]:
        return {
            "usage": {
                "prompt_tokens": usage[0],
                "completion_tokens": usage[1],
                "total_tokens": usage[2],
            },
            "fastagent_timing": {
                "accepted": accepted,
                "started": started,
                "first_byte": first,
                "last_byte": last,
            },
        }

    def body_dict() -> dict[str, Any]:
        return {
            "id": cid,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": "stop",
                }
            ],
            "usage": {
                "prompt_tokens": usage[0],
                "completion_tokens": usage[1],
                "total_tokens": usage[2],
            },
            "fastagent_timing": {
                "accepted": accepted,
                "started": started,
                "first_byte": last,
                "last_byte": last,
            },
        }

    message = "'max_tokens' must be at least 1, got 0"

    def error_dict() -> dict[str, Any]:
        return {
            "error": {
                "message": message,
                "type": "invalid_request_error",
                "param": None,
                "code": None,
            }
        }

    faults = {"http_503": 12, "reset": 5, "cut_json": 3}

    def stats_dict() -> dict[str, Any]:
        return {"requests": 300, "faults": {k: n for k, n in faults.items() if n}}

    profile = Profile(0, 0.87, 0.06, 50.0, 2.0, 1, model, ())
    plan = {f"HumanEval/{i}": ("first", "recover", "wrong")[i % 3] for i in range(100)}

    table: list[tuple[str, Callable[[], Any], Callable[[], Any], Callable[[], Any] | None]] = [
        (
            "stream usage/timing tail (per streamed request)",
            tail_dict,
            lambda: Tail(Usage(*usage), Timing(accepted, started, first, last)),
            lambda: TailDC(UsageDC(*usage), TimingDC(accepted, started, first, last)),
        ),
        (
            f"non-streamed body, {len(text)}-char reply (per request)",
            body_dict,
            lambda: Body(
                cid,
                "chat.completion",
                created,
                model,
                [Choice(0, Message("assistant", text), "stop")],
                Usage(*usage),
                Timing(accepted, started, last, last),
            ),
            lambda: BodyDC(
                cid,
                "chat.completion",
                created,
                model,
                [ChoiceDC(0, MessageDC("assistant", text), "stop")],
                UsageDC(*usage),
                TimingDC(accepted, started, last, last),
            ),
        ),
        (
            "400 error body (per bad request)",
            error_dict,
            lambda: ErrorBody(Error(message, "invalid_request_error", None, None)),
            lambda: ErrorBodyDC(ErrorDC(message, "invalid_request_error", None, None)),
        ),
        (
            "stats body (per GET /v1/sim/stats)",
            stats_dict,
            lambda: Stats(300, {k: n for k, n in faults.items() if n}),
            None,
        ),
        (
            "plan body, 100 tasks (once per start)",
            lambda: {"profile": msgspec.structs.asdict(profile), "plan": plan},
            lambda: Plan(profile, plan),
            None,
        ),
    ]
    out = []
    for name, as_dict, as_struct, as_dataclass in table:
        ways: dict[str, Callable[[], bytes]] = {
            "orjson dict": lambda f=as_dict: orjson.dumps(f()),
            "orjson dataclass": (lambda f=as_dataclass: orjson.dumps(f()))
            if as_dataclass
            else None,
            "msgspec dict": lambda f=as_dict: _ENCODE(f()),
            "msgspec Struct": lambda f=as_struct: _ENCODE(f()),
        }
        ways = {way: run for way, run in ways.items() if run is not None}
        encoded = {way: run() for way, run in ways.items()}
        if len(set(encoded.values())) != 1:
            raise SystemExit(f"{name}: the ways disagree on the bytes: {encoded}")
        out.append((name, ways))
    return out


WAYS = ("orjson dict", "orjson dataclass", "msgspec dict", "msgspec Struct")


def measure(ways: dict[str, Callable[[], bytes]], repeats: int, calls: int) -> dict[str, float]:
    """Median ns per call of each way, the ways interleaved within every repeat."""
    times: dict[str, list[float]] = {way: [] for way in ways}
    for _ in range(repeats):
        for way, run in ways.items():
            start = time.perf_counter_ns()
            for _ in range(calls):
                run()
            times[way].append((time.perf_counter_ns() - start) / calls)
    return {way: statistics.median(values) for way, values in times.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=31)
    parser.add_argument("--quick", action="store_true", help="fewer calls per repeat")
    args = parser.parse_args(argv)
    calls = 2_000 if args.quick else 20_000
    print(
        f"Python {sys.version.split()[0]}, orjson {orjson.__version__}, "
        f"msgspec {msgspec.__version__}: build + encode, median ns per call of "
        f"{args.repeats} interleaved repeats of {calls:,} calls (ratio: time / orjson dict's)\n"
    )
    rows = []
    for name, ways in cases():
        result = measure(ways, args.repeats, calls)
        base = result["orjson dict"]
        rows.append(
            (
                name,
                [
                    f"{result[w]:5.0f} ({result[w] / base:4.2f}x)" if w in result else "-"
                    for w in WAYS
                ],
            )
        )
    width = max(len(name) for name, _ in rows)
    print(f"{'payload':{width}}  " + "  ".join(f"{way:>16}" for way in WAYS))
    print("-" * (width + 18 * len(WAYS)))
    for name, cells in rows:
        print(f"{name:{width}}  " + "  ".join(f"{cell:>16}" for cell in cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
