"""Start and stop the simulated endpoint as a separate process (``fastagent sim``).

The simulator runs in its own interpreter so its memory and CPU never show in the
runtime's figures; this module only launches it and waits for its ready line.
"""

from __future__ import annotations

import contextlib
import selectors
import subprocess
import sys
import time

from .errors import FastAgentError

READY = "FASTAGENT_SIM_READY "


class SimError(FastAgentError):
    """The simulated endpoint did not start."""


class SimProcess:
    """``with SimProcess(["--profile", "ttft_ms=20"]) as sim: sim.base_url``"""

    def __init__(self, args: list[str] | None = None, timeout: float = 30.0) -> None:
        self.args = args or []
        self.timeout = timeout
        self.proc: subprocess.Popen[bytes] | None = None
        self.base_url = ""

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def start(self) -> str:
        argv = [sys.executable, "-m", "fastagent", "sim", "--port", "0", *self.args]
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
        assert self.proc.stdout is not None
        deadline = time.monotonic() + self.timeout
        line = b""
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            while not line.endswith(b"\n"):
                left = deadline - time.monotonic()
                if left <= 0 or not sel.select(left):
                    self.stop()
                    raise SimError(
                        f"simulated endpoint gave no ready line within {self.timeout:g}s"
                    )
                byte = self.proc.stdout.read1(1) if hasattr(self.proc.stdout, "read1") else b""
                if not byte:
                    code = self.proc.wait()
                    raise SimError(
                        f"simulated endpoint exited with code {code} before it was ready"
                    )
                line += byte
        self.proc.stdout.close()
        text = line.decode().strip()
        if not text.startswith(READY):
            self.stop()
            raise SimError(f"unexpected first line from the simulated endpoint: {text!r}")
        self.base_url = text[len(READY) :]
        return self.base_url

    def stop(self) -> None:
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def __enter__(self) -> SimProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(Exception):
            self.stop()
