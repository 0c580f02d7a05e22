"""``fastagent sim``: serve the simulated OpenAI-compatible endpoint, the benchmark's default model.

It runs in its own process so that its CPU and memory never count against the runtime
being measured, and it is cheap enough to serve thousands of concurrent streams::

    $ fastagent sim --port 8800 --ttft-ms 200
    FASTAGENT_SIM_READY http://127.0.0.1:8800/v1

    $ fastagent sim --port 0 --profile seed=3,p_first=0.9,itl_ms=0
    $ fastagent sim --port 0 --fault http_503:0.2 --fault reset:0.05

What it answers: :mod:`.data`; how fast: :class:`~.profile.SimProfile`; the faults it
injects on request (``--fault KIND[:RATE]``, repeatable, or the profile key
``faults=KIND:RATE+KIND:RATE``): :mod:`.faults`; its endpoints: :mod:`.app`. Every flag is
converted and checked against the type and bounds of the SimProfile field it sets, so bad
input is one line on stderr and exit status 2.

In-process use (tests)::

    runner, base_url = await start_sim(SimProfile(ttft_ms=0), tasks_path, solutions_path)
    ...
    await runner.cleanup()
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import signal
import sys
from pathlib import Path
from typing import Annotated, Any

import uvloop
from aiohttp import web
from msgspec import Meta

from ..cli import describe, value_parser
from ..dataset import DATASET_NAME, SOLUTIONS_NAME, data_path
from ..errors import ExitCode, SimDataError
from .app import SimApp
from .faults import FaultKind
from .launcher import ready_line
from .profile import FIELD_TYPES, PROFILE_KEYS, SimProfile, parse_fault, parse_profile

__all__ = ["Port", "add_arguments", "main", "profile_from_args", "start_app", "start_sim"]

#: A TCP port to listen on; 0 lets the kernel pick a free one.
Port = Annotated[int, Meta(ge=0, le=65535)]

_LISTEN_BACKLOG = 16384
_SHUTDOWN_TIMEOUT = 2.0


def _base_url(host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/v1"


async def start_sim(
    profile: SimProfile,
    tasks_path: str | Path,
    solutions_path: str | Path,
    host: str = "127.0.0.1",
    port: int = 0,
) -> tuple[web.AppRunner, str]:
    """Serve the sim on the running loop; returns the runner and ``http://HOST:PORT/v1``."""
    return await start_app(SimApp(profile, tasks_path, solutions_path).application(), host, port)


async def start_app(
    app: web.Application, host: str = "127.0.0.1", port: int = 0
) -> tuple[web.AppRunner, str]:
    """Serve ``app`` (a :meth:`SimApp.application`) as :func:`start_sim` does."""
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=_SHUTDOWN_TIMEOUT)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, backlog=_LISTEN_BACKLOG, reuse_address=True)
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    bound_port = runner.addresses[0][1]
    return runner, _base_url(host, bound_port)


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


async def _serve(profile: SimProfile, tasks: Path, solutions: Path, host: str, port: int) -> None:
    runner, url = await start_sim(profile, tasks, solutions, host, port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        sys.stdout.write(ready_line(url))
        sys.stdout.flush()
        await stop.wait()
    finally:
        await runner.cleanup()


def _error(message: str) -> int:
    print(f"fastagent sim: error: {message}", file=sys.stderr)
    return ExitCode.BAD_INPUT


def main(args: argparse.Namespace) -> int:
    """Serve until SIGINT/SIGTERM; 0 on a clean stop, 2 on bad input or a failed bind."""
    try:
        profile = profile_from_args(args)
        tasks = Path(args.dataset) if args.dataset else data_path(DATASET_NAME)
        solutions = Path(args.solutions) if args.solutions else data_path(SOLUTIONS_NAME)
        for what, path in (("dataset", tasks), ("solutions", solutions)):
            if not path.is_file():
                raise SimDataError(f"{what} file not found: {path}")
    except ValueError as exc:
        return _error(str(exc))
    _raise_nofile_limit()
    try:
        uvloop.run(_serve(profile, tasks, solutions, args.host, args.port))
    except (SimDataError, ValueError) as exc:
        return _error(str(exc))
    except OSError as exc:
        return _error(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}")
    except KeyboardInterrupt:
        pass
    return ExitCode.OK
