"""The transport seam (fastagent._transports.base): one behavioural suite, both transports.

Every test runs against the lean client (``HttpClient.WIRE``) and aiohttp
(``HttpClient.AIOHTTP``), each made by ``open_transport`` as the LLM client makes it, and
talking to a loopback server that answers with scripted bytes (tests/_scripted.py). Where
aiohttp legitimately behaves otherwise the test says so and checks each. Replies that must
stay silent wait for the end of the test, never for a time.
"""

from __future__ import annotations

import gzip
import socket
import time
from collections.abc import Awaitable, Callable

import pytest
import uvloop
from _scripted import Exchange, Scripted, ok, replying

from fastagent._deadlines import Deadlines
from fastagent._transports import Response, Transport, open_transport
from fastagent.config import HttpClient
from fastagent.errors import (
    ConnectFailed,
    ConnectionBroken,
    FirstByteTimeout,
    ProtocolError,
    StaleConnection,
)

Body = Callable[[Transport, Scripted], Awaitable[object]]


@pytest.fixture(params=[HttpClient.WIRE, HttpClient.AIOHTTP], ids=lambda kind: kind.value)
def kind(request: pytest.FixtureRequest) -> HttpClient:
    return HttpClient(request.param)


def run(
    kind: HttpClient,
    reply: Callable[[Exchange], Awaitable[bool]],
    body: Body,
    *,
    read_timeout: float = 60.0,
    first_byte_timeout: float = 60.0,
) -> object:
    """Serve ``reply`` on a free port and run ``body`` with a transport of ``kind`` to it."""

    async def main() -> object:
        async with Scripted(reply) as server:
            transport = open_transport(
                kind,
                server.origin,
                {"X-Test": "1"},
                limit=8,
                connect_timeout=10.0,
                first_byte_timeout=first_byte_timeout,
                read_timeout=read_timeout,
                rcvbuf=0,
                deadlines=Deadlines(0.05),
            )
            try:
                return await body(transport, server)
            finally:
                await transport.close()

    return uvloop.run(main())


async def read_all(resp: Response) -> bytes:
    out = b""
    while data := await resp.read_chunk():
        out += data
    return out


async def hold(exchange: Exchange) -> bool:
    """Leave the connection open and silent until the test is over."""
    await exchange.writer.drain()
    await exchange.server.hold()
    return False


def answer_then_hold(response: bytes) -> Callable[[Exchange], Awaitable[bool]]:
    async def reply(exchange: Exchange) -> bool:
        exchange.writer.write(response)
        return await hold(exchange)

    return reply


STREAM = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"9\r\ndata: a\n\n\r\n"
    b"9;ext=1\r\ndata: b\n\n\r\n"
    b"c\r\ndata: STOP\n\n\r\n"
    b"0\r\nX-Trailer: t\r\n\r\n"
)
EVENTS = b"data: a\n\ndata: b\n\ndata: STOP\n\n"


def test_status_and_headers(kind: HttpClient) -> None:
    response = (
        b"HTTP/1.1 503 Busy\r\nRetry-After: 3\r\nX-Multi: a\r\nx-multi: b\r\n"
        b"Content-Length: 4\r\n\r\nbusy"
    )

    async def body(transport: Transport, server: Scripted) -> list[object]:
        async with await transport.request("POST", "/v1/x", b"{}") as resp:
            got: list[object] = [resp.status, resp.header("retry-after")]
            got += [resp.header("RETRY-AFTER"), resp.header("X-Missing"), await resp.read(100)]
            got.append(resp.header("x-multi"))
        async with await transport.request("POST", "/v1/x", b"{}") as resp:
            got += [resp.status, resp.header("Content-Type"), await read_all(resp)]
        return got

    got = run(kind, replying(response, STREAM), body)
    assert got[:5] == [503, "3", "3", "", b"busy"]
    # a repeated field: the lean client joins its values (RFC 9110 5.3), aiohttp's
    # CIMultiDict.get gives the first; the LLM client reads only Content-Type and Retry-After
    assert got[5] == ("a, b" if kind is HttpClient.WIRE else "a")
    assert got[6:] == [200, "text/event-stream", EVENTS]


