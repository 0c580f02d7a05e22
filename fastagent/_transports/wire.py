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
6.2 KiB here and 4.4 KiB for a bare protocol (``python bench/conn_floor.py --connections
2000``, bench/memory-notes.md section 7): with thousands of agents in flight that is most of
the runtime's resident set (results/memory.md). aiohttp parses with llhttp too; what costs
is what it builds around the parser for every connection and response (a StreamReader, a
ResponseHandler, a ClientResponse with its multidicts, a timer per read). So this module
keeps its own protocol, pool and flow control, and hands the HTTP/1.1 framing (status line,
header syntax, Content-Length, chunked coding, keep-alive) to llhttp through httptools: one
parser per connection, about 0.5 KiB, with one shared callback object (``_Callbacks``).

It does only what an OpenAI-compatible endpoint needs: a keep-alive pool, Content-Length,
chunked and read-until-close bodies, gzip/deflate if a server compresses anyway, flow control
with a small buffer, connect and read timeouts, TLS through the event loop. No proxies,
redirects, cookies or HTTP/2.

What a response may be (RFC 9112, as a client): HTTP/1.1 or HTTP/1.0; interim 1xx answers
before the final one are skipped; the body framed by Content-Length, by the chunked coding
(extensions and trailer fields are accepted and ignored) or by the server closing the
connection; Content-Encoding gzip, x-gzip or deflate is decoded. Anything else fails at once
with ``ProtocolError`` naming what was wrong (bad status line, invalid header, conflicting or
invalid Content-Length, bad chunk size, unsupported Transfer-Encoding or Content-Encoding, a
head larger than ``MAX_HEAD``, an undecodable compressed body, an upgrade nobody asked for),
and the connection is closed. Nothing raised while parsing reaches the event loop's
exception handler: it becomes the connection's error, raised to the waiting reader.

