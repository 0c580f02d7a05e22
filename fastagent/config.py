"""The run's settings as one frozen struct: every default, type, bound and help text once.

    >>> Config(concurrency=10, tasks=5).concurrency
    10
    >>> Config().http_client is HttpClient.WIRE
    True

``fastagent bench``'s flags and environment variables are built from these fields by
:mod:`fastagent.cli`: a field whose metadata carries a description is a flag
(``--field-name``, or the ``flag`` its metadata names), ``env`` names the environment
variable it also reads (the flag wins), and the value is converted and checked against the
field's own type and bounds. Build a Config from untrusted values with :func:`make_config`,
which checks them; the constructor itself does not.
"""

from __future__ import annotations

import enum
import math
import os
from typing import Annotated, Any
from urllib.parse import urlsplit

import msgspec
from msgspec import Meta

__all__ = [
    "API_KEY_ENV",
    "Config",
    "HttpClient",
    "VerifyMode",
    "default_max_procs",
    "make_config",
]

#: Where the endpoint's key is read from, first found wins; it is never a flag.
API_KEY_ENV = ("LLM_API_KEY", "OPENAI_API_KEY")


class HttpClient(enum.StrEnum):
    """The HTTP client of the LLM calls."""

    #: fastagent's lean HTTP/1.1 client on uvloop protocols and llhttp (the default)
    WIRE = "wire"
    #: aiohttp's ClientSession, one flag away for comparison
    AIOHTTP = "aiohttp"


class VerifyMode(enum.StrEnum):
    """How an attempt is judged."""

    #: ``python3 -B -m pytest`` in the sandbox, the verdict from the probe plugin
    PYTEST = "pytest"
    #: one cheap process that fails exactly the simulated endpoint's wrong answers
    TRIVIAL = "trivial"


def default_max_procs() -> int:
    """One test process per core: pytest start-up is CPU-bound, more only queues in the kernel."""
    return max(1, os.cpu_count() or 1)


def _flag(
    help: str,
    *,
    group: str,
    env: str | None = None,
    metavar: str | None = None,
    flag: str | None = None,
) -> Meta:
    """Metadata that makes a field a ``fastagent bench`` flag (see :mod:`fastagent.cli`)."""
    return Meta(
        description=help, extra={"group": group, "env": env, "metavar": metavar, "flag": flag}
    )


Positive = Annotated[int, Meta(ge=1)]
#: A name or path: not empty.
Text = Annotated[str, Meta(min_length=1)]
Count = Annotated[int, Meta(ge=0)]
#: A duration in seconds: positive, finite and at most a year.
Seconds = Annotated[float, Meta(gt=0, le=31_536_000)]

_ENDPOINT, _WORKLOAD, _OUTPUT = "endpoint", "workload", "output"


