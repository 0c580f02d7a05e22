"""Polling instead of sleeping: a test waits for what it expects, however busy the machine."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_until(done: Callable[[], bool], timeout: float = 60.0, interval: float = 0.02) -> bool:
    """True as soon as ``done()`` is; False if it still is not after ``timeout`` seconds (a
    guard against hanging, far beyond what any healthy run needs)."""
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
    return True
