"""One shard on its node: an ordinary ``fastagent bench`` child, and the rows it writes.

:class:`ShardProcess` is what the coordinator makes a Ray actor of (``ray.remote`` is
applied there, so this module never imports Ray and runs without it in the tests). In the
actor's worker it starts ``python -m fastagent bench ARGS --task-indices FILE --samples
FILE --results-dir DIR`` (:func:`fastagent.analysis.children.bench_command`, with
:func:`~fastagent.analysis.children.child_env`'s environment) in a private directory, and
answers the coordinator's calls:

* :meth:`~ShardProcess.poll`: the CSV rows the bench has written since the last call (the
  bench flushes one per finished task), and its exit status once it has ended;
* :meth:`~ShardProcess.interrupt`: one SIGINT, so the bench writes the summary of what it
  finished (Ctrl-C at the coordinator); :meth:`~ShardProcess.kill`: SIGKILL;
* :meth:`~ShardProcess.collect`: the last rows, its summary, samples file and log, once
  it has ended; then whatever it left running is stopped and the directory removed.

The bench runs in its own process group (a terminal's Ctrl-C reaches the coordinator only,
which forwards one SIGINT through :meth:`~ShardProcess.interrupt`), with the signal mask
Ray's workers block SIGINT with cleared, and with SIGTERM as its parent-death signal: if
the actor's worker dies, the bench writes its summary and stops. The worker is made a child
subreaper, so what a killed bench leaves (its simulated endpoint, a test process) becomes
its child and is stopped in :meth:`~ShardProcess.collect`.
"""

from __future__ import annotations

import contextlib
import csv
import ctypes
import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import msgspec

from ..analysis.children import bench_command, child_env
from ..schema import COLUMNS
from .proc import process_tree

__all__ = ["Collected", "CsvTail", "Polled", "ShardProcess", "ShardSpec", "Started"]

_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36
_LOG_TAIL = 4096


class ShardSpec(msgspec.Struct, frozen=True, kw_only=True):
    """What one shard runs."""

    index: int
    #: bench flags, the shard's own files left out (this module adds them)
    args: list[str]
    #: its positions in the task list
    indices: list[int]
    #: the tasks file's bytes when the run names one (written on the node), else None
    dataset: bytes | None = None
    #: environment variables on top of child_env's (the endpoint's key)
    env: dict[str, str] = msgspec.field(default_factory=dict)
    #: where its agents' workspaces go (default: inside its private directory)
    work_dir: str | None = None
    #: keep its private directory (--keep-workspaces)
    keep: bool = False


class Started(msgspec.Struct, frozen=True, kw_only=True):
    node: str
    node_id: str | None
    pid: int
    directory: str


class Polled(msgspec.Struct, frozen=True, kw_only=True):
    #: CSV records (cells) written since the last call, the header left out
    rows: list[list[str]]
    #: the bench's exit status once it has ended (-N: killed by signal N)
    returncode: int | None


class Collected(msgspec.Struct, frozen=True, kw_only=True):
    rows: list[list[str]]
    returncode: int
    summary: bytes | None
    samples: bytes | None
    log: str


class CsvTail:
    """The complete records a CSV being appended to has gained since the last :meth:`read`.

    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> tail = CsvTail(d)
    >>> _ = (d / "x.csv").write_bytes(b"a,b\\r\\n1,\\"two\\r\\nlines\\"\\r\\n3,")
    >>> tail.read(expect=("a", "b"))
    [['1', 'two\\r\\nlines']]
    >>> with open(d / "x.csv", "ab") as f:
    ...     _ = f.write(b"4\\r\\n")
    >>> tail.read(expect=("a", "b"))
    [['3', '4']]
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path: Path | None = None
        self.offset = 0
        self.pending = b""
        self.header_seen = False

    def read(self, expect: tuple[str, ...] = COLUMNS) -> list[list[str]]:
        if self.path is None:
            found = sorted(self.directory.glob("*.csv"))
            if not found:
                return []
            self.path = found[0]
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            data = f.read()
        self.offset += len(data)
        self.pending += data
        end = self.pending.rfind(b"\n") + 1
        if not end:
            return []
        try:  # a cut inside a quoted field fails strict parsing: wait for the rest
            records = list(csv.reader(io.StringIO(self.pending[:end].decode()), strict=True))
        except csv.Error:
            return []
        self.pending = self.pending[end:]
        if records and not self.header_seen:
            self.header_seen = True
            if tuple(records[0]) != expect:
                raise ValueError(f"{self.path}: not a fastagent results CSV (its header differs)")
            records = records[1:]
        return records


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _child_setup(parent: int) -> None:
    """In the bench child before exec: signals as a fresh process has them, SIGTERM when the
    actor's worker dies."""
    signal.pthread_sigmask(signal.SIG_SETMASK, ())
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_DFL)
    _libc().prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    if os.getppid() != parent:  # the worker died before the prctl
        os.kill(os.getpid(), signal.SIGTERM)


