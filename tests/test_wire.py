"""The lean HTTP/1.1 client (fastagent._transports.wire): framing, pooling, flow control.

Framing is checked by feeding a connection's protocol every split of a response through the
shared read buffer, as the event loop does it; the pool, flow control, timeouts and TLS
against real asyncio servers on loopback that answer with scripted bytes (tests/_scripted).
What both transports must do alike is in tests/test_transports.py.
"""

from __future__ import annotations

import asyncio
import gzip
import ssl
import time
import zlib
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field

import pytest
import uvloop
from _scripted import Exchange, Scripted, ok, replying

from fastagent._deadlines import Deadlines
from fastagent._transports import wire as _wire
from fastagent._transports.wire import (
    READ_LIMIT,
    State,
    WirePool,
    WireResponse,
    _Conn,
    header_fields,
)
from fastagent.errors import (
    ConnectFailed,
    ConnectionBroken,
    FirstByteTimeout,
    ProtocolError,
    StaleConnection,
)

# ---- framing: a protocol fed every split of the bytes ----------------------------------------


@dataclass
class FakeTransport:
    """What the protocol does to its transport."""

    closed: bool = False
    paused: bool = False
    pauses: int = 0

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        self.paused = True
        self.pauses += 1

    def resume_reading(self) -> None:
        self.paused = False


@dataclass
class Fed:
    """A protocol after ``feed``: its connection, what it did to its transport, what a sink got."""

    conn: _Conn
    transport: FakeTransport
    sunk: list[bytes] = field(default_factory=list)

    @property
    def body(self) -> bytes:
        return bytes(self.conn.body) + b"".join(self.sunk)

    @property
    def headers(self) -> dict[str, str]:
        return header_fields(self.conn.head)

    def lose(self, exc: Exception | None = None) -> Fed:
        """The server closes the connection."""
        self.transport.closed = True
        self.conn.connection_lost(exc)
        return self


def feed(
    response: bytes,
    cuts: tuple[int, ...] | range = (),
    *,
    method: str = "POST",
    sink: Callable[[bytes | memoryview], bool] | None = None,
) -> Fed:
    """A protocol fed ``response`` in pieces cut at ``cuts``, each piece through the shared
    read buffer (16 bytes here) as the transport does it. ``sink`` (default: none, the body
    stays in ``conn.body``) is drain()'s."""
    pool = WirePool("http://127.0.0.1:1")
    pool.rview = memoryview(bytearray(16))
    conn = _Conn(asyncio.new_event_loop(), pool)
    transport = FakeTransport()
    conn.connection_made(transport)  # type: ignore[arg-type]
    conn.reset(method)
    fed = Fed(conn, transport)
    if sink is not None:

        def recording(data: bytes | memoryview) -> bool:
            fed.sunk.append(bytes(data))
            return sink(data)

        conn.sink = recording
    start = 0
    for cut in (*cuts, len(response)):
        piece = response[start:cut]
        start = cut
        while piece:
            view = conn.get_buffer(-1)
            n = min(len(view), len(piece))
            view[:n] = piece[:n]
            conn.buffer_updated(n)
            view[:n] = b"\xff" * n  # the transport reuses the buffer: nothing may keep a view
            piece = piece[n:]
    conn.loop.close()
    return fed


def every_split(response: bytes, **kwargs: object) -> Iterator[tuple[object, Fed]]:
    """``feed`` with one cut at every position, then byte by byte; yields (cut, result)."""
    for cut in range(1, len(response)):
        yield cut, feed(response, (cut,), **kwargs)  # type: ignore[arg-type]
    yield "bytewise", feed(response, range(1, len(response)), **kwargs)  # type: ignore[arg-type]


def complete(fed: Fed, body: bytes, *, reusable: bool = True) -> bool:
    """The response was read whole, without error, and its connection may be reused or not
    (a connection not to reuse is closed when the response is released)."""
    conn = fed.conn
    assert conn.error is None, conn.error
    assert conn.state is State.DONE, conn.state.name
    assert fed.body == body, fed.body
    assert conn.keep_alive is reusable
    assert not (reusable and fed.transport.closed)
    return True


