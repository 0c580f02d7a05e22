"""Many timeouts on one ticker: the run's task, call and read deadlines.

    >>> async def demo() -> str:
    ...     deadlines = Deadlines(resolution=0.01)
    ...     try:
    ...         async with deadlines.timeout(0.05):   # like asyncio.timeout(0.05)
    ...             await asyncio.sleep(10)
    ...     except TimeoutError:
    ...         return "timed out"
    ...     return "finished"
    >>> asyncio.run(demo())
    'timed out'

``asyncio.timeout`` arms a loop timer per use: a Timeout, a TimerHandle and its libuv
timer, about 0.8 KiB of the measured heap for as long as it is armed, and with thousands
of agents each holding a task deadline and a call deadline, and arming a read timeout for
every streamed event, that is several KiB per agent in flight. Here an armed deadline is
one small object and one dict entry, and one task wakes every ``resolution`` seconds to
fire the ones that are due, so a deadline fires up to ``resolution`` late.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol


class Expiring(Protocol):
    def expire(self) -> None: ...


class Deadlines:
    """One ticker for every armed deadline of one event loop."""

    def __init__(self, resolution: float = 0.5) -> None:
        self.resolution = resolution
        self._armed: dict[Expiring, float] = {}
        self._ticker: asyncio.Task[None] | None = None

    def timeout(self, seconds: float) -> Timeout:
        """An async context manager like ``asyncio.timeout(seconds)``."""
        return Timeout(self, seconds)

    def arm(self, item: Expiring, when: float) -> None:
        """Call ``item.expire()`` at loop time ``when`` unless disarmed first."""
        self._armed[item] = when
        if self._ticker is None:
            self._ticker = asyncio.get_running_loop().create_task(self._tick())

    def disarm(self, item: Expiring) -> None:
        self._armed.pop(item, None)

    async def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        armed = self._armed
        try:
            while armed:
                await asyncio.sleep(self.resolution)
                now = loop.time()
                due = [item for item, when in armed.items() if when <= now]
                for item in due:
                    del armed[item]
                    item.expire()
        finally:
            self._ticker = None


class Timeout:
    """``async with``: raises TimeoutError when the deadline cancels the body."""

    __slots__ = ("_cancelling", "_deadlines", "_expired", "_seconds", "_task")

    def __init__(self, deadlines: Deadlines, seconds: float) -> None:
        self._deadlines = deadlines
        self._seconds = seconds
        self._expired = False
        self._task: asyncio.Task[Any] | None = None
        self._cancelling = 0

    async def __aenter__(self) -> Timeout:
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("Timeout must be used inside a task")
        self._task = task
        self._cancelling = task.cancelling()
        self._deadlines.arm(self, asyncio.get_running_loop().time() + self._seconds)
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: Any, tb: Any) -> None:
        self._deadlines.disarm(self)
        task = self._task
        self._task = None
        if (
            self._expired
            and task is not None
            and task.uncancel() <= self._cancelling
            and exc_type is asyncio.CancelledError
        ):
            raise TimeoutError from exc

    @property
    def expired(self) -> bool:
        """Whether the deadline passed (and cancelled the body)."""
        return self._expired

    def expire(self) -> None:
        if self._task is not None:
            self._expired = True
            self._task.cancel()