def _children() -> set[int]:
    """The live (or unreaped) children of this process, from /proc."""
    return set(process_tree().get(os.getpid(), ()))


def _reap(pids: set[int], grace: float = 5.0) -> None:
    """SIGTERM each, wait up to ``grace`` seconds for all, SIGKILL the rest; reap them."""
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    left = set(pids)
    while left:
        for pid in list(left):
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done = pid
            if done:
                left.discard(pid)
        if not left:
            break
        if time.monotonic() > deadline:
            for pid in left:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
            deadline = float("inf")
        time.sleep(0.05)


class ShardProcess:
    """One shard's bench on this node (made a Ray actor by the coordinator)."""

    def __init__(self) -> None:
        with contextlib.suppress(OSError, AttributeError):
            _libc().prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
        self.proc: subprocess.Popen[bytes] | None = None
        self.directory = Path()
        self.spec: ShardSpec | None = None
        self.tail: CsvTail | None = None
        self._before: set[int] = set()

    def start(self, spec: ShardSpec) -> Started:
        """Start the bench; returns where it runs."""
        self.spec = spec
        self.directory = d = Path(tempfile.mkdtemp(prefix=f"fastagent-shard{spec.index}-"))
        (d / "results").mkdir()
        (d / "tasks.txt").write_text(" ".join(str(i) for i in spec.indices) + "\n")
        args = [*spec.args, "--task-indices", str(d / "tasks.txt"), "--samples", str(d / "samples")]
        if spec.dataset is not None:
            (d / "dataset.json").write_bytes(spec.dataset)
            args += ["--dataset", str(d / "dataset.json")]
        args += [
            "--work-dir",
            spec.work_dir or str(d / "runs"),
            "--results-dir",
            str(d / "results"),
        ]
        self.tail = CsvTail(d / "results")
        self._before = _children()
        parent = os.getpid()
        with open(d / "bench.log", "wb") as log:
            self.proc = subprocess.Popen(
                bench_command(args),
                env=child_env(spec.env),
                cwd=d,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                process_group=0,
                preexec_fn=lambda: _child_setup(parent),
            )
        ray = sys.modules.get("ray")
        node_id = ray.get_runtime_context().get_node_id() if ray is not None else None
        return Started(
            node=socket.gethostname(), node_id=node_id, pid=self.proc.pid, directory=str(d)
        )

    def poll(self) -> Polled:
        assert self.proc is not None and self.tail is not None
        returncode = self.proc.poll()
        return Polled(rows=self.tail.read(), returncode=returncode)

    def interrupt(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()

    def collect(self) -> Collected:
        """Once the bench has ended: its last rows and files; then clean up."""
        assert self.proc is not None and self.tail is not None and self.spec is not None
        returncode = self.proc.wait()
        rows = self.tail.read()
        summaries = sorted((self.directory / "results").glob("*_summary.json"))
        samples = self.directory / "samples"
        log = (self.directory / "bench.log").read_bytes()[-_LOG_TAIL:]
        collected = Collected(
            rows=rows,
            returncode=returncode,
            summary=summaries[-1].read_bytes() if summaries else None,
            samples=samples.read_bytes() if samples.exists() else None,
            log=log.decode("utf-8", "replace"),
        )
        _reap(_children() - self._before)
        if not self.spec.keep:
            shutil.rmtree(self.directory, ignore_errors=True)
        return collected
