"""aiohttp as the LLM client's transport (``--http-client aiohttp``), imported lean.

``AiohttpTransport`` offers the same small surface as ``wire.WirePool`` (the default):
``request(method, target, body)`` gives a response with ``status``, ``header()``,
``drain(sink)``, ``read_chunk()``, ``chunks()`` and ``read(limit)``, used as an async
context manager, and errors surface as ``ConnectFailed``, ``ConnectionBroken`` (a head
aiohttp's parser refuses: ``ProtocolError``) or ``TimeoutError``. Here ``drain`` pulls each
chunk into the sink from the reading task.

aiohttp's connector module creates a verified and an unverified ``ssl.SSLContext`` at
import time, loading the system CA store into both: about 2 MiB of the measured
process's resident set, paid even by a run that only speaks plain HTTP to a loopback
endpoint. This module imports aiohttp with certificate loading switched off for the
duration of the import, and hands out a properly verified context (``tls_context``)
built on demand when a run really talks HTTPS. The contexts aiohttp made stay without
CA certificates, so anything that used them by accident would fail verification,
never skip it.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import sys
import time
from collections.abc import Callable
from types import SimpleNamespace
from typing import TYPE_CHECKING

from ..errors import ConnectFailed, ConnectionBroken, FirstByteTimeout, ProtocolError
from .base import BodyReader, tls_context

if TYPE_CHECKING:
    from aiohttp.connector import AddrInfoType, SocketFactoryType

if "aiohttp" in sys.modules:  # pragma: no cover - imported earlier by someone else
    import aiohttp
else:
    _Context = ssl.SSLContext
    _load, _paths = _Context.load_default_certs, _Context.set_default_verify_paths
    _Context.load_default_certs = lambda self, purpose=ssl.Purpose.SERVER_AUTH: None  # type: ignore[method-assign]
    _Context.set_default_verify_paths = lambda self: None  # type: ignore[method-assign]
    try:
        import aiohttp
    finally:
        _Context.load_default_certs, _Context.set_default_verify_paths = _load, _paths  # type: ignore[method-assign]


#: Bytes a response may buffer before aiohttp stops reading its socket (flow control): a
#: backlog waits in the kernel's socket buffer instead of the measured heap.
READ_BUFSIZE = 4096


def _socket_factory(rcvbuf: int) -> SocketFactoryType:
    """Sockets with a fixed receive buffer (``Config.socket_rcvbuf``; 0 keeps the kernel's).

    One socket read hands aiohttp everything the kernel holds, and its parser turns that
    into one bytes object per HTTP chunk before flow control can pause: with thousands of
    streams outrunning the runtime, an autotuned buffer becomes tens of KiB per agent.
    """

    def make(addr_info: AddrInfoType) -> socket.socket:
        family, type_, proto, _, _ = addr_info
        sock = socket.socket(family=family, type=type_, proto=proto)
        if rcvbuf:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        return sock

    return make


class _Written:
    """When aiohttp wrote a request's last part (its headers, then each body chunk)."""

    __slots__ = ("at",)

    def __init__(self) -> None:
        self.at = 0.0


async def _mark_written(session: object, context: SimpleNamespace, params: object) -> None:
    written = context.trace_request_ctx
    if isinstance(written, _Written):
        written.at = time.monotonic()


def _trace() -> aiohttp.TraceConfig:
    trace = aiohttp.TraceConfig()
    trace.on_request_headers_sent.append(_mark_written)
    trace.on_request_chunk_sent.append(_mark_written)
    return trace


class AiohttpTransport:
    """One pooled aiohttp ClientSession to one origin."""

    def __init__(
        self,
        origin: str,
        headers: dict[str, str],
        *,
        limit: int,
        connect_timeout: float,
        first_byte_timeout: float = 3600.0,
        read_timeout: float,
        rcvbuf: int = 0,
    ) -> None:
        self.origin = origin
        self.first_byte_timeout = first_byte_timeout
        self.read_timeout = read_timeout
        connector = aiohttp.TCPConnector(
            ssl=tls_context() if origin.startswith("https:") else True,
            limit=limit,
            limit_per_host=limit,
            ttl_dns_cache=300,
            enable_cleanup_closed=True,
            socket_factory=_socket_factory(rcvbuf),
        )
        self.session = aiohttp.ClientSession(
            connector=connector,
            headers=headers,
            # aiohttp's sock_read would time the wait for the head like any read: the head
            # gets first_byte_timeout here, each body read read_timeout (_Response)
            timeout=aiohttp.ClientTimeout(total=None, connect=connect_timeout, sock_read=None),
            auto_decompress=True,
            read_bufsize=READ_BUFSIZE,
            trace_configs=[_trace()],
        )

    async def request(
        self, method: str, target: str, body: bytes | Callable[[], bytes] = b""
    ) -> _Response:
        if callable(body):
            body = body()
        written = _Written()
        first_byte = asyncio.timeout(self.first_byte_timeout)
        try:
            async with first_byte:
                resp = await self.session.request(
                    method, self.origin + target, data=body or None, trace_request_ctx=written
                )
        except aiohttp.ConnectionTimeoutError as exc:
            raise ConnectFailed(str(exc) or "connect timed out") from exc
        except TimeoutError:
            if first_byte.expired():
                raise FirstByteTimeout() from None
            raise
        except aiohttp.ClientConnectorError as exc:
            raise ConnectFailed(str(exc)) from exc
        except aiohttp.ClientResponseError as exc:
            refused = aiohttp.http_exceptions.HttpProcessingError  # its parser refused the head
            if isinstance(exc.__cause__, refused):
                raise ProtocolError(" ".join(exc.message.split()) or "malformed response") from exc
            raise ConnectionBroken(str(exc) or type(exc).__name__) from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise ConnectionBroken(str(exc) or type(exc).__name__) from exc
        return _Response(resp, written.at, time.monotonic(), self.read_timeout)

    async def close(self) -> None:
        await self.session.close()


class _Response(BodyReader):
    __slots__ = ("_read_timeout", "_resp", "first_byte", "headers", "status", "written")

    def __init__(
        self, resp: aiohttp.ClientResponse, written: float, first_byte: float, read_timeout: float
    ) -> None:
        self._resp = resp
        self.status = resp.status
        self.headers = resp.headers
        self.written = written
        #: when aiohttp handed over the parsed head (its first byte's own arrival is not kept)
        self.first_byte = first_byte
        self._read_timeout = read_timeout

    def header(self, name: str) -> str:
        return self.headers.get(name, "")

    async def read_chunk(self) -> bytes:
        try:
            async with asyncio.timeout(self._read_timeout):
                return await self._resp.content.readany()
        except TimeoutError:
            raise
        except (aiohttp.ClientError, OSError) as exc:
            raise ConnectionBroken(str(exc) or type(exc).__name__) from exc

    async def __aenter__(self) -> _Response:
        return self

    async def __aexit__(self, *exc: object) -> None:
        if not exc or exc[0] is None:
            self._resp.release()  # back to the pool if the body was read to its end
        else:
            self._resp.close()


__all__ = ["AiohttpTransport", "aiohttp", "tls_context"]
