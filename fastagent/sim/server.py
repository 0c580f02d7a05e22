"""``fastagent sim``: serve the simulated OpenAI-compatible endpoint, the benchmark's default model.

It runs in its own process so that its CPU and memory never count against the runtime
being measured, and it is cheap enough to serve thousands of concurrent streams::

    $ fastagent sim --port 8800 --ttft-ms 200
    FASTAGENT_SIM_READY http://127.0.0.1:8800/v1

    $ fastagent sim --port 0 --profile seed=3,p_first=0.9,itl_ms=0
    $ fastagent sim --port 0 --fault http_503:0.2 --fault reset:0.05
    $ fastagent sim --port 0 --workers 2

What it answers: :mod:`.data`; how fast: :class:`~.profile.SimProfile`; the faults it
injects on request (``--fault KIND[:RATE]``, repeatable, or the profile key
``faults=KIND:RATE+KIND:RATE``): :mod:`.faults`; its endpoints: :mod:`.app`; its HTTP:
:mod:`.conn` on uvloop. Every flag is converted and checked against the type and bounds of
the SimProfile field it sets, so bad input is one line on stderr and exit status 2.

``--workers N`` forks N - 1 more processes after the data is loaded, each with its own
listening socket on the one port (``SO_REUSEPORT``: the kernel spreads the connections), all
numbering their chat requests from one shared sequence (so request ``n`` meets the fault it
would meet in one process) and reporting the shared totals at ``/v1/sim/stats``
(:mod:`.counters`). The first process prints the ready line and, on SIGTERM or SIGINT,
stops the others; a worker whose parent is gone stops too.

In-process use (tests)::

    server, base_url = await start_sim(SimProfile(ttft_ms=0), tasks_path, solutions_path)
    ...
    await server.cleanup()
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import resource
import signal
import socket
import sys
from pathlib import Path
from typing import Annotated, Any

import uvloop
from msgspec import Meta

from ..cli import describe, value_parser
from ..dataset import DATASET_NAME, SOLUTIONS_NAME, data_path
from ..errors import ExitCode, SimDataError
from .app import SimApp
from .conn import Conn
from .counters import SharedCounters
from .faults import FaultKind
from .launcher import ready_line
from .profile import FIELD_TYPES, PROFILE_KEYS, SimProfile, parse_fault, parse_profile

__all__ = [
    "Port",
    "SimServer",
    "Workers",
    "add_arguments",
    "main",
    "profile_from_args",
    "start_app",
    "start_sim",
]

#: A TCP port to listen on; 0 lets the kernel pick a free one.
Port = Annotated[int, Meta(ge=0, le=65535)]
#: How many processes serve.
Workers = Annotated[int, Meta(ge=1, le=256)]

_LISTEN_BACKLOG = 16384


def _base_url(host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/v1"


class SimServer:
    """One process's listening socket and open connections, serving a :class:`SimApp`."""

    def __init__(self, app: SimApp) -> None:
        self.app = app
        self.conns: set[Conn] = set()
        self.base_url = ""
        self._server: asyncio.Server | None = None

    async def start(
        self, host: str = "127.0.0.1", port: int = 0, sock: socket.socket | None = None
    ) -> str:
        """Listen on ``host:port`` (or on ``sock``); returns ``http://HOST:PORT/v1``."""
        loop = asyncio.get_running_loop()
        router, conns = self.app.route, self.conns

        def factory() -> Conn:
            return Conn(router, conns)

        if sock is not None:
            host = host or sock.getsockname()[0]
            server = await loop.create_server(factory, sock=sock, backlog=_LISTEN_BACKLOG)
        else:
            server = await loop.create_server(
                factory, host, port, backlog=_LISTEN_BACKLOG, reuse_address=True
            )
        self._server = server
        bound_port = server.sockets[0].getsockname()[1]
        self.base_url = _base_url(host, bound_port)
        return self.base_url

    async def cleanup(self) -> None:
        """Stop listening, end every connection (what was written goes first), forget every
        timer."""
        if self._server is not None:
            self._server.close()
        for conn in list(self.conns):
            conn.close()
        self.app.pacer.close()
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None


