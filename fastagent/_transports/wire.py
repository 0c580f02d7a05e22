"""A lean HTTP/1.1 client on asyncio protocols: the LLM client's default transport.

    >>> async def demo() -> bytes:
    ...     pool = WirePool("http://127.0.0.1:8000", {"Accept": "text/event-stream"})
    ...     try:
    ...         async with await pool.request("POST", "/v1/chat/completions", b"{}") as resp:
    ...             return await resp.read(1 << 20)
    ...     finally:
    ...         await pool.close()

Why not aiohttp, which ``--http-client aiohttp`` still selects: this benchmark measures the
runtime's memory, and aiohttp is most of it. Importing aiohttp costs the measured process
about 11 MiB, and each open aiohttp streaming connection about 18 KiB of RSS against about
4 KiB for a bare protocol (``python bench/conn_floor.py``): with thousands of agents in
flight that is most of the runtime's resident set (results/memory.md). This module does only
what an OpenAI-compatible endpoint needs: a keep-alive pool, Content-Length, chunked and
read-until-close bodies, gzip/deflate if a server compresses anyway, flow control with a
small buffer, connect and read timeouts, TLS through the event loop. No proxies, redirects,
cookies or HTTP/2.

Errors: ``ConnectFailed`` (nothing was sent), ``ConnectionBroken`` (the connection failed or
the server spoke broken HTTP after the request went out; ``StaleConnection`` when a reused
connection was closed before any answer, so sending again is safe), ``TimeoutError`` (no
byte for ``read_timeout`` seconds; checked by a ``Deadlines`` ticker, not a timer per read).
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from .._deadlines import Deadlines
from ..errors import ConnectFailed, ConnectionBroken, StaleConnection
from .base import BodyReader, tls_context

#: Decoded body bytes a response buffers before its socket stops being read: a backlog
#: waits in the kernel's (bounded) socket buffer instead of the measured heap.
READ_LIMIT = 512
#: Bytes one socket read may bring. Reads go into one buffer the pool's connections share
#: (asyncio.BufferedProtocol), so a stream the runtime cannot keep up with puts at most
#: READ_LIMIT + READ_SIZE bytes in the heap, however much the kernel holds for it.
READ_SIZE = 512
MAX_HEAD = 64 * 1024
#: Seconds an idle kept-alive connection stays open.
KEEPALIVE = 15.0
_DNS_TTL = 300.0

# Response framing.
_HEAD, _LENGTH, _CHUNK_SIZE, _CHUNK_DATA, _CHUNK_END, _TRAILER, _UNTIL_CLOSE, _DONE = range(8)


class _Conn(asyncio.BufferedProtocol):
    """One connection: parses responses into a small body buffer the reader drains."""

    __slots__ = (
        "body",
        "buf",
        "chunk_left",
        "decoder",
        "error",
        "head",
        "head_done",
        "keep_alive",
        "last_read",
        "loop",
        "paused",
        "pool",
        "received",
        "sink",
        "state",
        "status",
        "transport",
        "waiter",
    )

    def __init__(self, loop: asyncio.AbstractEventLoop, pool: WirePool) -> None:
        self.loop = loop
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.error: BaseException | None = None
        self.buf = bytearray()
        self.body = bytearray()
        self.paused = False
        self.sink: Callable[[bytes | memoryview], bool] | None = None
        self.last_read = 0.0
        self.reset()

    def reset(self) -> None:
        self.state = _HEAD
        self.status = 0
        self.head = b""
        self.head_done = False
        self.keep_alive = False
        self.received = False
        self.chunk_left = 0
        self.decoder: Any = None

    # -- asyncio.Protocol ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self.state == _UNTIL_CLOSE:
            self._finish()
        elif self.state != _DONE and self.error is None:
            where = "response head" if self.state == _HEAD else "response body"
            reason = f": {exc}" if exc else ""
            self.error = ConnectionBroken(f"server closed the connection in the {where}{reason}")
        self._wake()

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.pool.rview

    def buffer_updated(self, nbytes: int) -> None:
        self.data_received(self.pool.rview[:nbytes])  # every path below copies what it keeps

    def data_received(self, data: bytes | memoryview) -> None:
        self.received = True
        self.last_read = self.loop.time()
        try:
            if self.state == _HEAD:
                data = self._head(data)
                if not data:
                    return
            self._body(data)
        except ConnectionBroken as exc:
            self._fail(exc)

    def eof_received(self) -> bool:
        return False  # close; connection_lost sorts out what the EOF meant

    def pause_writing(self) -> None:  # requests are small: nothing to hold back
        pass

    def resume_writing(self) -> None:
        pass

    # -- parsing ------------------------------------------------------------------------

    def _head(self, data: bytes | memoryview) -> bytes:
        buf = self.buf
        buf += data
        while True:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > MAX_HEAD:
                    raise ConnectionBroken(f"response head larger than {MAX_HEAD} bytes")
                return b""
            head = bytes(buf[:end])
            del buf[: end + 4]
            status = self._parse_head(head)
            if not 100 <= status < 200:  # skip 100 Continue and other interim answers
                break
        rest = bytes(buf)
        buf.clear()
        self.head_done = True
        self._wake()
        return rest

    def _parse_head(self, head: bytes) -> int:
        end = head.find(b"\r\n")
        version, _, rest = (head if end < 0 else head[:end]).decode("latin-1").partition(" ")
        code = rest[:3]
        if not version.startswith("HTTP/1.") or not code.isdigit():
            raise ConnectionBroken(f"not an HTTP/1.x response: {version} {rest}"[:100])
        headers = parse_headers(head)
        self.status = status = int(code)
        # Only the raw head is kept (for ``header()``; a dict of str would cost each agent in
        # flight about 1 KiB), and of a 2xx head only the status line and Content-Type.
        if 200 <= status < 300:
            ctype = headers.get("content-type", "").encode("latin-1")
            self.head = head[: max(end, 0)] + b"\r\ncontent-type: " + ctype
        else:
            self.head = head
        connection = headers.get("connection", "").lower()
        if version == "HTTP/1.0":
            self.keep_alive = "keep-alive" in connection
        else:
            self.keep_alive = "close" not in connection
        if 100 <= status < 200:
            return status
        encoding = headers.get("content-encoding", "identity").lower()
        if encoding in ("gzip", "deflate", "x-gzip"):
            import zlib

            self.decoder = zlib.decompressobj(zlib.MAX_WBITS | (16 if "gzip" in encoding else 0))
        elif encoding not in ("identity", ""):
            raise ConnectionBroken(f"unsupported Content-Encoding {encoding!r}")
        if status in (204, 304):
            self._finish()
        elif "chunked" in headers.get("transfer-encoding", "").lower():
            self.state = _CHUNK_SIZE
        elif "content-length" in headers:
            length = headers["content-length"]
            if not length.isdigit():
                raise ConnectionBroken(f"invalid Content-Length {length!r}")
            self.chunk_left = int(length)
            self.state = _LENGTH
            if not self.chunk_left:
                self._finish()
        else:
            self.state = _UNTIL_CLOSE
            self.keep_alive = False
        return status

    def _body(self, data: bytes | memoryview) -> None:
        state = self.state
        if state == _LENGTH:
            take = self.chunk_left
            if len(data) > take:
                self.keep_alive = False
                data = data[:take]
            self.chunk_left = take - len(data)
            self._push(data)
            if not self.chunk_left:
                self._finish()
        elif state == _UNTIL_CLOSE:
            self._push(data)
        elif state == _DONE:
            self.keep_alive = False  # bytes after the response: never reuse this connection
            self.close()
        else:
            self._chunked(data)

    def _chunked(self, data: bytes | memoryview) -> None:
        buf = self.buf
        if not buf and self.state == _CHUNK_DATA and len(data) <= self.chunk_left:
            self.chunk_left -= len(data)  # the common case: part of one chunk, no copies
            self._push(data)
            if not self.chunk_left:
                self.state = _CHUNK_END
            return
        buf += data
        while buf:
            state = self.state
            if state == _CHUNK_DATA:
                n = min(self.chunk_left, len(buf))
                self._push(bytes(buf[:n]))
                del buf[:n]
                self.chunk_left -= n
                if not self.chunk_left:
                    self.state = _CHUNK_END
                continue
            end = buf.find(b"\n")
            if end < 0:
                if len(buf) > 4096:
                    raise ConnectionBroken("chunked body: line longer than 4096 bytes")
                return
            line = bytes(buf[:end]).rstrip(b"\r")
            del buf[: end + 1]
            if state == _CHUNK_SIZE:
                size = line.split(b";", 1)[0].strip()
                try:
                    self.chunk_left = int(size, 16)
                except ValueError:
                    raise ConnectionBroken(f"chunked body: bad chunk size {size[:20]!r}") from None
                self.state = _CHUNK_DATA if self.chunk_left else _TRAILER
            elif state == _CHUNK_END:
                if line:
                    raise ConnectionBroken("chunked body: chunk longer than its size")
                self.state = _CHUNK_SIZE
            elif state == _TRAILER:
                if not line:
                    if buf:
                        self.keep_alive = False
                        buf.clear()
                    self._finish()
                    return
            else:  # pragma: no cover - _DONE with bytes left in buf
                self.keep_alive = False
                buf.clear()

    def _push(self, data: bytes | memoryview) -> None:
        if self.decoder is not None:
            data = self.decoder.decompress(data)
        if not data:
            return
        sink = self.sink
        if sink is not None:
            try:
                stop = sink(data)
            except Exception as exc:
                self.sink = None
                self._fail(exc)
                return
            if stop:
                self.sink = None
                self._wake()
            return
        self.body += data
        if len(self.body) >= READ_LIMIT and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()
        self._wake()

    def _finish(self) -> None:
        if self.decoder is not None:
            tail = self.decoder.flush()
            self.decoder = None
            if tail:
                self._push(tail)
        self.state = _DONE
        self._wake()

    def _fail(self, exc: BaseException) -> None:
        if self.error is None:
            self.error = exc
        self.keep_alive = False
        if self.transport is not None:
            self.transport.close()
        self._wake()

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- reader side --------------------------------------------------------------------

    async def wait(self) -> None:
        """Until the protocol has news (the end, an error, bytes when no sink takes them), or
        no byte came for the pool's ``read_timeout``."""
        loop = self.loop
        waiter = loop.create_future()
        self.waiter = waiter
        self.last_read = now = loop.time()
        self.pool.deadlines.arm(self, now + self.pool.read_timeout)
        try:
            await waiter
        finally:
            self.pool.deadlines.disarm(self)
            self.waiter = None

    def expire(self) -> None:
        waiter = self.waiter
        if waiter is not None:
            # armed once per wait, not per read: bytes since then push the deadline on
            silent_until = self.last_read + self.pool.read_timeout
            if silent_until > self.loop.time():
                self.pool.deadlines.arm(self, silent_until)
            elif not waiter.done():
                waiter.set_exception(TimeoutError())
        elif self.state == _DONE:  # idle in the pool for KEEPALIVE seconds
            self.pool._drop(self)

    def take(self) -> bytes:
        data = bytes(self.body)
        self.body.clear()
        if self.paused and self.transport is not None:
            self.paused = False
            self.transport.resume_reading()
        return data

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
            self.transport = None


