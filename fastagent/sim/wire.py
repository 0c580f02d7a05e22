"""The OpenAI chat-completions wire format as the sim speaks it.

The request it reads, the JSON bodies it writes, the pieces of its streamed events as bytes,
and :class:`Answer`, what one chat request gets, decided before a byte goes out. The bodies
are msgspec Structs: building and encoding one takes 0.8-0.9x the time orjson takes on the
same dict (``bench/sim_encode.py``), so the sim has no use for orjson.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import msgspec

from ..schema import Distribution
from .data import STREAM_TAIL, Outcome, Reply
from .faults import Fault, FaultKind, HttpError
from .profile import SimProfile

__all__ = [
    "CONTENT_CHOICES",
    "DONE_EVENT",
    "ROLE_CHOICES",
    "STREAM_TAIL",
    "Answer",
    "ChatRequest",
    "Completion",
    "Message",
    "Pace",
    "SimRun",
    "Timing",
    "Usage",
    "completion",
    "decode_request",
    "encode",
    "error_body",
    "event_head",
    "finish_event",
    "http_error_body",
    "models_body",
    "plan_body",
    "stats_body",
    "usage_event",
]

encode = msgspec.json.Encoder().encode


# ---- the request ----------------------------------------------------------------------------


class Message(msgspec.Struct):
    role: str
    content: str | list[Any] | None = None

    def text(self) -> str:
        """The message's text: its string, or its text parts joined by line ends."""
        content = self.content
        if content is None:
            return ""
        if isinstance(content, str):
            return content
        return "\n".join(
            part["text"]
            for part in content
            if isinstance(part, dict) and isinstance(part.get("text"), str)
        )


class ChatRequest(msgspec.Struct):
    messages: list[Message]
    stream: bool | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None

    @property
    def token_limit(self) -> int | None:
        """``max_tokens``, else ``max_completion_tokens``."""
        return self.max_tokens if self.max_tokens is not None else self.max_completion_tokens


decode_request = msgspec.json.Decoder(ChatRequest).decode


# ---- JSON bodies ----------------------------------------------------------------------------


class Usage(msgspec.Struct, gc=False):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class Timing(msgspec.Struct, gc=False):
    """``fastagent_timing``: ``time.monotonic()`` seconds (CLOCK_MONOTONIC, shared with a client
    on the same machine)."""

    #: the request's first byte read
    accepted: float
    #: the request fully read and its handling begun (after the profile's start delay)
    started: float
    #: the first content event written (a non-streamed body: its write)
    first_byte: float
    #: just before the response's last write
    last_byte: float


class _Tail(msgspec.Struct, gc=False):
    """What the streamed usage chunk carries after its ``"choices":[]``."""

    usage: Usage
    fastagent_timing: Timing


class _ReplyMessage(msgspec.Struct, gc=False):
    role: str
    content: str


class _Choice(msgspec.Struct, gc=False):
    index: int
    message: _ReplyMessage
    finish_reason: str


class Completion(msgspec.Struct, gc=False):
    """A non-streamed ``chat.completion`` body."""

    id: str
    object: str
    created: int
    model: str
    choices: list[_Choice]
    usage: Usage
    fastagent_timing: Timing


def completion(
    cid: str, created: int, model: str, content: str, finish: str, usage: Usage, timing: Timing
) -> Completion:
    """The body of a non-streamed completion with one assistant message."""
    choice = _Choice(0, _ReplyMessage("assistant", content), finish)
    return Completion(cid, "chat.completion", created, model, [choice], usage, timing)


class _Error(msgspec.Struct, gc=False):
    message: str
    type: str
    param: None
    code: str | None


class _ErrorBody(msgspec.Struct, gc=False):
    error: _Error


def error_body(message: str, type: str, code: str | None = None) -> bytes:
    """An OpenAI error body."""
    return encode(_ErrorBody(_Error(message, type, None, code)))


def http_error_body(error: HttpError) -> bytes:
    return error_body(error.message, error.type, error.code)


class _Model(msgspec.Struct):
    id: str
    object: str
    created: int
    owned_by: str


class _ModelList(msgspec.Struct):
    object: str
    data: list[_Model]


def models_body(model: str, created: int) -> bytes:
    """``GET /v1/models``: the one model."""
    return encode(_ModelList("list", [_Model(model, "model", created, "fastagent")]))


