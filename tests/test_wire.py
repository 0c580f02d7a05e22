"""The lean HTTP/1.1 client (fastagent._wire): framing, pooling, flow control, failures.

Framing is checked by feeding the protocol every split of a response; the rest against
real asyncio servers on loopback that answer with scripted bytes.
"""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import Awaitable, Callable

import pytest
import uvloop

from fastagent._transports import wire as _wire
from fastagent._transports.wire import READ_LIMIT, WirePool, _Conn, parse_headers
from fastagent.errors import ConnectFailed, ConnectionBroken, StaleConnection

Reply = Callable[[asyncio.StreamReader, asyncio.StreamWriter, int], Awaitable[bool]]


def feed(response: bytes, cuts: tuple[int, ...]) -> _Conn:
    """A protocol fed ``response`` in pieces cut at ``cuts``, each piece through the shared
    read buffer (16 bytes here) as the transport does it; its body is left in ``body``."""
    pool = WirePool("http://127.0.0.1:1")
    pool.rview = memoryview(bytearray(16))
    conn = _Conn(asyncio.new_event_loop(), pool)
    conn.reset()
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
    return conn


CHUNKED = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"7\r\ndata: a\r\n"
    b"a;ext=1\r\n\n\ndata: bc\r\n"
    b"0\r\nX-Trailer: 1\r\n\r\n"
)
LENGTH = b"HTTP/1.1 404 No\r\nContent-Length: 11\r\nX-A: 1\r\nx-a: 2\r\n\r\nhello world"


def test_chunked_body_split_anywhere() -> None:
    for cut in range(1, len(CHUNKED)):
        conn = feed(CHUNKED, (cut,))
        assert conn.error is None and conn.head_done and conn.status == 200, cut
        assert bytes(conn.body) == b"data: a\n\ndata: bc", cut
        assert conn.state == 7 and conn.keep_alive, cut  # done, reusable


def test_chunked_body_byte_by_byte() -> None:
    conn = feed(CHUNKED, tuple(range(1, len(CHUNKED))))
    assert bytes(conn.body) == b"data: a\n\ndata: bc" and conn.keep_alive


def test_content_length_body_split_anywhere() -> None:
    for cut in range(1, len(LENGTH)):
        conn = feed(LENGTH, (cut,))
        assert bytes(conn.body) == b"hello world" and conn.keep_alive, cut
        assert parse_headers(conn.head)["x-a"] == "1, 2", cut


