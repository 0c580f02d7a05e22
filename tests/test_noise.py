"""How busy the machine was: the arithmetic, the summary's field, the printed warning."""

from __future__ import annotations

import os

import msgspec

from fastagent import noise
from fastagent.results import format_summary
from fastagent.schema import Machine, Summary
from tests._samples import sample_summary


def test_others_share_is_the_machines_busy_time_less_the_runs_own() -> None:
    assert noise.others_share(busy_s=3.0, own_s=1.0, wall_s=2.0, cores=2) == 0.5
    assert noise.others_share(busy_s=1.0, own_s=1.5, wall_s=2.0, cores=2) == 0.0  # clamped
    assert noise.others_share(busy_s=9.0, own_s=0.0, wall_s=2.0, cores=2) == 1.0
    assert noise.others_share(busy_s=1.0, own_s=0.0, wall_s=0.0, cores=2) == 0.0


def test_a_snapshot_reads_this_machine() -> None:
    a = noise.Snapshot()
    sum(i * i for i in range(200_000))  # some CPU of our own between the two reads
    b = noise.Snapshot()
    assert b.busy_s >= a.busy_s > 0 and a.load1 >= 0
    got = noise.machine(a, b, own_s=0.0, wall_s=1.0)
    assert got.cores == os.cpu_count() and 0 <= got.others_cpu_share <= 1
    assert got.busy == (got.others_cpu_share > noise.BUSY_SHARE)
    assert noise.process_cpu_seconds(os.getpid()) > 0
    assert noise.process_cpu_seconds(2**22 + 1) == 0.0  # no such process


def test_a_busy_machine_is_said_in_the_printed_summary() -> None:
    quiet = sample_summary()
    busy = msgspec.structs.replace(
        quiet,
        machine=Machine(cores=2, load_before=3.1, load_after=4.0, others_cpu_share=0.61, busy=True),
    )
    assert "BUSY MACHINE" not in format_summary(quiet)
    line = next(x for x in format_summary(busy).splitlines() if "BUSY MACHINE" in x)
    assert "61% of the 2 cores" in line and "3.1 -> 4.0" in line
    assert isinstance(busy, Summary)