def test_written_is_when_the_request_went_out(kind: HttpClient) -> None:
    """Response.written: the request's last byte handed to the kernel, on the monotonic clock
    the endpoint shares; after the call began and before its head could be parsed."""

    async def body(transport: Transport, server: Scripted) -> tuple[float, float, float]:
        before = time.monotonic()
        async with await transport.request("POST", "/v1/x", b"x" * 100_000) as resp:
            after = time.monotonic()
            await read_all(resp)
            return before, resp.written, after

    before, written, after = run(kind, replying(STREAM), body)  # type: ignore[misc]
    assert before <= written <= after


@pytest.mark.parametrize(
    ("response", "keep"),
    [
        (STREAM, True),
        (b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(EVENTS), EVENTS), True),
        (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n" + EVENTS, False),
        (b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(EVENTS), EVENTS), False),
        (b"HTTP/1.0 200 OK\r\n\r\n" + EVENTS, False),
    ],
    ids=["chunked", "length", "until-close", "http10-length", "http10-until-close"],
)
def test_bodies_and_keep_alive(kind: HttpClient, response: bytes, keep: bool) -> None:
    """Each body framing read whole, twice; a kept-alive connection serves both requests,
    one read until close (or HTTP/1.0 without keep-alive) is not reused."""

    async def body(transport: Transport, server: Scripted) -> list[object]:
        got: list[object] = []
        for _ in range(2):
            async with await transport.request("POST", "/v1/x", b"{}") as resp:
                got += [resp.status, await read_all(resp)]
        return [*got, server.connections]

    assert run(kind, replying(response, keep=keep), body) == [200, EVENTS] * 2 + [1 if keep else 2]


def test_interim_responses_are_skipped(kind: HttpClient) -> None:
    response = (
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
        b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok"
    )

    async def body(transport: Transport, server: Scripted) -> list[object]:
        async with await transport.request("POST", "/v1/x", b"{}") as resp:
            return [resp.status, await resp.read(100)]

    assert run(kind, replying(response), body) == [201, b"ok"]


@pytest.mark.parametrize("chunked", [False, True])
def test_a_gzip_body_is_decoded(kind: HttpClient, chunked: bool) -> None:
    packed = gzip.compress(EVENTS * 20)
    if chunked:
        framing = b"Transfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n" % (len(packed), packed)
    else:
        framing = b"Content-Length: %d\r\n\r\n%s" % (len(packed), packed)
    response = b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\n" + framing

    async def body(transport: Transport, server: Scripted) -> bytes:
        async with await transport.request("GET", "/") as resp:
            return await read_all(resp)

    assert run(kind, replying(response), body) == EVENTS * 20


def test_read_stops_at_its_limit(kind: HttpClient) -> None:
    big = bytes(range(256)) * 64
    response = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(big), big)

    async def body(transport: Transport, server: Scripted) -> list[bytes]:
        async with await transport.request("GET", "/") as resp:
            first = await resp.read(1000)
        async with await transport.request("GET", "/") as resp:
            whole = await resp.read(1 << 20)
        return [first, whole]

    assert run(kind, replying(response), body) == [big[:1000], big]


def test_drain_hands_the_body_to_a_sink_until_it_says_stop(kind: HttpClient) -> None:
    """After STOP the server holds the stream open: drain must return on the sink's word."""
    head = STREAM.partition(b"0\r\n")[0]  # everything but the last chunk
    got: list[bytes] = []

    def sink(data: bytes | memoryview) -> bool:
        got.append(bytes(data))  # a view may point into a reused buffer: keep a copy
        return b"".join(got).endswith(b"STOP\n\n")

    async def body(transport: Transport, server: Scripted) -> None:
        async with await transport.request("POST", "/v1/x", b"{}") as resp:
            await resp.drain(sink)

    run(kind, answer_then_hold(head), body)
    assert b"".join(got) == EVENTS


