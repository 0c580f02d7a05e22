"""Samples files: every per-call and per-task sample of a run, read back and merged exactly."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from _child import child_env, read_summary

from fastagent.analysis.samples import exact, merge, read_samples
from fastagent.telemetry import Histogram, Telemetry


def bench(tmp_path: Path, name: str, tasks: int) -> tuple[Path, Path]:
    out = tmp_path / name
    proc = subprocess.run(
        [sys.executable, "-m", "fastagent", "bench", "--tasks", str(tasks), "--concurrency", "4",
         "--verify", "trivial", "--sim-profile", "ttft_ms=5,itl_ms=1", "--results-dir", str(out),
         "--samples", str(tmp_path / f"{name}.samples")],
        env=child_env(), capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    (summary,) = out.glob("*_summary.json")
    return summary, tmp_path / f"{name}.samples"


@pytest.mark.slow
def test_a_runs_samples_are_its_summarys_distributions(tmp_path: Path) -> None:
    summary_path, samples_path = bench(tmp_path, "a", 6)
    summary, samples = read_summary(summary_path), read_samples(samples_path)
    latency = summary.latency
    for name in ("ttft", "llm_e2e", "pre_send", "runtime_overhead", "tool_wall", "task_wall"):
        dist = getattr(latency, f"{name}_ms")
        assert len(samples.values[name]) == dist.count > 0, name
        got = exact(samples.values[name])
        assert got.max == dist.max, name  # exact in both
        assert got.p50 is not None and dist.p50 is not None
        assert abs(got.p50 - dist.p50) <= dist.p50 * 0.011 + 0.001, name  # the histogram: 1 %
    itl = samples.histograms["itl"]
    assert itl.count == latency.itl_ms.count and "itl" in samples.values
    assert len(samples.values["itl"]) == 0  # per token: kept as a histogram only


@pytest.mark.slow
def test_merged_percentiles_are_those_of_all_samples_together(tmp_path: Path) -> None:
    runs = [read_samples(bench(tmp_path, name, n)[1]) for name, n in (("a", 3), ("b", 5))]
    merged = merge(runs)
    everything = sorted([*runs[0].values["llm_e2e"], *runs[1].values["llm_e2e"]])
    assert sorted(merged.values["llm_e2e"]) == everything
    dist = exact(merged.values["llm_e2e"])
    assert dist.count == len(everything) and dist.max == round(everything[-1] * 1000, 3)
    assert merged.histograms["itl"].count == sum(r.histograms["itl"].count for r in runs)


def test_merging_histograms_is_one_histogram_of_every_sample() -> None:
    one, two, both = Histogram(), Histogram(), Histogram()
    for i, v in enumerate(x / 1000 for x in range(1, 500)):
        (one if i % 3 else two).add(v)
        both.add(v)
    merged = Histogram.merged([one.state(), two.state()])
    assert merged.summary() == both.summary()


def test_a_cut_off_samples_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "s"
    with open(path, "wb") as f:
        t = Telemetry(samples=f)
        t.hist["ttft"].add(0.5)
    path.write_bytes(path.read_bytes()[:-3])
    from fastagent.errors import ReportError

    with pytest.raises(ReportError, match="cut off"):
        read_samples(path)
