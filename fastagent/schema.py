"""The published results schema: one CSV row per task, and the run's summary (schema 2).

Every run writes ``<runtime>_<UTC timestamp>.csv``, one :class:`TaskRow` per task in field
order, and ``<runtime>_<UTC timestamp>_summary.json``, one :class:`Summary`. The JSON
Schemas of both are committed as ``docs/summary.schema.json`` and
``docs/task_row.schema.json`` (made by :func:`json_schemas`; a test fails when they drift),
so another stack can validate its own output against them::

    >>> import msgspec
    >>> COLUMNS[:4]
    ('task_id', 'status', 'reason', 'attempts')
    >>> schemas = json_schemas()
    >>> sorted(schemas)
    ['summary.schema.json', 'task_row.schema.json']
    >>> schemas["task_row.schema.json"]["$defs"]["TaskRow"]["required"] == list(COLUMNS)
    True

Times are seconds unless a name ends in ``_ms`` (milliseconds) or ``_mib`` (MiB), all
measured on ``CLOCK_MONOTONIC``, which every process on the machine shares. Percentiles are
nearest-rank. ``schema_version`` changes whenever a field is renamed, removed or changes
meaning; adding a field keeps it. Version 1 was a flat object of ~50 keys
(``fastagent.analysis.summaries`` still reads it).
"""

from __future__ import annotations

import enum
from typing import Annotated, Any

import msgspec
from msgspec import Meta

from .config import VerifyMode

__all__ = [
    "COLUMNS",
    "SCHEMA_VERSION",
    "Cpu",
    "Distribution",
    "Endpoint",
    "Latency",
    "LoopLag",
    "Machine",
    "Memory",
    "Outcomes",
    "RayCost",
    "RssTimeline",
    "Settings",
    "Shard",
    "Sharding",
    "Summary",
    "TaskRow",
    "TaskStatus",
    "Throughput",
    "Totals",
    "Versions",
    "json_schemas",
]

SCHEMA_VERSION = 2


def _doc(text: str) -> Meta:
    return Meta(description=text)


Ms = Annotated[float | None, _doc("milliseconds; null without samples")]


class TaskStatus(enum.StrEnum):
    """How a task ended."""

    #: the tests passed (the probe's signed verdict, never the exit code alone)
    PASSED = "passed"
    #: every attempt's tests failed, or a reply held no code
    FAILED = "failed"
    #: the endpoint, a deadline or a tool failed: the reason column says which
    ERROR = "error"


