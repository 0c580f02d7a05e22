"""Any benchmark summary, read into one canonical view through one mapping table.

Three shapes of ``*_summary.json`` arrive here:

* schema 2, this stack's summary (:class:`fastagent.schema.Summary`): nested sections,
  checked against the schema when read;
* schema 1, this stack's earlier summary: a flat object of ~50 keys (``latency``,
  ``loop_lag_ms`` and ``throughput`` nested);
* another stack's summary (the C++ stack's, ...): its own key names and units.

:data:`METRICS` is the one table. Each row is a canonical metric: where schema 2 keeps it,
whether schema 1 has it, and the names other stacks use with the factor that converts their
unit into ours. A canonical name *is* the schema-1 key (dotted for schema 1's nested ones),
so the same name reads the same figure out of any file (``load_summary(path)`` reads one)::

    >>> view = view_of({"runtime": "cpp", "peak_rss_mb": 93.0, "wall_time_ms": 126000}, "c.json")
    >>> view["peak_rss_mib"], view["wall_seconds"], view.sources["wall_seconds"], view.schema
    (93.0, 126.0, 'wall_time_ms', None)

A schema-2 file is read at its schema-2 paths only; any other file at the schema-1 key,
then the schema-2 path, then the aliases, the first found winning. Every value is checked
against its metric's kind, and every problem with a file is a :class:`ReportError` of one
line that names the file. Keys no row knows are kept in :attr:`SummaryView.unrecognised`.
Standard library and msgspec only.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeGuard

import msgspec

from ..errors import ReportError
from ..schema import Summary

__all__ = [
    "BY_NAME",
    "HEADLINE",
    "METRICS",
    "Metric",
    "SummaryView",
    "is_number",
    "load_summary",
    "lookup",
    "read_json",
    "resolve",
    "view_of",
]

#: number: int or float, scaled by an alias's factor; fraction: a number in [0, 1] that a
#: file may give as a percentage (a value above 1 is divided by 100); text: a string (a
#: number is shown as one); flag: true/false; mapping: a JSON object, shown or drawn whole.
Kind = Literal["number", "fraction", "text", "flag", "mapping"]
#: another stack's key for a metric, and the factor from its unit to ours
Alias = tuple[str, float]


@dataclass(frozen=True)
class Metric:
    """One canonical metric: ``name`` (= its schema-1 key), its schema-2 ``v2`` path (None:
    not in schema 2), whether schema 1 has it, its kind and other stacks' names for it."""

    name: str
    v2: str | None
    kind: Kind = "number"
    aliases: tuple[Alias, ...] = ()
    in_v1: bool = True

    def candidates(self, schema: int | None) -> Iterator[Alias]:
        """Where to look in a file of ``schema`` (None: another stack's), in order."""
        if schema == 2:
            if self.v2 is not None:
                yield self.v2, 1.0
            return
        if self.in_v1:
            yield self.name, 1.0
        if self.v2 is not None and self.v2 != self.name:
            yield self.v2, 1.0
        yield from self.aliases


def _alias(*same_unit: str, **scaled: float) -> tuple[Alias, ...]:
    """Other stacks' names: those in our unit, then those with a factor (tried in order)."""
    return (*((key, 1.0) for key in same_unit), *scaled.items())


def _distribution(
    name: str,
    aliases: Mapping[str, tuple[Alias, ...]] | None = None,
    *,
    v1: bool = True,
    v2: bool = True,
) -> tuple[Metric, ...]:
    """The six figures of one latency distribution, ``latency.<name>.<stat>``, in schema 1
    and/or schema 2."""
    return tuple(
        Metric(
            f"latency.{name}.{stat}",
            f"latency.{name}.{stat}" if v2 else None,
            aliases=(aliases or {}).get(stat, ()),
            in_v1=v1,
        )
        for stat in ("count", "mean", "p50", "p95", "p99", "max")
    )


def _same(name: str, kind: Kind = "number", aliases: tuple[Alias, ...] = ()) -> Metric:
    """A metric at the same path in both schemas."""
    return Metric(name, name, kind, aliases)


def _seconds_to_ms(name: str) -> dict[str, tuple[Alias, ...]]:
    return {
        q: _alias(**{f"{name}_{q}": 1000, f"latency_{q}_s": 1000}) for q in ("p50", "p95", "p99")
    }