def test_a_2xx_head_keeps_only_its_content_type() -> None:
    conn = feed(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nX-B: 1\r\n\r\n", ())
    assert parse_headers(conn.head) == {"content-type": "text/event-stream"}


def test_interim_response_is_skipped_and_no_body_statuses() -> None:
    conn = feed(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n", (10, 30))
    assert conn.status == 204 and conn.head_done and conn.state == 7 and not conn.body


def test_bytes_after_the_response_forbid_reuse() -> None:
    conn = feed(LENGTH + b"junk", ())
    assert bytes(conn.body) == b"hello world" and not conn.keep_alive


def test_http10_and_connection_close_are_not_reused() -> None:
    assert not feed(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", ()).keep_alive
    assert not feed(
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n", ()
    ).keep_alive


@pytest.mark.parametrize(
    ("response", "message"),
    [
        (b"SSH-2.0-OpenSSH\r\n\r\n", "not an HTTP/1.x response"),
        (b"HTTP/1.1 200 OK\r\nbad header\r\n\r\n", "malformed response header"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", "invalid Content-Length"),
        (b"HTTP/1.1 200 OK\r\nContent-Encoding: br\r\n\r\n", "unsupported Content-Encoding"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "bad chunk size"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nab\r\n", "longer than its"),
        (b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * 20000, "response head larger"),
    ],
)
def test_broken_http_is_a_connection_error(response: bytes, message: str) -> None:
    conn = feed(response, ())
    assert isinstance(conn.error, ConnectionBroken) and message in str(conn.error)


def test_gzip_body_is_decoded() -> None:
    packed = gzip.compress(b"data: zipped\n\n" * 50)
    response = (
        b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" % len(packed)
        + packed
    )
    assert bytes(feed(response, (60, 70)).body) == b"data: zipped\n\n" * 50


def test_a_sink_gets_the_decoded_body_and_nothing_is_buffered() -> None:
    packed = gzip.compress(b"data: zipped\n\n" * 50)
    response = (
        b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b"%x\r\n" % len(packed)
        + packed
        + b"\r\n0\r\n\r\n"
    )
    got: list[bytes] = []

    def sink(data: bytes | memoryview) -> bool:
        got.append(bytes(data))
        return False

    conn = _Conn(asyncio.new_event_loop(), WirePool("http://127.0.0.1:1"))
    conn.sink = sink
    conn.data_received(response)
    conn.loop.close()
    assert b"".join(got) == b"data: zipped\n\n" * 50 and not conn.body and conn.state == 7


# ---- against real servers ------------------------------------------------------------------


def serve(reply: Reply, body: Callable[[WirePool], Awaitable[object]], **pool: object) -> object:
    """Serve ``reply`` (called per request with the connection's request number; returning
    False closes the connection) on a free port, and run ``body`` with a pool to it."""
    connections: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        n = 0
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = [
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                ]
                await reader.readexactly(length[0] if length else 0)
                n += 1
                if not await reply(reader, writer, n):
                    break
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def main() -> object:
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        wire = WirePool(f"http://127.0.0.1:{port}", {"X-Test": "1"}, **pool)  # type: ignore[arg-type]
        try:
            return await body(wire), len(connections)
        finally:
            await wire.close()
            server.close()

    return uvloop.run(main())


async def ok(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> bool:
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    return True


async def get(wire: WirePool) -> bytes:
    async with await wire.request("POST", "/x", b"{}") as resp:
        assert resp.status == 200
        return await resp.read(1 << 20)


def test_keep_alive_reuses_one_connection() -> None:
    async def body(wire: WirePool) -> list[bytes]:
        return [await get(wire) for _ in range(5)]

    assert serve(ok, body) == ([b"ok"] * 5, 1)


def test_idle_connection_is_closed_after_the_keepalive_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_wire, "KEEPALIVE", 0.1)

    async def body(wire: WirePool) -> list[object]:
        first = await get(wire)
        idle_after_first = len(wire._idle)
        await asyncio.sleep(0.5)
        return [first, idle_after_first, len(wire._idle), await get(wire)]

    assert serve(ok, body, read_timeout=0.2) == ([b"ok", 1, 0, b"ok"], 2)


def test_concurrent_requests_get_their_own_connections() -> None:
    async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> bool:
        await asyncio.sleep(0.05)
        return await ok(reader, writer, n)

    async def body(wire: WirePool) -> list[bytes]:
        first = await asyncio.gather(*(get(wire) for _ in range(10)))
        second = await asyncio.gather(*(get(wire) for _ in range(10)))
        return first + second

    assert serve(slow, body) == ([b"ok"] * 20, 10)


def test_server_dropping_a_reused_connection_asks_to_send_again() -> None:
    async def once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> bool:
        if n == 2:
            return False  # read the request, close without answering
        return await ok(reader, writer, n)

    async def body(wire: WirePool) -> list[bytes]:
        first = await get(wire)
        with pytest.raises(StaleConnection, match="kept-alive connection closed"):
            await get(wire)
        return [first, await get(wire)]

    assert serve(once, body) == ([b"ok"] * 2, 2)


def test_fresh_connection_closed_before_the_head_is_an_error() -> None:
    async def drop(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> bool:
        return False

    with pytest.raises(ConnectionBroken, match="response head"):
        serve(drop, get)


def test_chunked_stream_cut_short_is_an_error_after_its_data() -> None:
    async def cut(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
        await writer.drain()
        return False

    got: list[bytes] = []

    async def body(wire: WirePool) -> None:
        async with await wire.request("POST", "/x", b"{}") as resp:
            async for data in resp.chunks():
                got.append(data)

    with pytest.raises(ConnectionBroken, match="response body"):
        serve(cut, body)
    assert got == [b"hello"]


def test_body_until_close_and_connection_close_are_not_pooled() -> None:
    async def close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\n\r\nuntil ")
        await writer.drain()
        writer.write(b"close")
        return False

    async def body(wire: WirePool) -> list[bytes]:
        return [await get(wire), await get(wire)]

    assert serve(close, body) == ([b"until close"] * 2, 2)


def test_silence_is_a_read_timeout() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        await asyncio.sleep(2)
        return False

    with pytest.raises(TimeoutError):
        serve(silent, get, read_timeout=0.2)


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

    async def flood(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % total)
        for _ in range(total // 65536):
            writer.write(b"x" * 65536)
            await writer.drain()
        return True

    peak: list[int] = []

    async def body(wire: WirePool) -> int:
        got = 0
        async with await wire.request("GET", "/big") as resp:
            await asyncio.sleep(0.2)  # let the server run ahead of the reader
            while data := await resp.read_chunk():
                peak.append(len(resp._conn.body) + len(data))
                got += len(data)
                await asyncio.sleep(0)
        return got

    assert serve(flood, body, rcvbuf=16384) == (total, 1)
    # what the heap held at once stays near READ_LIMIT plus one socket read, far below 2 MiB
    assert max(peak) < READ_LIMIT + 256 * 1024


def test_request_carries_host_fixed_headers_and_body() -> None:
    seen: list[bytes] = []

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        return True

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await reader.readuntil(b"\r\n\r\n"))
        seen.append(await reader.readexactly(20000))
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    async def main() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        wire = WirePool(f"http://127.0.0.1:{port}/ignored", {"Authorization": "Bearer k"})
        try:
            async with await wire.request("POST", "/v1/x", b"b" * 20000) as resp:
                assert resp.status == 200 and await resp.read(10) == b""
        finally:
            await wire.close()
            server.close()

    uvloop.run(main())
    head = seen[0].decode()
    assert head.startswith("POST /v1/x HTTP/1.1\r\n")
    assert "\r\nHost: 127.0.0.1:" in head and "\r\nAuthorization: Bearer k\r\n" in head
    assert "\r\nContent-Length: 20000\r\n" in head and seen[1] == b"b" * 20000


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
        server = await asyncio.start_server(lambda r, w: _answer_once(r, w), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        wire = WirePool(f"http://localhost:{port}")
        try:
            return await asyncio.gather(*(get(wire) for _ in range(50)))
        finally:
            await wire.close()
            server.close()

    assert asyncio.run(main()) == [b"ok"] * 50
    assert lookups == ["localhost"]


async def _answer_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.readuntil(b"\r\n\r\n")
    await reader.readexactly(2)
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    await writer.drain()
    writer.close()


async def trickle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> bool:
    writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    for i in range(8):
        writer.write(b"2\r\n%02d\r\n" % i)
        await writer.drain()
        await asyncio.sleep(0.1)
    writer.write(b"4\r\nSTOP\r\n0\r\n\r\n")
    return True


def test_drain_feeds_a_slow_stream_past_the_read_timeout_and_stops_on_request() -> None:
    got: list[bytes] = []

    def sink(data: bytes | memoryview) -> bool:
        got.append(bytes(data))
        return got[-1].endswith(b"STOP")

    async def body(wire: WirePool) -> int:
        async with await wire.request("GET", "/") as resp:
            await resp.drain(sink)  # 0.8 s of stream, never 0.3 s of silence
        return len(wire._idle)  # the body ended with STOP: the connection is kept

    assert serve(trickle, body, read_timeout=0.3) == (1, 1)
    assert b"".join(got) == b"0001020304050607STOP"


def test_what_the_sink_raises_is_raised_and_the_connection_closed() -> None:
    def sink(data: bytes | memoryview) -> bool:
        raise ValueError("bad event")

    async def body(wire: WirePool) -> None:
        async with await wire.request("GET", "/") as resp:
            await resp.drain(sink)

    with pytest.raises(ValueError, match="bad event"):
        serve(trickle, body)


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
    import ssl

    cert, key = certificate
    server_side = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_side.load_cert_chain(cert, key)
    trusting = ssl.create_default_context(cafile=cert)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            await reader.readexactly(2)
            await ok(reader, writer, 1)
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()

    async def main(context: ssl.SSLContext | None) -> bytes:
        server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=server_side)
        port = server.sockets[0].getsockname()[1]
        wire = WirePool(f"https://127.0.0.1:{port}", tls=context)
        try:
            return await get(wire)
        finally:
            await wire.close()
            server.close()

    assert uvloop.run(main(trusting)) == b"ok"
    with pytest.raises(ConnectFailed, match="TLS handshake"):
        uvloop.run(main(None))  # the system's CAs do not know this certificate
