"""The lean HTTP/1.1 server side of one connection: :class:`Conn`, and the routing table.

An ``asyncio.Protocol`` (uvloop's, in ``fastagent sim``) whose requests llhttp frames through
httptools: request line, headers, Content-Length or chunked body, keep-alive. A request read
whole goes to the router; whoever answers it writes through the connection, either a whole
response (:meth:`Conn.respond`) or a head (:meth:`Conn.begin`) and then its body
(:meth:`Conn.chunk`, :meth:`Conn.write`, :meth:`Conn.end`), and says when it is over
(:meth:`Conn.done`). One request is answered at a time; a pipelined one waits its turn.

The client leaving (``connection_lost``; its half-close ends the connection too, as aiohttp's
did) is passed to the exchange in progress, :attr:`Conn.exchange`, through its ``gone``
method: a response that writes nothing (``stall``) or only keep-alives (``no_done``) ends
with it. A write after that, or after :meth:`Conn.close`, is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
import time
from collections import deque
from collections.abc import Callable
from email.utils import formatdate
from http import HTTPStatus
from typing import Protocol

from httptools import (
    HttpParserCallbackError,
    HttpParserError,
    HttpParserUpgrade,
    HttpRequestParser,
    parse_url,
)

__all__ = [
    "JSON",
    "MAX_BODY",
    "TEXT",
    "Conn",
    "Exchange",
    "Handler",
    "Request",
    "Routes",
    "date_line",
    "route",
]

#: The largest request body the endpoint reads (413 beyond).
MAX_BODY = 64 * 1024 * 1024
JSON = b"application/json"
TEXT = b"text/plain; charset=utf-8"

_log = logging.getLogger("fastagent.sim")
_STATUS = {s.value: b"HTTP/1.1 %d %s\r\n" % (s.value, s.phrase.encode()) for s in HTTPStatus}
_LINGER_0 = struct.pack("ii", 1, 0)
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_CHUNKED = b"Transfer-Encoding: chunked\r\n"
_CLOSE = b"Connection: close\r\n"
_LAST_CHUNK = b"0\r\n\r\n"


class _Date:
    second = 0
    line = b""


def date_line() -> bytes:
    """``Date: ...\\r\\n``, made once a second."""
    now = int(time.time())
    if now != _Date.second:
        _Date.second, _Date.line = now, f"Date: {formatdate(now, usegmt=True)}\r\n".encode()
    return _Date.line


class Request:
    """One request read whole."""

    __slots__ = ("accepted", "body", "http11", "keep_alive", "method", "path", "read")

    def __init__(
        self,
        method: bytes,
        path: bytes,
        body: bytes,
        accepted: float,
        read: float,
        http11: bool,
        keep: bool,
    ) -> None:
        self.method = method
        self.path = path
        self.body = body
        #: ``time.monotonic()`` when its first byte was read
        self.accepted = accepted
        #: ``time.monotonic()`` when its last byte was read
        self.read = read
        self.http11 = http11
        #: HTTP/1.1 and no ``Connection: close``
        self.keep_alive = keep


class Exchange(Protocol):
    """A response in progress that wants to know when the client leaves."""

    def gone(self) -> None: ...


Handler = Callable[["Conn", Request], None]
#: path -> method -> handler
Routes = dict[bytes, dict[bytes, Handler]]


def route(routes: Routes, conn: Conn, request: Request) -> None:
    """Answer ``request`` with its handler: 404 for an unknown path, 405 for a method the path
    does not take (``HEAD`` goes to ``GET``'s handler, which then writes no body)."""
    methods = routes.get(request.path)
    if methods is None:
        conn.respond(404, b"404: Not Found", TEXT)
        return
    handler = methods.get(request.method)
    if handler is None and request.method == b"HEAD":
        handler = methods.get(b"GET")
    if handler is None:
        allow = b"Allow: " + b",".join(sorted(methods)) + b"\r\n"
        conn.respond(405, b"405: Method Not Allowed", TEXT, allow)
        return
    handler(conn, request)


class _TooLarge(Exception):
    pass


class Conn(asyncio.Protocol):
    """One client connection: its parser, its requests, the writes of their responses."""

    __slots__ = ("_accepted", "_body", "_expect", "_now", "_parser", "_pending", "_router",
                 "_size", "_url", "_version11", "busy", "chunked", "close_after", "closed",
                 "conns", "exchange", "head_only", "http11", "keep_alive",
                 "transport")  # fmt: skip

    def __init__(self, router: Callable[[Conn, Request], None], conns: set[Conn]) -> None:
        self._router = router
        self.conns = conns
        self.transport: asyncio.Transport | None = None
        self._parser = HttpRequestParser(self)
        self._pending: deque[Request] = deque()
        self._now = self._accepted = 0.0
        self._url = b""
        self._body: list[bytes] = []
        self._size = 0
        self._expect = self._version11 = False
        #: the request being answered is HTTP/1.1
        self.http11 = True
        #: a request is being answered
        self.busy = False
        #: the connection is closed, or closing: writes are dropped
        self.closed = False
        #: the response in progress is chunked
        self.chunked = False
        #: the response in progress ends the connection
        self.close_after = False
        self.keep_alive = True
        self.head_only = False
        #: told ``gone()`` when the client leaves
        self.exchange: Exchange | None = None

    # ---- asyncio.Protocol ----

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.conns.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.conns.discard(self)
        self._pending.clear()
        exchange, self.exchange = self.exchange, None
        if exchange is not None:
            exchange.gone()

    def data_received(self, data: bytes) -> None:
        self._now = time.monotonic()
        try:
            self._parser.feed_data(data)
        except HttpParserCallbackError as exc:
            if not isinstance(exc.__context__, _TooLarge):
                raise
            self._refuse(413, b"413: Request Entity Too Large")
        except HttpParserUpgrade:  # what follows the request is not HTTP: no next request
            if self.busy:
                self.keep_alive = False
            else:
                self.close()
        except HttpParserError:
            self._refuse(400, b"400: Bad Request")

    # eof_received: the default (None) closes the transport, which ends the connection

    # ---- httptools callbacks ----

    def on_message_begin(self) -> None:
        self._accepted = self._now
        self._url = b""
        self._body = []
        self._size = 0
        self._expect = False

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        if len(name) == 6 and name.lower() == b"expect" and value.lower() == b"100-continue":
            self._expect = True

    def on_headers_complete(self) -> None:
        self._version11 = self._parser.get_http_version() == "1.1"
        if self._expect and not self.busy and self.transport is not None:
            self.transport.write(_CONTINUE)

    def on_body(self, body: bytes) -> None:
        self._size += len(body)
        if self._size > MAX_BODY:
            raise _TooLarge
        self._body.append(body)

    def on_message_complete(self) -> None:
        url, parts = self._url, self._body
        path = url.partition(b"?")[0] if url[:1] == b"/" else (parse_url(url).path or b"/")
        body = parts[0] if len(parts) == 1 else b"".join(parts)
        v11 = self._version11
        keep = v11 and self._parser.should_keep_alive()
        request = Request(
            self._parser.get_method(), path, body, self._accepted, self._now, v11, keep
        )
        if self.busy:
            self._pending.append(request)
        else:
            self._dispatch(request)

    def _dispatch(self, request: Request) -> None:
        self.busy = True
        self.keep_alive = request.keep_alive
        self.http11 = request.http11
        self.head_only = request.method == b"HEAD"
        try:
            self._router(self, request)
        except Exception:
            _log.exception("sim: handling %s %s failed", request.method, request.path)
            if self.busy and self.exchange is None:
                self.respond(500, b"500: Internal Server Error", TEXT, close=True)

    # ---- writing ----

    def _head(self, status: int, ctype: bytes, headers: bytes, length: int | None) -> bytes:
        if length is not None:
            framing = b"Content-Length: %d\r\n" % length
        else:
            framing = _CHUNKED if self.chunked else b""
        close = _CLOSE if self.close_after else b""
        line = _STATUS.get(status) or b"HTTP/1.1 %d Unknown\r\n" % status
        return b"%sContent-Type: %s\r\n%s%s%s%s\r\n" % (
            line, ctype, headers, framing, close, date_line()
        )  # fmt: skip

    def respond(
        self, status: int, body: bytes, ctype: bytes, headers: bytes = b"", *, close: bool = False
    ) -> None:
        """A whole response (its body left out for HEAD); then the next request, or the end."""
        self.chunked = False
        self.close_after = close or not self.keep_alive
        head = self._head(status, ctype, headers, len(body))
        self.write(head if self.head_only else head + body)
        self.done()

    def begin(
        self,
        status: int,
        ctype: bytes,
        headers: bytes = b"",
        *,
        length: int | None = None,
        close: bool = False,
        first: bytes = b"",
    ) -> None:
        """A response's head, with its Content-Length, else chunked (HTTP/1.0: until the
        end of the connection); ``first``, the first piece of its body, in the same write."""
        self.write(self.head(status, ctype, headers, length=length, close=close, first=first))

    def head(
        self,
        status: int,
        ctype: bytes,
        headers: bytes = b"",
        *,
        length: int | None = None,
        close: bool = False,
        first: bytes = b"",
    ) -> bytes:
        """What :meth:`begin` writes, for the caller to write (the response begun)."""
        self.chunked = length is None and self.http11
        self.close_after = close or not self.keep_alive or (length is None and not self.http11)
        head = self._head(status, ctype, headers, length)
        if first:
            head += b"%x\r\n%s\r\n" % (len(first), first) if self.chunked else first
        return head

    def write(self, data: bytes) -> None:
        """Bytes as they are (a body with a Content-Length, or no framing at all)."""
        if not self.closed:
            self.transport.write(data)  # type: ignore[union-attr]

    def chunk(self, data: bytes) -> None:
        """One piece of a chunked body (as it is, when the response is not chunked)."""
        if not self.closed:
            self.transport.write(  # type: ignore[union-attr]
                b"%x\r\n%s\r\n" % (len(data), data) if self.chunked else data
            )

    def end(self, last: bytes = b"") -> None:
        """``last`` and the end of a chunked body in one write; then :meth:`done`."""
        if self.chunked:
            self.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(last), last) if last else _LAST_CHUNK)
        elif last:
            self.write(last)
        self.done()

    def done(self) -> None:
        """The response is over: answer the next request, or end the connection."""
        self.busy = False
        self.exchange = None
        if self.close_after or not self.keep_alive:
            self.close()
        elif self._pending and not self.closed:
            self._dispatch(self._pending.popleft())

    def close(self) -> None:
        """End the connection (what was written goes first, then a FIN)."""
        self.closed = True
        self._pending.clear()
        if self.transport is not None:
            self.transport.close()

    def reset(self) -> None:
        """Drop the connection with a TCP RST (``SO_LINGER`` 0)."""
        self.closed = True
        transport = self.transport
        if transport is None:
            return
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_0)
        transport.abort()

    def _refuse(self, status: int, body: bytes) -> None:
        """An error before any handler: the response, then the end of the connection."""
        if not self.busy and not self.closed:
            self.busy = True
            self.head_only = False
            self.respond(status, body, TEXT, close=True)
        else:
            self.close()
