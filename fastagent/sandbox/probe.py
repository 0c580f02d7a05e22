"""pytest plugin that reports the outcome of ``test_humaneval`` to the runtime, out of band.

Loaded by the verification run with ``-p fastagent.sandbox.probe`` (from the package, never
from the workspace; the runtime puts a directory exposing only this package on PYTHONPATH).
The runtime itself never imports this module (it reads the pipe through
:mod:`fastagent.sandbox.channel`): importing it takes the channel out of the environment.
The runtime hands it two inherited file descriptors, named in ``FASTAGENT_PROBE=IN,OUT``:

* ``IN`` is a pipe holding a per-run random nonce. The plugin reads it and closes the pipe
  when pytest imports the plugin, i.e. before conftest files and test modules (and so the
  solution) are imported. The nonce never travels in the environment, so it is not in
  ``/proc/self/environ`` either; the variable (which holds only fd numbers) is deleted.
* ``OUT`` is a pipe the runtime reads after the process is gone. At the end of the session
  the plugin writes one line, ``<nonce> <verdict> <exitstatus> <cpu>``, and nothing else;
  ``cpu`` is this process's user+sys seconds so far (a measurement, not part of the verdict).

The runtime counts a pass only for exactly that line with verdict ``passed`` and exit status
0, so exiting early (``os._exit(0)`` at import), printing pytest's PASSED line, or writing a
guessed line to the pipe does not count. What this cannot stop: the solution runs inside this
same interpreter, so code written to attack the harness can find the nonce in memory, or patch
pytest's reporting, and forge a pass. The probe raises the bar from "print a string" to
"deliberately introspect the test runner"; see docs/reliability.md.

Standard library only (and :mod:`.channel`, which is too), and importable by any Python 3.8+
that has pytest: the interpreter running the tests is not necessarily the one running the agent.
"""

from __future__ import annotations

import contextlib
import os
import resource
from typing import Any

from .channel import PROBE_ENV, Verdict

TEST_NAME = "test_humaneval"


def _take_channel() -> tuple[int, bytes] | None:
    spec = os.environ.pop(PROBE_ENV, None)
    if not spec:
        return None
    try:
        nonce_fd, out_fd = (int(part) for part in spec.split(","))
        nonce = os.read(nonce_fd, 256).strip()
        os.close(nonce_fd)
        os.set_inheritable(out_fd, False)
    except (ValueError, OSError):
        return None
    return out_fd, nonce


_CHANNEL = _take_channel()
_phases: dict[str, list[str]] = {"setup": [], "call": [], "teardown": []}


def pytest_runtest_logreport(report: Any) -> None:
    """Record each phase's outcome of the expected test (``file::test_humaneval``)."""
    if report.nodeid.rsplit("::", 1)[-1] != TEST_NAME:
        return
    outcome = report.outcome
    if getattr(report, "wasxfail", None) is not None:
        outcome = "xfail"
    _phases.setdefault(report.when, []).append(outcome)


def verdict() -> Verdict:
    """``PASSED`` only when the expected test ran once and setup, call and teardown passed."""
    setup, call, teardown = _phases["setup"], _phases["call"], _phases["teardown"]
    if not setup and not call:
        return Verdict.MISSING
    if any(o != "passed" for o in setup + teardown):
        return Verdict.SKIPPED if "skipped" in setup else Verdict.ERROR
    if len(call) != 1:
        return Verdict.MISSING if not call else Verdict.ERROR
    if call[0] == "passed":
        return Verdict.PASSED
    return Verdict.SKIPPED if call[0] == "skipped" else Verdict.FAILED


def pytest_sessionfinish(session: Any, exitstatus: int) -> None:
    """Write the one report line; later writes (a second session) are refused by the runtime."""
    if _CHANNEL is None:
        return
    out_fd, nonce = _CHANNEL
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu = usage.ru_utime + usage.ru_stime
    line = nonce + f" {verdict().value} {int(exitstatus)} {cpu:.6f}\n".encode()
    with contextlib.suppress(OSError):
        os.write(out_fd, line)
