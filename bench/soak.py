"""Soak: 10,000 tasks at 1,000-way concurrency against a faulty simulated endpoint.

One `fastagent bench` run (the dataset 100 times over, `--verify trivial`) against the
simulated endpoint injecting a mix of faults. Printed: tasks finished, rows written (and
whether every task has exactly one), errors and retries by cause, peak RSS when 10% of the
tasks had finished and at the end, open file descriptors and live children at the end.

    python bench/soak.py                          # 10,000 tasks, 1,000 agents
    python bench/soak.py --repeat 10 --concurrency 200 --out results/soak.md
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import bench_env, summary_values, table

FAULTS = "http_503:0.01+http_429:0.005+reset:0.01+cut_json:0.005+malformed_json:0.005+stall:0.002"
PROFILE = f"ttft_ms=50,itl_ms=2,tokens_per_chunk=4,seed=7,faults={FAULTS}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=1000)
    parser.add_argument("--profile", default=PROFILE)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="fastagent-soak-") as tmp:
        argv = [
            sys.executable,
            "-m",
            "fastagent",
            "bench",
            "--results-dir",
            tmp,
            "--no-progress",
            "--repeat",
            str(args.repeat),
            "--concurrency",
            str(args.concurrency),
            "--verify",
            "trivial",
            "--sim-profile",
            args.profile,
            "--read-timeout",
            "10",
            "--call-timeout",
            "60",
        ]
        started = time.monotonic()
        proc = subprocess.run(argv, env=bench_env(), capture_output=True, text=True)
        elapsed = time.monotonic() - started
        summaries = list(Path(tmp).glob("*_summary.json"))
        if proc.returncode not in (0, 1) or not summaries:
            sys.exit(f"the soak run failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
        s = summary_values(summaries[0])
        with open(s["csv"], newline="") as f:
            rows = list(csv.DictReader(f))
    expected = 100 * args.repeat
    ids = [r["task_id"] for r in rows]
    finish = sorted(float(r["agent_wait_s"]) + float(r["wall_s"]) for r in rows)
    t10 = finish[max(0, len(finish) // 10 - 1)] if finish else 0.0
    timeline = list(zip(s["rss_timeline"]["t"], s["rss_timeline"]["rss_mib"], strict=True))
    peak10 = max((r for t, r in timeline if t <= t10), default=float("nan"))
    peak_all = max((r for _, r in timeline), default=float("nan"))
    statuses = {k: sum(r["status"] == k for r in rows) for k in ("passed", "failed", "error")}
    lines = [
        f"fastagent bench --repeat {args.repeat} --concurrency {args.concurrency} --verify trivial "
        f"--sim-profile {args.profile}",
        table(
            ["figure", "value"],
            [
                ["tasks expected", expected],
                ["tasks finished (summary)", s["tasks"]],
                ["rows written", len(rows)],
                ["rows lost", expected - len(set(ids))],
                ["duplicate rows", len(ids) - len(set(ids))],
                ["passed / failed / error", "{passed} / {failed} / {error}".format(**statuses)],
                ["errors by cause", json.dumps(s["errors_by_cause"], sort_keys=True)],
                ["retries by cause", json.dumps(s["retries_by_cause"], sort_keys=True)],
                ["peak RSS at 10% of tasks (MiB, sampled)", round(peak10, 1)],
                ["peak RSS at 100% (MiB, sampled)", round(peak_all, 1)],
                ["peak RSS (VmHWM, MiB)", s["peak_rss_mib"]],
                ["open fds at the end", s["open_fds_at_end"]],
                ["live children at the end", s["live_children_at_end"]],
                ["runtime CPU ms/task", s["runtime_cpu_ms_per_task"]],
                ["wall s", round(elapsed, 1)],
            ],
        ),
    ]
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text(
            f"# Soak\n\n`python bench/soak.py {' '.join(sys.argv[1:])}`\n\n```\n{text}\n```\n"
        )
    ok = len(set(ids)) == expected == len(ids) and s["live_children_at_end"] == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
