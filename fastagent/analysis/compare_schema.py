"""``compare.json``, what ``fastagent compare`` writes: msgspec Structs, one docstring per field.

Its JSON Schema is committed as ``docs/compare.schema.json`` (``scripts/schemas.py`` writes
it from :class:`Comparison`; a test fails when it drifts)::

    >>> schema = json_schema()
    >>> schema["$ref"], "StackResult" in schema["$defs"]
    ('#/$defs/Comparison', True)

Times are seconds unless a name ends in ``_ms``; sizes are MiB (``_mib``). Standard library
and msgspec only.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from msgspec import Meta

from ..schema import Distribution

__all__ = [
    "COMPARE_SCHEMA_VERSION",
    "Comparison",
    "EndpointFigures",
    "EndpointInfo",
    "Idle",
    "Machine",
    "RunFigures",
    "RuntimeFigures",
    "SelfReported",
    "Settings",
    "Spread",
    "StackResult",
    "json_schema",
]

COMPARE_SCHEMA_VERSION = 1


def _doc(text: str) -> Meta:
    return Meta(description=text)


class Spread(msgspec.Struct, kw_only=True):
    """One figure over a stack's runs that measured it."""

    n: Annotated[int, _doc("runs with a value")]
    median: float | None
    min: float | None
    max: float | None
    cv: Annotated[
        float | None,
        _doc("coefficient of variation: sample standard deviation / mean (null: n < 2 or mean 0)"),
    ]


class Idle(msgspec.Struct, kw_only=True):
    """The wait for an idle machine before the run (docs/compare.md, the idle rule)."""

    waited_s: float
    busy_share: Annotated[
        float | None, _doc("share of all cores busy in the last window waited (null: no wait)")
    ]
    idle: Annotated[bool, _doc("the rule was met; false: the cap ran out (or no wait)")]


class RuntimeFigures(msgspec.Struct, kw_only=True):
    """The runtime process, found by the process rule and measured from /proc."""

    pid: int
    command_line: Annotated[str, _doc("its argv, cut at 240 characters")]
    depth: Annotated[int, _doc("0: the command's own process; 1: its child; ...")]
    endpoint_connections: Annotated[int, _doc("most TCP connections to the endpoint at once")]
    holders: Annotated[int, _doc("processes of the tree seen holding endpoint connections")]
    peak_rss_mib: Annotated[float, _doc("the largest VmHWM read (kernel high-water mark)")]
    cpu_seconds: Annotated[
        float,
        _doc("user+sys of its threads over its whole life, start-up included (children excluded)"),
    ]
    startup_cpu_seconds: Annotated[
        float | None,
        _doc(
            "of cpu_seconds, what it had used when first seen holding an endpoint connection "
            "(start-up, imports, set-up; up to one scan late)"
        ),
    ]
    children_cpu_seconds: Annotated[float, _doc("user+sys of the children it reaped")]
    peak_descendants: Annotated[int, _doc("most live descendants seen at once")]
    peak_descendants_rss_mib: Annotated[float, _doc("their peak summed RSS (sampled)")]
    lifetime_s: Annotated[float, _doc("first seen -> last seen alive")]
    samples: Annotated[int, _doc("reads of its VmHWM and CPU")]


class EndpointFigures(msgspec.Struct, kw_only=True):
    """What the simulated endpoint saw of the run (GET /v1/sim/run after a reset before it)."""

    requests: Annotated[int, _doc("chat requests")]
    unplaced: Annotated[int, _doc("of those, requests whose messages held no task's spec")]
    output_tokens: Annotated[int, _doc("completion tokens of the answers written in full")]
    peak_streams: Annotated[int, _doc("most chat requests in progress at once")]
    ttft_ms: Annotated[
        Distribution,
        _doc("handling started -> first content event written, per answer written in full"),
    ]
    server_ms: Annotated[
        Distribution, _doc("handling started -> its last write, per answer written in full")
    ]
    server_seconds: Annotated[float, _doc("summed server time of the requests")]
    cpu_seconds: Annotated[float | None, _doc("the endpoint process's user+sys over the run")]


class SelfReported(msgspec.Struct, kw_only=True):
    """The stack's own summary (read through fastagent.analysis.summaries), beside ours."""

    summary: Annotated[str, _doc("where the summary it wrote was copied")]
    runtime: str | None
    tasks: float | None
    passed: float | None
    errors: float | None
    peak_rss_mib: float | None
    cpu_seconds: float | None
    wall_seconds: float | None
    rss_difference: Annotated[
        float | None, _doc("its peak RSS / the referee's - 1 (flagged beyond +-5 %)")
    ]


class RunFigures(msgspec.Struct, kw_only=True):
    """One run of one stack."""

    stack: str
    repeat: Annotated[int, _doc("1 .. --repeats")]
    position: Annotated[int, _doc("1-based place in the interleaved order of all runs")]
    started_at: str
    exit_code: Annotated[int | None, _doc("the command's exit status (negative: a signal)")]
    error: Annotated[str | None, _doc("one line when the run failed or cannot be trusted")]
    flags: Annotated[list[str], _doc("notes on figures that disagree or look off")]
    wall_seconds: Annotated[float, _doc("command started -> its process exited")]
    idle: Idle
    runtime: RuntimeFigures | None
    endpoint: EndpointFigures | None
    self_reported: SelfReported | None
    leftover_processes: Annotated[int, _doc("its processes still alive after it ended (killed)")]
    referee_cpu_seconds: Annotated[float, _doc("the referee's own user+sys during the run")]
    log: Annotated[str, _doc("the command's stdout and stderr (tail)")]


class StackResult(msgspec.Struct, kw_only=True):
    """One stack: its command, every run, and each figure over the runs."""

    name: str
    command: Annotated[str, _doc("as given")]
    command_run: Annotated[str, _doc("what ran: relative paths made absolute")]
    runs: list[RunFigures]
    stats: Annotated[dict[str, Spread], _doc("figure name -> spread over the runs")]
    errors: Annotated[list[str], _doc("one line per failed run")]


class Machine(msgspec.Struct, kw_only=True):
    cores: int
    memory_gib: float
    kernel: str
    python: str
    load_at_start: Annotated[list[float], _doc("1, 5, 15-minute load averages")]
    note: str


class Settings(msgspec.Struct, kw_only=True):
    tasks: int
    concurrency: int
    repeats: int
    timeout_s: float
    dataset: Annotated[str, _doc("the tasks the first --tasks were taken from")]
    sim_profile: dict[str, Any]
    sample_interval_s: float
    fast_interval_s: float
    idle_rule: str
    process_rule: str


class EndpointInfo(msgspec.Struct, kw_only=True):
    base_url: str
    model: str
    pid: int


class Comparison(msgspec.Struct, kw_only=True):
    """The whole comparison: conditions, then each stack in the order given."""

    schema_version: Annotated[int, _doc("1")]
    started_at: str
    finished_at: str | None
    interrupted: bool
    machine: Machine
    settings: Settings
    endpoint: EndpointInfo | None
    order: Annotated[list[str], _doc("the runs in the order they ran: stack#repeat")]
    stacks: list[StackResult]


def json_schema() -> dict[str, Any]:
    """The JSON Schema of ``compare.json``."""
    return msgspec.json.schema(Comparison)
