"""HTTP transports of the LLM client: the seam (``base``) and its two implementations.

``open_transport`` imports only the one a run asks for, so ``fastagent bench`` with the
default lean client never imports aiohttp.
"""

from __future__ import annotations

from .._deadlines import Deadlines
from ..config import HttpClient
from .base import Response, Transport

__all__ = ["Response", "Transport", "open_transport"]


def open_transport(
    kind: HttpClient,
    origin: str,
    headers: dict[str, str],
    *,
    limit: int,
    connect_timeout: float,
    first_byte_timeout: float,
    read_timeout: float,
    rcvbuf: int,
    deadlines: Deadlines,
) -> Transport:
    """A pooled transport to ``origin`` sending ``headers`` with every request.

    ``limit`` caps aiohttp's pool (the lean client opens what its callers need);
    ``deadlines`` is the run's ticker, which the lean client's read timeouts use.
    """
    if HttpClient(kind) is HttpClient.AIOHTTP:
        from .aiohttp import AiohttpTransport

        return AiohttpTransport(
            origin,
            headers,
            limit=limit,
            connect_timeout=connect_timeout,
            first_byte_timeout=first_byte_timeout,
            read_timeout=read_timeout,
            rcvbuf=rcvbuf,
        )
    from .wire import WirePool

    return WirePool(
        origin,
        headers,
        connect_timeout=connect_timeout,
        first_byte_timeout=first_byte_timeout,
        read_timeout=read_timeout,
        rcvbuf=rcvbuf,
        deadlines=deadlines,
    )