Errors: ``ConnectFailed`` (nothing was sent), ``ConnectionBroken`` (the connection failed or
the server spoke broken HTTP after the request went out; ``StaleConnection`` when a reused
connection was closed before any answer, so sending again is safe; ``ProtocolError`` when
the bytes are not HTTP/1.1 a client may accept), ``TimeoutError`` (no byte for
``read_timeout`` seconds; checked by a ``Deadlines`` ticker, not a timer per read).
"""

from __future__ import annotations

import asyncio
import enum
import socket
import ssl
import time
import zlib
from collections.abc import Callable
from typing import TYPE_CHECKING, cast
from urllib.parse import urlsplit

from httptools import (
    HttpParserCallbackError,
    HttpParserError,
    HttpParserInvalidStatusError,
    HttpResponseParser,
)

from .._deadlines import Deadlines
from ..errors import (
    ConnectFailed,
    ConnectionBroken,
    FirstByteTimeout,
    ProtocolError,
    StaleConnection,
)
from .base import BodyReader, Sink, tls_context

if TYPE_CHECKING:
    from socket import _GetAddrInfoResult as _Addresses  # typeshed's name for the result

#: Decoded body bytes a response buffers before its socket stops being read: a backlog
#: waits in the kernel's (bounded) socket buffer instead of the measured heap.
READ_LIMIT = 512
#: Bytes one socket read may bring. Reads go into one buffer the pool's connections share
#: (asyncio.BufferedProtocol), so a stream the runtime cannot keep up with puts at most
#: READ_LIMIT + READ_SIZE bytes in the heap, however much the kernel holds for it.
READ_SIZE = 512
#: Bytes of a response head (interim 1xx heads included), and of chunk size lines and
#: trailer fields between two pieces of body, past which the response is refused (checked
#: after each read, so up to one read more may pass).
MAX_HEAD = 64 * 1024
#: Seconds an idle kept-alive connection stays open.
KEEPALIVE = 15.0
_DNS_TTL = 300.0
#: Decoded bytes one step of decompression may produce (a sink gets them piece by piece).
_INFLATE_STEP = 64 * 1024


class State(enum.IntEnum):
    """Where a connection is in reading the response to its current request."""

    #: waiting for (the rest of) the final response head
    HEAD = 0
    #: reading a body framed by Content-Length or the chunked coding
    BODY = 1
    #: reading a body that ends when the server closes the connection
    UNTIL_CLOSE = 2
    #: the response is complete (an idle connection in the pool is DONE too)
    DONE = 3


_HEAD, _BODY, _UNTIL_CLOSE, _DONE = State.HEAD, State.BODY, State.UNTIL_CLOSE, State.DONE

#: Header fields a 2xx head is parsed with (framing and coding) and those it keeps
#: (Content-Type, and Server: the server's name for the summary, a few bytes per head).
_FRAMING = frozenset(
    (b"content-type", b"content-length", b"transfer-encoding", b"content-encoding", b"server")
)
_KEPT = ("content-type", "server")
#: The connection whose bytes a parser is being fed (a stack: feeds do not nest in practice,
#: but a sink that somehow caused one would find its own connection).
_FEEDING: list[_Conn] = []


class _AfterEnd(Exception):
    """Raised in a parser callback to stop at bytes that follow the complete response."""


class _Callbacks:
    """The callback object of every connection's parser.

    httptools calls a callback without saying for which parser, and takes its callbacks
    with ``getattr`` once per parser. Bound methods of each connection would be five more
    objects per connection, and so would methods of one shared instance (each ``getattr``
    binds anew). These are plain functions (staticmethods, which ``getattr`` hands back
    as the same function object for every parser): a parser costs only itself, and the
    callbacks work on the connection being fed, ``_FEEDING[-1]``. Per open stream the
    parser costs 0.46 KiB of RSS this way, 0.83 KiB with bound methods (bench/conn_floor.py,
    bench/memory-notes.md section 7).
    """

    __slots__ = ()

    @staticmethod
    def on_message_begin() -> None:
        if _FEEDING[-1].state is _DONE:
            raise _AfterEnd

    @staticmethod
    def on_header(name: bytes, value: bytes) -> None:
        _FEEDING[-1].on_field(name, value)

    @staticmethod
    def on_headers_complete() -> None:
        _FEEDING[-1].on_head()

    @staticmethod
    def on_body(body: bytes) -> None:
        _FEEDING[-1].on_body(body)

    @staticmethod
    def on_message_complete() -> None:
        conn = _FEEDING[-1]
        if conn.state is _BODY:  # HEAD: the end of an interim answer; DONE: a HEAD request's
            conn.keep_alive = conn.parser.should_keep_alive()
            conn.finish()


class _Conn(asyncio.BufferedProtocol):
    """One connection: feeds llhttp, and puts the decoded body into a small buffer (or a
    sink) the reader drains."""

    __slots__ = (
        "body",
        "decoder",
        "encoding",
        "error",
        "first_read",
        "framing",
        "head",
        "keep_alive",
        "last_read",
        "loop",
        "no_body",
        "parser",
        "paused",
        "pool",
        "sink",
        "state",
        "status",
        "transport",
        "waiter",
        "written",
    )

    def __init__(self, loop: asyncio.AbstractEventLoop, pool: WirePool) -> None:
        self.loop = loop
        self.pool = pool
        # one for the connection's life: after a complete kept-alive response llhttp waits
        # for the next one, and after anything else the connection is closed
        self.parser = HttpResponseParser(_Callbacks)
        self.transport: asyncio.Transport | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.error: BaseException | None = None
        self.body = bytearray()
        self.paused = False
        self.sink: Sink | None = None
        self.last_read = 0.0
        self.written = 0.0
        self.reset()

    def reset(self, method: str = "GET") -> None:
        """Ready for the response to a ``method`` request."""
        self.state = _HEAD
        self.status = 0
        #: the kept header fields, ``name:value\r\n`` with names lower-cased: while the
        #: head arrives a bytearray, then bytes (of a 2xx head, Content-Type and Server
        #: only: a dict of str would cost each agent in flight about 1 KiB)
        self.head: bytes | bytearray = bytearray()
        self.keep_alive = False
        #: when the response's first byte arrived (0.0: none yet)
        self.first_read = 0.0
        self.no_body = method == "HEAD"
        self.framing = 0
        self.encoding = ""
        self.decoder: zlib._Decompress | None = None

    # -- asyncio.Protocol ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        try:
            if self.state is _UNTIL_CLOSE and exc is None:
                self.finish()
            elif self.state is not _DONE and self.error is None:
                where = "response head" if self.state is _HEAD else "response body"
                reason = f": {exc}" if exc else ""
                self.error = ConnectionBroken(
                    f"server closed the connection in the {where}{reason}"
                )
        except Exception as error:  # the end of a compressed body, or the sink, failed
            if self.error is None:
                self.error = _as_connection_error(error)
        self._wake()

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.pool.rview

    def buffer_updated(self, nbytes: int) -> None:
        self.data_received(self.pool.rview[:nbytes])  # the parser copies what it passes on

    def data_received(self, data: bytes | memoryview) -> None:
        if not self.first_read:
            self.first_read = time.monotonic()
        self.last_read = self.loop.time()
        if len(data) <= READ_SIZE:
            self._feed(data)
            return
        view = memoryview(data)  # larger pieces (not from the shared buffer) one read at a time
        for start in range(0, len(view), READ_SIZE):
            self._feed(view[start : start + READ_SIZE])

    def eof_received(self) -> bool:
        return False  # close; connection_lost sorts out what the EOF meant

    def pause_writing(self) -> None:  # requests are small: nothing to hold back
        pass

    def resume_writing(self) -> None:
        self.written = time.monotonic()

    # -- parsing ------------------------------------------------------------------------

    def _feed(self, data: bytes | memoryview) -> None:
        """Parse ``data``. Whatever goes wrong ends here as the connection's error (or, for
        bytes after a complete response, as a connection not to reuse): never raised."""
        if self.error is not None:  # failed already, and closing
            return
        if self.state is _DONE:  # no response awaited (an idle connection), or after one
            self.keep_alive = False
            self.close()
            return
        self.framing += len(data)
        _FEEDING.append(self)
        try:
            self.parser.feed_data(data)
            if self.framing > MAX_HEAD and self.state is not _DONE:
                what = "response head" if self.state is _HEAD else "chunk size lines and trailers"
                raise ProtocolError(f"{what} larger than {MAX_HEAD} bytes")
        except Exception as exc:
            error = self._failure(exc)
            if error is None:  # bytes after the response: it stands, the connection goes
                self.keep_alive = False
                self.close()
            else:
                self._fail(error)
        finally:
            _FEEDING.pop()

    def _failure(self, exc: Exception) -> BaseException | None:
        """What a failed feed means for the reader: its error, or None when only bytes after
        a complete response were refused."""
        if self.error is not None:  # the sink raised: drain() raises that
            return self.error
        cause = exc.__context__ if isinstance(exc, HttpParserCallbackError) else exc
        if isinstance(cause, _AfterEnd):
            return None
        if cause is not None and not isinstance(cause, Exception):
            raise cause  # KeyboardInterrupt or SystemExit in a sink: not the server's doing
        if isinstance(cause, HttpParserError):
            return None if self.state is _DONE else ProtocolError(_describe(cause, self.state))
        return _as_connection_error(cause or exc)

    def on_field(self, name: bytes, value: bytes) -> None:
        if self.state is not _HEAD:
            return  # a trailer field, after the last chunk: nothing a client needs
        name = name.lower()
        if name in _FRAMING or not 200 <= self.parser.get_status_code() < 300:
            self.head += b"%s:%s\r\n" % (name, value.strip(b" \t"))

    def on_head(self) -> None:
        """The end of a head: an interim answer is forgotten; a final one sets the framing
        and coding of the body, or is refused."""
        parser = self.parser
        status = parser.get_status_code()
        version = parser.get_http_version()
        if version not in ("1.1", "1.0"):
            raise ProtocolError(f"bad status line: HTTP/{version} is not HTTP/1.x")
        if not 100 <= status <= 599:
            raise ProtocolError(f"bad status line: status code {status:03d} is not 100-599")
        if status < 200:
            if status == 101:
                raise ProtocolError("unexpected 101 Switching Protocols: no upgrade was asked for")
            self.head = bytearray()  # 100 Continue, 103 Early Hints, ...: skipped
            return
        fields = header_fields(self.head)
        has_body = not (self.no_body or status in (204, 304))
        chunked = "transfer-encoding" in fields
        if chunked:
            coding = fields["transfer-encoding"]
            if version == "1.0" or _codings(coding) != ["chunked"]:
                in_10 = " in an HTTP/1.0 response" if version == "1.0" else ""
                raise ProtocolError(f"unsupported Transfer-Encoding {coding!r}{in_10}")
        if has_body:
            self.encoding = _content_coding(fields.get("content-encoding", ""))
        self.status = status
        if 200 <= status < 300:
            self.head = b"".join(
                f"{name}:{fields[name]}\r\n".encode("latin-1") for name in _KEPT if name in fields
            )
        else:
            self.head = bytes(self.head)
        self.framing = 0
        if self.no_body:  # a HEAD request's answer: done, and never reused (llhttp would
            self.finish()  # take what follows for the body the head describes)
            return
        if not has_body or chunked or "content-length" in fields:
            self.state = _BODY  # (204 and 304: llhttp completes the message next)
        else:
            self.state = _UNTIL_CLOSE
        self._wake()

    def on_body(self, data: bytes) -> None:
        self.framing = 0
        if self.state is _DONE:  # the body of a HEAD request's answer
            raise _AfterEnd
        if self.encoding:
            self._inflate(data)
        else:
            self._push(data)

    def _inflate(self, data: bytes) -> None:
        decoder = self.decoder
        gzip = self.encoding == "gzip"
        try:
            if decoder is None:
                # deflate is the zlib format (RFC 9110 8.4.1.2); some servers send raw deflate,
                # told by the first byte as aiohttp does (a zlib stream's low nibble is 8)
                wbits = 16 + zlib.MAX_WBITS if gzip else -zlib.MAX_WBITS
                if not gzip and data[0] & 0x0F == 8:
                    wbits = zlib.MAX_WBITS
                decoder = self.decoder = zlib.decompressobj(wbits)
            while data:
                if decoder.eof:
                    if not gzip:
                        raise ProtocolError("deflate body: bytes after its compressed stream")
                    decoder = self.decoder = zlib.decompressobj(16 + zlib.MAX_WBITS)  # a member
                out = decoder.decompress(data, _INFLATE_STEP)
                data = decoder.unused_data if decoder.eof else decoder.unconsumed_tail
                if out:
                    self._push(out)
        except zlib.error as exc:
            raise ProtocolError(f"undecodable {self.encoding} body: {exc}") from None

    def _push(self, data: bytes) -> None:
        sink = self.sink
        if sink is not None:
            try:
                stop = sink(data)
            except Exception as exc:
                self.sink = None
                if self.error is None:
                    self.error = exc  # what the sink raised is raised from drain()
                raise
            if stop:
                self.sink = None
                self._wake()
            return
        self.body += data
        if len(self.body) >= READ_LIMIT and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()
        self._wake()

    def finish(self) -> None:
        """The body is complete: the rest of a compressed one is decoded, and it must end."""
        decoder = self.decoder
        if decoder is not None:
            self.decoder = None
            try:
                tail = decoder.flush()
            except zlib.error as exc:
                raise ProtocolError(f"undecodable {self.encoding} body: {exc}") from None
            if tail:
                self._push(tail)
            if not decoder.eof:
                raise ProtocolError(f"{self.encoding} body ends before its compressed stream")
        self.state = _DONE
        self._wake()

    def _fail(self, exc: BaseException) -> None:
        if self.error is None:
            self.error = exc
        self.keep_alive = False
        self.sink = None
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
        the response's first byte did not come for the pool's ``first_byte_timeout``
        (FirstByteTimeout), or a later one for its ``read_timeout`` (TimeoutError)."""
        loop = self.loop
        waiter = loop.create_future()
        self.waiter = waiter
        self.last_read = now = loop.time()
        self.pool.deadlines.arm(self, now + self._silence())
        try:
            await waiter
        finally:
            self.pool.deadlines.disarm(self)
            self.waiter = None

    def expire(self) -> None:
        waiter = self.waiter
        if waiter is not None:
            # armed once per wait, not per read: bytes since then push the deadline on
            silent_until = self.last_read + self._silence()
            if silent_until > self.loop.time():
                self.pool.deadlines.arm(self, silent_until)
            elif not waiter.done():
                waiter.set_exception(TimeoutError() if self.first_read else FirstByteTimeout())
        elif self.state is _DONE:  # idle in the pool for KEEPALIVE seconds
            self.pool._drop(self)

    def _silence(self) -> float:
        """The silence allowed now: until the first byte, then between bytes."""
        pool = self.pool
        return pool.read_timeout if self.first_read else pool.first_byte_timeout

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