def test_drain_to_the_end_of_the_body(kind: HttpClient) -> None:
    got: list[bytes] = []

    def sink(data: bytes | memoryview) -> bool:
        got.append(bytes(data))
        return False

    async def body(transport: Transport, server: Scripted) -> int:
        async with await transport.request("POST", "/v1/x", b"{}") as resp:
            await resp.drain(sink)
        async with await transport.request("POST", "/v1/x", b"{}") as resp:
            await resp.drain(sink)
        return server.connections

    assert run(kind, replying(STREAM), body) == 1  # drained to its end: kept alive
    assert b"".join(got) == EVENTS * 2


def test_what_the_sink_raises_is_raised_from_drain(kind: HttpClient) -> None:
    def sink(data: bytes | memoryview) -> bool:
        raise ValueError("bad event")

    async def body(transport: Transport, server: Scripted) -> None:
        async with await transport.request("POST", "/v1/x", b"{}") as resp:
            with pytest.raises(ValueError, match="bad event"):
                await resp.drain(sink)

    run(kind, answer_then_hold(STREAM), body)


def test_the_request_carries_method_target_headers_and_body(kind: HttpClient) -> None:
    async def body(transport: Transport, server: Scripted) -> bytes:
        async with await transport.request("POST", "/v1/chat/completions", b'{"a": 1}') as resp:
            await resp.read(100)
        return server.heads[0]

    seen: list[bytes] = []

    async def echo(exchange: Exchange) -> bool:
        seen.append(exchange.body)
        return await ok(exchange)

    head = run(kind, echo, body)
    assert isinstance(head, bytes) and head.startswith(b"POST /v1/chat/completions HTTP/1.1\r\n")
    assert b"\r\nX-Test: 1\r\n" in head and b"\r\nContent-Length: 8\r\n" in head
    assert seen == [b'{"a": 1}']


# ---- errors ----------------------------------------------------------------------------------


def test_nothing_listening_is_connect_failed(kind: HttpClient) -> None:
    with socket.socket() as probe:  # a port that was free a moment ago, and is closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    async def main() -> None:
        transport = open_transport(
            kind,
            f"http://127.0.0.1:{port}",
            {},
            limit=1,
            connect_timeout=10.0,
            first_byte_timeout=10.0,
            read_timeout=10.0,
            rcvbuf=0,
            deadlines=Deadlines(0.05),
        )
        try:
            await transport.request("GET", "/")
        finally:
            await transport.close()

    with pytest.raises(ConnectFailed):
        uvloop.run(main())


def test_a_close_before_the_head_is_connection_broken(kind: HttpClient) -> None:
    async def drop(exchange: Exchange) -> bool:
        return False

    async def body(transport: Transport, server: Scripted) -> None:
        with pytest.raises(ConnectionBroken) as info:
            await transport.request("POST", "/v1/x", b"{}")
        assert not isinstance(info.value, StaleConnection)  # a fresh connection

    run(kind, drop, body)


@pytest.mark.parametrize(
    "response",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
    ],
    ids=["length", "chunked"],
)
def test_a_body_cut_short_is_connection_broken_after_its_data(
    kind: HttpClient, response: bytes
) -> None:
    got: list[bytes] = []

    async def body(transport: Transport, server: Scripted) -> None:
        async with await transport.request("POST", "/v1/x", b"{}") as resp:
            with pytest.raises(ConnectionBroken):
                while data := await resp.read_chunk():
                    got.append(data)

    run(kind, replying(response, keep=False), body)
    assert b"".join(got) == b"hello"


