"""The per-connection memory floor under the runtime: aiohttp, fastagent's wire client, and
a bare uvloop protocol.

N streaming requests are held open at once against a local server (its own process) that
sends one SSE event and then nothing; the client's RSS growth per connection is printed for
an aiohttp ClientSession (``--http-client aiohttp``, with its read buffer settings), for
fastagent's lean client (``fastagent._transports.wire``, the default) and for a bare uvloop
``asyncio.Protocol`` writing the same request by hand. Each agent in flight holds one such
connection, so this is the floor of the marginal memory per agent.

    python bench/conn_floor.py --connections 2000 [--repeat 5] [--only wire]

The figure moves by a few tenths of a KiB from run to run on a shared machine: with
``--repeat N`` each client is measured N times (each in a fresh process) and the median
is printed after the runs.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import statistics
import subprocess
import sys
import time

SERVER = """
import asyncio, sys
from aiohttp import web
async def handler(request):
    await request.read()
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await resp.prepare(request)
    await resp.write(b"data: {}\\n\\n")
    await asyncio.sleep(3600)
app = web.Application()
app.router.add_post("/v1/chat/completions", handler)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), backlog=4096, print=None)
"""
BODY = b"x" * 2500


def rss_kib() -> int:
    with open("/proc/self/statm", "rb") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


async def hold_aiohttp(port: int, n: int) -> float:
    from fastagent._transports.aiohttp import aiohttp

    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=n, limit_per_host=n),
        read_bufsize=4096,
        timeout=aiohttp.ClientTimeout(total=None, sock_read=600),
    )
    ready = 0

    async def one() -> None:
        nonlocal ready
        async with session.post(f"http://127.0.0.1:{port}/v1/chat/completions", data=BODY) as r:
            async for _ in r.content.iter_any():
                ready += 1
                await asyncio.sleep(3600)

    return await _measure(n, one, lambda: ready)


async def hold_wire(port: int, n: int) -> float:
    from fastagent._transports.wire import WirePool

    pool = WirePool(f"http://127.0.0.1:{port}", read_timeout=600, rcvbuf=16384)
    ready = 0

    async def one() -> None:
        nonlocal ready
        async with await pool.request("POST", "/v1/chat/completions", BODY) as resp:
            while await resp.read_chunk():
                ready += 1
                await asyncio.sleep(3600)

    return await _measure(n, one, lambda: ready)


async def hold_protocol(port: int, n: int) -> float:
    loop = asyncio.get_running_loop()
    ready = 0

    class Stream(asyncio.Protocol):
        def __init__(self, done: asyncio.Future[None]) -> None:
            self.done = done

        def data_received(self, data: bytes) -> None:
            if not self.done.done():
                self.done.set_result(None)

    async def one() -> None:
        nonlocal ready
        done: asyncio.Future[None] = loop.create_future()
        transport, _ = await loop.create_connection(lambda: Stream(done), "127.0.0.1", port)
        head = (
            f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Content-Length: {len(BODY)}\r\n\r\n"
        ).encode()
        transport.write(head + BODY)
        await done
        ready += 1
        await asyncio.sleep(3600)

    return await _measure(n, one, lambda: ready)


async def _measure(n: int, one, ready) -> float:  # type: ignore[no-untyped-def]
    gc.collect()
    before = rss_kib()
    tasks = [asyncio.ensure_future(one()) for _ in range(n)]
    deadline = time.monotonic() + 120
    while ready() < n and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    gc.collect()
    per = (rss_kib() - before) / n
    for t in tasks:
        t.cancel()
    return per


HOLDERS = {
    "aiohttp": ("aiohttp ClientSession", hold_aiohttp),
    "wire": ("fastagent._transports.wire", hold_wire),
    "protocol": ("bare uvloop Protocol", hold_protocol),
}


def main() -> int:
    import uvloop

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=1, help="runs per client; prints medians")
    parser.add_argument("--only", choices=HOLDERS, help="measure this client only")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not args.child:
        # each run in a fresh process: freed memory would be reused otherwise
        figures: dict[str, list[float]] = {}
        for _ in range(args.repeat):
            for key in [args.only] if args.only else HOLDERS:
                cmd = [sys.executable, __file__, "--connections", str(args.connections)]
                out = subprocess.run(
                    [*cmd, "--only", key, "--child"], check=True, capture_output=True, text=True
                ).stdout
                print(out, end="", flush=True)
                figures.setdefault(key, []).append(float(out.split(" KiB ")[0].split()[-1]))
        if args.repeat > 1:
            for key, values in figures.items():
                print(
                    f"median {HOLDERS[key][0]:27s} {statistics.median(values):6.2f} KiB "
                    f"({args.repeat} runs: {', '.join(f'{v:.2f}' for v in values)})"
                )
        return 0
    name, hold = HOLDERS[args.only]
    port = 18900 + list(HOLDERS).index(args.only)
    server = subprocess.Popen([sys.executable, "-c", SERVER, str(port)])
    try:
        time.sleep(1.5)
        per = uvloop.run(hold(port, args.connections))
    finally:
        server.kill()
        server.wait()
    print(f"{name:27s} {per:6.2f} KiB per open streaming connection ({args.connections} held)")
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
