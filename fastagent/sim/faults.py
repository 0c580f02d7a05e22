"""The faults the sim injects: one table saying what each does, and which request meets which.

Each valid chat request ``n`` (counted from 1 since the sim started) draws each configured
fault in order with a ``random.Random(f"{seed}:{n}")`` and the first whose draw falls under
its rate hits that request (:func:`pick_fault`), so a run's sequence of faults is
reproducible. :data:`FAULTS` says how each kind behaves; the writers in :mod:`.stream` and
:mod:`.body` carry it out, and nothing else in the sim looks at a fault's kind.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

__all__ = [
    "FAULTS",
    "HUGE_LINE_BYTES",
    "HUGE_PIECE",
    "HUGE_PIECES",
    "INVALID_UTF8_STRING",
    "MALFORMED_EVENT",
    "NO_CODE_REPLY",
    "BodySend",
    "Fault",
    "FaultKind",
    "HttpError",
    "Injection",
    "StreamEnd",
    "injection_index",
    "pick_fault",
]


class FaultKind(enum.StrEnum):
    """What ``--fault KIND[:RATE]`` names; the order is the one error messages list them in.

    Streamed, then non-streamed, each kind does this (:data:`FAULTS` says it as data).
    """

    #: 429 with ``Retry-After: 1`` and an OpenAI error body
    HTTP_429 = "http_429"
    #: that status with an OpenAI error body
    HTTP_500 = "http_500"
    HTTP_502 = "http_502"
    HTTP_503 = "http_503"
    #: the connection is closed once the request has been read, with no response at all (a
    #: true TCP refusal cannot be decided per request, the client's pooled connections are
    #: already open: point a client at a closed port for that)
    REFUSE = "refuse"
    #: headers and about half the content chunks, then a TCP reset; half the body, then a reset
    RESET = "reset"
    #: half the content chunks, then an event cut off inside its JSON, the end of the body and
    #: of the connection; a body cut in half (its Content-Length matching)
    CUT_JSON = "cut_json"
    #: ``data: {not json}`` halfway through, then the rest as usual; the body ``{not json}``
    MALFORMED_JSON = "malformed_json"
    #: headers, the role chunk and one content chunk, then nothing until the client leaves;
    #: headers only
    STALL = "stall"
    #: halfway through, one content event of 8 MiB with no line end until its last byte, then
    #: the rest; a valid body with 8 MiB of content
    HUGE_LINE = "huge_line"
    #: halfway through, a content event whose JSON string holds invalid UTF-8, then the rest; a
    #: body with invalid UTF-8 in the content
    INVALID_UTF8 = "invalid_utf8"
    #: a well-formed completion with no content
    EMPTY = "empty"
    #: a well-formed completion of prose without a code block
    NO_CODE = "no_code"
    #: all content chunks, then neither finish, usage nor ``[DONE]``: a ``: ping`` comment
    #: every second until the client leaves, so only a deadline on the whole call ends it; all
    #: but the body's last byte, then a space every second
    NO_DONE = "no_done"


class Injection(enum.Enum):
    """What a streamed completion writes halfway through (see :func:`injection_index`)."""

    #: ``data: {not json}``, then the rest of the stream as usual
    MALFORMED_EVENT = enum.auto()
    #: a content event whose JSON string holds invalid UTF-8, then the rest as usual
    INVALID_UTF8_EVENT = enum.auto()
    #: one content event of HUGE_LINE_BYTES with no line end until its last byte, then the rest
    HUGE_EVENT = enum.auto()
    #: half the next event (``data: {..."delta":{"content":"ab``), then the end of the body
    CUT_EVENT = enum.auto()
    #: a TCP reset (``SO_LINGER`` 0)
    RESET = enum.auto()


class StreamEnd(enum.Enum):
    """How a streamed completion ends."""

    #: every content chunk, the finish chunk, the usage chunk, ``data: [DONE]``
    DONE = enum.auto()
    #: after the role chunk and one content chunk, nothing until the client leaves
    STALL = enum.auto()
    #: after every content chunk, a ``: ping`` comment every second until the client leaves
    KEEP_ALIVE = enum.auto()


class BodySend(enum.Enum):
    """How a non-streamed completion's body goes out (after the fault's ``rewrite``)."""

    #: whole, with its Content-Length
    WHOLE = enum.auto()
    #: with HUGE_LINE_BYTES of content written into its (empty) content string
    HUGE_CONTENT = enum.auto()
    #: its first half under the whole body's Content-Length, then a TCP reset
    HALF_THEN_RESET = enum.auto()
    #: nothing after the headers (no Content-Length) until the client leaves
    HEADERS_ONLY = enum.auto()
    #: all but its last byte (no Content-Length), then a space every second until the client
    #: leaves
    TRICKLE = enum.auto()

    @property
    def has_length(self) -> bool:
        """Whether the response announces a Content-Length."""
        return self not in (BodySend.HEADERS_ONLY, BodySend.TRICKLE)


@dataclass(frozen=True, slots=True)
class HttpError:
    """An HTTP error status with an OpenAI error body, sent instead of a completion."""

    status: int
    type: str
    message: str
    code: str | None = None
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Fault:
    """How one kind of fault behaves; the defaults are a reply sent as usual."""

    kind: FaultKind
    #: answer with this error instead of a completion
    http_error: HttpError | None = None
    #: close the connection once the request has been read, with no response at all
    refuse: bool = False
    #: a well-formed completion of this text instead of the planned reply
    reply: str | None = None
    #: streamed: what is written halfway through
    injection: Injection | None = None
    #: streamed: how the stream ends (unless its injection ended it)
    stream_end: StreamEnd = StreamEnd.DONE
    #: non-streamed: what it does to the encoded body
    rewrite: Callable[[bytes], bytes] | None = None
    #: non-streamed: how the (rewritten) body goes out
    body: BodySend = BodySend.WHOLE
    #: ``Connection: close``: the response leaves the connection unusable
    close: bool = False

    @property
    def alters_body(self) -> bool:
        """Whether a non-streamed completion is sent otherwise than whole and unchanged."""
        return self.rewrite is not None or self.body is not BodySend.WHOLE

    @property
    def ends_in_injection(self) -> bool:
        """Whether the stream ends with its injection."""
        return self.injection in (Injection.CUT_EVENT, Injection.RESET)


NO_CODE_REPLY = (
    "I looked at the function and the docstring. The approach is to walk through the "
    "input once, keep the running result in a local variable and return it at the end, "
    "taking care of the empty input and the edge cases the examples show.\n"
)
MALFORMED_EVENT = b"data: {not json}\n\n"
#: The content of an ``invalid_utf8`` event, a JSON string literal holding invalid UTF-8.
INVALID_UTF8_STRING = b'"\xff\xfe not utf-8 \xc3\x28"'
HUGE_LINE_BYTES = 8 << 20
#: ``huge_line`` content goes out in HUGE_PIECES writes of HUGE_PIECE.
HUGE_PIECE = b"x" * (256 << 10)
HUGE_PIECES = HUGE_LINE_BYTES // len(HUGE_PIECE)


def _first_half(raw: bytes) -> bytes:
    return raw[: len(raw) // 2]


def _malformed(raw: bytes) -> bytes:
    return b"{not json}"


def _invalid_utf8(raw: bytes) -> bytes:
    return raw.replace(b'"content":"', b'"content":"\xff\xfe not utf-8 \xc3\x28 ', 1)


_SERVER_ERROR = "server_error"

#: Every kind's behaviour, in FaultKind's order.
FAULTS: Final[Mapping[FaultKind, Fault]] = MappingProxyType(
    {
        fault.kind: fault
        for fault in (
            Fault(
                kind=FaultKind.HTTP_429,
                http_error=HttpError(
                    429,
                    "requests",
                    "Rate limit reached for requests (simulated fault http_429). "
                    "Please try again in 1s.",
                    code="rate_limit_exceeded",
                    headers=(("Retry-After", "1"),),
                ),
            ),
            Fault(
                kind=FaultKind.HTTP_500,
                http_error=HttpError(
                    500,
                    _SERVER_ERROR,
                    "The server had an error while processing your request "
                    "(simulated fault http_500).",
                ),
            ),
            Fault(
                kind=FaultKind.HTTP_502,
                http_error=HttpError(502, _SERVER_ERROR, "Bad gateway (simulated fault http_502)."),
            ),
            Fault(
                kind=FaultKind.HTTP_503,
                http_error=HttpError(
                    503,
                    _SERVER_ERROR,
                    "The engine is currently overloaded, please try again later "
                    "(simulated fault http_503).",
                ),
            ),
            Fault(kind=FaultKind.REFUSE, refuse=True),
            Fault(kind=FaultKind.RESET, injection=Injection.RESET, body=BodySend.HALF_THEN_RESET),
            Fault(
                kind=FaultKind.CUT_JSON,
                injection=Injection.CUT_EVENT,
                rewrite=_first_half,
                close=True,
            ),
            Fault(
                kind=FaultKind.MALFORMED_JSON,
                injection=Injection.MALFORMED_EVENT,
                rewrite=_malformed,
            ),
            Fault(kind=FaultKind.STALL, stream_end=StreamEnd.STALL, body=BodySend.HEADERS_ONLY),
            Fault(
                kind=FaultKind.HUGE_LINE,
                injection=Injection.HUGE_EVENT,
                body=BodySend.HUGE_CONTENT,
            ),
            Fault(
                kind=FaultKind.INVALID_UTF8,
                injection=Injection.INVALID_UTF8_EVENT,
                rewrite=_invalid_utf8,
            ),
            Fault(kind=FaultKind.EMPTY, reply=""),
            Fault(kind=FaultKind.NO_CODE, reply=NO_CODE_REPLY),
            Fault(kind=FaultKind.NO_DONE, stream_end=StreamEnd.KEEP_ALIVE, body=BodySend.TRICKLE),
        )
    }
)


def injection_index(n_chunks: int) -> int:
    """Before which content chunk a mid-stream injection goes: ``max(1, n_chunks // 2)``, or
    after the last one (``n_chunks``) when there are fewer."""
    return min(n_chunks, max(1, n_chunks // 2))


def pick_fault(faults: tuple[tuple[FaultKind, float], ...], seed: int, n: int) -> FaultKind | None:
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
