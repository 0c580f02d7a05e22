"""A complete schema-2 Summary for tests that need one without running the bench."""

from __future__ import annotations

from fastagent.config import HttpClient, VerifyMode
from fastagent.schema import (
    SCHEMA_VERSION,
    Cpu,
    Distribution,
    Endpoint,
    Latency,
    LoopLag,
    Memory,
    Outcomes,
    RssTimeline,
    Settings,
    Summary,
    Throughput,
    Totals,
    Versions,
)


def sample_summary(**top: object) -> Summary:
    """3 tasks on the simulated endpoint: 2 passed (1 recovered), 1 failed; ``top`` overrides
    top-level fields."""
    dist = Distribution(count=4, mean=60.0, p50=55.0, p95=80.0, p99=80.0, max=80.0)
    fields: dict[str, object] = {
        "schema_version": SCHEMA_VERSION,
        "runtime": "python",
        "implementation": "cython",
        "event_loop": "uvloop",
        "started_at": "2026-12-01T00:00:00Z",
        "wall_seconds": 4.2,
        "interrupted": False,
        "interrupted_by_signal": None,
        "csv": "results/raw/python_20261201T000000Z.csv",
        "settings": Settings(
            concurrency=3, max_procs=2, max_retries=3, repeat=1, stream=True,
            verify=VerifyMode.PYTEST, http_client=HttpClient.WIRE, dataset="dataset/x.json",
            sandbox="bwrap+cgroup", sandbox_warning=None,
        ),
        "endpoint": Endpoint(
            base_url="http://127.0.0.1:1/v1", model="fastagent-sim", simulated=True,
            started_by_bench=True, sim_profile={"ttft_ms": 50.0, "itl_ms": 2.0},
        ),
        "outcomes": Outcomes(
            tasks=3, passed=2, pass_at_1=0.6667, first_attempt_passes=1, recovered=1,
            failed=1, errors=0, avg_retries=1.33,
        ),
        "memory": Memory(
            peak_rss_mib=30.5, peak_children=2, peak_children_rss_mib=40.0, open_fds_at_end=9,
            live_children_at_end=0,
            rss_timeline=RssTimeline(interval_s=0.05, t=[0.05, 0.1], rss_mib=[29.0, 30.1]),
        ),
        "cpu": Cpu(
            runtime_seconds=0.2, children_seconds=3.1, runtime_ms_per_task=66.7,
            runtime_ms_per_llm_call=50.0,
        ),
        "loop_lag_ms": LoopLag(p50=0.5, p99=3.0, max=4.0),
        "latency": Latency(**{name: dist for name in Latency.__struct_fields__}),
        "throughput": Throughput(requests_per_s=1.0, output_tokens_per_s=100.0, tasks_per_s=0.7),
        "totals": Totals(
            llm_calls=4, output_tokens=400, peak_agents_in_flight=3, retries_by_cause={},
            errors_by_cause={}, test_exit_causes={"exit_0": 2, "exit_1": 4},
        ),
        "versions": Versions(
            stack="0.1.0", language="cpython 3.11.7",
            libraries={"uvloop": "0.23.0", "msgspec": "0.23.0", "httptools": None,
                       "aiohttp": None},
            pytest_in_tests="9.2.0",
        ),
        "sharding": None,
    }  # fmt: skip
    fields.update(top)
    return Summary(**fields)  # type: ignore[arg-type]
