"""What the sim does to a connection itself: wait for the client to leave, close, reset."""

from __future__ import annotations

import asyncio
import contextlib
import math
import socket
import struct
import time

from aiohttp import web

__all__ = ["KEEPALIVE_S", "RESET_GRACE_S", "close", "gone_within", "reset", "sleep_until"]

#: How often a fault that holds a response open writes a byte to it.
KEEPALIVE_S = 1.0
#: How long a reset waits after its last write, so that the bytes leave before the RST.
RESET_GRACE_S = 0.01
_DISCONNECT_POLL_S = 0.05
_DISCONNECT_POLL_MAX_S = 0.5


async def sleep_until(due: float) -> None:
    """Sleep until ``time.monotonic()`` reaches ``due``; not at all once it has."""
    delay = due - time.monotonic()
    if delay > 0:
        await asyncio.sleep(delay)


async def gone_within(request: web.BaseRequest, seconds: float = math.inf) -> bool:
    """Wait up to ``seconds`` for the client to leave; True once it has.

    aiohttp does not cancel a handler when its client disconnects, so a handler that
    writes nothing polls the transport instead, ever less often (at most every 0.5 s, so
    thousands of stalled streams cost the sim little).
    """
    deadline = time.monotonic() + seconds
    poll = _DISCONNECT_POLL_S
    while True:
        transport = request.transport
        if transport is None or transport.is_closing():
            return True
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        await asyncio.sleep(min(poll, left))
        poll = min(poll * 2, _DISCONNECT_POLL_MAX_S)


def close(request: web.BaseRequest) -> None:
    """Close the connection (an orderly FIN), whatever has been written."""
    transport = request.transport
    if transport is not None:
        transport.close()


async def reset(request: web.BaseRequest) -> None:
    """After a short grace, drop the connection with a TCP RST (``SO_LINGER`` 0)."""
    await asyncio.sleep(RESET_GRACE_S)
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()
