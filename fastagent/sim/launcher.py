"""Start and stop the simulated endpoint as a separate process (``fastagent sim``).

    with SimProcess(["--profile", "ttft_ms=20"]) as sim:
        print(sim.base_url)                       # http://127.0.0.1:40123/v1

The simulator runs in its own interpreter so its memory and CPU never show in the
runtime's figures. This module is the only part of :mod:`fastagent.sim` the measured
process imports: standard library only, it launches the server and waits for its ready
line (:data:`READY`), which the server prints with :func:`ready_line`.
"""

from __future__ import annotations

import contextlib
import selectors
import subprocess
import sys
import tempfile
import time
from typing import IO

from ..errors import SimError

__all__ = ["READY", "SimProcess", "ready_line"]

#: The first line the server prints on stdout once it listens, followed by its base URL.
READY = "FASTAGENT_SIM_READY"


def ready_line(base_url: str) -> str:
    """What the server prints once it listens."""
    return f"{READY} {base_url}\n"


class SimProcess:
    """``python -m fastagent sim --port 0 ARGS`` as a child process; ``base_url`` once started.

    Its stderr goes to a temporary file: when it fails to start, its last line is the
    :class:`~fastagent.errors.SimError`'s message; whatever it wrote is copied to this
    process's stderr when it stops.
    """

    def __init__(self, args: list[str] | None = None, timeout: float = 30.0) -> None:
        self.args = args or []
        self.timeout = timeout
        self.proc: subprocess.Popen[bytes] | None = None
        self.base_url = ""
        self._stderr: IO[bytes] | None = None

    @classmethod
    def for_bench(cls, dataset: str, profile: str) -> SimProcess:
        """The simulator a bench run starts: its dataset, and its profile when one is given."""
        args = ["--dataset", dataset]
        if profile:
            args += ["--profile", profile]
        return cls(args)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def start(self) -> str:
        """Start the server and wait for its ready line; returns its base URL."""
        argv = [sys.executable, "-m", "fastagent", "sim", "--port", "0", *self.args]
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115
        # its own process group: a Ctrl-C at the terminal reaches the bench, which stops the
        # server itself once it has written its results, never the server mid-stream
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            process_group=0,
        )
        try:
            line = self._read_line()
        except SimError:
            self.stop()
            raise
        if not line.startswith(READY + " "):
            self.stop()
            raise SimError(f"unexpected first line from the simulated endpoint: {line!r}")
        self.base_url = line[len(READY) + 1 :]
        return self.base_url

    def _read_line(self) -> str:
        proc = self.proc
        assert proc is not None and proc.stdout is not None
        deadline = time.monotonic() + self.timeout
        line = b""
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            while not line.endswith(b"\n"):
                left = deadline - time.monotonic()
                if left <= 0 or not sel.select(left):
                    raise SimError(
                        f"simulated endpoint gave no ready line within {self.timeout:g}s"
                    )
                byte = proc.stdout.read1(1)  # type: ignore[attr-defined]
                if not byte:
                    code = proc.wait()
                    raise SimError(self._last_error() or f"simulated endpoint exited with {code}")
                line += byte
        proc.stdout.close()
        return line.decode().strip()

    def _last_error(self) -> str:
        """The last line the server wrote on stderr, its ``fastagent sim: error:`` cut off."""
        if self._stderr is None:
            return ""
        self._stderr.seek(0)
        lines = self._stderr.read().decode("utf-8", "replace").strip().splitlines()
        last = lines[-1] if lines else ""
        return last.removeprefix("fastagent sim: error: ")

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after 5 s) and pass on what it wrote."""
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._stderr is not None:
            self._stderr.seek(0)
            written = self._stderr.read()
            self._stderr.close()
            self._stderr = None
            if written and self.base_url:  # a failed start says it in its SimError
                sys.stderr.buffer.write(written)
                sys.stderr.flush()

    def __enter__(self) -> SimProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(Exception):
            self.stop()
