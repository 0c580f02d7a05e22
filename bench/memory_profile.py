"""Where the runtime's bytes go at peak: tracemalloc snapshots of one in-process run.

A thread takes a snapshot every second and keeps the one with the most traced memory; at
the end the top allocation sites (grouped by file:line, or by file) are printed with the
bytes per agent. tracemalloc sees Python allocations only (not the C libraries' own
buffers, nor allocator fragmentation), and slows the run down; use it to find sites,
and bench/bench_memory.py (VmHWM) for the figures.

    python bench/memory_profile.py --agents 1000
    python bench/memory_profile.py --agents 1000 --group filename --top 15
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import tracemalloc

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", type=int, default=1000)
    parser.add_argument("--group", choices=("lineno", "filename", "traceback"), default="lineno")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--profile", default="ttft_ms=50,itl_ms=2,tokens_per_chunk=1,seed=0")
    args = parser.parse_args()
    os.environ["PATH"] = f"{os.path.dirname(sys.executable)}{os.pathsep}{os.environ['PATH']}"
    tracemalloc.start(12 if args.group == "traceback" else 1)

    from fastagent.config import Config
    from fastagent.runner import run_bench

    best: list[tracemalloc.Snapshot | None] = [None]
    best_size = [0]
    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(1.0):
            current, _ = tracemalloc.get_traced_memory()
            if current > best_size[0]:
                best_size[0] = current
                best[0] = tracemalloc.take_snapshot()

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    base = tracemalloc.get_traced_memory()[0]
    config = Config(
        tasks=min(100, args.agents),
        repeat=max(1, args.agents // 100),
        concurrency=args.agents,
        verify="trivial",
        sim_profile=args.profile,
        results_dir="/tmp/fastagent-memprofile",
        progress=False,
    )
    outcome = run_bench(config, log=lambda line: None)
    stop.set()
    watcher.join()
    snap = best[0]
    if snap is None:
        sys.exit("no snapshot taken (the run was shorter than a second)")
    snap = snap.filter_traces([tracemalloc.Filter(False, tracemalloc.__file__)])
    stats = snap.statistics(args.group)
    total = sum(s.size for s in stats)
    print(
        f"{args.agents} agents, passed {outcome.summary['passed']}/{outcome.summary['tasks']}, "
        f"peak RSS {outcome.summary['peak_rss_mib']} MiB; traced at the fullest snapshot: "
        f"{total / 2**20:.2f} MiB ({(total - base) / args.agents / 1024:.1f} KiB/agent above "
        f"the {base / 2**20:.2f} MiB traced before the run)"
    )
    for stat in stats[: args.top]:
        frame = stat.traceback[0]
        where = f"{os.path.relpath(frame.filename)}:{frame.lineno}"
        print(
            f"{stat.size / 1024:10.1f} KiB {stat.size / args.agents:8.0f} B/agent "
            f"{stat.count:8d} blocks  {where}"
        )
        if args.group == "traceback":
            for line in stat.traceback.format()[-6:]:
                print("        " + line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
