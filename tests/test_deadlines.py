"""Deadlines: asyncio.timeout's behaviour on one shared ticker."""

from __future__ import annotations

import asyncio

import pytest
import uvloop

from fastagent._deadlines import Deadlines


def test_timeout_fires_never_early_and_the_ticker_stops() -> None:
    deadlines = Deadlines(resolution=0.02)

    async def main() -> float:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        with pytest.raises(TimeoutError):  # the body would end by itself after 5 s, no error
            async with deadlines.timeout(0.1):
                await asyncio.sleep(5)
        elapsed = loop.time() - t0
        await deadlines_idle(deadlines)
        assert not deadlines._armed
        return elapsed

    assert uvloop.run(main()) >= 0.1


async def deadlines_idle(deadlines: Deadlines) -> None:
    """Until the ticker has seen that nothing is armed and stopped (it stops at its next tick)."""
    while deadlines._ticker is not None:
        await asyncio.sleep(deadlines.resolution)


def test_body_finishing_in_time_is_untouched_and_disarmed() -> None:
    deadlines = Deadlines(resolution=0.01)

    async def main() -> str:
        async with deadlines.timeout(0.5):
            await asyncio.sleep(0.02)
        assert not deadlines._armed
        await asyncio.sleep(0.05)  # past nothing: no late cancellation arrives
        return "done"

    assert uvloop.run(main()) == "done"


def test_outside_cancellation_stays_a_cancellation() -> None:
    deadlines = Deadlines(resolution=0.01)

    async def body() -> None:
        async with deadlines.timeout(10):
            await asyncio.sleep(5)

    async def main() -> None:
        task = asyncio.ensure_future(body())
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    uvloop.run(main())


def test_nested_the_inner_one_fires_and_the_outer_goes_on() -> None:
    deadlines = Deadlines(resolution=0.01)

    async def main() -> list[str]:
        seen = []
        async with deadlines.timeout(5):
            try:
                async with deadlines.timeout(0.05):
                    await asyncio.sleep(5)
            except TimeoutError:
                seen.append("inner")
            await asyncio.sleep(0.05)
            seen.append("outer body finished")
        return seen

    assert uvloop.run(main()) == ["inner", "outer body finished"]


def test_many_deadlines_share_one_ticker() -> None:
    deadlines = Deadlines(resolution=0.02)

    async def one(i: int) -> str:
        try:
            async with deadlines.timeout(0.05 if i % 2 else 10):
                await asyncio.sleep(0.5 if i % 2 else 0.01)
        except TimeoutError:
            return "timeout"
        return "ok"

    async def main() -> list[str]:
        results = await asyncio.gather(*(one(i) for i in range(1000)))
        return results

    results = uvloop.run(main())
    assert results.count("timeout") == 500 and results.count("ok") == 500