class TaskRow(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """One row of the results CSV: how a task ended and where its time went."""

    task_id: Annotated[str, _doc("dataset id, e.g. HumanEval/0 (copies of --repeat: ID#k)")]
    status: Annotated[TaskStatus, _doc("passed, failed or error")]
    reason: Annotated[
        str,
        _doc("empty when passed; else why, e.g. 'tests failed after 4 attempts', 'llm: HTTP 401'"),
    ]
    attempts: Annotated[int, _doc("completions used (1 .. max_retries + 1)")]
    retries: Annotated[int, _doc("attempts - 1: the self-correction retries")]
    first_attempt_pass: Annotated[bool, _doc("attempt 1 passed")]
    wall_s: Annotated[float, _doc("the agent picks the task up -> its last attempt is judged")]
    model_s: Annotated[float, _doc("inside LLM calls, their retries and backoff included")]
    tool_s: Annotated[float, _doc("writing files and running tests, the process-slot wait out")]
    queued_s: Annotated[float, _doc("waiting for a test-process slot (--max-procs)")]
    overhead_s: Annotated[float, _doc("wall - model - tool - queued: the runtime's own share")]
    agent_wait_s: Annotated[float, _doc("run start -> an agent slot picked the task up")]
    llm_calls: Annotated[int, _doc("HTTP requests made for the task, retried ones included")]
    llm_retries: Annotated[int, _doc("of those, retries after a transport or HTTP error")]
    prompt_tokens: Annotated[int, _doc("summed usage.prompt_tokens")]
    completion_tokens: Annotated[
        int, _doc("summed usage.completion_tokens (else the content chunks)")
    ]
    ttft_ms: Annotated[float | None, _doc("TTFT of the task's first completion")]
    tool_spawn_ms: Annotated[float | None, _doc("spawn latency of the task's first test process")]
    test_exit: Annotated[
        str, _doc("how the last test process ended: exit_<code>, timeout or signal")
    ]
    test_cpu_s: Annotated[
        float, _doc("user+sys of the task's pytest processes, as the probe reported them")
    ]


#: The CSV header, in order.
COLUMNS: tuple[str, ...] = TaskRow.__struct_fields__


class Outcomes(msgspec.Struct, kw_only=True):
    """What the tasks came to: model properties, identical across runtimes on one model."""

    tasks: Annotated[int, _doc("tasks finished")]
    passed: int
    pass_at_1: Annotated[float, _doc("passed / tasks, a fraction")]
    first_attempt_passes: Annotated[int, _doc("passed on attempt 1")]
    recovered: Annotated[int, _doc("passed on a later attempt, after fed-back test output")]
    failed: int
    errors: int
    avg_retries: Annotated[float, _doc("mean of the retries column")]


class RssTimeline(msgspec.Struct, kw_only=True):
    """The background sampler's resident-set timeline of the runtime process."""

    interval_s: float
    t: Annotated[list[float], _doc("seconds since the sampler started")]
    rss_mib: list[float]


class Memory(msgspec.Struct, kw_only=True):
    """The runtime process's memory and what it left behind."""

    peak_rss_mib: Annotated[
        float, _doc("VmHWM, the kernel's high-water mark of the runtime process: not sampled")
    ]
    peak_children: Annotated[int, _doc("most live descendant processes seen at once (sampled)")]
    peak_children_rss_mib: Annotated[float, _doc("their peak summed RSS (sampled)")]
    open_fds_at_end: Annotated[int, _doc("file descriptors the runtime holds after the run")]
    live_children_at_end: Annotated[
        int, _doc("processes it started still alive after the run (the simulator left out)")
    ]
    rss_timeline: RssTimeline


class Cpu(msgspec.Struct, kw_only=True):
    """CPU seconds over the run, from getrusage."""

    runtime_seconds: Annotated[float, _doc("user+sys of the runtime process, children excluded")]
    children_seconds: Annotated[float, _doc("user+sys of the reaped test processes")]
    runtime_ms_per_task: float | None
    runtime_ms_per_llm_call: float | None


class Distribution(msgspec.Struct, kw_only=True):
    """A latency distribution in milliseconds: count, mean and max exact, percentiles within
    1 % (log-spaced histogram buckets)."""

    count: int = 0
    mean: Ms = None
    p50: Ms = None
    p95: Ms = None
    p99: Ms = None
    max: Ms = None


class Latency(msgspec.Struct, kw_only=True):
    """Per LLM call, per test process and per task (docs/results.md defines each).

    A call's parts add up to its E2E: pre_send + endpoint_queue + server + last_byte_lag.
    The endpoint's parts need an endpoint that reports its timing (the simulator does);
    against any other they have no samples (count 0), and neither has runtime_overhead.
    """

    ttft_ms: Annotated[Distribution, _doc("request sent -> first non-empty delta.content")]
    itl_ms: Annotated[Distribution, _doc("between consecutive content chunks")]
    tpot_ms: Annotated[Distribution, _doc("(E2E - TTFT) / (output tokens - 1), per call")]
    llm_e2e_ms: Annotated[Distribution, _doc("request sent -> [DONE] or body read")]
    first_byte_wait_ms: Annotated[
        Distribution,
        _doc(
            "last request byte written -> the response's first byte read: how long requests "
            "waited for the server to begin them, its queue included (any server)"
        ),
    ]
    pre_send_ms: Annotated[
        Distribution, _doc("the agent asks for a call -> the request's last byte written")
    ]
    endpoint_queue_ms: Annotated[
        Distribution,
        _doc("last request byte written -> the endpoint starts the request (its timestamp)"),
    ]
    server_ms: Annotated[
        Distribution, _doc("the endpoint starts the request -> its last byte written")
    ]
    first_byte_lag_ms: Annotated[
        Distribution, _doc("first content byte written -> parsed by the runtime")
    ]
    last_byte_lag_ms: Annotated[Distribution, _doc("last byte written -> parsed by the runtime")]
    runtime_overhead_ms: Annotated[
        Distribution, _doc("pre-send + last-byte lag: the runtime's own share of a call")
    ]
    tool_spawn_ms: Annotated[Distribution, _doc("create_subprocess_exec called -> running")]
    tool_wall_ms: Annotated[Distribution, _doc("running -> reaped, pipes drained")]
    task_wall_ms: Distribution
    task_overhead_ms: Distribution


class LoopLag(msgspec.Struct, kw_only=True):
    """How late the probe's timer (every --sample-interval) fired on the event loop, in ms."""

    p50: Ms = None
    p99: Ms = None
    max: Ms = None


class Throughput(msgspec.Struct, kw_only=True):
    """Rates over the run's wall time."""

    requests_per_s: float | None
    output_tokens_per_s: float | None
    tasks_per_s: float | None


class Totals(msgspec.Struct, kw_only=True):
    """What the runtime did, counted."""

    llm_calls: Annotated[int, _doc("HTTP requests to the endpoint, retries included")]
    output_tokens: int
    peak_agents_in_flight: Annotated[int, _doc("most tasks being worked on at once")]
    retries_by_cause: Annotated[
        dict[str, int], _doc("LLM retries by cause: http_503, connect, read_timeout, ...")
    ]
    errors_by_cause: Annotated[dict[str, int], _doc("tasks ended in error, by cause")]
    test_exit_causes: Annotated[dict[str, int], _doc("test processes by how they ended")]


class Endpoint(msgspec.Struct, kw_only=True):
    """The model server the run talked to."""

    base_url: str
    model: str
    simulated: Annotated[bool, _doc("the built-in simulated endpoint (it reports a profile)")]
    started_by_bench: Annotated[bool, _doc("the bench started the simulator itself")]
    sim_profile: Annotated[
        dict[str, Any] | None, _doc("the simulator's profile as GET /sim/plan reports it")
    ] = None
    server: Annotated[
        str | None,
        _doc(
            "the server's name and build: its Server header, and build_info where GET /props "
            "answers (llama.cpp's llama-server), e.g. 'llama.cpp b1-0c1e570'"
        ),
    ] = None


class Machine(msgspec.Struct, kw_only=True):
    """How busy the machine was while the run ran (fastagent.noise)."""

    cores: int
    load_before: Annotated[float, _doc("1-minute load average when the run started")]
    load_after: Annotated[float, _doc("1-minute load average when it ended")]
    others_cpu_share: Annotated[
        float,
        _doc(
            "CPU used outside the run's own tree (runtime, its test processes, the simulator "
            "it started) as a share of cores x wall, from /proc/stat"
        ),
    ]
    busy: Annotated[bool, _doc("others_cpu_share above 0.25: the figures are suspect")]


class Settings(msgspec.Struct, kw_only=True):
    """The run's limits and choices, as configured."""

    concurrency: int
    max_procs: int
    max_retries: int
    repeat: int
    stream: bool
    verify: Annotated[VerifyMode, _doc("how attempts were judged")]
    http_client: Annotated[str, _doc("python: wire (the lean client) or aiohttp")]
    dataset: str
    sandbox: Annotated[str | None, _doc("bwrap+cgroup, unshare+cgroup, rlimits or off")]
    sandbox_warning: Annotated[str | None, _doc("why the sandbox is less than the best mode")]


class Versions(msgspec.Struct, kw_only=True):
    """What ran."""

    stack: Annotated[str, _doc("version of the runtime under test (fastagent's for python)")]
    language: Annotated[str, _doc("the language implementation, e.g. 'CPython 3.11.7'")]
    libraries: Annotated[
        dict[str, str | None],
        _doc("the libraries the runtime loaded, by name; null: installed but never imported"),
    ]
    pytest_in_tests: Annotated[str | None, _doc("the pytest the test processes imported")]


class Shard(msgspec.Struct, kw_only=True):
    """One shard of a ``fastagent bench --shards N`` run: an ordinary bench process on a node."""

    index: Annotated[int, _doc("the shard's number; the merged CSV's shard column")]
    run: Annotated[int, _doc("0 for the first invocation, k for the k-th --resume")]
    node: Annotated[str, _doc("host name of the node it ran on")]
    node_id: Annotated[str | None, _doc("Ray's id of that node")]
    pid: Annotated[int | None, _doc("the bench process's pid on its node")]
    base_url: Annotated[str | None, _doc("the endpoint it used (its own simulator's URL)")]
    tasks: Annotated[int, _doc("tasks it was given")]
    rows: Annotated[int, _doc("of those, finished (rows it wrote)")]
    not_run: Annotated[list[str], _doc("its tasks without a row: not run or not finished")]
    exit_status: Annotated[
        int | None, _doc("the bench's exit code, -N when killed by signal N; null: unknown")
    ]
    error: Annotated[str | None, _doc("why it did not finish every task, null when it did")]
    wall_seconds: Annotated[float | None, _doc("its own wall time (null: it wrote no summary)")]
    peak_rss_mib: Annotated[float | None, _doc("its peak RSS (VmHWM), MiB")]
    runtime_seconds: Annotated[float | None, _doc("its runtime CPU, user+sys seconds")]
    runtime_ms_per_task: float | None
    csv: Annotated[str, _doc("its own CSV, kept beside the merged one")]
    summary: Annotated[str | None, _doc("its own summary, null when it wrote none")]
    samples: Annotated[str | None, _doc("its samples file, null when it wrote none")]


class RayCost(msgspec.Struct, kw_only=True):
    """What Ray itself cost on the coordinator's machine (peak RSS from each process's VmHWM;
    null where the process is not on this machine, e.g. a remote cluster's head)."""

    startup_seconds: Annotated[float, _doc("ray.init: starting or joining the cluster")]
    launch_seconds: Annotated[float, _doc("actors created -> every shard's bench started")]
    driver_rss_mib: Annotated[float, _doc("the coordinator (Ray's driver), peak RSS")]
    raylet_rss_mib: float | None
    gcs_rss_mib: float | None
    workers_rss_mib: Annotated[float | None, _doc("the shards' Ray worker processes, summed")]
    other_rss_mib: Annotated[
        float | None, _doc("Ray's other processes (agents, monitors, dashboard head), summed")
    ]
    total_rss_mib: Annotated[float | None, _doc("all of the above summed")]


class Sharding(msgspec.Struct, kw_only=True):
    """How a ``--shards N`` run was spread, and what each shard did (null for a single run).

    The merged summary's memory, loop lag and settings are the shard's with the highest
    peak RSS (max); its counts, CPU and latencies cover every shard (latency percentiles
    exact over all their samples).
    """

    count: Annotated[int, _doc("shards of the run, those of earlier invocations included")]
    split: Annotated[str, _doc("how tasks were dealt: round-robin over the task list")]
    concurrency_per_shard: Annotated[int, _doc("--concurrency: agents per shard")]
    total_concurrency: Annotated[int, _doc("agents of this invocation's shards, summed")]
    ray_address: Annotated[str | None, _doc("--ray-address; null: a local instance")]
    ray_version: str
    nodes: Annotated[int, _doc("alive nodes of the Ray cluster")]
    peak_rss_mib_max: Annotated[float | None, _doc("the largest shard's peak RSS")]
    peak_rss_mib_sum: Annotated[float | None, _doc("every shard's peak RSS, summed")]
    not_run: Annotated[list[str], _doc("tasks without a row in the merged CSV")]
    failed_shards: Annotated[list[int], _doc("shards that did not finish all their tasks")]
    ray: RayCost | None
    shards: list[Shard]


class Summary(msgspec.Struct, kw_only=True):
    """One run of a stack's runner: ``<runtime>_<ts>_summary.json``."""

    schema_version: Annotated[int, _doc("2; changes when a field is renamed or removed")]
    runtime: Annotated[str, _doc("the stack: python, cpp, typescript, rust")]
    implementation: Annotated[
        str, _doc("the variant of the stack that ran; python: cython or pure (the speedups)")
    ]
    event_loop: Annotated[str, _doc("what drives the I/O; python: uvloop")]
    started_at: Annotated[str, _doc("UTC, ISO 8601")]
    wall_seconds: float
    interrupted: Annotated[bool, _doc("SIGINT/SIGTERM stopped the run early")]
    interrupted_by_signal: int | None
    csv: Annotated[str, _doc("the run's results CSV")]
    settings: Settings
    endpoint: Endpoint
    outcomes: Outcomes
    memory: Memory
    cpu: Cpu
    loop_lag_ms: LoopLag
    latency: Latency
    throughput: Throughput
    totals: Totals
    versions: Versions
    sharding: Annotated[
        Sharding | None, _doc("the shards of a --shards run and their merge; null otherwise")
    ] = None
    machine: Annotated[
        Machine | None, _doc("how busy the machine was (null in summaries written before it)")
    ] = None


def json_schemas() -> dict[str, dict[str, Any]]:
    """The committed JSON Schemas, by file name under docs/."""
    return {
        "summary.schema.json": msgspec.json.schema(Summary),
        "task_row.schema.json": msgspec.json.schema(TaskRow),
    }
