"""The run's pids cgroup (cgroup v1, root only): caps and sweeps every test's processes.

``<pids hierarchy>/<our cgroup>/fastagent-<pid>`` is made once per runtime process; each
test run gets a child ``run-N`` with ``pids.max`` set, every process the test starts lands
in it (the sh wrapper joins it before exec), and after the run every member is SIGKILLed,
even ones that left the process group or session, until the cgroup can be removed.
Leftovers are retried at exit, and cgroups of fastagent processes that are gone are removed
when the next one starts.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import itertools
import os
import signal
import time
from pathlib import Path

__all__ = ["PENDING", "PIDS_ROOT", "CgroupParent", "cgroup_parent", "kill_members"]

PIDS_ROOT = Path("/sys/fs/cgroup/pids")


class CgroupParent:
    """``<pids hierarchy>/<our cgroup>/fastagent-<pid>``: one child cgroup per test run.

    A cgroup a run has left empty is kept for the next run rather than removed: removing a
    cgroup v1 directory blocks the runtime's loop about 1.3 ms (measured under cProfile, 101
    removals in a 30-task run), making one costs a mkdir and a write; all are removed when the
    runtime exits.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._ids = itertools.count()
        self._free: list[tuple[Path, int]] = []

    def new(self, pids_max: int) -> Path | None:
        """An empty cgroup capped at ``pids_max`` tasks, or None if it cannot be made."""
        for i, (cg, cap) in enumerate(self._free):
            if cap == pids_max:
                del self._free[i]
                return cg
        cg = self.path / f"run-{next(self._ids)}"
        try:
            cg.mkdir()
            (cg / "pids.max").write_text(str(pids_max))
        except OSError:
            with contextlib.suppress(OSError):
                cg.rmdir()
            return None
        return cg

    def release(self, cg: Path, pids_max: int) -> bool:
        """Keep ``cg`` for a later run if it is empty; False (and kept nowhere) if not."""
        try:
            if (cg / "cgroup.procs").read_bytes().strip():
                return False
        except OSError:
            return False
        self._free.append((cg, pids_max))
        return True


PENDING: set[Path] = set()


@functools.cache
def cgroup_parent() -> CgroupParent | None:
    """The runtime's cgroup parent (cgroup v1 pids controller, root only), created once."""
    if os.geteuid() != 0 or not (PIDS_ROOT / "cgroup.procs").exists():
        return None
    own = "/"
    with contextlib.suppress(OSError), open("/proc/self/cgroup") as f:
        for line in f:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            if "pids" in controllers.split(","):
                own = path
    base = PIDS_ROOT / own.lstrip("/")
    remove_stale(base)
    parent = base / f"fastagent-{os.getpid()}"
    try:
        parent.mkdir(exist_ok=True)
        probe = parent / "probe"
        probe.mkdir(exist_ok=True)
        (probe / "pids.max").write_text("1")
        probe.rmdir()
    except OSError:
        return None
    atexit.register(_cleanup, parent)
    return CgroupParent(parent)


def remove_stale(base: Path) -> None:
    """Remove cgroups left by fastagent processes that are gone (their runs are dead too)."""
    with contextlib.suppress(OSError):
        for entry in base.glob("fastagent-*"):
            pid = entry.name.removeprefix("fastagent-")
            if pid.isdigit() and not Path(f"/proc/{pid}").exists():
                _cleanup(entry)


def _cleanup(parent: Path) -> None:
    for cg in [*PENDING, *parent.glob("run-*")]:
        for _ in range(50):
            kill_members(cg)
            try:
                cg.rmdir()
                break
            except FileNotFoundError:
                break
            except OSError:
                time.sleep(0.01)
        PENDING.discard(cg)
    with contextlib.suppress(OSError):
        parent.rmdir()


def kill_members(cg: Path) -> None:
    """SIGKILL every process in ``cg`` (one pass: a member may fork meanwhile)."""
    try:
        pids = (cg / "cgroup.procs").read_text().split()
    except OSError:
        return
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError, ValueError):
            os.kill(int(pid), signal.SIGKILL)
