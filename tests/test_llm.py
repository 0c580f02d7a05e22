"""LLMClient against real aiohttp servers on loopback: streaming, retries, errors, timeouts.

Every test runs once per HTTP client (the lean ``wire`` client and aiohttp).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
import pytest
import uvloop
from aiohttp import web

from fastagent.config import Config
from fastagent.errors import LLMError
from fastagent.llm import LLMClient, Message
from fastagent.schema import Latency
from fastagent.telemetry import Telemetry

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_HTTP_CLIENT = ["wire"]


@pytest.fixture(autouse=True, params=["wire", "aiohttp"])
def http_client(request: pytest.FixtureRequest) -> str:
    """Run each test with each HTTP client; ``run`` picks it up."""
    _HTTP_CLIENT[0] = request.param
    return str(request.param)


def chunk(content: str | None = None, **extra: object) -> bytes:
    delta = {} if content is None else {"content": content}
    body = {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": delta}], **extra}
    return b"data: " + msgspec.json.encode(body) + b"\n\n"


#: the end of a stream: a chunk that finishes the choice, then [DONE]
FINISH = b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n'
DONE = FINISH + b"data: [DONE]\n\n"


async def stream(
    request: web.Request, events: list[bytes], delay: float = 0.0
) -> web.StreamResponse:
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await resp.prepare(request)
    for event in events:
        await resp.write(event)
        if delay:
            await asyncio.sleep(delay)
    return resp


async def models(request: web.Request) -> web.Response:
    return web.json_response({"object": "list", "data": [{"id": "m1"}]})


def run(
    handler: Handler, body: Callable[[LLMClient], Awaitable[object]], **config: object
) -> object:
    """Serve ``handler`` at /v1/chat/completions on a free port and run ``body`` with a client."""

    async def main() -> object:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", handler)
        app.router.add_get("/v1/models", models)
        app.router.add_get("/props", props)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        settings = {
            "backoff_base": 0.01,
            "backoff_max": 0.05,
            "model": "m1",
            "concurrency": 4,
            "http_client": _HTTP_CLIENT[0],
            "base_url": f"http://127.0.0.1:{port}/v1",
        }
        settings.update(config)
        cfg = Config(**settings)  # type: ignore[arg-type]
        try:
            async with LLMClient(cfg, Telemetry()) as client:
                return await body(client)
        finally:
            await runner.cleanup()

    return uvloop.run(main())


async def props(request: web.Request) -> web.Response:
    """llama-server's GET /props, the part fastagent reads."""
    return web.json_response(
        {"build_info": "b1-0c1e570", "total_slots": 4}, headers={"Server": "llama.cpp"}
    )


def test_identify_names_the_server_and_its_build() -> None:
    async def body(client: LLMClient) -> object:
        return await client.identify()

    assert run(stream, body) == "llama.cpp b1-0c1e570"  # type: ignore[arg-type]


def test_identify_is_none_for_a_server_that_says_nothing() -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        return await stream(request, [chunk("a"), DONE])

    async def body(client: LLMClient) -> object:
        return await client.identify(timeout=2.0)

    # a server without /props (404) and no Server header of its own
    assert run(handler, body, base_url="http://127.0.0.1:1/v1") is None


def ask(client: LLMClient) -> Awaitable[object]:
    return client.complete([Message("user", "hi")], task="t")


def test_stream_joins_deltas_keeps_usage_and_stops_at_done() -> None:
    seen: list[dict] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        seen.append(await request.json())
        seen.append(dict(request.headers))
        usage = {"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 3}}
        return await stream(
            request,
            [
                b": keep-alive\n\n",
                chunk(""),
                chunk("Hel"),
                chunk("lo"),
                chunk(None),
                b"data: " + msgspec.json.encode(usage) + b"\n\n",
                DONE,
                chunk("ignored after DONE"),
            ],
        )

    result = run(handler, ask, api_key="sk-test", max_tokens=50, seed=3)
    assert result.text == "Hello"
    assert result.chunks == 2
    assert (result.prompt_tokens, result.completion_tokens) == (7, 3)
    assert result.retries == 0
    assert result.ttft is not None and 0 <= result.ttft <= result.e2e
    body, headers = seen
    assert body["stream"] is True and body["model"] == "m1"
    assert body["messages"] == [{"role": "user", "content": "hi"}]
    assert body["max_tokens"] == 50 and body["seed"] == 3
    assert body["stream_options"] == {"include_usage": True}
    assert headers["Authorization"] == "Bearer sk-test"


def test_no_auth_header_without_key() -> None:
    seen: list[str | None] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        seen.append(request.headers.get("Authorization"))
        return await stream(request, [chunk("x"), DONE])

    run(handler, ask)
    assert seen == [None]


def test_events_split_across_writes_and_lines_beyond_aiohttp_limit() -> None:
    big = "y" * 300_000

    async def handler(request: web.Request) -> web.StreamResponse:
        raw = chunk("a") + chunk(big) + chunk("b") + DONE
        pieces = [raw[i : i + 977] for i in range(0, len(raw), 977)]
        return await stream(request, pieces)

    result = run(handler, ask)
    assert result.text == "a" + big + "b"


def test_crlf_event_stream() -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        events = [e.replace(b"\n", b"\r\n") for e in (chunk("one "), chunk("two"))]
        return await stream(request, [*events, DONE.replace(b"\n", b"\r\n")])

    assert run(handler, ask).text == "one two"


def test_non_stream_body() -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        assert (await request.json())["stream"] is False
        return web.json_response(
            {
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "full"}}],
                "usage": {"prompt_tokens": 2, "completion_tokens": 1},
            }
        )

    result = run(handler, ask, stream=False)
    assert result.text == "full" and result.completion_tokens == 1


