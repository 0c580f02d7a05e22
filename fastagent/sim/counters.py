"""The chat requests' numbers, the faults' counts and a run's figures: :class:`Counters`, one
process's, or :class:`SharedCounters`, every worker process's.

Chat request ``n`` (counted from 1 since the sim started or was last reset, over all its
worker processes) meets the fault :func:`~.faults.pick_fault` draws for ``n``;
``/v1/sim/stats`` reports the totals, whichever worker answers it.

A *run* (``GET /v1/sim/run``, :class:`~.wire.SimRun`) is everything since the last
``POST /v1/sim/run/reset``: the requests, those no message of which held a task's spec
(*unplaced*), the output tokens of the answers written in full, the most requests in
progress at once, and per answer written in full its TTFT as served (handling started →
first content event written) and its server time (handling started → last write), in the
runtime's own log-bucket histograms (:class:`fastagent.telemetry.Histogram`). A reset
starts a new epoch, zeroes all of it and restarts the request numbering (so every run meets
the same sequence of fault draws); requests in progress stay counted as in progress.

Per request this costs a few integer updates and two histogram adds (one process), or as
many updates under the workers' one lock.
"""

from __future__ import annotations

import math
import multiprocessing
from typing import Any

from ..telemetry import Histogram
from .faults import FaultKind, pick_fault
from .wire import SimRun

__all__ = ["Counters", "SharedCounters"]

_KINDS = tuple(FaultKind)
_SLOT = {kind: i + 1 for i, kind in enumerate(_KINDS)}
# the run's scalars, after the requests and the fault kinds
_EPOCH, _UNPLACED, _TOKENS, _STREAMS, _PEAK = range(1 + len(_KINDS), 6 + len(_KINDS))


class Counters:
    """One process's counts."""

    __slots__ = ("_epoch", "_injected", "_peak", "_requests", "_server", "_streams", "_tokens",
                 "_ttft", "_unplaced")  # fmt: skip

    def __init__(self) -> None:
        self._epoch = 0
        self._streams = 0
        self._clear()

    def _clear(self) -> None:
        self._requests = 0
        self._injected = dict.fromkeys(FaultKind, 0)
        self._unplaced = self._tokens = 0
        self._peak = self._streams
        self._ttft = Histogram()
        self._server = Histogram()

    def next_request(
        self, faults: tuple[tuple[FaultKind, float], ...], seed: int
    ) -> FaultKind | None:
        """Number the next chat request; the fault that hits it (counted), or None."""
        self._requests += 1
        kind = pick_fault(faults, seed, self._requests)
        if kind is not None:
            self._injected[kind] += 1
        return kind

    def snapshot(self) -> tuple[int, dict[FaultKind, int]]:
        """(chat requests, faults injected by kind)."""
        return self._requests, dict(self._injected)

    # ---- the run ----

    def arrived(self) -> None:
        """A chat request is in progress (until :meth:`left`)."""
        self._streams += 1
        if self._streams > self._peak:
            self._peak = self._streams

    def left(self) -> None:
        """A chat request's exchange is over."""
        self._streams -= 1

    def unplaced(self) -> None:
        """A chat request held no task's spec."""
        self._unplaced += 1

    def served(self, tokens: int, ttft: float, server: float) -> None:
        """An answer written in full: its output tokens, TTFT and server time (seconds)."""
        self._tokens += tokens
        self._ttft.add(ttft)
        self._server.add(server)

    def reset(self) -> SimRun:
        """A new run: a new epoch, everything of the last one zeroed."""
        self._epoch += 1
        self._clear()
        return self.run()

    def run(self) -> SimRun:
        """The run's figures so far."""
        return SimRun(
            epoch=self._epoch,
            requests=self._requests,
            unplaced=self._unplaced,
            output_tokens=self._tokens,
            streams=self._streams,
            peak_streams=self._peak,
            ttft_ms=self._ttft.summary(),
            server_ms=self._server.summary(),
            server_seconds=round(self._server.total, 6),
        )


