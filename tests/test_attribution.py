"""Who a call's time belongs to: a slow runtime shows in its overhead, a slow endpoint in its
queue, each and not the other, against the simulated endpoint over real loopback HTTP."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import uvloop

from fastagent.config import HttpClient, make_config
from fastagent.llm import LLMClient, Message
from fastagent.schema import Latency
from fastagent.sim.launcher import SimProcess

#: How long the runtime blocks its own loop, or the endpoint waits, per call (seconds): far
#: above anything the other side takes on a healthy machine, so a lower bound on the part it
#: lands in and a bound of half of it on the other part cannot be met by noise.
DELAY = 0.3
CALLS = 3


@pytest.fixture(params=[HttpClient.WIRE, HttpClient.AIOHTTP], ids=lambda kind: kind.value)
def http_client(request: pytest.FixtureRequest) -> HttpClient:
    return HttpClient(request.param)


@pytest.fixture
def sim(request: pytest.FixtureRequest) -> Iterator[SimProcess]:
    profile = getattr(request, "param", "ttft_ms=20,itl_ms=0")
    with SimProcess(["--profile", profile]) as process:
        yield process


class BlockingClient(LLMClient):
    """A runtime that blocks its event loop ``DELAY`` seconds while it encodes each request."""

    def _body(self, messages: list[Message]) -> bytes:
        time.sleep(DELAY)
        return super()._body(messages)


def calls(client_class: type[LLMClient], base_url: str, http_client: HttpClient) -> Latency:
    """``CALLS`` completions one after another; the run's latency distributions."""
    config = make_config(base_url=base_url, model="fastagent-sim", http_client=http_client)

    async def main() -> Latency:
        async with client_class(config) as client:
            for _ in range(CALLS):
                await client.complete([Message("user", "Implement def f(): pass")])
            return client.telemetry.latency()

    return uvloop.run(main())


def ms(value: float | None) -> float:
    assert value is not None
    return value


def test_a_runtime_blocking_its_loop_is_in_runtime_overhead_not_endpoint_queue(
    sim: SimProcess, http_client: HttpClient
) -> None:
    lat = calls(BlockingClient, sim.base_url, http_client)
    assert lat.runtime_overhead_ms.count == lat.endpoint_queue_ms.count == CALLS
    # the block happens before the request's last byte is written: the runtime's pre-send
    assert ms(lat.pre_send_ms.p50) >= DELAY * 1000
    assert ms(lat.runtime_overhead_ms.p50) >= DELAY * 1000
    assert ms(lat.endpoint_queue_ms.max) < DELAY * 1000 / 2


@pytest.mark.parametrize("sim", [f"ttft_ms=20,itl_ms=0,start_delay_ms={DELAY * 1000:g}"],
                         indirect=True)  # fmt: skip
def test_an_endpoint_slow_to_start_is_in_endpoint_queue_not_runtime_overhead(
    sim: SimProcess, http_client: HttpClient
) -> None:
    lat = calls(LLMClient, sim.base_url, http_client)
    assert lat.runtime_overhead_ms.count == lat.endpoint_queue_ms.count == CALLS
    # the endpoint waits DELAY after reading a request before it starts it
    assert ms(lat.endpoint_queue_ms.p50) >= DELAY * 1000 * 0.99
    assert ms(lat.runtime_overhead_ms.max) < DELAY * 1000 / 2
    assert ms(lat.server_ms.p50) < ms(lat.endpoint_queue_ms.p50)  # not in the server's part


def test_the_parts_add_up_to_each_call(sim: SimProcess, http_client: HttpClient) -> None:
    config = make_config(base_url=sim.base_url, model="fastagent-sim", http_client=http_client)

    async def main() -> list[object]:
        async with LLMClient(config) as client:
            return [
                (await client.complete([Message("user", f"Implement def f{i}(): pass")])).parts
                for i in range(CALLS)
            ]

    for parts in uvloop.run(main()):
        assert parts is not None and parts.server is not None  # type: ignore[attr-defined]
        total = parts.pre_send + parts.endpoint_queue + parts.server + parts.last_byte_lag  # type: ignore[attr-defined]
        assert abs(total - parts.e2e) < 1e-9  # type: ignore[attr-defined]
        assert parts.pre_send >= 0 and parts.last_byte_lag >= 0  # type: ignore[attr-defined]
        # the endpoint may read the request before the runtime has read its clock after the
        # write returned: a queue of a few microseconds below zero is that, not an error
        assert parts.endpoint_queue > -0.001  # type: ignore[attr-defined]
