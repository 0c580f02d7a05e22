"""Streaming chat-completion client for any OpenAI-compatible endpoint.

::

    async with LLMClient(config) as client:
        reply = await client.complete([Message("user", "Write hello world in Python")])
        print(reply.text, reply.ttft, reply.e2e)

One pooled transport per run (:mod:`fastagent._transports`): the lean HTTP/1.1 client by
default (it exists for the measured process's memory, see its docstring), or aiohttp
(``Config.http_client = HttpClient.AIOHTTP``, ``--http-client aiohttp``). Streams are parsed
incrementally from raw body chunks (a single SSE line may be longer than any line limit)
by the speedups' SSEParser and ``delta_content``. Connection errors, broken
or malformed streams (an SSE line past the parser's 1 MiB cap included), read and call
timeouts, 408, 409, 429 and 5xx are retried with exponential backoff and full jitter,
honouring Retry-After, within a bounded number of attempts and seconds; the whole turn
is retried and partial output discarded. Any other 4xx, and a completion larger than
``max_completion_bytes``, raises LLMError at once, carrying the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import random
import re
import time
from urllib.parse import urlsplit

import msgspec

from . import __version__
from ._deadlines import Deadlines
from ._transports import Response, Transport, open_transport
from .config import Config
from .errors import (
    ConnectFailed,
    FirstByteTimeout,
    LLMError,
    MalformedChunk,
    SSELineTooLong,
    StaleConnection,
)
from .speedups import SSEParser, delta_content
from .telemetry import (
    CallParts,
    Recorder,
    ServerDurations,
    ServerTiming,
    Telemetry,
    split_call,
    split_durations,
)

__all__ = ["Completion", "LLMClient", "LLMError", "Message"]

RETRYABLE_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504})
_DONE = b"[DONE]"
#: a chunk that ends its choice: a substring test on the bytes, not a decode per chunk
_FINISHED = re.compile(rb'"finish_reason"\s*:\s*"')
_COMPLETIONS = "/chat/completions"


class Message(msgspec.Struct, array_like=False, gc=False):
    """One chat message."""

    role: str
    content: str


class Completion(msgspec.Struct, gc=False):
    """One finished completion and what it cost (seconds on the monotonic clock)."""

    text: str
    chunks: int = 0
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    ttft: float | None = None
    e2e: float = 0.0
    retries: int = 0
    parts: CallParts | None = None


class _Usage(msgspec.Struct, gc=False):
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


class _ErrorBody(msgspec.Struct, gc=False):
    message: str = ""


class _Extras(msgspec.Struct, gc=False):
    usage: _Usage | None = None
    # decoded on its own: a server whose timing has another shape still has its usage read
    fastagent_timing: msgspec.Raw = msgspec.Raw()
    timings: msgspec.Raw = msgspec.Raw()  # llama-server's own durations
    error: _ErrorBody | str | None = None


class _Props(msgspec.Struct, gc=False):
    build_info: str | None = None


class _Request(msgspec.Struct, omit_defaults=True, gc=False):
    model: str
    messages: list[Message]
    stream: bool
    max_tokens: int | None = None
    temperature: float | None = None
    seed: int | None = None
    stream_options: dict[str, bool] | None = None


_decode_extras = msgspec.json.Decoder(_Extras).decode
_decode_timing = msgspec.json.Decoder(ServerTiming).decode
_decode_durations = msgspec.json.Decoder(ServerDurations).decode
_decode_props = msgspec.json.Decoder(_Props).decode
_encode = msgspec.json.Encoder().encode


class _Attempt:
    """Mutable per-attempt state of one streamed call; discarded when the turn is retried."""

    __slots__ = (
        "chunks", "done", "done_at", "durations", "finished", "first", "last", "text",
        "timing", "usage",
    )  # fmt: skip

    def __init__(self) -> None:
        # The reply accumulates as UTF-8 in one buffer: one str object per streamed token
        # would cost ~50 bytes of object header per few characters, for every agent.
        self.text = bytearray()
        self.chunks = 0
        self.done = False
        self.done_at = 0.0
        self.first: float | None = None
        self.last = 0.0
        self.usage: _Usage | None = None
        self.timing: ServerTiming | None = None
        self.durations: ServerDurations | None = None
        #: a choice's finish_reason came: [DONE] without one is a truncated stream
        self.finished = False


class LLMClient:
    """Chat completions over one pooled HTTP transport; use as an async context manager."""

    def __init__(self, config: Config, telemetry: Telemetry | None = None) -> None:
        if not config.base_url:
            raise ValueError("LLMClient needs config.base_url")
        self.config = config
        self.telemetry = telemetry or Telemetry()
        base = urlsplit(config.base_url.rstrip("/"))
        self.origin = f"{base.scheme}://{base.netloc}"
        self.path = base.path
        self.url = f"{self.origin}{self.path}/chat/completions"
        self.models_url = f"{self.origin}{self.path}/models"
        self._transport: Transport | None = None
        self._rng = random.Random()
        #: The run's timeouts (calls here, reads in the wire client, tasks in the agents).
        self.deadlines = Deadlines(
            min(
                0.5,
                config.first_byte_timeout / 4,
                config.read_timeout / 4,
                config.call_timeout / 4,
                config.task_timeout / 4,
            )
        )

    async def __aenter__(self) -> LLMClient:
        config = self.config
        headers = {
            "Content-Type": "application/json",
            "Accept": "text/event-stream",
            "User-Agent": f"fastagent/{__version__}",
        }
        if config.api_key:
            headers["Authorization"] = f"Bearer {config.api_key}"
        self._transport = open_transport(
            config.http_client,
            self.origin,
            headers,
            limit=config.concurrency,
            connect_timeout=config.connect_timeout,
            first_byte_timeout=config.first_byte_timeout,
            read_timeout=config.read_timeout,
            rcvbuf=config.socket_rcvbuf,
            deadlines=self.deadlines,
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._transport is not None:
            await self._transport.close()
            self._transport = None

    @property
    def transport(self) -> Transport:
        if self._transport is None:
            raise RuntimeError("use LLMClient as 'async with LLMClient(config) as client'")
        return self._transport

    async def fetch(self, path: str, timeout: float) -> tuple[int, bytes]:
        """GET {base_url}{path}: the status and up to 1 MiB of body, within ``timeout`` seconds.

        Raises LLMError (cause ``connect``) when the endpoint cannot be reached.
        """
        url = f"{self.origin}{self.path}{path}"
        try:
            async with asyncio.timeout(timeout):
                async with await self.transport.request("GET", self.path + path) as resp:
                    return resp.status, await resp.read(1 << 20)
        except (TimeoutError, OSError) as exc:
            raise LLMError(f"cannot reach {url}: {_describe(exc)}", "connect") from exc

    async def identify(self, timeout: float = 5.0) -> str | None:
        """The server's name and build: the ``Server`` header of GET {origin}/props, with
        its ``build_info`` where it answers one (llama.cpp's llama-server); None when the
        server says neither or does not answer."""
        try:
            async with asyncio.timeout(timeout):
                async with await self.transport.request("GET", "/props") as resp:
                    header, status = resp.header("Server"), resp.status
                    body = await resp.read(1 << 20)
        except (TimeoutError, OSError, LLMError):
            return None
        build = None
        if status == 200:
            with contextlib.suppress(msgspec.DecodeError, msgspec.ValidationError):
                build = _decode_props(body).build_info
        return " ".join(part for part in (header, build) if part) or None

    async def warm(self, connections: int) -> int:
        """Open up to ``connections`` pooled connections now, each with a GET /models run at
        once with the others, so that later requests find them ready; how many answered."""
        path = self.path + "/models"

        async def one() -> bool:
            async with await self.transport.request("GET", path) as resp:
                await resp.read(1 << 20)
                return resp.status == 200

        done = await asyncio.gather(*(one() for _ in range(connections)), return_exceptions=True)
        return sum(result is True for result in done)

    async def list_models(self) -> list[str]:
        """The ids GET {base_url}/models reports; LLMError when the endpoint does not answer."""
        status, body = await self.fetch("/models", self.config.connect_timeout + 5)
        if status != 200:
            raise LLMError(
                f"GET {self.models_url} answered HTTP {status}: {_server_message(body)}",
                f"http_{status}",
            )
        try:
            listing = msgspec.json.decode(body)
            return [str(m["id"]) for m in listing["data"]]
        except (msgspec.DecodeError, KeyError, TypeError) as exc:
            raise LLMError(
                f"{self.models_url} is not an OpenAI-compatible /models endpoint", "not_openai"
            ) from exc

    async def complete(self, messages: list[Message], *, task: str = "") -> Completion:
        """One chat completion, retried as the module docstring says."""
        config = self.config
        telemetry = self.telemetry
        started = time.monotonic()
        deadline = started + config.retry_budget
        retries = 0
        while True:
            try:
                completion = await self._attempt(messages, task)
            except LLMError as exc:
                error = exc
            else:
                completion.retries = retries
                return completion
            if not error.retryable or retries >= config.llm_retries:
                if retries:
                    error.args = (f"{error.args[0]} (after {retries} retries)",)
                error.retries = retries
                raise error
            # a kept-alive connection the server had closed: nothing was answered, send again
            # at once (on a new connection); any other error backs off
            stale = error.cause == "stale_connection"
            delay = 0.0 if stale else self._backoff(retries, error.retry_after)
            if time.monotonic() + delay > deadline:
                spent = LLMError(
                    f"{error.args[0]} (retry budget of {config.retry_budget:g}s spent)",
                    error.cause,
                )
                spent.retries = retries
                raise spent
            retries += 1
            telemetry.count(telemetry.retry_causes, error.cause)
            telemetry.event("retry", task=task, cause=error.cause, delay=round(delay, 3))
            if delay:
                await asyncio.sleep(delay)

    def _backoff(self, retries: int, retry_after: float | None) -> float:
        config = self.config
        ceiling = min(config.backoff_max, config.backoff_base * (2**retries))
        delay = self._rng.uniform(0.0, ceiling)
        if retry_after is not None:
            delay = max(delay, min(retry_after, config.backoff_max))
        return delay

    def _body(self, messages: list[Message]) -> bytes:
        config = self.config
        return _encode(
            _Request(
                model=config.model or "default",
                messages=messages,
                stream=config.stream,
                max_tokens=config.max_tokens,
                temperature=config.temperature,
                seed=config.seed,
                stream_options={"include_usage": True} if config.stream else None,
            )
        )

    async def _send(self, messages: list[Message]) -> Response:
        # The body is encoded for each send, once a connection is ready, and not kept: the
        # messages share the task's text with every other agent on it, an encoded body
        # would be each agent's own.
        body = functools.partial(self._body, messages)
        return await self.transport.request("POST", self.path + _COMPLETIONS, body)

    async def _attempt(self, messages: list[Message], task: str) -> Completion:
        telemetry = self.telemetry
        telemetry.llm_calls += 1
        telemetry.event("request", task=task)
        sent = time.monotonic()
        # the call's deadline runs from the response's first byte: before it the request may
        # wait in the server's queue, which only the first-byte timeout bounds
        deadline = self.deadlines.timeout(self.config.call_timeout)
        try:
            async with await self._send(messages) as resp:
                written, first_byte = resp.written, resp.first_byte
                async with deadline:
                    if resp.status != 200:
                        raise await self._status_error(resp)
                    if not resp.header("Content-Type").startswith("text/event-stream"):
                        state = await self._read_body(resp)
                    else:
                        # inline rather than a method: one coroutine frame less per agent
                        state = _Attempt()
                        parser = SSEParser()

                        def sink(raw: bytes | memoryview) -> bool:
                            # called as bytes arrive (by the wire client's protocol itself): no
                            # backlog is buffered, the agent's task wakes once, at the end
                            state.done = self._feed(state, parser.feed(raw), sent, task)
                            return state.done

                        await resp.drain(sink)
                        if not (state.done or self._feed(state, parser.close(), sent, task)):
                            raise LLMError("stream ended before [DONE]", "stream_truncated", True)
        except LLMError:
            raise
        except SSELineTooLong as exc:
            raise LLMError(f"malformed stream: {exc}", "line_too_long", True) from exc
        except MalformedChunk as exc:
            raise LLMError(f"malformed stream: {exc}", "malformed_stream", True) from exc
        except UnicodeDecodeError as exc:
            raise LLMError(f"invalid UTF-8 in stream: {exc}", "malformed_stream", True) from exc
        except StaleConnection as exc:
            # the server may have read the request before it closed: counted as a retry (a
            # request sent again), without the backoff (complete())
            raise LLMError(f"{_describe(exc)}", "stale_connection", True) from exc
        except FirstByteTimeout as exc:
            # the server has not begun the request: sending it again would only put it at
            # the back of the same queue
            raise LLMError(
                f"no response began within {self.config.first_byte_timeout:g}s",
                "first_byte_timeout",
            ) from exc
        except TimeoutError as exc:
            if deadline.expired:
                raise LLMError(
                    f"no complete answer within {self.config.call_timeout:g}s of its first byte",
                    "call_timeout",
                    True,
                ) from exc
            raise LLMError(
                f"no data for {self.config.read_timeout:g}s", "read_timeout", True
            ) from exc
        except ConnectFailed as exc:
            raise LLMError(f"cannot connect: {_describe(exc)}", "connect", True) from exc
        except OSError as exc:
            raise LLMError(f"connection broken: {_describe(exc)}", "connection", True) from exc
        self.telemetry.hist["first_byte_wait"].add(first_byte - written)
        if state.durations is not None and state.timing is None:
            parts = split_durations(sent, written, state.first, state.done_at, state.durations)
        else:
            parts = split_call(sent, written, state.first, state.done_at, state.timing)
        return self._finish(state, sent, parts, task)

    def _feed(self, state: _Attempt, payloads: list[bytes], sent: float, task: str) -> bool:
        """Take one read's events; True once [DONE] came."""
        cap = self.config.max_completion_bytes
        itl = self.telemetry.hist["itl"]
        for payload in payloads:
            if payload == _DONE:
                if not state.finished:
                    raise LLMError(
                        "stream ended at [DONE] without a finish_reason", "stream_truncated", True
                    )
                state.done_at = time.monotonic()
                return True
            if not state.finished and _FINISHED.search(payload):
                state.finished = True
            first = state.chunks == 0
            if self._take(state, payload, cap, itl) and first:
                self.telemetry.event("first_token", task=task, ttft=round(state.last - sent, 6))
        return False

    def _take(self, state: _Attempt, payload: bytes, cap: int, itl: Recorder) -> bool:
        if not payload:
            return False
        content = delta_content(payload)
        if content:
            now = time.monotonic()
            if state.first is None:
                state.first = now
            else:
                itl.add(now - state.last)
            state.last = now
            state.chunks += 1
            state.text += content.encode()
            if len(state.text) > cap:
                raise LLMError(f"completion larger than {cap} bytes", "too_large", False)
            return True
        if content is None:
            self._take_extras(state, payload)
        return False

    def _take_extras(self, state: _Attempt, payload: bytes) -> None:
        try:
            extras = _decode_extras(payload)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return
        if extras.error is not None:
            message = extras.error if isinstance(extras.error, str) else extras.error.message
            raise LLMError(f"server error in stream: {message}", "stream_error", True)
        if extras.usage is not None:
            state.usage = extras.usage
        if extras.fastagent_timing:
            with contextlib.suppress(msgspec.DecodeError, msgspec.ValidationError):
                state.timing = _decode_timing(extras.fastagent_timing)
        if extras.timings:
            with contextlib.suppress(msgspec.DecodeError, msgspec.ValidationError):
                state.durations = _decode_durations(extras.timings)

    async def _read_body(self, resp: Response) -> _Attempt:
        cap = self.config.max_completion_bytes
        received = bytearray()
        while piece := await resp.read_chunk():
            received += piece
            if len(received) > cap:
                raise LLMError(f"response larger than {cap} bytes", "too_large", False)
        body = bytes(received)
        state = _Attempt()
        state.done_at = time.monotonic()
        content = delta_content(body)
        if content:
            now = time.monotonic()
            state.first = state.last = now
            state.chunks = 1
            state.text += content.encode()
        self._take_extras(state, body)
        return state

    async def _status_error(self, resp: Response) -> LLMError:
        body = await resp.read(64 * 1024)
        status = resp.status
        return LLMError(
            f"HTTP {status} from {self.url}: {_server_message(body)}",
            f"http_{status}",
            retryable=status in RETRYABLE_STATUS,
            retry_after=_retry_after(resp.header("Retry-After") or None),
        )

    def _finish(self, state: _Attempt, sent: float, parts: CallParts, task: str) -> Completion:
        telemetry = self.telemetry
        hist = telemetry.hist
        e2e = parts.e2e
        usage = state.usage
        tokens = usage.completion_tokens if usage and usage.completion_tokens else state.chunks
        completion = Completion(
            text=state.text.decode(),
            chunks=state.chunks,
            prompt_tokens=usage.prompt_tokens if usage else None,
            completion_tokens=usage.completion_tokens if usage else None,
            e2e=e2e,
            parts=parts,
        )
        hist["llm_e2e"].add(e2e)
        telemetry.output_tokens += tokens
        if state.first is not None:
            completion.ttft = state.first - sent
            hist["ttft"].add(completion.ttft)
            if tokens > 1:
                hist["tpot"].add((e2e - completion.ttft) / (tokens - 1))
        telemetry.add_parts(parts)
        telemetry.event(
            "completion",
            task=task,
            e2e=round(e2e, 6),
            chunks=state.chunks,
            tokens=tokens,
            chars=len(completion.text),
            **parts.trace_fields(),
        )
        return completion


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    import email.utils  # an HTTP-date Retry-After is rare; the module costs ~7 ms to import

    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _server_message(body: bytes) -> str:
    try:
        extras = _decode_extras(body)
    except (msgspec.DecodeError, msgspec.ValidationError):
        extras = None
    if extras is not None and extras.error is not None:
        message = extras.error if isinstance(extras.error, str) else extras.error.message
    else:
        message = body[:300].decode("utf-8", "replace").strip()
    return " ".join(message.split())[:300] or "(empty body)"


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return " ".join(text.split())[:300]
