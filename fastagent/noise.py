"""How busy the machine was while a run ran: the CPU everyone else used, from /proc/stat.

A benchmark on a shared box measures the box too. Over the run, the machine's busy CPU
time (all cores, ``/proc/stat``) less the run's own tree (the runtime, its reaped test
processes, the simulator it started) is other work competing for the cores; as a share of
``cores x wall`` it is :attr:`~fastagent.schema.Machine.others_cpu_share`, and above
:data:`BUSY_SHARE` the summary and the printed line say the figures are suspect. Two reads
of one file per run: nothing is sampled while the agents work.

>>> others_share(busy_s=3.0, own_s=1.0, wall_s=2.0, cores=2)
0.5
"""

from __future__ import annotations

import os

from .schema import Machine

__all__ = ["BUSY_SHARE", "Snapshot", "machine", "others_share", "process_cpu_seconds"]

#: Others' share of all cores above which a run is flagged (compare's idle rule uses the same).
BUSY_SHARE = 0.25
_TICK = os.sysconf("SC_CLK_TCK")


class Snapshot:
    """The machine's busy CPU seconds (all cores) and 1-minute load average, now."""

    __slots__ = ("busy_s", "load1")

    def __init__(self) -> None:
        self.busy_s = _busy_seconds()
        self.load1 = os.getloadavg()[0]


def _busy_seconds() -> float:
    try:
        with open("/proc/stat", "rb") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return 0.0
    # user nice system idle iowait irq softirq steal (guest time is inside user already)
    idle = sum(fields[3:5])
    return (sum(fields[:8]) - idle) / _TICK


def process_cpu_seconds(pid: int) -> float:
    """user+sys of a live process (0 when it is gone), from /proc/PID/stat."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            rest = f.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(rest[11]) + int(rest[12])) / _TICK


def others_share(busy_s: float, own_s: float, wall_s: float, cores: int) -> float:
    """The share of ``cores x wall_s`` that was busy with work outside the run."""
    if wall_s <= 0 or cores <= 0:
        return 0.0
    return round(min(1.0, max(0.0, (busy_s - own_s) / (wall_s * cores))), 3)


def machine(start: Snapshot, end: Snapshot, own_s: float, wall_s: float) -> Machine:
    """The :class:`~fastagent.schema.Machine` of a run between two snapshots."""
    cores = os.cpu_count() or 1
    share = others_share(end.busy_s - start.busy_s, own_s, wall_s, cores)
    return Machine(
        cores=cores,
        load_before=round(start.load1, 2),
        load_after=round(end.load1, 2),
        others_cpu_share=share,
        busy=share > BUSY_SHARE,
    )
