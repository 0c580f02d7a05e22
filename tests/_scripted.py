"""A loopback HTTP/1.1 server that answers each request with scripted bytes (transport tests).

    >>> async def ok(exchange: Exchange) -> bool:
    ...     exchange.writer.write(b"HTTP/1.1 200 OK\\r\\nContent-Length: 2\\r\\n\\r\\nok")
    ...     return True  # keep the connection for the next request; False closes it

    async with Scripted(ok) as server:   # server.origin is http://127.0.0.1:<port>
        ...

A reply that must leave its connection open without answering awaits ``server.hold()``,
which returns only when the ``async with`` ends: nothing in a test depends on how long
anything takes.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field


@dataclass
class Exchange:
    """One request as the server read it, and the stream to answer on."""

    server: Scripted
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    #: the request's number on its connection, from 1
    n: int
    head: bytes
    body: bytes


Reply = Callable[[Exchange], Awaitable[bool]]


@dataclass
class Scripted:
    reply: Reply
    tls: ssl.SSLContext | None = None
    #: connections accepted, and request heads read, so far
    connections: int = 0
    heads: list[bytes] = field(default_factory=list)
    origin: str = ""
    _released: asyncio.Event | None = None
    _server: asyncio.Server | None = None
    _writers: list[asyncio.StreamWriter] = field(default_factory=list)

    async def hold(self) -> None:
        """Until the test is over (the connection stays open and silent meanwhile)."""
        assert self._released is not None
        await self._released.wait()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.append(writer)
        n = 0
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                self.heads.append(head)
                length = [
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                ]
                body = await reader.readexactly(length[0] if length else 0)
                n += 1
                if not await self.reply(Exchange(self, reader, writer, n, head, body)):
                    break
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()

    async def __aenter__(self) -> Scripted:
        self._released = asyncio.Event()
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0, ssl=self.tls)
        port = self._server.sockets[0].getsockname()[1]
        self.origin = f"{'https' if self.tls else 'http'}://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._released is not None and self._server is not None
        self._released.set()
        self._server.close()
        for writer in self._writers:
            writer.close()
        await asyncio.sleep(0)  # let the handlers see their release


async def ok(exchange: Exchange) -> bool:
    """``200 OK`` with the body ``ok``, keeping the connection."""
    exchange.writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    return True


def replying(*responses: bytes, keep: bool = True) -> Reply:
    """A reply that writes ``responses`` (the n-th request gets the n-th, then the last)."""

    async def reply(exchange: Exchange) -> bool:
        exchange.writer.write(responses[min(exchange.n, len(responses)) - 1])
        return keep

    return reply
