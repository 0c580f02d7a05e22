"""A streamed completion: server-sent events on the profile's schedule, or broken by a fault.

A stream is a small object the :class:`~.pacer.Pacer` wakes at each step, never a coroutine.
Its head goes out when it starts; ``ttft`` after that, the role chunk and the first content
chunk; then content chunk ``i`` is due ``i * itl`` after the first, so timer slack never
accumulates: a late chunk goes out at once, and so do the chunks behind it that are due (a
stream behind its schedule catches up in consecutive writes, as the coroutine writer did).
Each event is its own write, but the last: the finish chunk, the usage chunk
(``choices: []``, with ``usage`` and ``fastagent_timing``, its ``last_byte`` taken just
before), ``data: [DONE]`` and the end of the chunked body are one write.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from .conn import Conn
from .faults import (
    HUGE_PIECE,
    HUGE_PIECES,
    INVALID_UTF8_STRING,
    MALFORMED_EVENT,
    Injection,
    StreamEnd,
    injection_index,
)
from .pacer import Pacer
from .wire import (
    CONTENT_CHOICES,
    DONE_EVENT,
    ROLE_CHOICES,
    STREAM_TAIL,
    Answer,
    Pace,
    event_head,
    finish_event,
    usage_event,
)

__all__ = ["KEEPALIVE_S", "RESET_GRACE_S", "StreamedCompletion"]

#: How often a fault that holds a response open writes a byte to it.
KEEPALIVE_S = 1.0
#: How long a reset waits after its last write, so that the bytes leave before the RST.
RESET_GRACE_S = 0.01

_SSE = b"text/event-stream"
_SSE_HEADERS = b"Cache-Control: no-cache\r\n"
_PING = b": ping\n\n"
# what the next wake does
_OPEN, _CONTENT, _KEEP_ALIVE, _RESET, _WAIT, _OVER = range(6)


class StreamedCompletion:
    """Writes one answer as a stream of ``chat.completion.chunk`` events."""

    __slots__ = ("_answer", "_at", "_chunks", "_conn", "_content_head", "_done", "_first",
                 "_head", "_i", "_itl", "_pacer", "_pending", "_phase", "_served", "_sizes",
                 "_tails", "_ttft")  # fmt: skip

    def __init__(
        self,
        conn: Conn,
        answer: Answer,
        pace: Pace,
        pacer: Pacer,
        model_json: bytes,
        done: Callable[[], None],
        served: Callable[[Answer, float, float], None] | None = None,
    ) -> None:
        self._conn = conn
        self._answer = answer
        self._pacer = pacer
        self._done = done
        #: told of the answer once written in full: (answer, first content event, last write)
        self._served = served
        self._ttft, self._itl = pace.ttft, pace.itl
        self._chunks = chunks = answer.reply.chunks_of(answer.n_tokens)
        self._head = event_head(answer.cid, answer.created, model_json)
        self._content_head = content_head = self._head + CONTENT_CHOICES
        if conn.http11:  # each content event pre-framed for the chunked body but its head
            framing = answer.reply.framing(answer.n_tokens, len(content_head))
            self._sizes, self._tails = framing
        else:  # HTTP/1.0: no framing, the body ends with the connection
            self._sizes = [b""] * len(chunks)
            self._tails = [chunk + STREAM_TAIL for chunk in chunks]
        fault = answer.fault
        injected = fault is not None and fault.injection is not None
        #: before which content chunk the fault's injection goes (-1: none)
        self._at = injection_index(len(chunks)) if injected else -1
        self._i = 0
        self._first = 0.0
        self._phase = _OPEN
        #: the head, until written
        self._pending = b""

    def start(self) -> None:
        """Begin the response: its head goes out once the loop is through the requests that
        came in with this one (or with the role chunk, if that is due first); the first events
        follow ``ttft`` after the answer's start."""
        conn, fault = self._conn, self._answer.fault
        conn.exchange = self
        self._pending = conn.head(200, _SSE, _SSE_HEADERS, close=fault is not None and fault.close)
        due = self._answer.started + self._ttft
        if due > time.monotonic():
            self._pacer.soon(self)
            self._pacer.at(due, self)
        else:
            self.wake(due)

    def flush(self) -> None:
        """Write the head, unless written."""
        if self._pending:
            self._conn.write(self._pending)
            self._pending = b""

    def gone(self) -> None:
        """The client left: the stream is over."""
        if self._phase != _OVER:
            self._phase = _OVER
            self._done()

    def wake(self, due: float) -> None:
        phase = self._phase
        if phase == _CONTENT:
            self._content()
        elif phase == _OPEN:
            self._open()
        elif phase == _KEEP_ALIVE:
            self._conn.chunk(_PING)
            self._pacer.at(due + KEEPALIVE_S, self)
        elif phase == _RESET:
            self._over()
            self._conn.reset()

    def _over(self) -> None:
        self._phase = _OVER
        if self._conn.exchange is self:
            self._conn.exchange = None
        self._done()

    def _open(self) -> None:
        """The role chunk and the first content chunk (a stall: then nothing)."""
        self.flush()
        conn, fault = self._conn, self._answer.fault
        conn.chunk(self._head + ROLE_CHOICES)
        if fault is not None and fault.stream_end is StreamEnd.STALL:
            if self._chunks:
                conn.chunk(self._content_head + self._chunks[0] + STREAM_TAIL)
            self._phase = _WAIT  # until the client leaves
            return
        self._phase = _CONTENT
        self._first = time.monotonic()
        self._content()

    def _content(self) -> None:
        """The content chunks that are due, with the fault's injection in its place; then the
        next chunk's wake, or the end."""
        conn = self._conn
        transport = conn.transport
        if conn.closed or transport is None:
            return
        sizes, tails, at, i, itl = self._sizes, self._tails, self._at, self._i, self._itl
        n = len(tails)
        now = time.monotonic()
        # the hot loop of the sim: one write per chunk, of bytes framed but for the head; a
        # chunk already due (a stream behind its schedule) goes out at once
        write, head = transport.write, self._content_head
        while i < n:
            if i == at and self._inject(self._chunks[i]):
                return  # the injection ended the stream
            write(sizes[i] + head + tails[i])
            i += 1
            if itl and i < n:
                due = self._first + i * itl
                if due > now:
                    self._i = i
                    self._pacer.next_in_lane(due, self)
                    return
        self._i = i
        if at == n and self._inject(None):
            return
        fault = self._answer.fault
        if fault is not None and fault.stream_end is StreamEnd.KEEP_ALIVE:
            self._phase = _KEEP_ALIVE
            self._pacer.at(time.monotonic() + KEEPALIVE_S, self)
        else:
            self._finish()

    def _inject(self, next_chunk: bytes | None) -> bool:
        """Write the fault's injection before ``next_chunk`` (None: after the last content
        chunk); True when it ends the stream."""
        conn = self._conn
        fault = self._answer.fault
        assert fault is not None
        match fault.injection:
            case Injection.MALFORMED_EVENT:
                conn.chunk(MALFORMED_EVENT)
            case Injection.INVALID_UTF8_EVENT:
                conn.chunk(self._content_head + INVALID_UTF8_STRING + STREAM_TAIL)
            case Injection.HUGE_EVENT:
                conn.chunk(self._content_head + b'"')
                for _ in range(HUGE_PIECES):
                    conn.chunk(HUGE_PIECE)
                conn.chunk(b'"' + STREAM_TAIL)
            case Injection.CUT_EVENT:
                if next_chunk is not None:
                    cut = self._content_head + next_chunk[: max(2, len(next_chunk) // 2)]
                else:
                    event = finish_event(self._head, self._answer.finish)
                    cut = event[: len(event) // 2]
                self._phase = _OVER
                conn.end(cut)  # and the connection (the fault's Connection: close)
                self._done()
                return True
            case Injection.RESET:
                self._phase = _RESET
                self._pacer.at(time.monotonic() + RESET_GRACE_S, self)
                return True
        return False

    def _finish(self) -> None:
        """The finish chunk, the usage chunk with the timing, ``[DONE]`` and the end of the
        body, in one write."""
        answer, head = self._answer, self._head
        self._phase = _OVER
        last = time.monotonic()
        timing = answer.timing(self._first if self._chunks else last, last)
        self._conn.end(
            finish_event(head, answer.finish) + usage_event(head, answer.usage, timing) + DONE_EVENT
        )
        if self._served is not None:
            self._served(answer, timing.first_byte, last)
        self._done()