def parse_headers(head: bytes) -> dict[str, str]:
    """The header fields of a response head (status line first, no final blank line)."""
    headers: dict[str, str] = {}
    for line in head.decode("latin-1").split("\r\n")[1:]:
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise ConnectionBroken(f"malformed response header line {line[:80]!r}")
        name = name.lower()
        value = value.strip()
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    return headers


def _retrieve(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()  # a lookup nobody else waited for fails quietly


class WireResponse(BodyReader):
    """One response; ``async with`` it so its connection goes back to the pool or is closed."""

    __slots__ = ("_conn", "status")

    def __init__(self, conn: _Conn) -> None:
        self._conn = conn
        self.status = conn.status

    @property
    def headers(self) -> dict[str, str]:
        """The response headers, names lower-cased (repeated ones joined with ``, ``); of a
        2xx response only Content-Type is kept."""
        return parse_headers(self._conn.head)

    def header(self, name: str) -> str:
        """A response header by case-insensitive name, or ``''`` (2xx: Content-Type only)."""
        return parse_headers(self._conn.head).get(name.lower(), "")

    async def read_chunk(self) -> bytes:
        """The next decoded body bytes as they arrive; ``b''`` once the body is complete."""
        conn = self._conn
        while not conn.body:
            if conn.state == _DONE:
                return b""
            if conn.error is not None:
                raise conn.error
            await conn.wait()
        return conn.take()

    async def drain(self, sink: Callable[[bytes | memoryview], bool]) -> None:
        """Hand the body to ``sink`` as it arrives until it ends or ``sink`` returns True.

        ``sink`` runs inside the protocol's own callback: no task wakes up per read and
        nothing is buffered, so a streaming agent holds only what ``sink`` keeps. It may be
        given a view of a buffer that is reused afterwards (copy what you keep), and what
        it raises is raised here.
        """
        conn = self._conn
        if conn.body and sink(conn.take()):
            return
        conn.sink = sink
        try:
            while conn.sink is not None and conn.state != _DONE:
                if conn.error is not None:
                    break
                await conn.wait()
            if conn.error is not None:
                raise conn.error
        finally:
            conn.sink = None

    def release(self) -> None:
        conn = self._conn
        if conn.state == _DONE and conn.keep_alive and conn.error is None and not conn.body:
            conn.pool._put(conn)
        else:
            conn.close()

    async def __aenter__(self) -> WireResponse:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.release()


class WirePool:
    """Keep-alive connections to one origin (scheme, host, port)."""

    def __init__(
        self,
        origin: str,
        headers: dict[str, str] | None = None,
        *,
        connect_timeout: float = 10.0,
        read_timeout: float = 60.0,
        rcvbuf: int = 0,
        deadlines: Deadlines | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        url = urlsplit(origin)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"not an http(s) origin: {origin!r}")
        self.host = url.hostname
        self.port = url.port or (443 if url.scheme == "https" else 80)
        self.tls = (tls or tls_context()) if url.scheme == "https" else None
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.rcvbuf = rcvbuf
        self.deadlines = deadlines or Deadlines(min(0.5, read_timeout / 4))
        netloc = url.netloc.rpartition("@")[2]
        fixed = {"Host": netloc, "Accept-Encoding": "identity", **(headers or {})}
        self._fixed = "".join(f"{k}: {v}\r\n" for k, v in fixed.items())
        # idle connections, most recently used last; each one is closed after KEEPALIVE idle
        # seconds (as aiohttp does) so that a run's quiet phases hold no sockets
        self._idle: dict[_Conn, None] = {}
        self.rview = memoryview(bytearray(READ_SIZE))
        self._addrs: list[tuple[Any, ...]] = []
        self._addrs_at = 0.0
        self._resolving: asyncio.Future[list[tuple[Any, ...]]] | None = None
        self._closed = False

    async def request(
        self,
        method: str,
        target: str,
        body: bytes | Callable[[], bytes] = b"",
    ) -> WireResponse:
        """Send one request and wait for the response head; the body is read from the result.

        ``body`` may be a function that makes it, called once a connection is ready: the
        request exists only from then until it is written (for each agent in flight it
        would be its size of heap), so when a kept-alive connection turns out closed by
        the server before any answer, ``StaleConnection`` asks the caller to send again.
        """
        if self._closed:
            raise ConnectFailed("the connection pool is closed")
        conn = self._get()
        reused = conn is not None
        if conn is None:
            conn = await self._connect()
        conn.reset()
        assert conn.transport is not None
        if callable(body):
            body = body()
        conn.transport.writelines(
            (
                f"{method} {target} HTTP/1.1\r\n{self._fixed}"
                f"Content-Length: {len(body)}\r\n\r\n".encode("latin-1"),
                body,
            )
        )
        del body
        try:
            while not conn.head_done:
                if conn.error is not None:
                    raise conn.error
                await conn.wait()
        except ConnectionBroken as exc:
            conn.close()
            if reused and not conn.received:
                raise StaleConnection(f"kept-alive connection closed by the server: {exc}") from exc
            raise
        except BaseException:
            conn.close()
            raise
        return WireResponse(conn)

    async def close(self) -> None:
        """Close idle connections; responses still open close on release."""
        self._closed = True
        for conn in self._idle:
            self.deadlines.disarm(conn)
            conn.close()
        self._idle.clear()

    def _get(self) -> _Conn | None:
        idle = self._idle
        while idle:
            conn, _ = idle.popitem()
            self.deadlines.disarm(conn)
            if conn.transport is not None and not conn.transport.is_closing():
                return conn
        return None

    def _put(self, conn: _Conn) -> None:
        if self._closed or conn.transport is None:
            conn.close()
        else:
            self._idle[conn] = None
            self.deadlines.arm(conn, conn.loop.time() + KEEPALIVE)

    def _drop(self, conn: _Conn) -> None:
        self._idle.pop(conn, None)
        conn.close()

    async def _resolve(self) -> list[tuple[Any, ...]]:
        """The origin's addresses: one lookup at a time, whatever the number of agents asking
        (a burst of thousands of new connections would otherwise be thousands of lookups)."""
        now = time.monotonic()
        if self._addrs and now - self._addrs_at <= _DNS_TTL:
            return self._addrs
        loop = asyncio.get_running_loop()
        if self._resolving is not None:
            return await self._resolving
        self._resolving = lookup = loop.create_future()
        lookup.add_done_callback(_retrieve)
        try:
            addrs = await loop.getaddrinfo(
                self.host, self.port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
            )
        except BaseException as exc:
            lookup.set_exception(
                exc if isinstance(exc, OSError) else OSError(f"lookup of {self.host} interrupted")
            )
            raise
        finally:
            self._resolving = None
        self._addrs, self._addrs_at = addrs, now
        lookup.set_result(addrs)
        return addrs

    async def _connect(self) -> _Conn:
        loop = asyncio.get_running_loop()
        where = f"{self.host}:{self.port}"
        try:
            async with self.deadlines.timeout(self.connect_timeout):
                error: OSError | None = None
                for family, type_, proto, _, addr in await self._resolve():
                    sock = socket.socket(family, type_, proto)
                    try:
                        sock.setblocking(False)
                        if self.rcvbuf:
                            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.rcvbuf)
                        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                        await loop.sock_connect(sock, addr)
                        _, conn = await loop.create_connection(
                            lambda: _Conn(loop, self),
                            sock=sock,
                            ssl=self.tls,
                            server_hostname=self.host if self.tls else None,
                        )
                        return conn
                    except OSError as exc:
                        sock.close()
                        error = exc
                    except BaseException:
                        sock.close()
                        raise
                raise error or OSError(f"no address for {where}")
        except TimeoutError:
            raise ConnectFailed(f"cannot connect to {where}: timed out") from None
        except ssl.SSLError as exc:
            raise ConnectFailed(f"TLS handshake with {where} failed: {exc}") from exc
        except OSError as exc:
            raise ConnectFailed(f"cannot connect to {where}: {exc.strerror or exc}") from exc
