"""What the compiled speedups buy end to end: `fastagent bench` vs `--pure-python`.

Both run the same tasks at the same concurrency against the simulated endpoint with one
token per chunk (the most SSE events per completion), alternating, each in a fresh
process. Printed: the runtime process's own CPU seconds (user+sys, children excluded)
per run, the medians, and the pure/compiled ratio.

    python bench/bench_e2e_cpu.py                    # 100 tasks, concurrency 100, 3 rounds
    python bench/bench_e2e_cpu.py --rounds 5 -- --verify trivial
"""

from __future__ import annotations

import argparse
import sys

from _common import median, run_bench, table

PROFILE = "tokens_per_chunk=1,ttft_ms=20,itl_ms=0"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", default="100")
    parser.add_argument("--concurrency", default="100")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--profile", default=PROFILE, help=f"sim profile (default {PROFILE})")
    parser.add_argument("extra", nargs="*", help="more `fastagent bench` flags, after --")
    args = parser.parse_args()
    common = [
        "--tasks",
        args.tasks,
        "--concurrency",
        args.concurrency,
        "--sim-profile",
        args.profile,
        *args.extra,
    ]
    cpu: dict[str, list[float]] = {"cython": [], "pure": []}
    rows = []
    for n in range(1, args.rounds + 1):
        for label, flags in (("cython", []), ("pure", ["--pure-python"])):
            s = run_bench(*common, *flags)
            if s["implementation"] != label:
                sys.exit(f"expected implementation {label}, the run says {s['implementation']}")
            cpu[label].append(s["runtime_cpu_seconds"])
            rows.append(
                [
                    n,
                    label,
                    s["runtime_cpu_seconds"],
                    s["runtime_cpu_ms_per_llm_call"],
                    s["llm_calls"],
                    s["output_tokens"],
                    s["passed"],
                    s["wall_seconds"],
                ]
            )
    print(f"fastagent bench {' '.join(common)}")
    print(
        table(
            [
                "round",
                "speedups",
                "runtime CPU s",
                "CPU ms/call",
                "LLM calls",
                "output tokens",
                "passed",
                "wall s",
            ],
            rows,
        )
    )
    cy, pure = median(cpu["cython"]), median(cpu["pure"])
    print(
        f"\nmedian runtime CPU: cython {cy:.2f} s, pure {pure:.2f} s, pure/cython {pure / cy:.2f}x"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