def test_stream_server_ignoring_stream_flag_is_read_as_a_body() -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        return web.json_response({"choices": [{"message": {"content": "plain"}}]})

    assert run(handler, ask).text == "plain"


def test_500_then_success_is_retried() -> None:
    calls: list[float] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        calls.append(time.monotonic())
        if len(calls) < 3:
            return web.json_response({"error": {"message": "overloaded"}}, status=500)
        return await stream(request, [chunk("ok"), DONE])

    telemetry_holder: list[Telemetry] = []

    async def body(client: LLMClient) -> object:
        telemetry_holder.append(client.telemetry)
        return await ask(client)

    result = run(handler, body)
    assert result.text == "ok" and result.retries == 2 and len(calls) == 3
    assert telemetry_holder[0].retry_causes == {"http_500": 2}


@pytest.mark.parametrize("status", [408, 409, 429, 502, 503, 504])
def test_retryable_statuses(status: int) -> None:
    calls: list[int] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        calls.append(1)
        if len(calls) == 1:
            return web.Response(status=status, text="busy")
        return await stream(request, [chunk("ok"), DONE])

    assert run(handler, ask).retries == 1


def test_retry_after_is_honoured() -> None:
    calls: list[float] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        calls.append(time.monotonic())
        if len(calls) == 1:
            return web.Response(status=429, headers={"Retry-After": "0.4"}, text="slow down")
        return await stream(request, [chunk("ok"), DONE])

    run(handler, ask, backoff_max=5.0)
    assert calls[1] - calls[0] >= 0.38


def test_non_retryable_4xx_carries_server_message() -> None:
    calls: list[int] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        calls.append(1)
        return web.json_response(
            {"error": {"message": "model 'm1' does not exist", "type": "invalid_request_error"}},
            status=404,
        )

    with pytest.raises(LLMError, match="does not exist") as info:
        run(handler, ask)
    assert info.value.cause == "http_404" and not info.value.retryable
    assert len(calls) == 1


def test_retry_budget_is_bounded() -> None:
    calls: list[int] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        calls.append(1)
        return web.Response(status=503, text="down")

    with pytest.raises(LLMError, match="after 3 retries") as info:
        run(handler, ask, llm_retries=3)
    assert info.value.cause == "http_503" and len(calls) == 4


def test_kept_alive_connection_closed_by_the_server_is_sent_again(http_client: str) -> None:
    calls: list[int] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        calls.append(1)
        await request.read()
        if len(calls) == 2:
            assert request.transport is not None
            request.transport.close()  # drop the reused connection without an answer
        return await stream(request, [chunk("ok"), DONE])

    async def body(client: LLMClient) -> list[object]:
        return [await ask(client), await ask(client)]

    async def body_with_causes(client: LLMClient) -> list[object]:
        return [*(await body(client)), dict(client.telemetry.retry_causes)]

    first, second, causes = run(handler, body_with_causes)  # type: ignore[misc]
    assert first.text == second.text == "ok" and len(calls) == 3
    # sent again and counted as a retry by both clients: the server may have read it
    assert second.retries == 1
    assert causes == ({"stale_connection": 1} if http_client == "wire" else {"connection": 1})


def test_truncated_stream_is_retried_whole() -> None:
    calls: list[int] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        calls.append(1)
        if len(calls) == 1:
            return await stream(request, [chunk("partial ")])
        return await stream(request, [chunk("whole"), DONE])

    result = run(handler, ask)
    assert result.text == "whole" and result.retries == 1


