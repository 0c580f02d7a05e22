"""What the runtime costs while its agents only wait: CPU per second of wall.

Most of a real run's wall time is agents waiting on the model and on test processes, so
the runtime's CPU scales with what its telemetry and timers cost per second as much as with
its work. Two runs of the same 10 tasks at 10 agents with ``--verify trivial`` against the
simulated endpoint differ only in its TTFT (0 vs ``--wait`` seconds, so each call waits):

    idle cost per second = (CPU_slow − CPU_fast) / (wall_slow − wall_fast)

(the work — requests, parsing, test processes — is the same in both). Repeated, taking turns,
medians shown.

    python bench/bench_idle.py                 # --wait 20 --repeats 3 (~3 minutes)
    python bench/bench_idle.py -- --sample-interval 1.0   # any bench flags for both runs
"""

from __future__ import annotations

import argparse
import statistics
import sys

from _common import run_bench, table

ARGS = ["--tasks", "10", "--concurrency", "10", "--verify", "trivial"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--wait", type=float, default=20.0, help="TTFT of the slow run (s)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("extra", nargs="*", help="more `fastagent bench` flags, after --")
    args = parser.parse_args()
    rows, costs = [], []
    for i in range(args.repeats):
        fast = run_bench(*ARGS, "--sim-profile", "ttft_ms=0,itl_ms=0", *args.extra)
        slow = run_bench(*ARGS, "--sim-profile", f"ttft_ms={args.wait * 1000:g},itl_ms=0",
                         *args.extra)  # fmt: skip
        d_cpu = slow["runtime_cpu_seconds"] - fast["runtime_cpu_seconds"]
        d_wall = slow["wall_seconds"] - fast["wall_seconds"]
        cost = d_cpu / d_wall * 1000
        costs.append(cost)
        rows.append([
            i + 1, fast["wall_seconds"], fast["runtime_cpu_seconds"], slow["wall_seconds"],
            slow["runtime_cpu_seconds"], round(cost, 2),
        ])  # fmt: skip
        print(f"  repeat {i + 1}: {cost:.2f} ms of CPU per second of wall", file=sys.stderr)
    print(
        table(
            [
                "repeat",
                "fast wall s",
                "fast CPU s",
                "slow wall s",
                "slow CPU s",
                "idle CPU ms per s",
            ],
            rows,
        )
    )
    print(
        f"\nidle cost of the runtime: {statistics.median(costs):.2f} ms of CPU per second of "
        f"wall (median of {len(costs)}; 10 agents waiting)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
