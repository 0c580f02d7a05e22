"""How many llama-server slots this machine serves best: the same tasks at each slot count.

For each slot count (and each thread count, when several are given) a fresh llama-server
(scripts/real_model.py's build, model and settings) is started on a free loopback port and
``fastagent bench`` runs the same first N tasks against it at the same concurrency; then the
server is stopped. Printed per level: wall time, passed/failed/errors, output tokens per
second of wall time, TTFT p50/p95, LLM calls, calls that ran to max tokens, peak RSS of the
runtime.

    make real-model-install
    .venv/bin/python bench/bench_slots.py     # 1,2,4,8 slots; 20 tasks at concurrency 20
    .venv/bin/python bench/bench_slots.py --slots 2,4 --threads 1,2 --tasks 10

Every run gets ``--task-timeout 14400 --call-timeout 1800`` (scripts/real_model.py's
QUEUE_SAFE_TIMEOUTS): a request queued behind busy slots waits for its first byte (never
retried), and the task's own budget has to hold those waits.
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any

from _common import ROOT, table

from fastagent.analysis import children


def _load_real_model() -> ModuleType:
    spec = importlib.util.spec_from_file_location("real_model", ROOT / "scripts" / "real_model.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("real_model", module)
    spec.loader.exec_module(module)
    return module


rm = _load_real_model()


def _ints(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: every value must be >= 1")
    return values


def one_level(
    binary: Path,
    model: Path,
    slots: int,
    threads: int,
    args: argparse.Namespace,
    work: Path,
) -> dict[str, Any]:
    """One server with ``slots`` slots, one bench run against it; the level's figures."""
    level = work / f"slots{slots}-threads{threads}"
    level.mkdir()
    trace = level / "trace.jsonl"
    server = rm.Server(
        binary, model, slots=slots, ctx_per_slot=args.ctx_per_slot, threads=threads,
        log_path=level / "server.log",
    )  # fmt: skip
    bench = rm.bench_args(
        "", rm.MODEL.alias, tasks=args.tasks, concurrency=args.concurrency,
        max_tokens=args.max_tokens, trace=trace, extra=[*rm.QUEUE_SAFE_TIMEOUTS, *args.extra],
    )  # fmt: skip
    t0 = time.monotonic()
    load0 = os.getloadavg()[0]
    with rm.signals_as_interrupt():
        try:
            bench[bench.index("--base-url") + 1] = server.start()
            run = children.run_bench(bench, results_dir=level, capture_stderr=True)
        finally:
            server.stop()
    if run.interrupted:
        sys.exit(130)
    if run.returncode != 0 or run.summary is None:
        sys.exit(f"{slots} slots: fastagent bench exited {run.returncode}:\n{run.stderr}")
    (csv_path,) = level.glob("python_*.csv")
    problems, f = rm.check_run(csv_path, run.summary, trace, rm.first_task_ids(args.tasks))
    summary = json.loads(Path(run.summary).read_text())
    at_limit = sum(
        1
        for ev in rm.read_trace(trace)
        if ev.get("event") == "completion" and ev["tokens"] >= args.max_tokens
    )
    return {
        "slots": slots,
        "threads": threads,
        "wall_s": f["wall_seconds"],
        "passed": f["passed"],
        "failed": f["failed"],
        "errors": f["errors"],
        "tokens_per_s": f["output_tokens_per_s"],
        "ttft_p50_s": (f["ttft_ms_p50"] or 0) / 1000,
        "ttft_p95_s": (f["ttft_ms_p95"] or 0) / 1000,
        "llm_calls": f["llm_calls"],
        "at_max_tokens": at_limit,
        "output_tokens": summary["totals"]["output_tokens"],
        "peak_rss_mib": f["peak_rss_mib"],
        "elapsed_s": time.monotonic() - t0,
        # other processes on the machine: the 1-minute load average at the start and the
        # 5-minute one at the end (the machine has 2 cores; the bench itself adds ~2-3)
        "load_start": round(load0, 1),
        "load_5min_end": round(os.getloadavg()[1], 1),
        "problems": problems,
        # the call parts (docs/results.md: llama-server's timings split each call)
        "parts": {
            name: summary["latency"][f"{name}_ms"]
            for name in (
                "llm_e2e",
                "pre_send",
                "endpoint_queue",
                "server",
                "last_byte_lag",
                "runtime_overhead",
                "first_byte_wait",
            )
        },
        "server": summary["endpoint"].get("server"),
    }


HEADERS = [
    "slots", "threads", "wall s", "passed", "failed", "errors", "tokens/s", "TTFT p50 s",
    "TTFT p95 s", "LLM calls", "at max tokens", "runtime peak RSS MiB", "load start",
    "load 5 min end",
]  # fmt: skip
KEYS = [
    "slots", "threads", "wall_s", "passed", "failed", "errors", "tokens_per_s", "ttft_p50_s",
    "ttft_p95_s", "llm_calls", "at_max_tokens", "peak_rss_mib", "load_start", "load_5min_end",
]  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--slots", type=_ints, default=[1, 2, 4, 8], help="default 1,2,4,8")
    parser.add_argument("--threads", type=_ints, default=[rm.DEFAULT_THREADS])
    parser.add_argument("--tasks", type=int, default=20)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--max-tokens", type=int, default=rm.DEFAULT_MAX_TOKENS)
    parser.add_argument("--ctx-per-slot", type=int, default=rm.DEFAULT_CTX_PER_SLOT)
    parser.add_argument("--json", metavar="FILE", help="also write every level's figures here")
    parser.add_argument("extra", nargs="*", help="more `fastagent bench` flags, after --")
    args = parser.parse_args()
    try:
        binary = rm.resolve_server(None)
        model, _ = rm.resolve_model(None)
    except rm.BadInput as exc:
        sys.exit(f"bench_slots: {exc}")
    levels = []
    with tempfile.TemporaryDirectory(prefix="bench-slots-") as tmp:
        for slots, threads in itertools.product(args.slots, args.threads):
            level = one_level(binary, model, slots, threads, args, Path(tmp))
            levels.append(level)
            print(  # each level as it ends: an interrupted sweep keeps what it measured
                table(HEADERS, [[level[k] for k in KEYS]])
                + (f"\ncheck problems: {level['problems']}" if level["problems"] else ""),
                file=sys.stderr,
                flush=True,
            )
            if args.json:
                Path(args.json).write_text(json.dumps(levels, indent=2) + "\n")
    print(
        f"{args.tasks} tasks at concurrency {args.concurrency}, max tokens {args.max_tokens}, "
        f"{args.ctx_per_slot} context tokens per slot; llama-server {rm.LLAMA_CPP_COMMIT}, "
        f"{rm.MODEL.alias}"
    )
    print(table(HEADERS, [[lv[k] for k in KEYS] for lv in levels]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