CHUNKED = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n"
    b"X-Dropped: 2xx heads keep only Content-Type\r\n\r\n"
    b"7\r\ndata: a\r\n"
    b'a;ext=1;name="quoted;value"\r\n\n\ndata: bc\r\n'
    b"0;last\r\nX-Trailer: 1\r\nX-Other: 2\r\n\r\n"
)
LENGTH = b"HTTP/1.1 404 No\r\nContent-Length: 11\r\nX-A: 1\r\nx-a:  2  \r\n\r\nhello world"


def test_chunked_body_with_extensions_and_trailers_split_anywhere() -> None:
    for cut, fed in every_split(CHUNKED):
        assert complete(fed, b"data: a\n\ndata: bc"), cut
        assert fed.conn.status == 200 and fed.headers == {"content-type": "text/event-stream"}


def test_content_length_body_and_repeated_headers_split_anywhere() -> None:
    for cut, fed in every_split(LENGTH):
        assert complete(fed, b"hello world"), cut
        assert fed.conn.status == 404, cut
        assert fed.headers == {"content-length": "11", "x-a": "1, 2"}, cut


def test_interim_responses_are_skipped_split_anywhere() -> None:
    response = (
        b"HTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n"
        b"HTTP/1.1 503 Busy\r\nRetry-After: 3\r\nContent-Length: 4\r\n\r\nbusy"
    )
    for cut, fed in every_split(response):
        assert complete(fed, b"busy"), cut
        assert fed.conn.status == 503, cut
        assert fed.headers == {"retry-after": "3", "content-length": "4"}, cut  # no Link


def test_a_head_alone_is_waited_for_not_an_error() -> None:
    fed = feed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel")
    assert fed.conn.error is None and fed.conn.state is State.BODY and fed.body == b"hel"


