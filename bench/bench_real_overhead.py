"""The runtime's overhead on a real server with no queue: 1, 2 and 4 agents on 4 slots.

When the agents are no more than llama-server's slots no request waits for a slot, so what a
call spends outside the server's own ``timings`` (prompt_ms + predicted_ms) is the
runtime's, HTTP's and the server's untimed work (template, tokenizing). Each level starts a
fresh server (bench_slots.one_level) and runs the same first N tasks; printed per level:
the call parts' p50 / p99 in milliseconds (docs/results.md, llama-server's split).

    make real-model-install
    .venv/bin/python bench/bench_real_overhead.py            # 8 tasks at 1, 2, 4 agents
    .venv/bin/python bench/bench_real_overhead.py --tasks 4 --agents 1,4
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import bench_slots  # bench/ is on sys.path: the slots bench's one_level and its real_model
from _common import table


def _ms(d: dict[str, Any]) -> str:
    if not d.get("count"):
        return "—"
    return f"{d['p50']:.2f} / {d['p99']:.2f}"


HEADERS = [
    "agents", "slots", "calls", "E2E", "server (timings)", "endpoint queue", "pre-send",
    "last-byte lag", "runtime overhead", "E2E - server mean", "passed",
]  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", default="1,2,4", help="agent counts, default 1,2,4")
    parser.add_argument("--slots", type=int, default=4)
    parser.add_argument("--tasks", type=int, default=8)
    parser.add_argument("--threads", type=int, help="default: scripts/real_model.py's")
    parser.add_argument("--max-tokens", type=int, help="default: scripts/real_model.py's")
    parser.add_argument("--ctx-per-slot", type=int, help="default: scripts/real_model.py's")
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args()
    agents = [int(x) for x in args.agents.split(",")]
    if any(a > args.slots for a in agents):
        parser.error("every agent count must be at most --slots (no queue is the point)")
    rm = bench_slots.rm
    args.threads = args.threads or rm.DEFAULT_THREADS
    args.max_tokens = args.max_tokens or rm.DEFAULT_MAX_TOKENS
    args.ctx_per_slot = args.ctx_per_slot or rm.DEFAULT_CTX_PER_SLOT
    binary, model = rm.install()
    rows, levels = [], []
    with tempfile.TemporaryDirectory(prefix="real-overhead-") as tmp:
        for n in agents:
            ns = argparse.Namespace(
                tasks=args.tasks, concurrency=n, max_tokens=args.max_tokens,
                ctx_per_slot=args.ctx_per_slot, extra=[],
            )  # fmt: skip
            work = Path(tmp) / f"agents{n}"
            work.mkdir()
            level = bench_slots.one_level(binary, model, args.slots, args.threads, ns, work)
            level["agents"] = n
            levels.append(level)
            p = level["parts"]
            e2e, server = p["llm_e2e"], p["server"]
            # means are exact (the p50s are histogram buckets 1 % wide: seconds of E2E)
            outside = e2e["mean"] - server["mean"] if e2e["count"] and server["count"] else None
            rows.append([
                n, args.slots, e2e["count"], _ms(e2e), _ms(server), _ms(p["endpoint_queue"]),
                _ms(p["pre_send"]), _ms(p["last_byte_lag"]), _ms(p["runtime_overhead"]),
                "—" if outside is None else f"{outside:.1f}", f"{level['passed']}/{args.tasks}",
            ])  # fmt: skip
            print(table(HEADERS, rows[-1:]), file=sys.stderr, flush=True)
    print(
        f"{args.tasks} tasks per level on llama-server ({levels[0]['server']}), {args.slots} "
        f"slots, {rm.MODEL.alias}; p50 / p99 in ms"
    )
    print(table(HEADERS, rows))
    if args.json:
        Path(args.json).write_text(json.dumps(levels, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
