"""What starting a test process costs in each sandbox mode that works on this machine.

    python bench/sandbox_latency.py              # 40 runs of each, modes taking turns

For each mode (``off`` first, then the weaker ones, then the best with and without the
network), the mean wall time from ``exec`` called to the child reaped and the mean CPU of
the children, for ``true`` and for an empty Python.
"""

from __future__ import annotations

import resource
import sys
import tempfile
import time
from collections.abc import Sequence

import uvloop

from fastagent.sandbox.policy import Sandbox, SandboxMode
from fastagent.sandbox.tools import ToolDispatcher


def spawn_latency(
    sandboxes: Sequence[Sandbox], runs: int = 40, argv: Sequence[str] = ("true",)
) -> list[tuple[float, float]]:
    """Per sandbox: mean (wall ms, children CPU ms) to start, run and reap ``argv``.

    The sandboxes take turns run by run, so load from elsewhere hits them alike.
    """

    def child_cpu() -> float:
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        return usage.ru_utime + usage.ru_stime

    async def measure() -> list[tuple[float, float]]:
        totals = [[0.0, 0.0] for _ in sandboxes]
        with tempfile.TemporaryDirectory(prefix="fastagent-latency-") as ws:
            dispatchers = [ToolDispatcher(ws, sandbox=sb) for sb in sandboxes]
            for tools in dispatchers:
                await tools.exec(argv)
            for _ in range(runs):
                for total, tools in zip(totals, dispatchers, strict=True):
                    t0, c0 = time.perf_counter(), child_cpu()
                    await tools.exec(argv)
                    total[0] += time.perf_counter() - t0
                    total[1] += child_cpu() - c0
        return [(wall * 1000 / runs, cpu * 1000 / runs) for wall, cpu in totals]

    return uvloop.run(measure())


def main() -> None:
    best = Sandbox()
    print(f"sandbox: {best.label}  network: {'on' if best.network else 'off'}")
    modes = list(SandboxMode)
    candidates = [Sandbox(mode=SandboxMode.OFF)]
    for mode in reversed(modes[modes.index(best.mode) + 1 : -1]):
        candidates.append(Sandbox(mode=mode, warn=None))
    if best.mode is not SandboxMode.OFF:
        candidates += [Sandbox(mode=best.mode, network=True, warn=None), best]
    for argv in (["true"], [sys.executable, "-c", "pass"]):
        print(f"{' '.join(argv)}:")
        for sb, (wall, cpu) in zip(candidates, spawn_latency(candidates, argv=argv), strict=True):
            name = sb.label + (" (network on)" if sb.network and sb.mode != "off" else "")
            print(f"  {name:<28} {wall:7.2f} ms wall  {cpu:6.2f} ms child CPU  per spawn")


if __name__ == "__main__":
    main()
