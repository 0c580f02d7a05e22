"""The seam between the LLM client and HTTP: what a transport and its response offer.

Two implementations sit beside this module: ``wire.py``, fastagent's lean HTTP/1.1 client
(the default, because the measured process's memory is what the benchmark reports), and
``aiohttp.py`` (``--http-client aiohttp``). ``fastagent._transports.open_transport`` picks
one; the LLM client sees only :class:`Transport` and :class:`Response`.

Errors, the same from both (see ``fastagent.errors``): ``ConnectFailed`` (nothing was sent),
``ConnectionBroken`` (after the request went out; ``StaleConnection`` when a reused
connection was closed before any answer, so sending again is safe; ``ProtocolError`` when
the server broke HTTP), ``FirstByteTimeout`` when the response did not begin within the
first-byte timeout (a server may queue a request without a byte sent: waiting for it is not
silence) and ``TimeoutError`` when a response that has begun sent no byte for the read
timeout.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Callable
from typing import Protocol, Self

#: What a response hands the reader: the next decoded body bytes. A ``memoryview`` may
#: point into a buffer that is reused afterwards: copy what you keep.
Sink = Callable[[bytes | memoryview], bool]
#: A request body, or a function that makes it once a connection is ready (so a waiting
#: request holds no encoded copy).
Body = bytes | Callable[[], bytes]


class Response(Protocol):
    """One HTTP response whose head has arrived; ``async with`` it to release the connection."""

    @property
    def status(self) -> int:
        """The final status code (interim 1xx answers are skipped)."""
        ...

    @property
    def written(self) -> float:
        """When the request's last byte went to the kernel (``time.monotonic()``)."""
        ...

    @property
    def first_byte(self) -> float:
        """When the response's first byte arrived (``time.monotonic()``)."""
        ...

    def header(self, name: str) -> str:
        """A header by case-insensitive name, or ``''``."""
        ...

    async def read_chunk(self) -> bytes:
        """The next decoded body bytes as they arrive; ``b''`` once the body is complete."""
        ...

    async def drain(self, sink: Sink) -> None:
        """Hand the body to ``sink`` piece by piece until it ends or ``sink`` returns True."""
        ...

    async def read(self, limit: int) -> bytes:
        """The whole body, or its first ``limit`` bytes."""
        ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(self, *exc: object) -> None: ...


class Transport(Protocol):
    """Pooled connections to one origin (scheme, host, port)."""

    async def request(self, method: str, target: str, body: Body = b"") -> Response:
        """Send one request and wait for its response head."""
        ...

    async def close(self) -> None:
        """Close idle connections; responses still open close when released."""
        ...


class BodyReader:
    """``drain``, ``chunks`` and ``read`` on top of a response's ``read_chunk``."""

    __slots__ = ()

    async def read_chunk(self) -> bytes:
        raise NotImplementedError

    async def drain(self, sink: Sink) -> None:
        """Hand the body to ``sink`` piece by piece until it ends or ``sink`` returns True."""
        while data := await self.read_chunk():
            if sink(data):
                return

    async def chunks(self) -> AsyncIterator[bytes]:
        """Async iterator over ``read_chunk`` until the body ends."""
        while data := await self.read_chunk():
            yield data

    async def read(self, limit: int) -> bytes:
        """The whole body, or its first ``limit`` bytes."""
        out = bytearray()
        while len(out) < limit and (data := await self.read_chunk()):
            out += data
        return bytes(out[:limit])


def tls_context() -> ssl.SSLContext:
    """A verifying client context with the system CA store, for https endpoints."""
    context = ssl.create_default_context()
    context.set_alpn_protocols(["http/1.1"])
    return context