def header_fields(head: bytes | bytearray) -> dict[str, str]:
    """Kept header fields (``name:value`` lines) by lower-cased name, repeated ones joined
    with ``, ``."""
    fields: dict[str, str] = {}
    for line in head.decode("latin-1").split("\r\n"):
        name, _, value = line.partition(":")
        if name:
            fields[name] = f"{fields[name]}, {value}" if name in fields else value
    return fields


def _codings(value: str) -> list[str]:
    """The codings of a Transfer-Encoding or Content-Encoding value, lower-cased (empty list
    elements are allowed and ignored, RFC 9110 5.6.1)."""
    return [coding for part in value.lower().split(",") if (coding := part.strip(" \t"))]


def _content_coding(value: str) -> str:
    """``''``, ``'gzip'`` or ``'deflate'`` for a Content-Encoding value; ProtocolError else."""
    codings = _codings(value)
    if not codings or codings == ["identity"]:
        return ""
    if codings in (["gzip"], ["x-gzip"]):
        return "gzip"
    if codings == ["deflate"]:
        return "deflate"
    raise ProtocolError(f"unsupported Content-Encoding {value!r}")


def _describe(exc: HttpParserError, state: State) -> str:
    """What llhttp refused, named (its reason, e.g. ``Invalid character in chunk size``,
    follows); ``state`` says where it was."""
    reason = str(exc) or type(exc).__name__
    low = reason.lower()
    if "chunk size" in low:
        what = "bad chunk size"
    elif "chunk" in low:
        what = "bad chunked body"
    elif "transfer-encoding" in low:
        what = "conflicting Content-Length and Transfer-Encoding"
    elif "duplicate content-length" in low:
        what = "conflicting Content-Length"
    elif "content-length" in low:
        what = "invalid Content-Length"
    elif isinstance(exc, HttpParserInvalidStatusError) or any(
        word in low for word in ("status", "version", "response line", "http/", "dot")
    ):
        what = "bad status line"
    elif "header" in low or "start line" in low:
        what = "invalid header" if state is _HEAD else "invalid trailer field"
    else:
        what = "malformed response head" if state is _HEAD else "malformed response body"
    return f"{what}: {reason}"


