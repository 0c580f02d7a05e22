"""A run sharded over Ray on this machine: 1, 2 and 5 shards of 10,000 agents each.

Each level is one `fastagent bench --shards N` (a local Ray instance started and stopped by
the run) against the built-in simulated endpoint, one per shard, with one fixed profile
(PROFILE), 10,000 agents per shard (`--concurrency 10000`, the dataset repeated 100 x N
times) and `--verify trivial`. It prints, per level: agents, shards, the shards' peak RSS
(max and summed), runtime CPU per task, wall, pass counts, Ray's own cost (start-up, the
driver, raylet, GCS, the shards' workers and Ray's other processes, each process's VmHWM),
and the simulated endpoints' peak RSS and CPU (sampled from /proc: they are not the
runtime's figures, but an estimate of endpoint replicas needs them).

    python bench/bench_shards.py                          # 1, 2, 5 shards (~20 minutes)
    python bench/bench_shards.py --shards 1,2 --per-shard 1000
    python bench/bench_shards.py --out results/shards.md
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from _common import table

from fastagent.analysis import children

PROFILE = "ttft_ms=50,itl_ms=2,tokens_per_chunk=1,seed=0"
DATASET_TASKS = 100
_TICK = os.sysconf("SC_CLK_TCK")


class SimWatch(threading.Thread):
    """Peak RSS (VmHWM) and CPU seconds of every simulated endpoint a shard started (a
    `fastagent sim` whose parent is a bench given --task-indices), sampled every second."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.seen: dict[int, tuple[float, float]] = {}  # pid -> (peak MiB, CPU s)
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(1.0):
            for pid in os.listdir("/proc"):
                if pid.isdigit():
                    self._look(int(pid))

    def _look(self, pid: int) -> None:
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            if b"sim" not in cmd or b"fastagent" not in cmd:
                return
            stat = Path(f"/proc/{pid}/stat").read_bytes()
            fields = stat[stat.rfind(b")") + 2 :].split()
            parent = Path(f"/proc/{int(fields[1])}/cmdline").read_bytes()
            if b"--task-indices" not in parent:
                return
            cpu = (int(fields[11]) + int(fields[12])) / _TICK
            peak = 0.0
            for line in Path(f"/proc/{pid}/status").read_bytes().splitlines():
                if line.startswith(b"VmHWM:"):
                    peak = int(line.split()[1]) / 1024
        except (OSError, IndexError, ValueError):
            return
        old = self.seen.get(pid, (0.0, 0.0))
        self.seen[pid] = (max(old[0], peak), max(old[1], cpu))


def level(shards: int, per_shard: int, extra: list[str], keep: Path | None) -> dict[str, Any]:
    """One `fastagent bench --shards N` run; its merged summary and the endpoints' cost
    (its results kept in ``keep``/shards<N> when given)."""
    args = [
        "--shards", str(shards),
        "--tasks", str(min(per_shard, DATASET_TASKS)),
        "--repeat", str(max(1, per_shard // DATASET_TASKS) * shards),
        "--concurrency", str(per_shard),
        "--verify", "trivial",
        "--sim-profile", PROFILE,
        "--no-progress",
        *extra,
    ]  # fmt: skip
    watch = SimWatch()
    watch.start()
    with tempfile.TemporaryDirectory(prefix="fastagent-bench-shards-") as tmp:
        where = keep / f"shards{shards}" if keep else Path(tmp)
        where.mkdir(parents=True, exist_ok=True)
        run = children.run_bench(args, results_dir=where, capture_stderr=True, timeout=3 * 3600)
        watch.done.set()
        if run.interrupted:
            sys.exit(130)
        if run.returncode != 0 or run.summary is None:
            sys.exit(f"fastagent bench {' '.join(args)} failed (exit {run.returncode}):\n"
                     f"{run.stderr}")  # fmt: skip
        summary = children.read_summary(run.summary)
    sims = list(watch.seen.values())
    return {"summary": summary, "sim_peak": [p for p, _ in sims], "sim_cpu": [c for _, c in sims]}


def row(shards: int, per_shard: int, result: dict[str, Any]) -> list[Any]:
    s = result["summary"]
    sh, ray = s.sharding, s.sharding.ray
    sim_peak, sim_cpu = result["sim_peak"], result["sim_cpu"]
    return [
        f"{shards * per_shard:,}",
        shards,
        sh.peak_rss_mib_max,
        sh.peak_rss_mib_sum,
        s.cpu.runtime_ms_per_task,
        s.wall_seconds,
        f"{s.outcomes.passed}/{s.outcomes.tasks}",
        s.outcomes.errors,
        ray.startup_seconds,
        ray.launch_seconds,
        ray.driver_rss_mib,
        ray.raylet_rss_mib,
        ray.gcs_rss_mib,
        ray.workers_rss_mib,
        ray.other_rss_mib,
        max(sim_peak) if sim_peak else "-",
        round(sum(sim_cpu) * 1000 / s.outcomes.tasks, 2) if sim_cpu else "-",
    ]


HEADERS = [
    "agents", "shards", "peak RSS/shard max MiB", "summed MiB", "runtime CPU ms/task",
    "wall s", "passed", "errors", "Ray start s", "launch s", "driver MiB", "raylet MiB",
    "GCS MiB", "workers MiB", "other Ray MiB", "sim peak MiB", "sim CPU ms/task",
]  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shards", default="1,2,5", help="shard counts (default 1,2,5)")
    parser.add_argument("--per-shard", type=int, default=10_000, help="agents per shard")
    parser.add_argument("--out", type=Path, help="also write the table (Markdown) here")
    parser.add_argument("--keep", type=Path, help="keep each level's results in DIR/shards<N>")
    parser.add_argument("extra", nargs="*", help="more `fastagent bench` flags, after --")
    args = parser.parse_args()
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    rows = []
    causes: list[str] = []
    for shards in (int(x) for x in args.shards.split(",")):
        result = level(shards, args.per_shard, args.extra, args.keep)
        rows.append(row(shards, args.per_shard, result))
        causes.append(f"{shards} shard(s): {result['summary'].totals.errors_by_cause or 'none'}")
        print(f"  {shards} shard(s): {rows[-1]}", file=sys.stderr, flush=True)
    text = "\n".join([
        f"fastagent bench --shards N, {args.per_shard:,} agents per shard (--concurrency), "
        f"--verify trivial, simulated endpoint per shard, profile {PROFILE}, local Ray, "
        f"{started}",
        table(HEADERS, rows),
        "errors by cause: " + "; ".join(causes),
    ])  # fmt: skip
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        command = "python bench/bench_shards.py " + " ".join(sys.argv[1:])
        args.out.write_text(f"# Sharded over Ray\n\n`{command.strip()}`\n\n```\n{text}\n```\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