def test_a_response_that_never_begins_is_a_first_byte_timeout(kind: HttpClient) -> None:
    """A server that queues the request sends nothing: that wait is bounded by the first-byte
    timeout, not the (shorter) read timeout, and ends in FirstByteTimeout."""

    async def body(transport: Transport, server: Scripted) -> float:
        t0 = time.monotonic()
        with pytest.raises(FirstByteTimeout):
            await transport.request("POST", "/v1/x", b"{}")
        return time.monotonic() - t0

    assert run(kind, hold, body, read_timeout=0.1, first_byte_timeout=0.6) >= 0.6


def test_silence_in_the_body_is_a_timeout(kind: HttpClient) -> None:
    async def body(transport: Transport, server: Scripted) -> list[object]:
        got: list[object] = []
        async with await transport.request("POST", "/v1/x", b"{}") as resp:
            with pytest.raises(TimeoutError) as info:
                while data := await resp.read_chunk():
                    got.append(data)
            got.append(type(info.value) is not FirstByteTimeout)
        return got

    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"
    got = run(kind, answer_then_hold(head), body, read_timeout=0.3, first_byte_timeout=3600)
    assert got == [b"hello", True]


@pytest.mark.parametrize(
    "response",
    [
        b"HTTP/1.1 2000 OK\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok",
        b"HTTP/1.1 200 OK\nContent-Length: 2\n\nok",
    ],
    ids=["status", "length", "conflicting-length", "lf-only"],
)
def test_a_broken_head_is_a_protocol_error(kind: HttpClient, response: bytes) -> None:
    """Refused at once while the server holds the connection open: no timeout involved.

    Except that aiohttp parses responses leniently (outside its debug mode it lets llhttp
    take a bare LF for CRLF), so it reads the LF-only answer; the lean client is strict.
    """
    lenient = kind is HttpClient.AIOHTTP and b"\r" not in response

    async def body(transport: Transport, server: Scripted) -> None:
        if lenient:
            async with await transport.request("POST", "/v1/x", b"{}") as resp:
                assert (resp.status, await resp.read(10)) == (200, b"ok")
            return
        with pytest.raises(ProtocolError):
            await transport.request("POST", "/v1/x", b"{}")

    run(kind, answer_then_hold(response), body)


@pytest.mark.parametrize("size", [b"-7", b"0x5", b"zz"])
def test_a_broken_chunk_size_is_connection_broken(kind: HttpClient, size: bytes) -> None:
    """Refused from request() or read_chunk(), as the bytes come. The lean client says
    ProtocolError; aiohttp does too when its parser meets the bad size with the head, but
    from the body its ClientPayloadError cannot be told from a body cut short (both are its
    TransferEncodingError), so then it stays ConnectionBroken."""
    response = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n%s\r\nhello\r\n" % size

    async def body(transport: Transport, server: Scripted) -> None:
        with pytest.raises(ConnectionBroken) as info:
            async with await transport.request("POST", "/v1/x", b"{}") as resp:
                await read_all(resp)
        if kind is HttpClient.WIRE:
            assert isinstance(info.value, ProtocolError) and "bad chunk size" in str(info.value)

    run(kind, answer_then_hold(response), body)


def test_a_kept_alive_connection_closed_without_an_answer(kind: HttpClient) -> None:
    """The lean client raises StaleConnection (sending again is safe: nothing was
    answered); aiohttp cannot tell, and raises ConnectionBroken (its ServerDisconnected)."""

    async def once(exchange: Exchange) -> bool:
        if exchange.n == 2:
            return False  # read the request, close without answering
        return await ok(exchange)

    async def body(transport: Transport, server: Scripted) -> list[object]:
        async with await transport.request("POST", "/v1/x", b"{}") as resp:
            first = await resp.read(10)
        with pytest.raises(ConnectionBroken) as info:
            await transport.request("POST", "/v1/x", b"{}")
        async with await transport.request("POST", "/v1/x", b"{}") as resp:
            third = await resp.read(10)
        return [first, isinstance(info.value, StaleConnection), third, server.connections]

    assert run(kind, once, body) == [b"ok", kind is HttpClient.WIRE, b"ok", 2]