class Config(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Everything one ``fastagent bench`` run needs; ``fastagent bench --help`` shows each flag."""

    # ---- endpoint ----
    base_url: Annotated[
        Text | None,
        _flag(
            "OpenAI-compatible base URL, e.g. http://host:8000/v1 "
            "(default: the built-in simulated endpoint)",
            group=_ENDPOINT,
            env="LLM_BASE_URL",
            metavar="URL",
        ),
    ] = None
    model: Annotated[
        Text | None,
        _flag("model name (default: the first of /models)", group=_ENDPOINT, env="LLM_MODEL"),
    ] = None
    api_key: str | None = None
    stream: Annotated[
        bool, _flag("ask for non-streamed completions", group=_ENDPOINT, flag="--no-stream")
    ] = True
    max_tokens: Annotated[
        Positive | None, _flag("max_tokens sent with each request", group=_ENDPOINT, metavar="N")
    ] = None
    temperature: Annotated[
        Annotated[float, Meta(ge=0, le=2)] | None,
        _flag("sampling temperature sent with each request", group=_ENDPOINT, metavar="T"),
    ] = 0.0
    seed: Annotated[int | None, _flag("seed sent with each request", group=_ENDPOINT)] = None
    sim_profile: Annotated[
        str,
        _flag(
            "profile of the built-in endpoint, e.g. ttft_ms=200,itl_ms=5,seed=1 "
            "(see 'fastagent sim --help')",
            group=_ENDPOINT,
            metavar="K=V,...",
        ),
    ] = ""
    connect_timeout: Annotated[
        Seconds, _flag("deadline of one connection attempt", group=_ENDPOINT, metavar="S")
    ] = 10.0
    first_byte_timeout: Annotated[
        Seconds,
        _flag(
            "longest wait for a response to begin: a server with busy slots queues a request "
            "and sends nothing meanwhile, and a request it has not begun is never retried",
            group=_ENDPOINT,
            metavar="S",
        ),
    ] = 3600.0
    read_timeout: Annotated[
        Seconds,
        _flag(
            "longest silence between bytes once a response has begun",
            group=_ENDPOINT,
            metavar="S",
        ),
    ] = 60.0
    call_timeout: Annotated[
        Seconds,
        _flag("deadline of one LLM response, from its first byte", group=_ENDPOINT, metavar="S"),
    ] = 300.0
    llm_retries: Annotated[
        Count,
        _flag(
            "retries of one LLM call on connection errors, 408/409/429/5xx",
            group=_ENDPOINT,
            metavar="N",
        ),
    ] = 6
    warm_pool: Annotated[
        bool,
        _flag(
            "do not open the agents' connections before the run starts (by default one per "
            "agent, each with a GET /models, so that a call's pre-send is its own work and no "
            "other agent's connect; the connects count in the run's CPU and wall all the same)",
            group=_ENDPOINT,
            flag="--no-warm-pool",
        ),
    ] = True
    http_client: Annotated[
        HttpClient,
        _flag(
            "HTTP client of the LLM calls: 'wire', fastagent's lean HTTP/1.1 client (a "
            "fraction of aiohttp's memory per connection; aiohttp is never imported), or "
            "'aiohttp'",
            group=_ENDPOINT,
        ),
    ] = HttpClient.WIRE
    socket_rcvbuf: Annotated[
        Count,
        _flag(
            "receive buffer of each connection; bounds what a stream the runtime cannot keep "
            "up with buffers in its heap (0 = the kernel's autotuning)",
            group=_ENDPOINT,
            metavar="BYTES",
        ),
    ] = 16 * 1024
    backoff_base: float = 0.25
    backoff_max: float = 20.0
    retry_budget: float = 120.0
    max_completion_bytes: int = 1 << 20

    # ---- workload ----
    dataset: Annotated[
        Text | None,
        _flag(
            "tasks JSON (default: the bundled HumanEval 100)",
            group=_WORKLOAD,
            env="BENCH_DATASET",
            metavar="PATH",
        ),
    ] = None
    tasks: Annotated[
        Positive | None, _flag("run only the first N tasks", group=_WORKLOAD, metavar="N")
    ] = None
    repeat: Annotated[
        Positive,
        _flag(
            "run the tasks K times over (ids ID#k), e.g. 1,000 agents from 100 tasks",
            group=_WORKLOAD,
            metavar="K",
        ),
    ] = 1
    concurrency: Annotated[
        Positive,
        _flag("concurrent agents", group=_WORKLOAD, env="BENCH_CONCURRENCY", metavar="N"),
    ] = 100
    max_procs: Annotated[
        Positive,
        _flag("concurrent test processes (default: one per core)", group=_WORKLOAD, metavar="N"),
    ] = msgspec.field(default_factory=default_max_procs)
    max_retries: Annotated[
        Count,
        _flag("retries after a failed test run (so N + 1 attempts)", group=_WORKLOAD, metavar="N"),
    ] = 3
    test_timeout: Annotated[
        Seconds, _flag("time limit of one test run", group=_WORKLOAD, metavar="S")
    ] = 30.0
    task_timeout: Annotated[
        Seconds, _flag("deadline of one whole task", group=_WORKLOAD, metavar="S")
    ] = 1800.0
    python: Annotated[
        Text,
        _flag(
            "interpreter that runs pytest (python3 on PATH by default)",
            group=_WORKLOAD,
            env="BENCH_PYTHON",
            metavar="PYTHON",
        ),
    ] = "python3"
    verify: Annotated[
        VerifyMode,
        _flag(
            "how an attempt is judged: pytest, or trivial, a cheap stand-in process for scale "
            "runs against the simulated endpoint (fails exactly its wrong answers)",
            group=_WORKLOAD,
        ),
    ] = VerifyMode.PYTEST
    sandbox: Annotated[
        bool,
        _flag(
            "run tests in a plain process group (no namespaces, rlimits or pids cgroup)",
            group=_WORKLOAD,
            flag="--no-sandbox",
        ),
    ] = True
    network: Annotated[bool, _flag("let the test process use the network", group=_WORKLOAD)] = False
    output_cap: int = 64 * 1024
    feedback_chars: int = 4000
    shards: Annotated[
        Positive | None,
        _flag(
            "split the tasks over N ordinary bench processes run by Ray tasks, one per node "
            "where the cluster has several (pip install 'fastagent[ray]')",
            group=_WORKLOAD,
            metavar="N",
        ),
    ] = None
    task_indices: Annotated[
        Text | None,
        _flag(
            "run only the tasks at these 0-based positions of the task list (after --tasks and "
            "--repeat), listed in FILE separated by spaces, commas or newlines (how --shards "
            "hands each shard its share)",
            group=_WORKLOAD,
            metavar="FILE",
        ),
    ] = None
    ray_address: Annotated[
        Text | None,
        _flag(
            "the Ray cluster of --shards (default: a local Ray instance for the run)",
            group=_WORKLOAD,
            metavar="ADDR",
        ),
    ] = None

    # ---- output ----
    results_dir: Annotated[
        Text, _flag("where the CSV and summary go", group=_OUTPUT, metavar="DIR")
    ] = "results/raw"
    work_dir: Annotated[
        Text | None,
        _flag(
            "where agent workspaces go (default results/runs/<run>)", group=_OUTPUT, metavar="DIR"
        ),
    ] = None
    keep_workspaces: Annotated[bool, _flag("keep each agent's workspace", group=_OUTPUT)] = False
    resume: Annotated[
        Text | None,
        _flag(
            "finish an interrupted run: skip the tasks with a row in RESULTS_CSV, append the "
            "rest and write one complete summary (pass the same workload flags)",
            group=_OUTPUT,
            metavar="RESULTS_CSV",
        ),
    ] = None
    trace: Annotated[
        Text | None, _flag("write one JSON line per event to FILE", group=_OUTPUT, metavar="FILE")
    ] = None
    samples: Annotated[
        Text | None,
        _flag(
            "write every per-call and per-task sample to FILE (compact binary; merged runs "
            "compute exact percentiles from these)",
            group=_OUTPUT,
            metavar="FILE",
        ),
    ] = None
    progress: Annotated[
        bool | None,
        _flag("live progress line (default: on when stderr is a terminal)", group=_OUTPUT),
    ] = None
    sample_interval: Annotated[
        Annotated[float, Meta(ge=0.001, le=60)],
        _flag(
            "period of the probe that samples the RSS timeline and the children's memory and "
            "times the event loop's lag (each wake-up costs the runtime ~0.2 ms of CPU: "
            "bench/bench_idle.py)",
            group=_OUTPUT,
            metavar="S",
        ),
    ] = 0.25

    def __post_init__(self) -> None:
        if self.base_url is not None:
            _check_base_url(self.base_url)
        for name in ("backoff_base", "backoff_max", "retry_budget"):
            value = getattr(self, name)
            if not (value >= 0 and math.isfinite(value)):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")


def _check_base_url(url: str) -> None:
    """ValueError with one line unless ``url`` is an absolute http(s) URL with a host."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"base URL {url!r} is not a valid URL: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"base URL {url!r} must start with http:// or https://")
    if not parts.hostname:
        raise ValueError(f"base URL {url!r} has no host")
    if port == 0:
        raise ValueError(f"base URL {url!r} has port 0")
    if parts.query or parts.fragment:
        raise ValueError(f"base URL {url!r} must not have a query or fragment")


def make_config(**values: Any) -> Config:
    """A Config from ``values``, each checked against its field's type and bounds.

    Raises ``msgspec.ValidationError`` naming the field (``- at `$.concurrency```) and why.
    """
    return msgspec.convert(values, Config)