def test_silence_between_bytes_times_out_and_retries() -> None:
    calls: list[int] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        calls.append(1)
        if len(calls) == 1:
            resp = await stream(request, [chunk("stall")])
            await asyncio.sleep(5)
            return resp
        return await stream(request, [chunk("fresh"), DONE])

    async def timed(client: LLMClient) -> tuple[object, float, dict[str, int]]:
        t0 = time.monotonic()
        reply = await ask(client)
        return reply, time.monotonic() - t0, client.telemetry.retry_causes

    result, elapsed, causes = run(handler, timed, read_timeout=0.3)  # type: ignore[misc]
    assert result.text == "fresh" and result.retries == 1
    # the silence ended the first attempt (not the server's own end of it 5 s later)
    assert causes == {"read_timeout": 1} and elapsed >= 0.3


def test_connection_refused_is_a_connect_error() -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        raise AssertionError("not reached")

    with pytest.raises(LLMError) as info:
        run(handler, ask, llm_retries=2, base_url="http://127.0.0.1:9/v1")
    assert info.value.cause == "connect" and info.value.retries == 2


def test_malformed_chunk_is_retried() -> None:
    calls: list[int] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        calls.append(1)
        if len(calls) == 1:
            return await stream(request, [b'data: {"choices": [{"delta": {"content": "x"\n\n'])
        return await stream(request, [chunk("good"), DONE])

    result = run(handler, ask)
    assert result.text == "good" and result.retries == 1


def test_error_event_in_stream() -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        err = b'data: {"error": {"message": "context length exceeded"}}\n\n'
        return await stream(request, [err])

    with pytest.raises(LLMError, match="context length exceeded"):
        run(handler, ask, llm_retries=0)


def test_completion_size_cap() -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        return await stream(request, [chunk("z" * 1000) for _ in range(20)] + [DONE])

    with pytest.raises(LLMError, match="larger than") as info:
        run(handler, ask, max_completion_bytes=5000)
    assert info.value.cause == "too_large"


def test_timing_from_server_gives_overhead() -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        await request.read()
        started = time.monotonic()
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await asyncio.sleep(0.05)
        first = time.monotonic()
        await resp.write(chunk("a"))
        await asyncio.sleep(0.02)
        last = time.monotonic()
        timing = {"started": started, "first_byte": first, "last_byte": last}
        final = {"choices": [], "usage": {"completion_tokens": 2}, "fastagent_timing": timing}
        await resp.write(chunk("b") + b"data: " + msgspec.json.encode(final) + b"\n\n" + DONE)
        return resp

    result = run(handler, ask)
    parts = result.parts
    assert result.ttft >= 0.05 and parts is not None
    # the handler slept 50 + 20 ms between started and last_byte (timers may fire ~1 ms early)
    assert parts.server is not None and 0.065 <= parts.server < result.e2e
    assert parts.endpoint_queue is not None and parts.endpoint_queue >= 0
    assert parts.last_byte_lag is not None and parts.first_byte_lag is not None
    total = parts.pre_send + parts.endpoint_queue + parts.server + parts.last_byte_lag
    assert abs(total - result.e2e) < 1e-9  # the parts add up, call by call
    assert parts.runtime_overhead == parts.pre_send + parts.last_byte_lag


