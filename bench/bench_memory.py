"""Peak memory of the runtime process at 100, 1,000 and 10,000 concurrent agents.

Each level is one `fastagent bench` run in a fresh process against the built-in simulated
endpoint with one fixed profile (PROFILE below), every task in flight at once
(concurrency = tasks). Peak RSS is the runtime process's kernel high-water mark (VmHWM).
At 1,000 and 10,000 agents the verification command is `--verify trivial` (one cheap
process per attempt instead of pytest's ~0.5 CPU-second start-up), as the table says; the
100-agent level runs both ways so the two verifications can be compared.

    python bench/bench_memory.py                       # all levels (about 10 minutes)
    python bench/bench_memory.py --levels 100,1000     # fewer
    python bench/bench_memory.py --out results/memory.md
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from _common import run_bench, table

PROFILE = "ttft_ms=50,itl_ms=2,tokens_per_chunk=1,seed=0"
DATASET_TASKS = 100
CPP_PEAK_MIB = 93.0
TARGETS = {100: 40.0, 1000: 52.0, 10000: 160.0}
SLOPE_TARGET_KIB = 12.0


def level_args(agents: int, verify: str) -> list[str]:
    repeat = max(1, agents // DATASET_TASKS)
    tasks = min(agents, DATASET_TASKS)
    return [
        "--tasks",
        str(tasks),
        "--repeat",
        str(repeat),
        "--concurrency",
        str(agents),
        "--verify",
        verify,
        "--sim-profile",
        PROFILE,
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--levels", default="100,1000,10000")
    parser.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="runs per level; the table shows the median peak and the range",
    )
    parser.add_argument("--out", type=Path, help="also write the table (Markdown) here")
    parser.add_argument("extra", nargs="*", help="more `fastagent bench` flags, after --")
    args = parser.parse_args()
    levels = [int(x) for x in args.levels.split(",")]
    runs: list[tuple[int, str]] = []
    for agents in levels:
        if agents <= DATASET_TASKS:
            runs.append((agents, "pytest"))
        runs.append((agents, "trivial"))
    rows = []
    peaks: dict[tuple[int, str], float] = {}
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    for agents, verify in runs:
        summaries = [
            run_bench(*level_args(agents, verify), *args.extra) for _ in range(args.repeats)
        ]
        summaries.sort(key=lambda x: x["peak_rss_mib"])
        s = summaries[len(summaries) // 2]
        peak = s["peak_rss_mib"]
        spread = f"{summaries[0]['peak_rss_mib']:.1f}–{summaries[-1]['peak_rss_mib']:.1f}"
        peaks[(agents, verify)] = peak
        target = TARGETS.get(agents)
        verdict = "—" if target is None else ("met" if peak <= target else "MISSED")
        rows.append(
            [
                agents,
                verify,
                round(peak, 1),
                spread,
                round(peak * 1024 / agents, 1),
                s["runtime_cpu_ms_per_task"],
                s["wall_seconds"],
                f"{s['passed']}/{s['tasks']}",
                s["errors"],
                s["peak_agents_in_flight"],
                f"≤ {target:g} {verdict}" if target else "—",
                f"{CPP_PEAK_MIB:g} (C++)" if agents == 100 else "",
            ]
        )
        print(f"  level {agents} ({verify}): peak {peak:.1f} MiB", file=sys.stderr, flush=True)
    headers = [
        "agents",
        "verify",
        "peak RSS MiB",
        "range",
        "RSS/agent KiB",
        "runtime CPU ms/task",
        "wall s",
        "passed",
        "errors",
        "peak in flight",
        "target",
        "C++ peak MiB",
    ]
    lines = [
        f"fastagent bench, simulated endpoint profile {PROFILE}, concurrency = tasks, "
        f"median of {args.repeats} run(s) per level, {started}",
        table(headers, rows),
    ]
    lo, hi = peaks.get((1000, "trivial")), peaks.get((10000, "trivial"))
    if lo is not None and hi is not None:
        slope = (hi - lo) * 1024 / 9000
        ok = "met" if slope <= SLOPE_TARGET_KIB else "MISSED"
        lines.append(
            f"\nmarginal memory per agent in flight (1,000 → 10,000): {slope:.1f} KiB "
            f"(target ≤ {SLOPE_TARGET_KIB:g} KiB: {ok})"
        )
    if (100, "trivial") in peaks and (100, "pytest") in peaks:
        lines.append(
            f"100 agents, pytest vs trivial verification: {peaks[(100, 'pytest')]:.1f} vs "
            f"{peaks[(100, 'trivial')]:.1f} MiB"
        )
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        command = "python bench/bench_memory.py " + " ".join(sys.argv[1:])
        args.out.write_text(f"# Memory at scale\n\n`{command.strip()}`\n\n```\n{text}\n```\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