@pytest.mark.parametrize(
    ("response", "reusable"),
    [
        (b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", False),
        (b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok", True),
        (b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok", False),
        (b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok", True),
    ],
)
def test_http10_and_connection_close_split_anywhere(response: bytes, reusable: bool) -> None:
    for cut, fed in every_split(response):
        assert complete(fed, b"ok", reusable=reusable), cut


@pytest.mark.parametrize("version", [b"1.1", b"1.0"])
def test_a_body_without_length_is_read_until_close(version: bytes) -> None:
    response = b"HTTP/%s 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil close" % version
    for cut, fed in every_split(response):
        assert fed.conn.state is State.UNTIL_CLOSE and fed.body == b"until close", cut
        assert complete(fed.lose(), b"until close", reusable=False), cut
    # reset by the server is not a clean end
    broken = feed(response).lose(ConnectionResetError("reset"))
    assert isinstance(broken.conn.error, ConnectionBroken) and broken.conn.state is not State.DONE
    assert "in the response body: reset" in str(broken.conn.error)


def test_a_body_cut_short_is_an_error_after_its_data() -> None:
    for response in (
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
    ):
        fed = feed(response).lose()
        assert fed.body == b"hello"
        assert isinstance(fed.conn.error, ConnectionBroken)
        assert "server closed the connection in the response body" in str(fed.conn.error)
    fed = feed(b"HTTP/1.1 200 OK\r\nContent-").lose()
    assert "in the response head" in str(fed.conn.error)


@pytest.mark.parametrize(
    "response",
    [
        b"HTTP/1.1 204 No Content\r\n\r\n",
        b"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\nContent-Encoding: br\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
    ],
)
def test_responses_without_a_body_split_anywhere(response: bytes) -> None:
    for cut, fed in every_split(response):
        assert complete(fed, b""), cut


def test_the_answer_to_head_has_no_body_and_is_not_reused() -> None:
    response = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"
    for cut, fed in every_split(response, method="HEAD"):
        assert complete(fed, b"", reusable=False), cut
    fed = feed(response + b"hello", method="HEAD")  # a server that sends the body anyway
    assert complete(fed, b"", reusable=False) and fed.transport.closed


@pytest.mark.parametrize(
    "after",
    [
        b"junk",
        b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecond",  # never parsed into this body
        b"\r\nX",
    ],
)
def test_bytes_after_the_response_forbid_reuse(after: bytes) -> None:
    for response in (LENGTH, LENGTH.replace(b"X-A: 1", b"Connection: close")):
        for cut, fed in every_split(response + after):
            assert complete(fed, b"hello world", reusable=False), cut
            assert fed.transport.closed, cut


def test_bytes_on_an_idle_connection_close_it() -> None:
    fed = feed(LENGTH)
    assert complete(fed, b"hello world")
    fed.conn.data_received(b"HTTP/1.1 408 Request Timeout\r\n\r\n")
    assert fed.transport.closed and not fed.conn.keep_alive and fed.conn.error is None


GZIPPED = gzip.compress(b"data: zipped\n\n" * 50)


def _compressed(coding: bytes, packed: bytes, chunked: bool = False) -> bytes:
    head = b"HTTP/1.1 200 OK\r\nContent-Encoding: %s\r\n" % coding
    if chunked:
        half = len(packed) // 2
        return (
            head
            + b"Transfer-Encoding: chunked\r\n\r\n"
            + b"%x\r\n%s\r\n%x\r\n%s\r\n0\r\n\r\n"
            % (half, packed[:half], len(packed) - half, packed[half:])
        )
    return head + b"Content-Length: %d\r\n\r\n" % len(packed) + packed


@pytest.mark.parametrize(
    ("coding", "packed"),
    [
        (b"gzip", GZIPPED),
        (b"x-gzip", GZIPPED),
        (b"GZIP", GZIPPED),
        (b"deflate", zlib.compress(b"data: zipped\n\n" * 50)),  # the zlib format (RFC 9110)
        (b"deflate", zlib.compress(b"data: zipped\n\n" * 50, wbits=-15)),  # raw, as some send
        (
            b"gzip",
            gzip.compress(b"data: zipped\n\n" * 20) + gzip.compress(b"data: zipped\n\n" * 30),
        ),
        (b"identity", b"data: zipped\n\n" * 50),
    ],
)
@pytest.mark.parametrize("chunked", [False, True])
def test_a_compressed_body_is_decoded_split_anywhere(
    coding: bytes, packed: bytes, chunked: bool
) -> None:
    for cut, fed in every_split(_compressed(coding, packed, chunked)):
        assert complete(fed, b"data: zipped\n\n" * 50), cut


def test_a_sink_gets_the_decoded_body_and_nothing_is_buffered() -> None:
    for cut, fed in every_split(_compressed(b"gzip", GZIPPED, True), sink=lambda data: False):
        assert complete(fed, b"data: zipped\n\n" * 50) and not fed.conn.body, cut


def test_a_sink_that_says_stop_gets_no_more() -> None:
    got: list[bytes] = []

    def sink(data: bytes | memoryview) -> bool:
        got.append(bytes(data))
        return True

    fed = feed(b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nabcdefgh", (38, 42), sink=sink)
    assert got == [b"abcd"] and bytes(fed.conn.body) == b"efgh" and fed.conn.sink is None


def test_what_the_sink_raises_becomes_the_error_and_closes() -> None:
    def sink(data: bytes | memoryview) -> bool:
        raise ValueError("bad event")

    for cut, fed in every_split(CHUNKED, sink=sink):
        assert isinstance(fed.conn.error, ValueError), cut
        assert fed.transport.closed and not fed.conn.keep_alive, cut


def test_a_backlog_past_the_read_limit_pauses_reading() -> None:
    body = b"x" * (READ_LIMIT * 3)
    fed = feed(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    assert fed.transport.paused and fed.transport.pauses == 1
    assert fed.conn.take() == body and not fed.transport.paused


# What is refused, and what its message must name.
OK = b"HTTP/1.1 200 OK\r\n"
CL = OK + b"Content-Length: "
TE = OK + b"Transfer-Encoding: "
CE = OK + b"Content-Encoding: "
CHUNKED_HEAD = TE + b"chunked\r\n\r\n"
REFUSED = [
    (b"SSH-2.0-OpenSSH_9.6\r\n\r\n", "bad status line"),
    (b"HTTP/1.1 2000 OK\r\n\r\n", "bad status line"),
    (b"HTTP/1.1 20 OK\r\n\r\n", "bad status line"),
    (b"HTTP/1.1  200 OK\r\n\r\n", "bad status line"),
    ("HTTP/1.1 2²0 OK\r\n\r\n".encode(), "bad status line"),
    (b"HTTP/1.1 099 Low\r\n\r\n", "bad status line: status code 099"),
    (b"HTTP/1.1 600 High\r\n\r\n", "bad status line: status code 600"),
    (b"HTTP/2.0 200 OK\r\n\r\n", "bad status line: HTTP/2.0 is not HTTP/1.x"),
    (b"HTTP/0.9 200 OK\r\n\r\n", "bad status line: HTTP/0.9"),
    (b"HTTP/1.2 200 OK\r\n\r\n", "bad status line"),
    (b"HTTP/1.1 200 OK\nContent-Length: 2\n\nok", "bad status line"),  # LF only
    (CL + b"2\n\nok", "invalid header"),  # LF only
    (b"HTTP/1.1 200 OK\r\r\n\r\n", "malformed response head"),
    (OK + b"bad header\r\n\r\n", "invalid header"),
    (OK + b"ba(d: x\r\n\r\n", "invalid header"),
    (OK + b"bad : x\r\n\r\n", "invalid header"),
    (OK + b": x\r\n\r\n", "invalid header"),
    (OK + b"X: a\r\n folded\r\n\r\n", "invalid header"),
    (OK + b"X: a\x01\r\n\r\n", "invalid header"),
    (OK + b" x: y\r\n\r\n", "invalid header"),
    (CL + b"-1\r\n\r\n", "invalid Content-Length"),
    (CL + b"+2\r\n\r\nok", "invalid Content-Length"),
    (CL + b"0x5\r\n\r\n", "invalid Content-Length"),
    (CL + b"1_0\r\n\r\n", "invalid Content-Length"),
    (CL + "²\r\n\r\n".encode(), "invalid Content-Length"),
    (CL + b"2, 2\r\n\r\nok", "invalid Content-Length"),
    (OK + b"Content-Length:\r\n\r\n", "invalid Content-Length"),
    (CL + b"99999999999999999999\r\n\r\n", "invalid Content-Length"),
    (CL + b"2\r\nContent-Length: 3\r\n\r\nok", "conflicting Content-Length"),
    (CL + b"2\r\nContent-Length: 2\r\n\r\nok", "conflicting Content-Length"),
    (CL + b"2\r\nTransfer-Encoding: chunked\r\n\r\n", "conflicting Content-Length and"),
    (TE + b"chunked\r\nContent-Length: 2\r\n\r\n", "conflicting Content-Length and"),
    (TE + b"xchunked\r\n\r\nabc", "unsupported Transfer-Encoding 'xchunked'"),
    (TE + b"gzip, chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", "Transfer-Encoding 'gzip, chunked'"),
    (TE + b"chunked, gzip\r\n\r\nabc", "unsupported Transfer-Encoding"),
    (TE + b"identity\r\n\r\nabc", "unsupported Transfer-Encoding"),
    (TE + b"chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", "'chunked, chunked'"),
    (b"HTTP/1.0" + CHUNKED_HEAD[8:] + b"0\r\n\r\n", "'chunked' in an HTTP/1.0 response"),
    (CE + b"br\r\n\r\n", "unsupported Content-Encoding 'br'"),
    (CE + b"gzip, gzip\r\nContent-Length: 0\r\n\r\n", "unsupported Content-Encoding"),
    (CE + b"zstd\r\nContent-Length: 0\r\n\r\n", "unsupported Content-Encoding"),
    (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n\r\n", "unexpected 101"),
    *(
        (CHUNKED_HEAD + size + b"\r\nhello\r\n0\r\n\r\n", "bad chunk size")
        for size in (b"-7", b"0x5", b"+5", b"1_0", b"zz", b" 5", b"5 ", b"", b"fffffffffffffffff1")
    ),
    (CHUNKED_HEAD + b"5\nhello\r\n0\r\n\r\n", "bad chunk size"),
    (CHUNKED_HEAD + b"1\r\nab\r\n", "bad chunked body"),
    (CHUNKED_HEAD + b"5\r\nhello\n0\r\n\r\n", "bad chunked body"),
    (CHUNKED_HEAD + b"0\r\nbad trailer\r\n\r\n", "invalid trailer field"),
    # a framing field among the trailers (a sender MUST NOT, RFC 9110 6.5.1): llhttp refuses
    (CHUNKED_HEAD + b"0\r\nContent-Length: 9\r\n\r\n", "conflicting Content-Length"),
    (_compressed(b"gzip", b"not gzip at all"), "undecodable gzip body"),
    (_compressed(b"deflate", b"x\x9cnot deflate"), "undecodable deflate body"),
    (_compressed(b"gzip", GZIPPED[:-12]), "gzip body ends before its compressed stream"),
    (_compressed(b"deflate", zlib.compress(b"abc") + b"junk"), "deflate body: bytes after"),
]


@pytest.mark.parametrize(("response", "message"), REFUSED)
def test_broken_http_fails_at_once_and_closes_split_anywhere(response: bytes, message: str) -> None:
    for cut, fed in every_split(response):
        error = fed.conn.error  # with no more bytes and no close: nothing waits for a timeout
        assert isinstance(error, ProtocolError), (cut, error)
        assert message in str(error), (cut, str(error))
        assert fed.transport.closed and not fed.conn.keep_alive, cut
        assert fed.conn.state is not State.DONE, cut


def test_a_head_too_large_is_refused_while_it_arrives() -> None:
    response = b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * 20000
    for cuts in [(), (1000,), (65536,), tuple(range(0, len(response), 4096))]:
        fed = feed(response, cuts)
        assert isinstance(fed.conn.error, ProtocolError), cuts
        assert "response head larger than 65536 bytes" in str(fed.conn.error)
    trailers = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: " + b"y" * 70000
    fed = feed(trailers)
    assert "chunk size lines and trailers larger than 65536 bytes" in str(fed.conn.error)


def test_a_long_stream_of_small_chunks_is_not_a_large_head() -> None:
    events = b"".join(b"6\r\ndata: \r\n" for _ in range(20000))  # 240 KB of chunks
    fed = feed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + events + b"0\r\n\r\n")
    assert complete(fed, b"data: " * 20000)


# ---- the reader's deadline, directly ---------------------------------------------------------


def test_the_read_deadline_counts_from_the_last_byte_not_from_the_wait() -> None:
    """``expire`` (called by the Deadlines ticker) re-arms while bytes keep coming, and
    times the wait out only after ``read_timeout`` seconds without one."""

    async def main() -> list[object]:
        loop = asyncio.get_running_loop()
        pool = WirePool("http://127.0.0.1:1", read_timeout=10.0, deadlines=Deadlines(3600))
        conn = _Conn(loop, pool)
        conn.first_read = time.monotonic()  # the response has begun
        waiting = loop.create_task(conn.wait())
        await asyncio.sleep(0)
        seen: list[object] = [round(pool.deadlines._armed[conn] - conn.last_read, 6)]
        conn.last_read = loop.time() - 5.0  # a byte came 5 s ago
        conn.expire()
        seen.append(not waiting.done() and conn in pool.deadlines._armed)
        conn.last_read = loop.time() - 10.5  # and none since
        conn.expire()
        await asyncio.sleep(0)
        seen.append(waiting.done() and isinstance(waiting.exception(), TimeoutError))
        seen.append(conn not in pool.deadlines._armed and conn.waiter is None)
        return seen

    assert uvloop.run(main()) == [10.0, True, True, True]


def test_before_the_first_byte_the_first_byte_timeout_applies() -> None:
    """A response that has not begun waits ``first_byte_timeout`` (a queueing server sends
    nothing), and its expiry is FirstByteTimeout, not the read timeout's TimeoutError."""

    async def main() -> list[object]:
        loop = asyncio.get_running_loop()
        pool = WirePool(
            "http://127.0.0.1:1", first_byte_timeout=100.0, read_timeout=10.0,
            deadlines=Deadlines(3600),
        )  # fmt: skip
        conn = _Conn(loop, pool)
        waiting = loop.create_task(conn.wait())
        await asyncio.sleep(0)
        seen: list[object] = [round(pool.deadlines._armed[conn] - conn.last_read, 6)]
        conn.last_read = loop.time() - 50.0  # no byte yet, but within the first-byte timeout
        conn.expire()
        seen.append(not waiting.done())
        conn.last_read = loop.time() - 100.5
        conn.expire()
        await asyncio.sleep(0)
        seen.append(waiting.done() and type(waiting.exception()) is FirstByteTimeout)
        return seen

    assert uvloop.run(main()) == [100.0, True, True]


# ---- against real servers ------------------------------------------------------------------


def serve(
    reply: Callable[[Exchange], Awaitable[bool]],
    body: Callable[[WirePool, Scripted], Awaitable[object]],
    **pool: object,
) -> object:
    """Serve ``reply`` on a free port, run ``body`` with a pool to it and the server."""

    async def main() -> object:
        async with Scripted(reply) as server:
            wire = WirePool(server.origin, {"X-Test": "1"}, **pool)  # type: ignore[arg-type]
            try:
                return await body(wire, server)
            finally:
                await wire.close()

    return uvloop.run(main())


async def get(wire: WirePool, method: str = "POST") -> bytes:
    async with await wire.request(method, "/x", b"{}") as resp:
        assert resp.status == 200
        return await resp.read(1 << 20)


def test_keep_alive_reuses_one_connection() -> None:
    async def body(wire: WirePool, server: Scripted) -> list[object]:
        return [await get(wire) for _ in range(5)] + [server.connections]

    assert serve(ok, body) == [b"ok"] * 5 + [1]


def test_idle_connection_is_closed_after_the_keepalive_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_wire, "KEEPALIVE", 0.1)

    async def body(wire: WirePool, server: Scripted) -> list[object]:
        first = await get(wire)
        idle_after_first = len(wire._idle)
        while wire._idle:  # however long the ticker takes on a busy machine
            await asyncio.sleep(0.05)
        return [first, idle_after_first, await get(wire), server.connections]

    assert serve(ok, body, read_timeout=0.2) == [b"ok", 1, b"ok", 2]


def test_concurrent_requests_get_their_own_connections() -> None:
    async def body(wire: WirePool, server: Scripted) -> list[object]:
        first = await asyncio.gather(*(get(wire) for _ in range(10)))
        second = await asyncio.gather(*(get(wire) for _ in range(10)))
        return [*first, *second, server.connections]

    assert serve(ok, body) == [b"ok"] * 20 + [10]


def test_server_dropping_a_reused_connection_asks_to_send_again() -> None:
    async def once(exchange: Exchange) -> bool:
        if exchange.n == 2:
            return False  # read the request, close without answering
        return await ok(exchange)

    async def body(wire: WirePool, server: Scripted) -> list[object]:
        first = await get(wire)
        with pytest.raises(StaleConnection, match="kept-alive connection closed"):
            await get(wire)
        return [first, await get(wire), server.connections]

    assert serve(once, body) == [b"ok", b"ok", 2]


def test_a_reused_connection_that_answered_garbage_is_not_stale() -> None:
    """Only a close before any byte is safe to send again."""

    async def body(wire: WirePool, server: Scripted) -> None:
        await get(wire)
        with pytest.raises(ProtocolError, match="bad status line") as info:
            await get(wire)
        assert not isinstance(info.value, StaleConnection)

    serve(replying(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", b"HTTP/9 nope\r\n\r\n"), body)


def test_fresh_connection_closed_before_the_head_is_an_error() -> None:
    async def drop(exchange: Exchange) -> bool:
        return False

    async def body(wire: WirePool, server: Scripted) -> None:
        with pytest.raises(ConnectionBroken, match="response head") as info:
            await get(wire)
        assert not isinstance(info.value, StaleConnection)

    serve(drop, body)


def test_chunked_stream_cut_short_is_an_error_after_its_data() -> None:
    async def cut(exchange: Exchange) -> bool:
        exchange.writer.write(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"
        )
        await exchange.writer.drain()
        return False

    got: list[bytes] = []

    async def body(wire: WirePool, server: Scripted) -> None:
        async with await wire.request("POST", "/x", b"{}") as resp:
            async for data in resp.chunks():
                got.append(data)

    with pytest.raises(ConnectionBroken, match="response body"):
        serve(cut, body)
    assert got == [b"hello"]


def test_body_until_close_and_connection_close_are_not_pooled() -> None:
    async def close(exchange: Exchange) -> bool:
        exchange.writer.write(b"HTTP/1.1 200 OK\r\n\r\nuntil ")
        await exchange.writer.drain()
        exchange.writer.write(b"close")
        return False

    async def body(wire: WirePool, server: Scripted) -> list[object]:
        return [await get(wire), await get(wire), server.connections]

    assert serve(close, body) == [b"until close", b"until close", 2]


@pytest.mark.parametrize(
    "response",
    [
        b"HTTP/1.1 200 OK\nContent-Length: 2\n\nok",  # LF only: refused, not waited for
        "HTTP/1.1 2²0 OK\r\n\r\n".encode(),
        "HTTP/1.1 200 OK\r\nContent-Length: ²\r\n\r\n".encode(),
        b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 8\r\n\r\nnot gzip",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n-7\r\n",
    ],
)
def test_broken_http_from_a_server_fails_the_request_at_once(response: bytes) -> None:
    """The error reaches the reader (not the loop's exception handler) while the server
    keeps the connection open and silent: no read timeout is involved."""
    handled: list[dict[str, object]] = []

    async def answer_then_hold(exchange: Exchange) -> bool:
        exchange.writer.write(response)
        await exchange.writer.drain()
        await exchange.server.hold()
        return False

    async def body(wire: WirePool, server: Scripted) -> None:
        asyncio.get_running_loop().set_exception_handler(lambda loop, ctx: handled.append(ctx))
        with pytest.raises(ProtocolError):
            await get(wire)

    serve(answer_then_hold, body, read_timeout=30)
    assert handled == []


def test_silence_is_a_read_timeout() -> None:
    async def silent(exchange: Exchange) -> bool:
        exchange.writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        await exchange.writer.drain()
        await exchange.server.hold()
        return False

    async def body(wire: WirePool, server: Scripted) -> None:
        with pytest.raises(TimeoutError):
            await get(wire)

    serve(silent, body, read_timeout=0.2)


def test_refused_connection_is_connect_failed() -> None:
    async def main() -> None:
        wire = WirePool("http://127.0.0.1:9")
        try:
            await wire.request("GET", "/")
        finally:
            await wire.close()

    with pytest.raises(ConnectFailed, match=r"cannot connect to 127\.0\.0\.1:9"):
        uvloop.run(main())


def test_a_slow_reader_stops_reading_the_socket() -> None:
    total = 2 << 20

    async def flood(exchange: Exchange) -> bool:
        writer = exchange.writer
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % total)
        for _ in range(total // 65536):
            writer.write(b"x" * 65536)
            await writer.drain()
        return True

    peak: list[int] = []

    async def body(wire: WirePool, server: Scripted) -> list[object]:
        got = 0
        async with await wire.request("GET", "/big") as resp:
            assert isinstance(resp, WireResponse)
            await asyncio.sleep(0.2)  # let the server run ahead of the reader
            while data := await resp.read_chunk():
                peak.append(len(resp._conn.body) + len(data))
                got += len(data)
                await asyncio.sleep(0)
        return [got, server.connections]

    assert serve(flood, body, rcvbuf=16384) == [total, 1]
    # what the heap held at once stays near READ_LIMIT plus one socket read, far below 2 MiB
    assert max(peak) < READ_LIMIT + 256 * 1024


def test_request_carries_host_fixed_headers_and_body() -> None:
    seen: list[bytes] = []

    async def echo(exchange: Exchange) -> bool:
        seen.extend((exchange.head, exchange.body))
        exchange.writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        return True

    async def body(wire: WirePool, server: Scripted) -> None:
        pool = WirePool(server.origin + "/ignored", {"Authorization": "Bearer k"})
        try:
            async with await pool.request("POST", "/v1/x", b"b" * 20000) as resp:
                assert resp.status == 200 and await resp.read(10) == b""
        finally:
            await pool.close()

    serve(echo, body)
    head = seen[0].decode()
    assert head.startswith("POST /v1/x HTTP/1.1\r\n")
    assert "\r\nHost: 127.0.0.1:" in head and "\r\nAuthorization: Bearer k\r\n" in head
    assert "\r\nContent-Length: 20000\r\n" in head and seen[1] == b"b" * 20000


def test_head_requests_get_no_body_and_do_not_reuse_the_connection() -> None:
    async def body(wire: WirePool, server: Scripted) -> list[object]:
        return [await get(wire, "HEAD"), await get(wire, "HEAD"), server.connections]

    response = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n"
    assert serve(replying(response), body) == [b"", b"", 2]


def test_a_burst_of_new_connections_makes_one_name_lookup() -> None:
    lookups: list[str] = []

    async def main() -> list[bytes]:
        loop = asyncio.get_running_loop()
        real = loop.getaddrinfo

        async def counting(host: str, *args: object, **kwargs: object) -> object:
            lookups.append(host)
            await asyncio.sleep(0.05)
            return await real(host, *args, **kwargs)  # type: ignore[arg-type]

        loop.getaddrinfo = counting  # type: ignore[method-assign]
        async with Scripted(ok) as server:
            wire = WirePool(server.origin.replace("127.0.0.1", "localhost"))
            try:
                return await asyncio.gather(*(get(wire) for _ in range(50)))
            finally:
                await wire.close()

    assert asyncio.run(main()) == [b"ok"] * 50
    assert lookups == ["localhost"]


async def trickle(exchange: Exchange) -> bool:
    """A stream of 30 events 0.05 s apart (1.5 s in all), then STOP."""
    writer = exchange.writer
    writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    for i in range(30):
        writer.write(b"2\r\n%02d\r\n" % i)
        await writer.drain()
        await asyncio.sleep(0.05)
    writer.write(b"4\r\nSTOP\r\n0\r\n\r\n")
    return True


def test_drain_feeds_a_stream_longer_than_the_read_timeout_and_stops_on_request() -> None:
    got: list[bytes] = []

    def sink(data: bytes | memoryview) -> bool:
        got.append(bytes(data))
        return got[-1].endswith(b"STOP")

    async def body(wire: WirePool, server: Scripted) -> int:
        async with await wire.request("GET", "/") as resp:
            await resp.drain(sink)  # 1.5 s of stream, bytes every 0.05 s: never 1 s of silence
        return len(wire._idle)  # the body ended with STOP: the connection is kept

    assert serve(trickle, body, read_timeout=1.0) == 1
    assert b"".join(got) == b"".join(b"%02d" % i for i in range(30)) + b"STOP"


def test_what_the_sink_raises_is_raised_and_the_connection_closed() -> None:
    def sink(data: bytes | memoryview) -> bool:
        raise ValueError("bad event")

    async def body(wire: WirePool, server: Scripted) -> int:
        async with await wire.request("GET", "/") as resp:
            with pytest.raises(ValueError, match="bad event"):
                await resp.drain(sink)
        return len(wire._idle)

    assert serve(trickle, body) == 0


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """A self-signed certificate for 127.0.0.1 (openssl CLI), and its key."""
    import shutil
    import subprocess

    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    where = tmp_path_factory.mktemp("tls")
    cert, key = str(where / "cert.pem"), str(where / "key.pem")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", key, "-out", cert],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


def test_https_with_a_trusted_certificate_and_refused_with_an_unknown_one(
    certificate: tuple[str, str],
) -> None:
    cert, key = certificate
    server_side = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_side.load_cert_chain(cert, key)
    trusting = ssl.create_default_context(cafile=cert)

    async def main(context: ssl.SSLContext | None) -> list[object]:
        async with Scripted(ok, tls=server_side) as server:
            wire = WirePool(server.origin, tls=context)
            try:
                return [await get(wire), await get(wire), server.connections]
            finally:
                await wire.close()

    assert uvloop.run(main(trusting)) == [b"ok", b"ok", 1]  # kept alive over TLS too
    with pytest.raises(ConnectFailed, match="TLS handshake"):
        uvloop.run(main(None))  # the system's CAs do not know this certificate