# fmt: off
#: The mapping. Schema-2 paths follow fastagent/schema.py (a test walks Summary and fails
#: when a field has no row); add an alias when another stack's summary grows a key we can read.
METRICS: tuple[Metric, ...] = (
    # ---- the run ----
    _same("schema_version"),
    _same("runtime", "text", _alias("language", "stack", "lang")),
    _same("implementation", "text", _alias("variant", "build")),
    _same("event_loop", "text"),
    _same("started_at", "text"),
    _same("wall_seconds", aliases=_alias(
        "wall_time_s", "wall_s", "wall_time_sec", "elapsed_s", "total_time_s",
        wall_time_ms=0.001, wall_ms=0.001)),
    _same("interrupted", "flag"),
    _same("interrupted_by_signal"),
    _same("csv", "text"),
    _same("versions", "mapping"),
    _same("machine", "mapping"),
    _same("sharding", "mapping"),
    # ---- the endpoint ----
    Metric("model", "endpoint.model", "text", _alias("llm_model", "model_name")),
    Metric("base_url", "endpoint.base_url", "text"),
    Metric("server", "endpoint.server", "text", in_v1=False),
    Metric("simulated", "endpoint.simulated", "flag"),
    Metric("sim_started_by_bench", "endpoint.started_by_bench", "flag"),
    Metric("sim_profile", "endpoint.sim_profile", "mapping"),
    # ---- settings ----
    Metric("concurrency", "settings.concurrency", aliases=_alias(
        "bench_concurrency", "concurrency_level", "workers")),
    Metric("max_procs", "settings.max_procs"),
    Metric("max_retries", "settings.max_retries"),
    Metric("repeat", "settings.repeat", in_v1=False),
    Metric("stream", "settings.stream", "flag", in_v1=False),
    Metric("verify", "settings.verify", "text"),
    Metric("http_client", "settings.http_client", "text"),
    Metric("dataset", "settings.dataset", "text"),
    Metric("sandbox", "settings.sandbox", "text"),
    Metric("sandbox_warning", "settings.sandbox_warning", "text"),
    # ---- outcomes: model properties ----
    Metric("tasks", "outcomes.tasks", aliases=_alias(
        "total_tasks", "num_tasks", "n_tasks", "task_count")),
    Metric("passed", "outcomes.passed", aliases=_alias("num_passed", "tasks_passed", "pass_count")),
    Metric("pass_at_1", "outcomes.pass_at_1", "fraction", _alias(
        "pass@1", "pass_rate", pass_at_1_pct=0.01, pass_pct=0.01)),
    Metric("first_attempt_passes", "outcomes.first_attempt_passes", aliases=_alias(
        "first_attempt_pass", "first_attempt", "first_try_pass", "passed_first_attempt")),
    Metric("recovered", "outcomes.recovered", aliases=_alias(
        "recovered_via_self_review", "self_review_recovered")),
    Metric("failed", "outcomes.failed", aliases=_alias(
        "num_failed", "failed_after_retries", "tasks_failed")),
    Metric("errors", "outcomes.errors", aliases=_alias("num_errors", "errored")),
    Metric("avg_retries", "outcomes.avg_retries", aliases=_alias(
        "mean_retries", "average_retries", "retries_avg")),
    # ---- memory ----
    Metric("peak_rss_mib", "memory.peak_rss_mib", aliases=_alias(
        "peak_rss_mb",  # the C++ README reports this figure in MiB
        "peak_rss_MiB", peak_rss_kib=1 / 1024, peak_rss_kb=1 / 1024,
        peak_rss_bytes=1 / 1048576)),
    Metric("peak_children", "memory.peak_children"),
    Metric("peak_children_rss_mib", "memory.peak_children_rss_mib"),
    Metric("open_fds_at_end", "memory.open_fds_at_end"),
    Metric("live_children_at_end", "memory.live_children_at_end"),
    Metric("rss_timeline", "memory.rss_timeline", "mapping"),
    # ---- CPU ----
    Metric("runtime_cpu_seconds", "cpu.runtime_seconds", aliases=_alias(
        "cpu_seconds", "cpu_time_s", "process_cpu_s")),
    Metric("children_cpu_seconds", "cpu.children_seconds", aliases=_alias(
        "child_cpu_seconds", "children_cpu_s")),
    Metric("runtime_cpu_ms_per_task", "cpu.runtime_ms_per_task", aliases=_alias(
        "cpu_ms_per_task")),
    Metric("runtime_cpu_ms_per_llm_call", "cpu.runtime_ms_per_llm_call"),
    # ---- event-loop lag ----
    _same("loop_lag_ms.p50"),
    _same("loop_lag_ms.p99"),
    _same("loop_lag_ms.max"),
    # ---- latency distributions (ms) ----
    *_distribution("ttft_ms", {q: _alias(f"ttft_{q}_ms") for q in ("p50", "p95", "p99")}),
    *_distribution("itl_ms"),
    *_distribution("tpot_ms"),
    *_distribution("llm_e2e_ms"),
    *_distribution("first_byte_wait_ms", v1=False),
    # one call's parts (schema 2), adding up to its E2E
    *_distribution("pre_send_ms", v1=False),
    *_distribution("endpoint_queue_ms", v1=False),
    *_distribution("server_ms", v1=False),
    *_distribution("first_byte_lag_ms", v1=False),
    *_distribution("last_byte_lag_ms", v1=False),
    *_distribution("runtime_overhead_ms", v1=False),
    # schema 1's client E2E − server time (it held the endpoint's backlog) and queue wait
    *_distribution("llm_overhead_ms", v2=False),
    *_distribution("llm_queue_wait_ms", v2=False),
    *_distribution("tool_spawn_ms"),
    *_distribution("tool_wall_ms"),
    # schema 1 also had task_latency_p50/p95/p99 in seconds: read here as aliases
    *_distribution("task_wall_ms", _seconds_to_ms("task_latency")),
    *_distribution("task_overhead_ms"),
    # ---- throughput ----
    _same("throughput.requests_per_s"),
    _same("throughput.output_tokens_per_s"),
    _same("throughput.tasks_per_s", aliases=_alias("tasks_per_s", "tasks_per_second")),
    # ---- totals ----
    Metric("llm_calls", "totals.llm_calls"),
    Metric("output_tokens", "totals.output_tokens"),
    Metric("peak_agents_in_flight", "totals.peak_agents_in_flight"),
    Metric("retries_by_cause", "totals.retries_by_cause", "mapping"),
    Metric("errors_by_cause", "totals.errors_by_cause", "mapping"),
    Metric("test_exit_causes", "totals.test_exit_causes", "mapping"),
)
# fmt: on

