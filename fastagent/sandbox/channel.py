"""The test's verdict, out of band: a nonce in, one signed report line out.

The runtime writes a random nonce into a pipe and closes its end before the child starts;
the pytest plugin (``fastagent.sandbox.probe``) reads it when pytest loads it, before any
conftest or test module is imported, and at the end of the session writes one line,
``<nonce> <verdict> <exitstatus> <cpu>``, into a second pipe the runtime reads once the
process tree is gone. :meth:`ProbeChannel.verdict` accepts exactly that line.

Standard library only, in syntax any Python 3.8+ reads: the plugin, running in whatever
interpreter runs the tests, imports :data:`PROBE_ENV` from here.
"""

from __future__ import annotations

import atexit
import contextlib
import enum
import functools
import os
import secrets
import tempfile
from pathlib import Path

__all__ = ["PROBE_ENV", "PROBE_PLUGIN", "ProbeChannel", "Verdict", "probe_path"]

#: The environment variable naming the plugin's two fds, ``IN,OUT``.
PROBE_ENV = "FASTAGENT_PROBE"
#: The module pytest loads with ``-p``.
PROBE_PLUGIN = "fastagent.sandbox.probe"
_REPORT_MAX = 4096


class Verdict(str, enum.Enum):  # noqa: UP042
    """What the probe reported of ``test_humaneval`` (``str, Enum`` rather than StrEnum so
    that the plugin's interpreter may be older than 3.11)."""

    PASSED = "passed"
    FAILED = "failed"
    #: setup or teardown failed, or the test ran more than once
    ERROR = "error"
    SKIPPED = "skipped"
    #: the test was not collected, or the process ended before the report
    MISSING = "missing"
    #: something else arrived on the pipe: a wrong nonce, more than one line, garbage
    FORGED = "forged"

    def __str__(self) -> str:
        return self.value


@functools.cache
def probe_path() -> str:
    """A private directory whose only entry is ``fastagent`` (a symlink to the package).

    Put on the test process's PYTHONPATH so ``-p fastagent.sandbox.probe`` imports from the
    package whatever interpreter runs the tests, without exposing the runtime's other packages.
    """
    tmp = Path(tempfile.gettempdir())
    with contextlib.suppress(OSError):
        for stale in tmp.glob("fastagent-probe-*-*"):
            pid = stale.name.split("-")[2]
            if pid.isdigit() and not Path(f"/proc/{pid}").exists() and stale.is_dir():
                _remove_probe_dir(stale)
    directory = tempfile.mkdtemp(prefix=f"fastagent-probe-{os.getpid()}-")
    os.symlink(Path(__file__).resolve().parent.parent, Path(directory, "fastagent"))
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

    def verdict(self) -> Verdict:
        """The probe's report: ``MISSING`` without one, ``FORGED`` for anything but one line
        carrying this run's nonce, a known verdict, an exit status and a CPU figure.

        ``PASSED`` needs verdict ``passed`` and pytest exit status 0 (else ``FAILED``). The
        line's CPU figure (the test process's own user+sys seconds) lands in ``cpu_s``.
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
            return Verdict.MISSING
        parts = bytes(data).split(b" ")
        if len(parts) != 4 or not data.endswith(b"\n") or data.count(b"\n") != 1:
            return Verdict.FORGED
        nonce, outcome, status, cpu = parts
        if not secrets.compare_digest(nonce, self.nonce.encode()):
            return Verdict.FORGED
        try:
            result = Verdict(outcome.decode("ascii", "replace"))
        except ValueError:
            return Verdict.FORGED
        if result is Verdict.FORGED:
            return result
        with contextlib.suppress(ValueError):
            self.cpu_s = max(0.0, float(cpu))
        if result is Verdict.PASSED and status.strip() != b"0":
            return Verdict.FAILED
        return result

    def close(self) -> None:
        """Close every fd still open (idempotent)."""
        self.close_child_ends()
        if self._out_r >= 0:
            with contextlib.suppress(OSError):
                os.close(self._out_r)
            self._out_r = -1
