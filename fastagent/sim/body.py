"""A non-streamed completion: one ``chat.completion`` body, or one broken by a fault.

The body goes out when the stream of the same answer would have ended (``ttft`` plus
``itl`` per content chunk after the first, from the answer's start), woken by the
:class:`~.pacer.Pacer`, with ``fastagent_timing`` like a stream's (its ``first_byte`` and
``last_byte`` both the body's write).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from .conn import JSON, Conn
from .faults import HUGE_PIECE, HUGE_PIECES, BodySend, Fault
from .pacer import Pacer
from .stream import KEEPALIVE_S, RESET_GRACE_S
from .wire import Answer, Pace, completion, encode

__all__ = ["BodyCompletion"]

_CONTENT_KEY = b'"content":"'
# what the next wake does
_SEND, _RESET, _TRICKLE, _WAIT, _OVER = range(5)


class BodyCompletion:
    """Writes one answer as a non-streamed completion."""

    __slots__ = ("_answer", "_conn", "_done", "_model", "_pace", "_pacer", "_phase", "_served")

    def __init__(
        self,
        conn: Conn,
        answer: Answer,
        pace: Pace,
        pacer: Pacer,
        model: str,
        done: Callable[[], None],
        served: Callable[[Answer, float, float], None] | None = None,
    ) -> None:
        self._conn = conn
        self._answer = answer
        self._pace = pace
        self._pacer = pacer
        self._model = model
        self._done = done
        #: told of the answer once written in full: (answer, its write, its write)
        self._served = served
        self._phase = _SEND

    def start(self) -> None:
        """Wait out the answer's time, then send."""
        answer, pace = self._answer, self._pace
        self._conn.exchange = self
        n_chunks = answer.reply.n_chunks(answer.n_tokens)
        due = answer.started + pace.ttft + pace.itl * max(0, n_chunks - 1)
        if due > time.monotonic():
            self._pacer.at(due, self)
        else:
            self.wake(due)

    def gone(self) -> None:
        """The client left."""
        if self._phase != _OVER:
            self._phase = _OVER
            self._done()

    def wake(self, due: float) -> None:
        phase = self._phase
        if phase == _SEND:
            self._send()
        elif phase == _TRICKLE:
            self._conn.chunk(b" ")
            self._pacer.at(due + KEEPALIVE_S, self)
        elif phase == _RESET:
            self._over()
            self._conn.reset()

    def _over(self) -> None:
        self._phase = _OVER
        if self._conn.exchange is self:
            self._conn.exchange = None
        self._done()

    def _send(self) -> None:
        """The body, as the answer's fault says."""
        answer = self._answer
        fault = answer.fault
        huge = fault is not None and fault.body is BodySend.HUGE_CONTENT
        # huge_line writes its content itself, into an empty content string
        content = "" if huge else answer.reply.text_of(answer.n_tokens)
        sent = time.monotonic()
        raw = encode(
            completion(
                answer.cid.decode(),
                answer.created,
                self._model,
                content,
                answer.finish,
                answer.usage,
                answer.timing(sent, sent),
            )
        )
        if fault is None or not fault.alters_body:
            self._conn.respond(200, raw, JSON)
            if self._served is not None:
                self._served(answer, sent, sent)
            self._over()
        else:
            self._send_faulty(fault, raw)

    def _send_faulty(self, fault: Fault, raw: bytes) -> None:
        """``raw`` rewritten and sent the way ``fault`` says."""
        conn = self._conn
        if fault.rewrite is not None:
            raw = fault.rewrite(raw)
        how = fault.body
        length = None
        if how.has_length:
            length = len(raw) + (
                HUGE_PIECES * len(HUGE_PIECE) if how is BodySend.HUGE_CONTENT else 0
            )
        conn.begin(200, JSON, length=length, close=fault.close)
        match how:
            case BodySend.WHOLE:
                conn.write(raw)
                conn.done()
                self._over()
            case BodySend.HUGE_CONTENT:
                start, _, end = raw.partition(_CONTENT_KEY)
                conn.write(start + _CONTENT_KEY)
                for _ in range(HUGE_PIECES):
                    conn.write(HUGE_PIECE)
                conn.write(end)
                conn.done()
                self._over()
            case BodySend.HALF_THEN_RESET:
                conn.write(raw[: len(raw) // 2])
                self._phase = _RESET
                self._pacer.at(time.monotonic() + RESET_GRACE_S, self)
            case BodySend.HEADERS_ONLY:
                self._phase = _WAIT  # until the client leaves
            case BodySend.TRICKLE:
                conn.chunk(raw[:-1])
                self._phase = _TRICKLE
                self._pacer.at(time.monotonic() + KEEPALIVE_S, self)