def _as_connection_error(exc: BaseException) -> BaseException:
    """A ConnectionBroken as it is; anything else (an error of this module's own) wrapped."""
    if isinstance(exc, ConnectionBroken):
        return exc
    error = ProtocolError(f"cannot read the response: {type(exc).__name__}: {exc}")
    error.__cause__ = exc
    return error


def _retrieve(future: asyncio.Future[_Addresses]) -> None:
    if not future.cancelled():
        future.exception()  # a lookup nobody else waited for fails quietly


class WireResponse(BodyReader):
    """One response; ``async with`` it so its connection goes back to the pool or is closed."""

    __slots__ = ("_conn", "first_byte", "status", "written")

    def __init__(self, conn: _Conn) -> None:
        self._conn = conn
        self.status = conn.status
        self.written = conn.written
        self.first_byte = conn.first_read

    @property
    def headers(self) -> dict[str, str]:
        """The response headers, names lower-cased (repeated ones joined with ``, ``); of a
        2xx response only Content-Type and Server are kept."""
        return header_fields(self._conn.head)

    def header(self, name: str) -> str:
        """A response header by case-insensitive name, or ``''`` (2xx: Content-Type, Server)."""
        return header_fields(self._conn.head).get(name.lower(), "")

    async def read_chunk(self) -> bytes:
        """The next decoded body bytes as they arrive; ``b''`` once the body is complete."""
        conn = self._conn
        while not conn.body:
            if conn.state is _DONE:
                return b""
            if conn.error is not None:
                raise conn.error
            await conn.wait()
        return conn.take()

    async def drain(self, sink: Sink) -> None:
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
            while conn.sink is not None and conn.state is not _DONE:
                if conn.error is not None:
                    break
                await conn.wait()
            if conn.error is not None:
                raise conn.error
        finally:
            conn.sink = None

    def release(self) -> None:
        conn = self._conn
        if conn.state is _DONE and conn.keep_alive and conn.error is None and not conn.body:
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
        first_byte_timeout: float = 3600.0,
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
        self.first_byte_timeout = first_byte_timeout
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
        self._addrs: _Addresses = []
        self._addrs_at = 0.0
        self._resolving: asyncio.Future[_Addresses] | None = None
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
        conn.reset(method)
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
        if not conn.transport.get_write_buffer_size():  # else resume_writing() will say when
            conn.written = time.monotonic()
        try:
            while conn.state is _HEAD:
                if conn.error is not None:
                    raise conn.error
                await conn.wait()
        except ConnectionBroken as exc:
            conn.close()
            if reused and not conn.first_read:
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

    async def _resolve(self) -> _Addresses:
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
                        transport, conn = await loop.create_connection(
                            lambda: _Conn(loop, self),
                            sock=sock,
                            ssl=self.tls,
                            server_hostname=self.host if self.tls else None,
                        )
                        # pause_writing() whenever a byte stays in the transport's buffer,
                        # resume_writing() once all is in the kernel: when the request's last
                        # byte went (Response.written)
                        transport.set_write_buffer_limits(high=0, low=0)
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