async def start_sim(
    profile: SimProfile,
    tasks_path: str | Path,
    solutions_path: str | Path,
    host: str = "127.0.0.1",
    port: int = 0,
) -> tuple[SimServer, str]:
    """Serve the sim on the running loop; returns the server and ``http://HOST:PORT/v1``."""
    return await start_app(SimApp(profile, tasks_path, solutions_path), host, port)


async def start_app(app: SimApp, host: str = "127.0.0.1", port: int = 0) -> tuple[SimServer, str]:
    """Serve ``app`` as :func:`start_sim` does."""
    server = SimServer(app)
    return server, await server.start(host, port)


def _fault_flag(text: str) -> tuple[FaultKind, float]:
    try:
        return parse_fault(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _flag_help(tp: Any) -> str:
    """A field's description (its Meta's) and what its value must be."""
    metas = getattr(tp, "__metadata__", ())
    doc = next((m.description for m in metas if isinstance(m, Meta) and m.description), None)
    return f"{doc} ({describe(tp)})" if doc else describe(tp)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the sim's options to ``parser`` (used by ``fastagent sim``)."""
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument(
        "--port", type=value_parser(Port), default=8800, help="port to listen on; 0 = any free"
    )
    parser.add_argument(
        "--workers",
        type=value_parser(Workers),
        default=1,
        help="processes serving the one port (SO_REUSEPORT); request numbers and "
        f"/v1/sim/stats are shared ({describe(Workers)})",
    )
    parser.add_argument(
        "--dataset", type=Path, default=None, help=f"tasks JSON (default: bundled {DATASET_NAME})"
    )
    parser.add_argument(
        "--solutions",
        type=Path,
        default=None,
        help=f"solutions JSON (default: bundled {SOLUTIONS_NAME})",
    )
    parser.add_argument(
        "--profile",
        default="",
        metavar="KEY=VAL,...",
        help=f"sim profile; keys: {', '.join(PROFILE_KEYS)} (faults=KIND:RATE+KIND:RATE)",
    )
    group = parser.add_argument_group("profile overrides (win over --profile)")
    for key, tp in FIELD_TYPES.items():
        if key != "faults":
            flag = "--" + key.replace("_", "-")
            group.add_argument(flag, type=value_parser(tp), default=None, help=_flag_help(tp))
    group.add_argument(
        "--fault",
        dest="faults",
        type=_fault_flag,
        action="append",
        default=None,
        metavar="KIND[:RATE]",
        help="inject a fault into that share of chat requests (RATE in [0, 1], default 1); "
        "repeatable, the first that hits a request wins; given at all, these replace the "
        f"profile's faults. Kinds: {', '.join(FaultKind)}",
    )


def profile_from_args(args: argparse.Namespace) -> SimProfile:
    """``--profile`` with the individual flags applied on top (``--fault`` flags replace
    the profile's ``faults``)."""
    profile = parse_profile(getattr(args, "profile", "") or "")
    overrides = {
        key: getattr(args, key)
        for key in PROFILE_KEYS
        if key != "faults" and getattr(args, key, None) is not None
    }
    fault_flags = getattr(args, "faults", None)
    if fault_flags:
        overrides["faults"] = tuple(fault_flags)
    return SimProfile(**{**profile.as_dict(), **overrides}) if overrides else profile


def _raise_nofile_limit() -> None:
    """Raise the soft limit of open files as far as allowed: each stream holds a socket."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    for target in (hard, 1 << 20, 65536):
        if (
            target == resource.RLIM_INFINITY
            or target <= soft
            or (hard != resource.RLIM_INFINITY and target > hard)
        ):
            continue
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            continue
        return


def _listeners(host: str, port: int, n: int) -> list[socket.socket]:
    """``n`` listening sockets on one port (``SO_REUSEPORT`` when there are several)."""
    family, _, _, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    socks: list[socket.socket] = []
    try:
        for _ in range(n):
            sock = socket.socket(family, socket.SOCK_STREAM)
            socks.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if n > 1:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind(address)
            address = sock.getsockname()  # the others take the port the first one got
            sock.listen(_LISTEN_BACKLOG)
            sock.setblocking(False)
    except BaseException:
        for sock in socks:
            sock.close()
        raise
    return socks


async def _serve(
    app: SimApp, host: str, port: int, sock: socket.socket | None, stop_fd: int | None
) -> None:
    """Serve on ``host:port`` (every address it names, as aiohttp did) or on ``sock`` (a
    worker's) until SIGINT/SIGTERM, or, in a worker, until ``stop_fd`` (the read end of a pipe
    whose write end the first process holds) closes. Without ``stop_fd``, print the ready line
    once listening."""
    server = SimServer(app)
    url = await server.start(host, port, sock=sock)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if stop_fd is not None:
        loop.add_reader(stop_fd, stop.set)
    try:
        if stop_fd is None:
            sys.stdout.write(ready_line(url))
            sys.stdout.flush()
        await stop.wait()
    finally:
        await server.cleanup()


def _fork_workers(app: SimApp, socks: list[socket.socket]) -> list[int]:
    """A worker process for each of ``socks`` but the first (which stays this process's);
    returns their pids. A worker serves its socket until told to stop or this process is
    gone, then exits."""
    if len(socks) < 2:
        return []
    stop_r, stop_w = os.pipe()  # this process holds stop_w open until it exits
    pids = []
    for i, sock in enumerate(socks[1:], 1):
        pid = os.fork()
        if pid == 0:  # the worker
            code = 1
            try:
                os.close(stop_w)
                for other in socks[:i] + socks[i + 1 :]:
                    other.close()
                app.reseed_ids()
                uvloop.run(_serve(app, "", 0, sock, stop_r))
                code = 0
            except KeyboardInterrupt:
                code = 0
            finally:
                os._exit(code)
        pids.append(pid)
        sock.close()
    os.close(stop_r)
    return pids


def _stop_workers(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    for pid in pids:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)


def _error(message: str) -> int:
    print(f"fastagent sim: error: {message}", file=sys.stderr)
    return ExitCode.BAD_INPUT


def main(args: argparse.Namespace) -> int:
    """Serve until SIGINT/SIGTERM; 0 on a clean stop, 2 on bad input or a failed bind."""
    workers = getattr(args, "workers", 1)
    try:
        profile = profile_from_args(args)
        tasks = Path(args.dataset) if args.dataset else data_path(DATASET_NAME)
        solutions = Path(args.solutions) if args.solutions else data_path(SOLUTIONS_NAME)
        for what, path in (("dataset", tasks), ("solutions", solutions)):
            if not path.is_file():
                raise SimDataError(f"{what} file not found: {path}")
        app = SimApp(profile, tasks, solutions, SharedCounters() if workers > 1 else None)
    except (SimDataError, ValueError) as exc:
        return _error(str(exc))
    _raise_nofile_limit()
    cannot = f"cannot listen on {args.host}:{args.port}"
    socks: list[socket.socket] = []
    if workers > 1:  # the sockets made before the workers are forked
        try:
            socks = _listeners(args.host, args.port, workers)
        except OSError as exc:
            return _error(f"{cannot}: {exc.strerror or exc}")
    pids = _fork_workers(app, socks)
    try:
        uvloop.run(_serve(app, args.host, args.port, socks[0] if socks else None, None))
    except OSError as exc:
        return _error(f"{cannot}: {exc.strerror or exc}")
    except KeyboardInterrupt:
        pass
    finally:
        _stop_workers(pids)
    return ExitCode.OK