BY_NAME: dict[str, Metric] = {metric.name: metric for metric in METRICS}
if len(BY_NAME) != len(METRICS):  # pragma: no cover - a mistake in the table above
    raise AssertionError("METRICS names a metric twice")

#: A file reporting none of these (under any of their names) is not a benchmark summary.
HEADLINE = ("tasks", "passed", "pass_at_1", "peak_rss_mib", "wall_seconds")


def _known_paths(schema: int | None) -> tuple[frozenset[str], frozenset[str]]:
    """Every path a file of ``schema`` is read at, and every proper prefix of one."""
    paths = {key for metric in METRICS for key, _ in metric.candidates(schema)}
    prefixes = {path.rsplit(".", n)[0] for path in paths for n in range(1, path.count(".") + 1)}
    return frozenset(paths), frozenset(prefixes)


#: (paths, prefixes) by schema: schema 1 and other stacks' files are read at the same keys
_KNOWN = {2: _known_paths(2), None: _known_paths(None)}


def is_number(value: Any) -> TypeGuard[int | float]:
    """An int or a float, and not a bool."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def lookup(data: Mapping[str, Any], path: str) -> Any:
    """``data[a][b][c]`` for ``"a.b.c"``; None where a level is missing or not an object."""
    node: Any = data
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


@dataclass(frozen=True)
class SummaryView:
    """One summary file read through :data:`METRICS`.

    ``values`` has every metric's name, None where the file does not report it; ``sources``
    says which key each reported value came from; ``schema`` is 1 or 2 for this stack's
    summaries and None for another stack's; ``data`` is the file's JSON object.
    """

    path: Path
    schema: int | None
    data: Mapping[str, Any]
    values: Mapping[str, Any]
    sources: Mapping[str, str]
    unrecognised: tuple[str, ...] = ()

    def __getitem__(self, name: str) -> Any:
        """A metric's value (None = not reported); KeyError for a name METRICS lacks."""
        if name not in BY_NAME:
            raise KeyError(f"no metric {name!r} in fastagent.analysis.summaries.METRICS")
        return self.values[name]

    def number(self, name: str) -> float | None:
        """A numeric metric's value as a float, None when not reported."""
        value = self[name]
        return float(value) if is_number(value) else None