def test_llama_server_durations_split_the_call() -> None:
    """A server that reports only durations (llama-server's ``timings``): its time is
    prompt_ms + predicted_ms, the first byte's wait beyond prompt_ms is its queue."""

    async def handler(request: web.Request) -> web.StreamResponse:
        await request.read()
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await asyncio.sleep(0.08)  # 30 ms of it queued, 50 ms the prompt
        await resp.write(chunk("a"))
        await asyncio.sleep(0.04)
        timings = {"prompt_n": 9, "prompt_ms": 50.0, "predicted_n": 2, "predicted_ms": 40.0}
        final = {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
        await resp.write(chunk("b") + b"data: " + msgspec.json.encode(final | {"timings": timings}))
        await resp.write(b"\n\ndata: [DONE]\n\n")
        return resp

    parts = run(handler, ask).parts  # type: ignore[attr-defined]
    assert parts is not None and parts.server is not None and parts.endpoint_queue is not None
    assert parts.server <= 0.09 and parts.endpoint_queue >= 0.025  # timers fire ~1 ms early
    assert parts.first_byte_lag is None and parts.last_byte_lag is not None
    total = parts.pre_send + parts.endpoint_queue + parts.server + parts.last_byte_lag
    assert abs(total - parts.e2e) < 1e-9


@pytest.mark.parametrize("finish", [False, True])
def test_done_without_a_finish_reason_is_a_truncated_stream(finish: bool) -> None:
    """[DONE] with no finish_reason before it is retried as truncated; a finish_reason that
    comes with the last content counts."""
    calls = []

    async def handler(request: web.Request) -> web.StreamResponse:
        calls.append(1)
        last = chunk("b") if len(calls) == 1 else FINISH
        if finish:  # the finish_reason beside the content, as some servers send it
            last = b'data: {"choices":[{"delta":{"content":"b"},"finish_reason": "length"}]}\n\n'
        return await stream(request, [chunk("a"), last, b"data: [DONE]\n\n"])

    async def body(client: LLMClient) -> object:
        return await ask(client), client.telemetry.retry_causes

    result, causes = run(handler, body)  # type: ignore[misc]
    assert result.text == "ab" if finish else result.text == "a"
    assert (len(calls), causes) == ((1, {}) if finish else (2, {"stream_truncated": 1}))


def test_an_endpoint_without_timing_leaves_its_parts_unknown() -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        return await stream(request, [chunk("a"), chunk("b"), DONE])

    async def body(client: LLMClient) -> object:
        return await ask(client), client.telemetry.latency()

    result, latency = run(handler, body)  # type: ignore[misc]
    parts = result.parts
    assert parts is not None and parts.pre_send >= 0 and parts.e2e == result.e2e
    assert parts.endpoint_queue is None and parts.server is None and parts.runtime_overhead is None
    assert latency.pre_send_ms.count == 1 and latency.runtime_overhead_ms.count == 0


def test_list_models() -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        raise AssertionError("not reached")

    async def body(client: LLMClient) -> object:
        return await client.list_models()

    assert run(handler, body) == ["m1"]


# ---- a server that queues requests ------------------------------------------------------------


def test_a_queued_request_is_waited_for_not_retried() -> None:
    """A server with busy slots sends nothing until it starts a request: waiting longer than
    the read timeout (and the call timeout) for the first byte is no fault."""
    calls: list[int] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        calls.append(1)
        await request.read()
        await asyncio.sleep(1.0)  # queued: not a byte sent
        return await stream(request, [chunk("at last"), DONE])

    async def body(client: LLMClient) -> tuple[object, Latency]:
        return await ask(client), client.telemetry.latency()

    result, latency = run(handler, body, read_timeout=0.2, call_timeout=0.5)  # type: ignore[misc]
    assert result.text == "at last" and result.retries == 0 and len(calls) == 1
    assert latency.first_byte_wait_ms.p50 is not None and latency.first_byte_wait_ms.p50 >= 990


def test_a_request_never_begun_ends_without_a_retry() -> None:
    calls: list[int] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        calls.append(1)
        await request.read()
        await asyncio.sleep(3)  # far past the client's first-byte timeout
        raise AssertionError("the client left long ago")

    with pytest.raises(LLMError, match=r"no response began within 0\.5s") as info:
        run(handler, ask, first_byte_timeout=0.5, llm_retries=3)
    assert info.value.cause == "first_byte_timeout" and info.value.retries == 0
    assert len(calls) == 1


def test_the_call_deadline_runs_from_the_first_byte() -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        await request.read()
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(chunk("a"))
        await asyncio.sleep(3)  # far past the client's call deadline
        return resp

    with pytest.raises(LLMError, match=r"within 0\.4s of its first byte") as info:
        run(handler, ask, call_timeout=0.4, read_timeout=20, llm_retries=0)
    assert info.value.cause == "call_timeout"


def test_warm_opens_the_connections_the_agents_will_use(http_client: str) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        return await stream(request, [chunk("ok"), DONE])

    def idle(client: LLMClient) -> int:
        transport: Any = client.transport  # each pool's own idle list
        if http_client == "wire":
            return len(transport._idle)
        return sum(len(conns) for conns in transport.session.connector._conns.values())

    async def body(client: LLMClient) -> list[object]:
        warmed = await client.warm(3)
        before = idle(client)
        replies = await asyncio.gather(*(ask(client) for _ in range(3)))
        return [warmed, before, idle(client), *replies]

    warmed, before, after, *replies = run(handler, body)  # type: ignore[misc]
    assert warmed == 3 and before == 3  # three connections open and idle before any call
    assert after == 3  # the three calls took them and gave them back: none opened meanwhile
    assert all(r.text == "ok" for r in replies)
