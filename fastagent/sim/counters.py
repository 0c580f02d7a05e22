"""The chat requests' numbers and the faults' counts: :class:`Counters`, one process's, or
:class:`SharedCounters`, every worker process's.

Chat request ``n`` (counted from 1 since the sim started, over all its worker processes)
meets the fault :func:`~.faults.pick_fault` draws for ``n``; ``/v1/sim/stats`` reports the
totals, whichever worker answers it.
"""

from __future__ import annotations

import multiprocessing
from typing import Any

from .faults import FaultKind, pick_fault

__all__ = ["Counters", "SharedCounters"]

_KINDS = tuple(FaultKind)
_SLOT = {kind: i + 1 for i, kind in enumerate(_KINDS)}


class Counters:
    """One process's counts."""

    __slots__ = ("_injected", "_requests")

    def __init__(self) -> None:
        self._requests = 0
        self._injected = dict.fromkeys(FaultKind, 0)

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


class SharedCounters(Counters):
    """Counts in shared memory, made before the worker processes are forked: every worker
    numbers its requests from the one sequence, under one lock."""

    __slots__ = ("_lock", "_slots")

    def __init__(self) -> None:
        super().__init__()
        ctx = multiprocessing.get_context("fork")
        # slot 0: requests; then one per fault kind
        self._slots: Any = ctx.RawArray("q", 1 + len(_KINDS))
        self._lock = ctx.Lock()

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
