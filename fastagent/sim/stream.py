"""A streamed completion: server-sent events on the profile's schedule, or broken by a fault.

A stream waits ``ttft`` from the request's arrival before the role chunk and the first
content chunk, then follows a schedule: content chunk ``i`` is due ``i * itl`` after the
first, so timer slack never accumulates (a late chunk goes out at once). Each event is its
own write; after the finish chunk there is always a usage chunk (``choices: []``) carrying
``usage`` and ``fastagent_timing``, then ``data: [DONE]``.
"""

from __future__ import annotations

import asyncio
import time

from aiohttp import web

from .conn import KEEPALIVE_S, gone_within, reset, sleep_until
from .faults import (
    HUGE_PIECE,
    HUGE_PIECES,
    INVALID_UTF8_STRING,
    MALFORMED_EVENT,
    Injection,
    StreamEnd,
    injection_index,
)
from .wire import (
    CONTENT_CHOICES,
    DONE_EVENT,
    ROLE_CHOICES,
    STREAM_TAIL,
    Answer,
    Pace,
    Timing,
    event_head,
    finish_event,
    usage_event,
)

__all__ = ["StreamedCompletion"]

_SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}


class StreamedCompletion:
    """Writes one answer as a stream of ``chat.completion.chunk`` events."""

    __slots__ = ("_answer", "_chunks", "_content_head", "_head", "_pace", "_request", "_resp")

    def __init__(self, request: web.Request, answer: Answer, pace: Pace, model_json: bytes) -> None:
        self._request = request
        self._answer = answer
        self._pace = pace
        self._chunks = answer.reply.chunks_of(answer.n_tokens)
        self._head = event_head(answer.cid, answer.created, model_json)
        self._content_head = self._head + CONTENT_CHOICES
        self._resp = web.StreamResponse(headers=answer.headers(_SSE_HEADERS))
        if answer.fault is not None and answer.fault.close:
            self._resp.force_close()

    async def send(self) -> web.StreamResponse:
        """Write the stream; a client that leaves midway ends it quietly."""
        resp, fault = self._resp, self._answer.fault
        end = fault.stream_end if fault is not None else StreamEnd.DONE
        try:
            await resp.prepare(self._request)
            await sleep_until(self._answer.received + self._pace.ttft)
            await resp.write(self._head + ROLE_CHOICES)
            first_byte = time.monotonic()
            if end is StreamEnd.STALL:
                await self._stall()
                return resp
            if not await self._content(first_byte):
                return resp  # the fault's injection ended the stream
            if end is StreamEnd.KEEP_ALIVE:
                await self._keep_alive()
            else:
                await self._finish(first_byte)
        except ConnectionError:
            pass
        return resp

    async def _write_content(self, chunk: bytes) -> None:
        await self._resp.write(self._content_head + chunk + STREAM_TAIL)

    async def _content(self, first_byte: float) -> bool:
        """The content chunks on schedule, with the fault's injection halfway; False when the
        injection ended the stream."""
        chunks = self._chunks
        fault = self._answer.fault
        injection = fault.injection if fault is not None else None
        at = injection_index(len(chunks)) if injection is not None else -1
        ends = fault is not None and fault.ends_in_injection
        due, itl = first_byte, self._pace.itl
        # the hot loop of the sim: its writes and sleeps inlined
        write, head, monotonic = self._resp.write, self._content_head, time.monotonic
        for i, chunk in enumerate(chunks):
            if i and itl:
                due += itl
                delay = due - monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            if i == at:
                await self._inject(injection, chunk)
                if ends:
                    return False
            await write(head + chunk + STREAM_TAIL)
        if at == len(chunks):
            await self._inject(injection, None)
            return not ends
        return True

    async def _inject(self, injection: Injection | None, next_chunk: bytes | None) -> None:
        """Write ``injection`` before ``next_chunk`` (None: after the last content chunk)."""
        resp = self._resp
        match injection:
            case Injection.MALFORMED_EVENT:
                await resp.write(MALFORMED_EVENT)
            case Injection.INVALID_UTF8_EVENT:
                await self._write_content(INVALID_UTF8_STRING)
            case Injection.HUGE_EVENT:
                await resp.write(self._content_head + b'"')
                for _ in range(HUGE_PIECES):
                    await resp.write(HUGE_PIECE)
                await resp.write(b'"' + STREAM_TAIL)
            case Injection.CUT_EVENT:
                if next_chunk is not None:
                    cut = self._content_head + next_chunk[: max(2, len(next_chunk) // 2)]
                else:
                    event = finish_event(self._head, self._answer.finish)
                    cut = event[: len(event) // 2]
                await resp.write(cut)
                await resp.write_eof()
            case Injection.RESET:
                await reset(self._request)

    async def _stall(self) -> None:
        """One content chunk, then nothing until the client leaves."""
        if self._chunks:
            await self._write_content(self._chunks[0])
        await gone_within(self._request)

    async def _keep_alive(self) -> None:
        """No finish, usage or ``[DONE]``: a ``: ping`` comment every second until the client
        leaves."""
        while not await gone_within(self._request, KEEPALIVE_S):
            await self._resp.write(b": ping\n\n")

    async def _finish(self, first_byte: float) -> None:
        """The finish chunk, the usage chunk with the timing, ``[DONE]`` and the end."""
        resp, answer = self._resp, self._answer
        await resp.write(finish_event(self._head, answer.finish))
        timing = Timing(answer.received, first_byte, time.monotonic())
        await resp.write(usage_event(self._head, answer.usage, timing))
        await resp.write(DONE_EVENT)
        await resp.write_eof()
