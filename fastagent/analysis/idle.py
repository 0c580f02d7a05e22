"""Waiting for the machine to be idle before a measured run (``fastagent compare``).

The rule: read the aggregate ``cpu`` line of ``/proc/stat`` every ``window`` seconds; a
window's *busy share* is the part of all cores' time spent in user, nice, system, irq,
softirq or steal (idle and iowait are idle). The machine is idle once ``windows``
consecutive windows each have a busy share at or below ``threshold``; the wait gives up
after ``cap`` seconds and says so (on a machine shared with other work it may never be
idle, and a run is then measured anyway, its :class:`IdleWait` recording how busy the
machine was).

    >>> share = busy_share((100, 1000), (150, 1100))   # 50 of 100 ticks busy
    >>> share
    0.5

Standard library only.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["IdleRule", "IdleWait", "busy_share", "cpu_ticks", "wait_idle"]


def cpu_ticks() -> tuple[int, int]:
    """(busy, total) ticks of all cores since boot, from ``/proc/stat``."""
    with open("/proc/stat", "rb") as f:
        fields = [int(x) for x in f.readline().split()[1:9]]
    user, nice, system, idle, iowait, irq, softirq, steal = fields + [0] * (8 - len(fields))
    busy = user + nice + system + irq + softirq + steal
    return busy, busy + idle + iowait


def busy_share(before: tuple[int, int], after: tuple[int, int]) -> float:
    """The share of all cores' time that was busy between two :func:`cpu_ticks` readings."""
    total = after[1] - before[1]
    return (after[0] - before[0]) / total if total > 0 else 0.0


@dataclass(frozen=True)
class IdleRule:
    """Idle: ``windows`` windows of ``window`` s in a row, each busy <= ``threshold``; give up
    after ``cap`` s (0: do not wait at all)."""

    threshold: float = 0.25
    window: float = 1.0
    windows: int = 2
    cap: float = 60.0

    def describe(self) -> str:
        if self.cap <= 0:
            return "no wait for an idle machine (--idle-cap 0)"
        return (
            f"before each run, wait until {self.windows} consecutive {self.window:g}-s windows "
            f"of /proc/stat each show at most {self.threshold * 100:g} % of all cores busy, "
            f"for at most {self.cap:g} s"
        )


@dataclass(frozen=True)
class IdleWait:
    """How one wait went: seconds waited, the last window's busy share, whether the machine
    was found idle (False: the cap ran out)."""

    waited_s: float
    busy_share: float | None
    idle: bool


def wait_idle(
    rule: IdleRule,
    *,
    sleep: Callable[[float], None] = time.sleep,
    ticks: Callable[[], tuple[int, int]] = cpu_ticks,
    clock: Callable[[], float] = time.monotonic,
) -> IdleWait:
    """Wait by ``rule``; returns how it went."""
    if rule.cap <= 0:
        return IdleWait(0.0, None, False)
    start = clock()
    quiet = 0
    share: float | None = None
    before = ticks()
    while True:
        sleep(rule.window)
        after = ticks()
        share = busy_share(before, after)
        before = after
        quiet = quiet + 1 if share <= rule.threshold else 0
        waited = clock() - start
        if quiet >= rule.windows:
            return IdleWait(round(waited, 2), round(share, 4), True)
        if waited >= rule.cap:
            return IdleWait(round(waited, 2), round(share, 4), False)
