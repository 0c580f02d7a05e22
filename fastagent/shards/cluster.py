"""The Ray side of the coordinator: joining or starting the cluster, the shard actors, and
what Ray itself costs.

Without ``--ray-address`` a local instance is started for the run, as lean as ``ray.init``
allows (no dashboard, the smallest object store, no log forwarding, no usage report) and
stopped after it. An address is probed with one TCP connection first: Ray itself would
retry an unreachable one for minutes and then exit the process.

Ray is imported with :func:`importlib.import_module`, so only this module (in the
coordinator) loads it and the type checker does not analyse Ray's own sources.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import socket
import time
from collections.abc import Iterable
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

from ..errors import RunError, UsageError
from ..schema import RayCost
from .node import ShardProcess
from .proc import process_tree

__all__ = ["INSTALL_HINT", "Cluster", "import_ray"]

INSTALL_HINT = "--shards needs Ray: pip install 'fastagent[ray]'"
#: ray.init's smallest object store (Ray refuses less): the shards ship rows, not data.
_OBJECT_STORE_BYTES = 75 * 1024 * 1024
_PROBE_SECONDS = 5.0


def import_ray() -> ModuleType:
    """Ray, or UsageError with the one line saying how to install it."""
    try:
        return importlib.import_module("ray")
    except ImportError:
        raise UsageError(INSTALL_HINT) from None


def _probe(address: str) -> None:
    """RunError unless ``host:port`` (or ``ray://host:port``) accepts a TCP connection."""
    if address in ("auto", "local"):
        return
    parts = urlsplit(address if "://" in address else f"tcp://{address}")
    try:
        host, port = parts.hostname, parts.port
    except ValueError:
        host, port = None, None
    if not host or not port:
        raise RunError(f"--ray-address {address!r}: expected HOST:PORT, ray://HOST:PORT or auto")
    try:
        with socket.create_connection((host, port), timeout=_PROBE_SECONDS):
            pass
    except OSError as exc:
        why = exc.strerror or str(exc) or type(exc).__name__
        raise RunError(f"cannot reach the Ray cluster at {address}: {why}") from None


class Cluster:
    """A Ray connection for one sharded run."""

    def __init__(self, ray: ModuleType, address: str | None, startup_seconds: float) -> None:
        self.ray = ray
        self.address = address
        self.startup_seconds = startup_seconds
        self.version: str = str(getattr(ray, "__version__", "unknown"))

    @classmethod
    def start(cls, address: str | None) -> Cluster:
        """Join ``address`` or start a local instance; RunError (one line) when neither works."""
        ray = import_ray()
        if address:
            _probe(address)
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        options: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.ERROR}
        if not address:
            options.update(include_dashboard=False, object_store_memory=_OBJECT_STORE_BYTES)
        t0 = time.monotonic()
        try:
            ray.init(address=address, **options)
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # Ray raises SystemExit on some failures
            with contextlib.suppress(Exception):
                ray.shutdown()
            what = f"the Ray cluster at {address}" if address else "a local Ray instance"
            detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise RunError(f"cannot start {what}: {detail}") from None
        return cls(ray, address, time.monotonic() - t0)

    def nodes(self) -> int:
        return sum(1 for node in self.ray.nodes() if node.get("Alive"))

    def shard_actor(self) -> Any:
        """The actor class of a shard: no CPU reserved (Ray's accounting never limits how
        many shards run at once), one per node where there are several (SPREAD), not
        restarted (a shard that dies is reported, its tasks resumed with --resume)."""
        return self.ray.remote(
            num_cpus=0, scheduling_strategy="SPREAD", max_restarts=0, max_task_retries=0
        )(ShardProcess)

    def cost(self, benches: Iterable[int], launch_seconds: float) -> RayCost:
        """Ray's processes on this machine and their peak RSS (benches and their children
        left out)."""
        tree = process_tree()
        rss: dict[str, float] = {"raylet": 0.0, "gcs": 0.0, "workers": 0.0, "other": 0.0}
        local = False
        for pid in _under(os.getpid(), tree, frozenset(benches)):
            name = _comm(pid)
            kind = "raylet" if name == "raylet" else "gcs" if name == "gcs_server" else None
            if kind is None:
                kind = "workers" if name.startswith("ray::ShardProc") else "other"
            local = local or kind == "raylet"
            rss[kind] += _peak_rss_mib(pid)
        driver = _peak_rss_mib(os.getpid())

        def known(value: float) -> float | None:
            return round(value, 1) if local else None

        return RayCost(
            startup_seconds=round(self.startup_seconds, 3),
            launch_seconds=round(launch_seconds, 3),
            driver_rss_mib=round(driver, 1),
            raylet_rss_mib=known(rss["raylet"]),
            gcs_rss_mib=known(rss["gcs"]),
            workers_rss_mib=known(rss["workers"]),
            other_rss_mib=known(rss["other"]),
            total_rss_mib=known(driver + sum(rss.values())),
        )

    def stop(self) -> None:
        """Disconnect; a local instance is shut down with it."""
        with contextlib.suppress(Exception):
            self.ray.shutdown()


def _under(root: int, tree: dict[int, list[int]], exclude: frozenset[int]) -> list[int]:
    found, frontier = [], [root]
    while frontier:
        for kid in tree.get(frontier.pop(), ()):
            if kid not in exclude:
                found.append(kid)
                frontier.append(kid)
    return found


def _comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm", encoding="utf-8", errors="replace") as f:
            return f.read().strip()
    except OSError:
        return ""


def _peak_rss_mib(pid: int) -> float:
    """The process's VmHWM in MiB (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        pass
    return 0.0