class _Plan(msgspec.Struct):
    profile: SimProfile
    plan: dict[str, Outcome]


def plan_body(profile: SimProfile, plan: dict[str, Outcome]) -> bytes:
    """``GET /v1/sim/plan``: the profile and each task's outcome."""
    return encode(_Plan(profile, plan))


class _Stats(msgspec.Struct):
    requests: int
    faults: dict[FaultKind, int]


def stats_body(requests: int, injected: dict[FaultKind, int]) -> bytes:
    """``GET /v1/sim/stats``: the chat requests served and the faults injected, by kind."""
    return encode(_Stats(requests, {kind: n for kind, n in injected.items() if n}))


class SimRun(msgspec.Struct, kw_only=True):
    """``GET /v1/sim/run``: what the endpoint saw since its last ``POST /v1/sim/run/reset``
    (or its start), the run's figures for ``fastagent compare``."""

    #: how many resets came before: a reader checks that nobody reset during its run
    epoch: int = 0
    #: chat requests (the same count as /v1/sim/stats, which a reset restarts too)
    requests: int = 0
    #: of those, requests where no message (system or user) held a task's spec
    unplaced: int = 0
    #: completion tokens of the answers written in full
    output_tokens: int = 0
    #: chat requests in progress now (a reset keeps them)
    streams: int = 0
    #: the most chat requests in progress at once
    peak_streams: int = 0
    #: per answer written in full: handling started -> first content event written
    ttft_ms: Distribution = msgspec.field(default_factory=Distribution)
    #: per answer written in full: handling started -> its last write
    server_ms: Distribution = msgspec.field(default_factory=Distribution)
    #: their summed server time
    server_seconds: float = 0.0


# ---- streamed events ------------------------------------------------------------------------

#: After an event's head: the role chunk.
ROLE_CHOICES = (
    b'"choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}\n\n'
)
#: After an event's head: a content chunk, up to its JSON string.
CONTENT_CHOICES = b'"choices":[{"index":0,"delta":{"content":'
DONE_EVENT = b"data: [DONE]\n\n"


def event_head(cid: bytes, created: int, model_json: bytes) -> bytes:
    """``data: {"id":...,"object":"chat.completion.chunk","created":...,"model":...,``"""
    return (
        b'data: {"id":"'
        + cid
        + b'","object":"chat.completion.chunk","created":'
        + str(created).encode()
        + b',"model":'
        + model_json
        + b","
    )


def finish_event(head: bytes, finish: str) -> bytes:
    """The chunk with the empty delta and the finish reason."""
    return (
        head + b'"choices":[{"index":0,"delta":{},"finish_reason":"' + finish.encode() + b'"}]}\n\n'
    )


def usage_event(head: bytes, usage: Usage, timing: Timing) -> bytes:
    """The last chunk before ``[DONE]``: no choices, the usage and ``fastagent_timing``."""
    return head + b'"choices":[],' + encode(_Tail(usage, timing))[1:] + b"\n\n"


# ---- the answer -----------------------------------------------------------------------------


class Pace(NamedTuple):
    """The profile's delays, in seconds."""

    #: from a request's start to its first content
    ttft: float
    #: between content chunks
    itl: float
    #: from a chat request fully read to its start
    start_delay: float = 0.0

    @classmethod
    def of(cls, profile: SimProfile) -> Pace:
        return cls(profile.ttft_ms / 1e3, profile.itl_ms / 1e3, profile.start_delay_ms / 1e3)


@dataclass(slots=True)
class Answer:
    """What one chat request gets, decided before a byte of it is written."""

    #: ``time.monotonic()`` when the request's first byte was read
    accepted: float
    #: ``time.monotonic()`` when its handling began
    started: float
    reply: Reply
    #: how many of the reply's tokens are sent (fewer under ``max_tokens``)
    n_tokens: int
    #: ``"stop"``, or ``"length"`` when ``max_tokens`` cut the reply
    finish: str
    usage: Usage
    #: the completion's id, ``chatcmpl-sim...``
    cid: bytes
    #: ``time.time()`` when it was decided, in whole seconds
    created: int
    fault: Fault | None

    def timing(self, first_byte: float, last_byte: float) -> Timing:
        return Timing(self.accepted, self.started, first_byte, last_byte)
