"""One timer for every response's next step: :class:`Pacer`.

A streamed completion is not a coroutine sleeping before each token but a small object with a
``wake`` method: each step (the first content, the next chunk, a keep-alive ping, a reset
after its grace, a delayed start) is an entry in the pacer, and one loop timer, armed for the
earliest entry, runs every entry that is due when it fires. Dues are ``time.monotonic()``
seconds; a task is never woken before its due (a timer that fires early, as libuv's
millisecond timers can, is armed again).

Entries are kept two ways. Any step goes in a heap of ``(due, seq, task)``
(:meth:`Pacer.at`). The steps of the one fixed-period schedule, content chunk ``i + 1`` at
``first + (i + 1) * itl``, go in a FIFO lane (:meth:`Pacer.next_in_lane`): each is pushed when
the stream's previous step is woken, and steps are woken in due order, so each push comes
later than the one before it and the lane stays sorted without comparisons (a push that
would not is put in the heap). The lane spares the heap's ``log n`` tuple comparisons on
every streamed event.
"""

from __future__ import annotations

import asyncio
import collections
import heapq
import itertools
import math
import time
from typing import Protocol

__all__ = ["Flushed", "Pacer", "Timed"]


class Timed(Protocol):
    """What the pacer wakes."""

    def wake(self, due: float) -> None:
        """Run the step that was due at ``due`` (``time.monotonic()``; now or a little before)."""
        ...


class Flushed(Protocol):
    """What :meth:`Pacer.soon` runs."""

    def flush(self) -> None: ...


class Pacer:
    """Wakes each task at (never before) its due, on one timer of the running loop."""

    __slots__ = ("_armed", "_due", "_firing", "_heap", "_lane", "_loop", "_seq", "_soon")

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Timed]] = []
        self._lane: collections.deque[tuple[float, Timed]] = collections.deque()
        self._seq = itertools.count()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._armed: asyncio.TimerHandle | asyncio.Handle | None = None
        self._due = math.inf
        self._firing = False
        self._soon: list[Flushed] = []

    def __len__(self) -> int:
        return len(self._heap) + len(self._lane)

    def at(self, due: float, task: Timed) -> None:
        """Wake ``task`` at ``due``."""
        heapq.heappush(self._heap, (due, next(self._seq), task))
        if due < self._due and not self._firing:
            self._arm(due)

    def next_in_lane(self, due: float, task: Timed) -> None:
        """Wake ``task`` at ``due``, a due no earlier than any in the lane so far (else it
        goes in the heap)."""
        lane = self._lane
        if lane and due < lane[-1][0]:
            self.at(due, task)
            return
        lane.append((due, task))
        if due < self._due and not self._firing:
            self._arm(due)

    def soon(self, task: Flushed) -> None:
        """``task.flush()`` once the loop has done what it is doing now (one ``call_soon`` for
        every task given it meanwhile)."""
        if not self._soon:
            loop = self._loop
            if loop is None:
                loop = self._loop = asyncio.get_running_loop()
            loop.call_soon(self._flush)
        self._soon.append(task)

    def _flush(self) -> None:
        soon, self._soon = self._soon, []
        for task in soon:
            task.flush()

    def _arm(self, due: float) -> None:
        if self._armed is not None:
            self._armed.cancel()
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        self._due = due
        # whole milliseconds, rounded up, from the loop's own clock: uvloop's is libuv's, in
        # milliseconds behind time.monotonic(), and it rounds a delay to the millisecond
        delay = math.ceil((due - loop.time()) * 1000.0) / 1000.0
        self._armed = (
            loop.call_later(delay, self._fire) if delay > 0 else loop.call_soon(self._fire)
        )

    def _fire(self) -> None:
        self._armed = None
        self._due = math.inf
        heap, lane = self._heap, self._lane
        now = time.monotonic()
        pop, popleft = heapq.heappop, lane.popleft
        self._firing = True
        try:
            while True:
                if lane and lane[0][0] <= now and not (heap and heap[0][0] < lane[0][0]):
                    due, task = popleft()
                elif heap and heap[0][0] <= now:
                    due, _, task = pop(heap)
                else:
                    break
                try:
                    task.wake(due)
                except Exception as exc:  # one broken task must not stop the others
                    self._report(exc, task)
        finally:
            self._firing = False
            if heap or lane:
                self._arm(min(heap[0][0] if heap else math.inf, lane[0][0] if lane else math.inf))

    def _report(self, exc: Exception, task: Timed) -> None:
        assert self._loop is not None
        self._loop.call_exception_handler(
            {"message": f"sim: {type(task).__name__}.wake failed", "exception": exc}
        )

    def close(self) -> None:
        """Forget every entry, the timer and the loop (the next use takes the running one)."""
        if self._armed is not None:
            self._armed.cancel()
            self._armed = None
        self._heap.clear()
        self._lane.clear()
        self._soon.clear()
        self._due = math.inf
        self._loop = None