class _SharedHistogram:
    """A :class:`Histogram`'s buckets, count, total, min and max in shared memory (updated under
    the caller's lock), read back as a Histogram."""

    __slots__ = ("_counts", "_stats")

    def __init__(self, ctx: Any) -> None:
        self._counts: Any = ctx.RawArray("I", Histogram.buckets())
        self._stats: Any = ctx.RawArray("d", 4)  # count, total, min, max
        self.clear()

    def clear(self) -> None:
        self._counts[:] = [0] * len(self._counts)
        self._stats[:] = [0.0, 0.0, math.inf, 0.0]

    def add(self, value: float) -> None:
        value = max(value, 0.0)
        self._counts[Histogram.bucket(value)] += 1
        stats = self._stats
        stats[0] += 1
        stats[1] += value
        stats[2] = min(stats[2], value)
        stats[3] = max(stats[3], value)

    def histogram(self) -> Histogram:
        count, total, low, high = self._stats
        counts = {i: n for i, n in enumerate(self._counts) if n}
        return Histogram.merged([{"counts": counts, "count": int(count), "total": total,
                                  "min": low, "max": high}])  # fmt: skip


class SharedCounters(Counters):
    """Counts in shared memory, made before the worker processes are forked: every worker
    numbers its requests from the one sequence, under one lock."""

    __slots__ = ("_lock", "_server_shared", "_slots", "_ttft_shared")

    def __init__(self) -> None:
        super().__init__()
        ctx = multiprocessing.get_context("fork")
        # slot 0: requests; then one per fault kind; then the run's scalars
        self._slots: Any = ctx.RawArray("q", _PEAK + 1)
        self._lock = ctx.Lock()
        self._ttft_shared = _SharedHistogram(ctx)
        self._server_shared = _SharedHistogram(ctx)

    def next_request(
        self, faults: tuple[tuple[FaultKind, float], ...], seed: int
    ) -> FaultKind | None:
        slots = self._slots
        with self._lock:
            slots[0] += 1
            n = slots[0]
        kind = pick_fault(faults, seed, n)
        if kind is not None:
            with self._lock:
                slots[_SLOT[kind]] += 1
        return kind

    def snapshot(self) -> tuple[int, dict[FaultKind, int]]:
        with self._lock:
            values = list(self._slots)
        return values[0], {kind: values[_SLOT[kind]] for kind in _KINDS}

    def arrived(self) -> None:
        slots = self._slots
        with self._lock:
            slots[_STREAMS] += 1
            slots[_PEAK] = max(slots[_PEAK], slots[_STREAMS])

    def left(self) -> None:
        with self._lock:
            self._slots[_STREAMS] -= 1

    def unplaced(self) -> None:
        with self._lock:
            self._slots[_UNPLACED] += 1

    def served(self, tokens: int, ttft: float, server: float) -> None:
        with self._lock:
            self._slots[_TOKENS] += tokens
            self._ttft_shared.add(ttft)
            self._server_shared.add(server)

    def reset(self) -> SimRun:
        slots = self._slots
        with self._lock:
            for i in range(_EPOCH):
                slots[i] = 0
            slots[_EPOCH] += 1
            slots[_UNPLACED] = slots[_TOKENS] = 0
            slots[_PEAK] = slots[_STREAMS]
            self._ttft_shared.clear()
            self._server_shared.clear()
        return self.run()

    def run(self) -> SimRun:
        with self._lock:
            slots = list(self._slots)
            ttft, server = self._ttft_shared.histogram(), self._server_shared.histogram()
        return SimRun(
            epoch=slots[_EPOCH],
            requests=slots[0],
            unplaced=slots[_UNPLACED],
            output_tokens=slots[_TOKENS],
            streams=slots[_STREAMS],
            peak_streams=slots[_PEAK],
            ttft_ms=ttft.summary(),
            server_ms=server.summary(),
            server_seconds=round(server.total, 6),
        )
