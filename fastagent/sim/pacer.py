"""One timer for every response's next step: :class:`Pacer`.

A streamed completion is not a coroutine sleeping before each token but a small object with a
``wake`` method: each step (the first content, the next chunk, a keep-alive ping, a reset
after its grace, a delayed start) is an entry ``(due, seq, task)`` in one heap, and one loop
timer, armed for the earliest entry, runs every entry that is due when it fires. Dues are
``time.monotonic()`` seconds; a task is never woken before its due (a timer that fires early,
as libuv's millisecond timers can, is armed again).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
import time
from typing import Protocol

__all__ = ["Pacer", "Timed"]


class Timed(Protocol):
    """What the pacer wakes."""

    def wake(self, due: float) -> None:
        """Run the step that was due at ``due`` (``time.monotonic()``; now or a little before)."""
        ...


class Pacer:
    """Wakes each task at (never before) its due, on one timer of the running loop."""

    __slots__ = ("_armed", "_due", "_firing", "_heap", "_loop", "_seq")

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Timed]] = []
        self._seq = itertools.count()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._armed: asyncio.TimerHandle | asyncio.Handle | None = None
        self._due = math.inf
        self._firing = False

    def __len__(self) -> int:
        return len(self._heap)

    def at(self, due: float, task: Timed) -> None:
        """Wake ``task`` at ``due``."""
        heapq.heappush(self._heap, (due, next(self._seq), task))
        if due < self._due and not self._firing:
            self._arm(due)

    def _arm(self, due: float) -> None:
        if self._armed is not None:
            self._armed.cancel()
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        self._due = due
        # whole milliseconds, rounded up: uvloop rounds a delay to the millisecond
        delay = math.ceil((due - time.monotonic()) * 1000.0) / 1000.0
        self._armed = (
            loop.call_later(delay, self._fire) if delay > 0 else loop.call_soon(self._fire)
        )

    def _fire(self) -> None:
        self._armed = None
        self._due = math.inf
        heap = self._heap
        now = time.monotonic()
        pop = heapq.heappop
        self._firing = True
        try:
            while heap and heap[0][0] <= now:
                due, _, task = pop(heap)
                try:
                    task.wake(due)
                except Exception as exc:  # one broken task must not stop the others
                    self._report(exc, task)
        finally:
            self._firing = False
            if heap:
                self._arm(heap[0][0])

    def _report(self, exc: Exception, task: Timed) -> None:
        assert self._loop is not None
        self._loop.call_exception_handler(
            {"message": f"sim: {type(task).__name__}.wake failed", "exception": exc}
        )

    def close(self) -> None:
        """Forget every entry and the timer."""
        if self._armed is not None:
            self._armed.cancel()
            self._armed = None
        self._heap.clear()
        self._due = math.inf
