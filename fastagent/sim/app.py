"""The simulated endpoint's handlers: :class:`SimApp`, over the lean server of :mod:`.conn`.

Endpoints: ``GET /v1/models``, ``GET /v1/sim/plan`` (the profile and each task's outcome),
``GET /v1/sim/stats`` (the chat requests served and the faults injected, by kind),
``GET /v1/sim/run`` and ``POST /v1/sim/run/reset`` (a run's figures, :mod:`.counters`),
``GET /health`` and ``POST /v1/chat/completions``, streamed (:mod:`.stream`) or not
(:mod:`.body`). A chat request waits the profile's ``start_delay_ms`` (on the pacer's
timer, never blocking another), then is checked, matched to its task (the spec found in any
of its system or user messages; counted as unplaced when in none) and planned reply,
drawn for a fault (:mod:`.faults`), and answered. Handlers are plain functions of the
connection and the request: nothing in a request's path is a coroutine.
"""

from __future__ import annotations

import itertools
import os
import time
from pathlib import Path

import msgspec

from .body import BodyCompletion
from .conn import JSON, MAX_BODY, TEXT, Conn, Request, Routes, route
from .counters import Counters
from .data import SimData
from .faults import FAULTS, Fault, FaultKind
from .pacer import Pacer
from .profile import SimProfile
from .stream import StreamedCompletion
from .wire import (
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


class _BadRequest(ValueError):
    """A chat request the endpoint answers with 400; the message says why."""


class _Delayed:
    """A chat request waiting out the profile's start delay on the pacer."""

    __slots__ = ("app", "conn", "request")

    def __init__(self, app: SimApp, conn: Conn, request: Request) -> None:
        self.app = app
        self.conn = conn
        self.request = request

    def wake(self, due: float) -> None:
        if self.conn.exchange is self:
            self.conn.exchange = None
            self.app.start_chat(self.conn, self.request, time.monotonic())

    def gone(self) -> None:
        self.app.exchange_over()


class SimApp:
    """The handlers, over the data loaded and encoded once at start.

    Raises :class:`~fastagent.errors.SimDataError` when the data files are unusable.
    ``counters`` numbers the chat requests and counts the faults: this process's own by
    default, or ones shared by worker processes.
    """

    def __init__(
        self,
        profile: SimProfile,
        tasks_path: str | Path,
        solutions_path: str | Path,
        counters: Counters | None = None,
    ) -> None:
        self.profile = profile
        self.data = SimData(profile, Path(tasks_path), Path(solutions_path))
        self.counters = counters or Counters()
        self.pacer = Pacer()
        self._pace = Pace.of(profile)
        self._model_json = encode(profile.model)
        self._ids = itertools.count(1)
        self._id_prefix = f"chatcmpl-sim{os.getpid():x}x".encode()
        self._models_body = models_body(profile.model, int(time.time()))
        self._plan_body = plan_body(profile, self.data.plan)
        self._errors = {
            kind: (
                fault.http_error.status,
                http_error_body(fault.http_error),
                b"".join(
                    b"%s: %s\r\n" % (k.encode(), v.encode()) for k, v in fault.http_error.headers
                ),
            )
            for kind, fault in FAULTS.items()
            if fault.http_error is not None
        }
        self.routes: Routes = {
            b"/v1/models": {b"GET": self.models},
            b"/v1/sim/plan": {b"GET": self.sim_plan},
            b"/v1/sim/stats": {b"GET": self.sim_stats},
            b"/v1/sim/run": {b"GET": self.sim_run},
            b"/v1/sim/run/reset": {b"POST": self.sim_run_reset},
            b"/health": {b"GET": self.health},
            b"/v1/chat/completions": {b"POST": self.chat},
        }

    @property
    def requests(self) -> int:
        """The chat requests counted so far."""
        return self.counters.snapshot()[0]

    @property
    def injected(self) -> dict[FaultKind, int]:
        """The faults injected so far, by kind."""
        return self.counters.snapshot()[1]

    def route(self, conn: Conn, request: Request) -> None:
        """Answer ``request`` (the connection's router)."""
        route(self.routes, conn, request)

    def reseed_ids(self) -> None:
        """A new completion-id prefix, for a worker process forked from this one."""
        self._id_prefix = f"chatcmpl-sim{os.getpid():x}x".encode()

    # ---- the small endpoints ----

    def models(self, conn: Conn, request: Request) -> None:
        conn.respond(200, self._models_body, JSON)

    def sim_plan(self, conn: Conn, request: Request) -> None:
        conn.respond(200, self._plan_body, JSON)

    def sim_stats(self, conn: Conn, request: Request) -> None:
        conn.respond(200, stats_body(*self.counters.snapshot()), JSON)

    def sim_run(self, conn: Conn, request: Request) -> None:
        conn.respond(200, encode(self.counters.run()), JSON)

    def sim_run_reset(self, conn: Conn, request: Request) -> None:
        conn.respond(200, encode(self.counters.reset()), JSON)

    def health(self, conn: Conn, request: Request) -> None:
        conn.respond(200, b"ok", TEXT)

    # ---- chat completions ----

    def chat(self, conn: Conn, request: Request) -> None:
        """Start the request now, or once the profile's start delay has passed."""
        self.counters.arrived()
        delay = self._pace.start_delay
        if delay > 0:
            waiting = _Delayed(self, conn, request)
            conn.exchange = waiting
            self.pacer.at(request.read + delay, waiting)
        else:
            self.start_chat(conn, request, time.monotonic())

    def chat_done(self) -> None:
        """Called once a chat request's exchange is over: its response ended, or its client
        left (a hook; tests use it)."""

    def exchange_over(self) -> None:
        """A chat request's exchange is over: no longer in progress; then :meth:`chat_done`."""
        self.counters.left()
        self.chat_done()

    def start_chat(self, conn: Conn, request: Request, started: float) -> None:
        """Handle a chat request that started at ``started``."""
        try:
            req = _checked(request.body)
        except _BadRequest as exc:
            conn.respond(400, error_body(str(exc), "invalid_request_error"), JSON)
            self.exchange_over()
            return
        answer = self._answer(req, request.accepted, started)
        fault = answer.fault
        if fault is not None and (fault.http_error is not None or fault.refuse):
            if fault.refuse:
                conn.close()
            else:
                status, body, headers = self._errors[fault.kind]
                conn.respond(status, body, JSON, headers)
            self.exchange_over()
        elif req.stream:
            pace, pacer, done, served = self._pace, self.pacer, self.exchange_over, self.served
            StreamedCompletion(conn, answer, pace, pacer, self._model_json, done, served).start()
        else:
            BodyCompletion(
                conn,
                answer,
                self._pace,
                self.pacer,
                self.profile.model,
                self.exchange_over,
                self.served,
            ).start()

    def served(self, answer: Answer, first_byte: float, last_byte: float) -> None:
        """An answer written in full: into the run's figures."""
        started = answer.started
        self.counters.served(answer.n_tokens, first_byte - started, last_byte - started)

    def _answer(self, req: ChatRequest, accepted: float, started: float) -> Answer:
        """Decide the answer: the planned reply (or the fault's), cut to the token limit."""
        prompt_chars, retry, texts = _conversation(req.messages)
        task_id = None
        for text in texts:
            task_id = self.data.index.find(text)
            if task_id is not None:
                break
        else:
            self.counters.unplaced()
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
        created = int(time.time())
        return Answer(accepted, started, reply, n_tokens, finish, usage, cid, created, fault)

    def _next_fault(self) -> Fault | None:
        """Count the request; the fault that hits it, counted too, or None."""
        kind = self.counters.next_request(self.profile.faults, self.profile.seed)
        return None if kind is None else FAULTS[kind]


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


def _conversation(messages: list[Message]) -> tuple[int, bool, list[str]]:
    """(characters of all messages, whether an assistant message is among them, the texts
    of the others, in order: where the task's spec may be, whatever a stack's wording)."""
    prompt_chars = 0
    retry = False
    texts: list[str] = []
    for message in messages:
        text = message.text()
        prompt_chars += len(text)
        if message.role == "assistant":
            retry = True
        elif text:
            texts.append(text)
    return prompt_chars, retry, texts