def read_json(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The JSON object in ``path``; ReportError (one line, naming the file) otherwise."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ReportError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ReportError(f"{path}: is a directory, expected a *_summary.json file") from None
    except OSError as exc:
        raise ReportError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        data = msgspec.json.decode(raw)
    except msgspec.DecodeError as exc:
        raise ReportError(f"{path}: not JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ReportError(
            f"{path}: not a benchmark summary (expected a JSON object, got {_json_type(data)})"
        )
    return data


def _json_type(value: Any) -> str:
    names = {list: "an array", str: "a string", bool: "true/false", type(None): "null"}
    return names.get(type(value), "a number")


def _schema(data: Mapping[str, Any], path: Path) -> int | None:
    """1 or 2 for this stack's summaries (schema 2 checked against Summary), None otherwise."""
    version = data.get("schema_version")
    if version == 2 and not isinstance(version, bool):
        try:
            msgspec.convert(data, Summary)
        except msgspec.ValidationError as exc:
            raise ReportError(f"{path}: not a valid schema-2 summary: {exc}") from None
        return 2
    if version == 1 and not isinstance(version, bool):
        return 1
    if version is not None and data.get("runtime") == "python":
        raise ReportError(
            f"{path}: schema_version {version!r} is not one this fastagent reads (1 or 2); "
            "upgrade fastagent"
        )
    return None  # another stack's summary, whatever its own versioning


def _checked(metric: Metric, value: Any, source: str, path: Path) -> Any:
    """``value`` as ``metric``'s kind wants it; ReportError when it cannot be."""
    kind = metric.kind
    if kind in ("number", "fraction") and is_number(value):
        return value
    if kind == "text" and isinstance(value, str):
        return value
    if kind == "text" and is_number(value):
        return str(value)
    if kind == "flag" and isinstance(value, bool):
        return value
    if kind == "mapping" and isinstance(value, dict):
        return value
    wanted = {"number": "a number", "fraction": "a number", "text": "a string"}.get(
        kind, "true/false" if kind == "flag" else "a JSON object"
    )
    raise ReportError(f"{path}: {source} is {value!r}, expected {wanted}")


def resolve(
    data: Mapping[str, Any], name: str, schema: int | None = None, path: Path | None = None
) -> tuple[Any, str | None]:
    """The value of metric ``name`` in ``data`` (in our unit) and the key it came from.

    >>> resolve({"pass_at_1_pct": 96}, "pass_at_1")
    (0.96, 'pass_at_1_pct')
    >>> resolve({"pass_at_1": 96}, "pass_at_1"), resolve({}, "pass_at_1")
    ((0.96, 'pass_at_1'), (None, None))
    """
    metric = BY_NAME[name]
    for key, scale in metric.candidates(schema):
        found = lookup(data, key)
        if found is None:
            continue
        value = _checked(metric, found, key, path or Path("summary"))
        if scale != 1 and is_number(value):
            value = value * scale
        if metric.kind == "fraction" and value > 1:
            value = value / 100
        return value, key
    return None, None


def _unmapped(node: Mapping[str, Any], schema: int | None, prefix: str = "") -> Iterator[str]:
    """Paths in ``node`` that no row reads: a whole object when no row reads inside it."""
    known, prefixes = _KNOWN[2 if schema == 2 else None]
    for key, value in node.items():
        here = f"{prefix}{key}"
        if here in known or (not prefix and key.startswith("_")):  # "_comment" and the like
            continue
        if here in prefixes and isinstance(value, Mapping):
            yield from _unmapped(value, schema, here + ".")
        else:
            yield here


def view_of(data: Mapping[str, Any], path: str | os.PathLike[str]) -> SummaryView:
    """``data`` (the JSON object of the file at ``path``) through :data:`METRICS`."""
    path = Path(path)
    schema = _schema(data, path)
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for metric in METRICS:
        value, source = resolve(data, metric.name, schema, path)
        values[metric.name] = value
        if source is not None:
            sources[metric.name] = source
    if all(values[name] is None for name in HEADLINE):
        raise ReportError(
            f"{path}: not a benchmark summary (none of the keys {', '.join(HEADLINE)} "
            "or their known aliases)"
        )
    return SummaryView(path, schema, data, values, sources, tuple(sorted(_unmapped(data, schema))))


def load_summary(path: str | os.PathLike[str]) -> SummaryView:
    """Read the summary at ``path``: this stack's schema 1 or 2, or another stack's keys."""
    return view_of(read_json(path), path)
