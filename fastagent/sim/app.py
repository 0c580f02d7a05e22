"""The simulated endpoint's aiohttp application: :class:`SimApp` and its handlers.

Endpoints: ``GET /v1/models``, ``GET /v1/sim/plan`` (the profile and each task's outcome),
``GET /v1/sim/stats`` (the chat requests served and the faults injected, by kind),
``GET /health`` and ``POST /v1/chat/completions``, streamed (:mod:`.stream`) or not
(:mod:`.body`). A chat request is checked, matched to its task and planned reply, drawn
for a fault (:mod:`.faults`), and answered.
"""

from __future__ import annotations

import itertools
import os
import time
from pathlib import Path

import msgspec
from aiohttp import web

from .body import BodyCompletion
from .conn import close
from .data import SimData
from .faults import FAULTS, Fault, FaultKind, HttpError, pick_fault
from .profile import SimProfile
from .stream import StreamedCompletion
from .wire import (
    JSON_HEADERS,
    Answer,
    ChatRequest,
    Message,
    Pace,
    Usage,
    decode_request,
    encode,
    error_body,
    http_error_body,
    models_body,
    plan_body,
    stats_body,
)

__all__ = ["MAX_BODY", "SimApp"]

#: The largest request body the endpoint reads.
MAX_BODY = 64 * 1024 * 1024


class _BadRequest(ValueError):
    """A chat request the endpoint answers with 400; the message says why."""


class SimApp:
    """The handlers, over the data loaded and encoded once at start.

    Raises :class:`~fastagent.errors.SimDataError` when the data files are unusable.
    """

    def __init__(
        self, profile: SimProfile, tasks_path: str | Path, solutions_path: str | Path
    ) -> None:
        self.profile = profile
        self.data = SimData(profile, Path(tasks_path), Path(solutions_path))
        self.requests = 0
        self.injected: dict[FaultKind, int] = dict.fromkeys(FaultKind, 0)
        self._pace = Pace.of(profile)
        self._model_json = encode(profile.model)
        self._ids = itertools.count(1)
        self._id_prefix = f"chatcmpl-sim{os.getpid():x}x".encode()
        self._models_body = models_body(profile.model, int(time.time()))
        self._plan_body = plan_body(profile, self.data.plan)
        self._error_bodies = {
            kind: http_error_body(fault.http_error)
            for kind, fault in FAULTS.items()
            if fault.http_error is not None
        }

    def application(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY)
        app.router.add_get("/v1/models", self.models)
        app.router.add_get("/v1/sim/plan", self.sim_plan)
        app.router.add_get("/v1/sim/stats", self.sim_stats)
        app.router.add_get("/health", self.health)
        app.router.add_post("/v1/chat/completions", self.chat)
        return app

    # ---- the small endpoints ----

    async def models(self, request: web.Request) -> web.Response:
        return web.Response(body=self._models_body, headers=JSON_HEADERS)

    async def sim_plan(self, request: web.Request) -> web.Response:
        return web.Response(body=self._plan_body, headers=JSON_HEADERS)

    async def sim_stats(self, request: web.Request) -> web.Response:
        body = stats_body(self.requests, self.injected)
        return web.Response(body=body, headers=JSON_HEADERS)

    async def health(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")

    # ---- chat completions ----

    async def chat(self, request: web.Request) -> web.StreamResponse:
        received = time.monotonic()
        try:
            req = _checked(await request.read())
        except _BadRequest as exc:
            body = error_body(str(exc), "invalid_request_error")
            return web.Response(status=400, body=body, headers=JSON_HEADERS)
        answer = self._answer(req, received)
        fault = answer.fault
        if fault is not None and fault.http_error is not None:
            return self._http_error(fault.kind, fault.http_error, answer)
        if fault is not None and fault.refuse:
            close(request)
            return web.Response()
        if req.stream:
            return await StreamedCompletion(request, answer, self._pace, self._model_json).send()
        return await BodyCompletion(request, answer, self._pace, self.profile.model).send()

    def _answer(self, req: ChatRequest, received: float) -> Answer:
        """Decide the answer: the planned reply (or the fault's), cut to the token limit."""
        prompt_chars, retry, first_user = _conversation(req.messages)
        task_id = self.data.index.find(first_user) if first_user else None
        reply = self.data.reply(task_id, retry)
        fault = self._next_fault()
        if fault is not None and fault.reply is not None:
            reply = self.data.fault_replies[fault.kind]
        n_tokens, finish = len(reply.tokens), "stop"
        limit = req.token_limit
        if limit is not None and limit < n_tokens:
            n_tokens, finish = limit, "length"
        prompt_tokens = prompt_chars // 4
        usage = Usage(prompt_tokens, n_tokens, prompt_tokens + n_tokens)
        cid = self._id_prefix + b"%08x" % next(self._ids)
        return Answer(received, reply, n_tokens, finish, usage, cid, int(time.time()), fault)

    def _next_fault(self) -> Fault | None:
        """Count the request; the fault that hits it, counted too, or None."""
        self.requests += 1
        kind = pick_fault(self.profile.faults, self.profile.seed, self.requests)
        if kind is None:
            return None
        self.injected[kind] += 1
        return FAULTS[kind]

    def _http_error(self, kind: FaultKind, error: HttpError, answer: Answer) -> web.Response:
        headers = answer.headers(JSON_HEADERS)
        headers.update(error.headers)
        return web.Response(status=error.status, body=self._error_bodies[kind], headers=headers)


def _checked(raw: bytes) -> ChatRequest:
    """The request decoded; _BadRequest unless it is one the endpoint answers."""
    try:
        req = decode_request(raw)
    except msgspec.DecodeError as exc:
        raise _BadRequest(f"invalid request body: {exc}") from None
    if not req.messages:
        raise _BadRequest("'messages' must be a non-empty array")
    limit = req.token_limit
    if limit is not None and limit < 1:
        raise _BadRequest(f"'max_tokens' must be at least 1, got {limit}")
    return req


def _conversation(messages: list[Message]) -> tuple[int, bool, str | None]:
    """(characters of all messages, whether an assistant message is among them, the first
    user message's text or None)."""
    prompt_chars = 0
    retry = False
    first_user: str | None = None
    for message in messages:
        text = message.text()
        prompt_chars += len(text)
        if message.role == "assistant":
            retry = True
        elif first_user is None and message.role == "user":
            first_user = text
    return prompt_chars, retry, first_user
