"""A non-streamed completion: one ``chat.completion`` body, or one broken by a fault.

The body goes out when the stream of the same answer would have ended (``ttft`` plus
``itl`` per content chunk after the first, from the request's arrival), with
``fastagent_timing`` and ``X-Fastagent-Received`` like a stream's.
"""

from __future__ import annotations

import asyncio
import time

from aiohttp import web

from .conn import KEEPALIVE_S, gone_within, reset
from .faults import HUGE_PIECE, HUGE_PIECES, BodySend, Fault
from .wire import JSON_HEADERS, Answer, Pace, Timing, completion, encode

__all__ = ["BodyCompletion"]

_CONTENT_KEY = b'"content":"'


class BodyCompletion:
    """Writes one answer as a non-streamed completion."""

    __slots__ = ("_answer", "_model", "_pace", "_request")

    def __init__(self, request: web.Request, answer: Answer, pace: Pace, model: str) -> None:
        self._request = request
        self._answer = answer
        self._pace = pace
        self._model = model

    async def send(self) -> web.StreamResponse:
        """Wait out the answer's time, then send the body as its fault says."""
        answer, pace = self._answer, self._pace
        n_chunks = answer.reply.n_chunks(answer.n_tokens)
        delay = pace.ttft + pace.itl * max(0, n_chunks - 1) - (time.monotonic() - answer.received)
        if delay > 0:
            await asyncio.sleep(delay)
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
                Timing(answer.received, sent, sent),
            )
        )
        headers = answer.headers(JSON_HEADERS)
        if fault is None or not fault.alters_body:
            return web.Response(body=raw, headers=headers)
        return await self._send_faulty(fault, raw, headers)

    async def _send_faulty(
        self, fault: Fault, raw: bytes, headers: dict[str, str]
    ) -> web.StreamResponse:
        """``raw`` rewritten and sent the way ``fault`` says."""
        resp = web.StreamResponse(headers=headers)
        if fault.rewrite is not None:
            raw = fault.rewrite(raw)
        if fault.close:
            resp.force_close()
        how = fault.body
        if how.has_length:
            extra = HUGE_PIECES * len(HUGE_PIECE) if how is BodySend.HUGE_CONTENT else 0
            resp.content_length = len(raw) + extra
        try:
            await resp.prepare(self._request)
            await self._write(resp, how, raw)
        except ConnectionError:
            pass
        return resp

    async def _write(self, resp: web.StreamResponse, how: BodySend, raw: bytes) -> None:
        match how:
            case BodySend.WHOLE:
                await resp.write(raw)
                await resp.write_eof()
            case BodySend.HUGE_CONTENT:
                start, _, end = raw.partition(_CONTENT_KEY)
                await resp.write(start + _CONTENT_KEY)
                for _ in range(HUGE_PIECES):
                    await resp.write(HUGE_PIECE)
                await resp.write(end)
                await resp.write_eof()
            case BodySend.HALF_THEN_RESET:
                await resp.write(raw[: len(raw) // 2])
                await reset(self._request)
            case BodySend.HEADERS_ONLY:
                await gone_within(self._request)
            case BodySend.TRICKLE:
                await resp.write(raw[:-1])
                while not await gone_within(self._request, KEEPALIVE_S):
                    await resp.write(b" ")
