"""Telemetry figures against known workloads."""

from __future__ import annotations

import asyncio
import json
import math
import os
import random
import re
import subprocess
import sys
import time
from pathlib import Path

import msgspec
import pytest
import uvloop
from _child import child_env, read_summary

from fastagent.schema import Distribution, Summary
from fastagent.sim.launcher import SimProcess
from fastagent.telemetry import (
    Histogram,
    LagProbe,
    Sampler,
    TraceWriter,
    current_rss_kib,
    descendants,
    kernel_peak_rss_kib,
)


def test_histogram_percentiles_within_one_percent() -> None:
    rng = random.Random(7)
    values = [rng.lognormvariate(-4, 1.5) for _ in range(20_000)]
    h = Histogram()
    for v in values:
        h.add(v)
    mean = sum(values) / len(values)
    values.sort()
    for q in (50, 90, 95, 99, 99.9):
        exact = values[max(0, math.ceil(q / 100 * len(values)) - 1)]
        assert abs(h.percentile(q) - exact) / exact < 0.011, q
    assert h.count == len(values) and h.max == values[-1] and h.min == values[0]
    assert h.summary().mean == round(mean * 1000, 3)


def test_empty_histogram_summary() -> None:
    assert Histogram().summary() == Distribution()
    assert msgspec.structs.asdict(Distribution()) == {
        "count": 0, "mean": None, "p50": None, "p95": None, "p99": None, "max": None
    }  # fmt: skip


def test_kernel_high_water_mark_sees_a_short_spike() -> None:
    spike = bytearray(64 * 1024 * 1024)
    for i in range(0, len(spike), 4096):
        spike[i] = 1
    during = current_rss_kib()
    del spike
    after = current_rss_kib()
    assert during > after + 60 * 1024
    # the kernel folds per-thread RSS counters into the high-water mark in batches of 64 pages
    assert kernel_peak_rss_kib() >= during - 256


def test_sampler_reads_self_and_live_children() -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", "x = bytearray(40 << 20); print(flush=True); input()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert child.stdout is not None
        child.stdout.readline()  # its 40 MiB are allocated (and touched: bytearray zeroes them)
        sampler = Sampler(0.02)

        async def probe() -> None:  # the probe's timer samples, however slowly the machine runs
            lag = LagProbe(0.01, sampler=sampler)
            lag.start()
            while len(sampler.times) < 5:
                await asyncio.sleep(0.01)
            await lag.stop()

        uvloop.run(probe())
    finally:
        child.kill()
        child.wait()
    assert len(sampler.times) >= 5 and len(sampler.times) == len(sampler.rss_mib)
    assert all(r > 5 for r in sampler.rss_mib)
    assert sampler.peak_children == 1
    assert sampler.peak_children_rss_kib > 40 * 1024


def test_sampler_leaves_excluded_subtrees_out() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert child.pid in descendants(os.getpid())  # a child from the moment fork returns
        assert child.pid not in descendants(os.getpid(), frozenset({child.pid}))
        sampler = Sampler(0.02, exclude=(child.pid,))
        sampler.sample()
    finally:
        child.kill()
        child.wait()
    assert sampler.peak_children == 0


def test_lag_probe_sees_a_blocked_loop() -> None:
    async def main() -> LagProbe:
        probe = LagProbe(0.01)
        probe.start()
        await asyncio.sleep(0.1)
        time.sleep(0.25)
        await asyncio.sleep(0.1)
        await probe.stop()
        return probe

    probe = uvloop.run(main())
    assert probe.lag.max >= 0.2 and probe.lag.count >= 2  # the block, and the ticks around it


def test_trace_is_one_json_line_per_event(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    with open(path, "wb") as f:
        trace = TraceWriter(f)
        trace.event("request", task="a")
        trace.event("retry", task="a", cause="http_503")
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [e["event"] for e in lines] == ["request", "retry"]
    assert lines[1]["cause"] == "http_503" and lines[1]["t"] >= lines[0]["t"]


def run_bench(tmp_path: Path, *args: str, wrapper: tuple[str, ...] = ()) -> tuple[Summary, str]:
    env = child_env()
    proc = subprocess.run(
        [*wrapper, sys.executable, "-m", "fastagent", "bench", "--results-dir", "out", *args],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    (summary,) = (tmp_path / "out").glob("*_summary.json")
    return read_summary(summary), proc.stderr


@pytest.mark.slow
def test_latency_figures_match_the_configured_endpoint(tmp_path: Path) -> None:
    with SimProcess(["--profile", "ttft_ms=200,itl_ms=10,tokens_per_chunk=1"]) as sim:
        s, _ = run_bench(tmp_path, "--base-url", sim.base_url, "--tasks", "4", "--concurrency", "2")
    lat = s.latency
    # Lower bounds only, which hold however busy the machine is: the endpoint waits
    # ttft_ms after it receives a request before the first content, and sends content chunk
    # i no earlier than i * itl_ms after the first, so each call's TPOT is at least itl_ms
    # (less the histogram's 1 % bucket width).
    assert lat.ttft_ms.p50 is not None and lat.ttft_ms.p50 >= 200 * 0.99, lat.ttft_ms
    assert lat.tpot_ms.p50 is not None and lat.tpot_ms.p50 >= 10 * 0.99, lat.tpot_ms
    assert lat.itl_ms.count > lat.ttft_ms.count
    assert lat.llm_e2e_ms.p50 is not None and lat.llm_e2e_ms.p50 > lat.ttft_ms.p50
    assert lat.runtime_overhead_ms.p50 is not None and lat.runtime_overhead_ms.p50 > 0
    assert lat.endpoint_queue_ms.p50 is not None
    # the endpoint's own time holds its TTFT and pacing (it waits ttft_ms once it started)
    assert lat.server_ms.p50 is not None and lat.server_ms.p50 >= 200 * 0.99
    assert lat.runtime_overhead_ms.count == lat.llm_e2e_ms.count == s.totals.llm_calls
    assert lat.first_byte_wait_ms.count == s.totals.llm_calls
    assert lat.tool_spawn_ms.count >= 4 and lat.tool_wall_ms.count == lat.tool_spawn_ms.count
    assert lat.task_wall_ms.count == 4
    assert s.cpu.runtime_seconds > 0 and s.cpu.children_seconds > 0.5
    assert s.memory.peak_children >= 1 and s.memory.peak_children_rss_mib > 1
    assert s.totals.peak_agents_in_flight == 2
    assert s.loop_lag_ms.p99 is not None
    assert s.throughput.tasks_per_s and len(s.memory.rss_timeline.t) > 5


@pytest.mark.slow
def test_peak_rss_agrees_with_gnu_time(tmp_path: Path) -> None:
    # GNU time reports the largest resident set among the process and its reaped children;
    # trivial verification keeps every child far smaller than the runtime, so it is ours.
    with SimProcess() as sim:
        s, stderr = run_bench(
            tmp_path, "--base-url", sim.base_url, "--tasks", "10", "--concurrency", "10",
            "--verify", "trivial", wrapper=("/usr/bin/time", "-v"),
        )  # fmt: skip
    match = re.search(r"Maximum resident set size \(kbytes\): (\d+)", stderr)
    assert match, stderr[-2000:]
    gnu_mib = int(match.group(1)) / 1024
    peak = s.memory.peak_rss_mib
    assert abs(peak - gnu_mib) / gnu_mib < 0.05, (peak, gnu_mib)
