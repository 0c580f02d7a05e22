"""``python -m fastagent bench`` as a child process, and the summary it wrote.

One fresh interpreter per run, so no run inherits another's heap. Used by ``fastagent
sweep`` (one bench per level), the bench scripts (``bench/_common.py``) and the tests
(``tests/_child.py``)::

    result = run_bench(["--tasks", "4", "--concurrency", "2"], results_dir=Path("out"))
    if result.summary is not None:
        summary = read_summary(result.summary)       # a fastagent.schema.Summary

* The child's environment (:func:`child_env`): this interpreter's bin directory (its venv)
  first on PATH, so the child's ``python3`` and pytest are the venv's; none of the bench's
  own ``LLM_*``/``BENCH_*`` variables from the caller's shell, so flags alone set the run;
  no ``FASTAGENT_NO_EXTENSIONS`` unless ``pure_python`` asks for it.
* Stopping (:func:`run_bench`): the child runs in its own process group, so a terminal's
  Ctrl-C reaches this process only. Ctrl-C or SIGTERM here is forwarded to the child as one
  SIGINT, and the child gets a grace period (a minute by default) to write the summary of
  the tasks it finished before it is killed.
* Reading back: :attr:`BenchRun.summary` is the ``*_summary.json`` this run wrote into its
  results directory (a file already there before the run is never taken for it).

Standard library and msgspec only.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from ..schema import Summary

__all__ = [
    "GRACE_SECONDS",
    "VENV_BIN",
    "BenchRun",
    "bench_command",
    "child_env",
    "read_summary",
    "run_bench",
    "sigterm_as_interrupt",
]

#: This interpreter's bin directory (its venv): the child's ``fastagent``, ``python3`` and
#: pytest come from there.
VENV_BIN = str(Path(sys.executable).parent)
#: How long an interrupted child may take to write its summary before it is killed.
GRACE_SECONDS = 60.0

_NO_EXTENSIONS = "FASTAGENT_NO_EXTENSIONS"
_BENCH_VARIABLES = ("LLM_", "BENCH_")  # LLM_BASE_URL, LLM_MODEL, BENCH_DATASET, ...


def child_env(
    extra: Mapping[str, str] | None = None, *, pure_python: bool = False
) -> dict[str, str]:
    """This process's environment for a child ``fastagent``: :data:`VENV_BIN` first on PATH,
    no ``LLM_*``/``BENCH_*`` variables, ``FASTAGENT_NO_EXTENSIONS=1`` only when
    ``pure_python``; then ``extra`` on top."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(_BENCH_VARIABLES) and name != _NO_EXTENSIONS
    }
    env["PATH"] = VENV_BIN + os.pathsep + os.environ.get("PATH", "")
    if pure_python:
        env[_NO_EXTENSIONS] = "1"
    env.update(extra or {})
    return env


def bench_command(args: Sequence[str]) -> list[str]:
    """``python -m fastagent bench ARGS`` with this interpreter."""
    return [sys.executable, "-m", "fastagent", "bench", *args]


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block SIGTERM raises KeyboardInterrupt, as Ctrl-C does, so that one
    ``except KeyboardInterrupt`` stops children and writes what was measured. Outside the
    main thread (where signals cannot be handled) it does nothing."""

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@dataclass(frozen=True)
class BenchRun:
    """How one child bench ended."""

    command: tuple[str, ...]
    returncode: int
    stdout: str
    #: what it wrote on stderr; None when that went to this process's stderr
    stderr: str | None
    #: the summary this run wrote, None when it wrote none
    summary: Path | None
    #: Ctrl-C or SIGTERM reached this process while the child ran (it was sent SIGINT)
    interrupted: bool = False
    #: the child outlived ``timeout`` (it was sent SIGINT)
    timed_out: bool = False


def _summaries(results_dir: Path) -> dict[Path, int]:
    """The ``*_summary.json`` files in ``results_dir`` and their modification times."""
    found = {}
    for path in results_dir.glob("*_summary.json"):
        with contextlib.suppress(OSError):
            found[path] = path.stat().st_mtime_ns
    return found


def _written_since(results_dir: Path, before: Mapping[Path, int]) -> Path | None:
    """The newest summary that is new, or rewritten, since ``before`` was taken."""
    fresh = [(mtime, path) for path, mtime in _summaries(results_dir).items()
             if before.get(path) != mtime]  # fmt: skip
    return max(fresh)[1] if fresh else None


def _stop(proc: subprocess.Popen[str], grace: float) -> tuple[str | None, str | None]:
    """SIGINT to ``proc``, then its output; SIGKILL when it outlives ``grace`` seconds."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
    try:
        return proc.communicate(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.communicate()


def run_bench(
    args: Sequence[str],
    *,
    results_dir: str | os.PathLike[str],
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    capture_stderr: bool = False,
    timeout: float | None = None,
    grace: float = GRACE_SECONDS,
) -> BenchRun:
    """Run ``python -m fastagent bench ARGS --results-dir RESULTS_DIR`` and wait for it.

    ``env`` defaults to :func:`child_env`. Its stdout is captured, its stderr too when
    ``capture_stderr`` (else it goes to this process's stderr as it is written). Ctrl-C or
    SIGTERM while it runs, or ``timeout`` seconds passing, send it SIGINT and give it
    ``grace`` seconds to write its summary (then SIGKILL); a second Ctrl-C kills it at once
    and is raised. The result says which happened.
    """
    results = Path(results_dir)
    command = bench_command([*args, "--results-dir", str(results)])
    before = _summaries(results)
    interrupted = timed_out = False
    stdout: str | None
    stderr: str | None
    with sigterm_as_interrupt():
        proc = subprocess.Popen(
            command,
            env=dict(env) if env is not None else child_env(),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE if capture_stderr else None,
            text=True,
            encoding="utf-8",
            errors="replace",
            process_group=0,  # a terminal's Ctrl-C reaches us only; we forward one SIGINT
        )
        try:
            try:
                stdout, stderr = proc.communicate(timeout=timeout)
            except KeyboardInterrupt:
                interrupted = True
                stdout, stderr = _stop(proc, grace)
            except subprocess.TimeoutExpired:
                timed_out = True
                stdout, stderr = _stop(proc, grace)
        except BaseException:  # a second Ctrl-C during the grace period, or worse
            proc.kill()
            proc.wait()
            raise
    return BenchRun(
        command=tuple(command),
        returncode=proc.returncode,
        stdout=stdout or "",
        stderr=stderr if capture_stderr else None,
        summary=_written_since(results, before),
        interrupted=interrupted,
        timed_out=timed_out,
    )


def read_summary(path: str | os.PathLike[str]) -> Summary:
    """A summary this stack wrote, decoded (and so checked) against the schema.

    Raises ``msgspec.ValidationError`` or ``msgspec.DecodeError`` when it does not fit; to
    read any summary, this stack's older ones and other stacks' included, use
    :func:`fastagent.analysis.summaries.load_summary`.
    """
    return msgspec.json.decode(Path(path).read_bytes(), type=Summary)
