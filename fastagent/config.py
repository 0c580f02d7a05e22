"""The run's settings as one frozen struct.

Built by the CLI from flags and environment (flags win)::

    >>> from fastagent.config import Config
    >>> Config(concurrency=10, tasks=5).concurrency
    10
"""

from __future__ import annotations

import os

import msgspec

API_KEY_ENV = ("LLM_API_KEY", "OPENAI_API_KEY")


def default_max_procs() -> int:
    """One test process per core: pytest start-up is CPU-bound, more only queues in the kernel."""
    return max(1, os.cpu_count() or 1)


class Config(msgspec.Struct, frozen=True, kw_only=True):
    """Everything one `fastagent bench` run needs; see `fastagent bench --help` for each field."""

    base_url: str | None = None
    model: str | None = None
    api_key: str | None = None
    dataset: str | None = None
    tasks: int | None = None
    concurrency: int = 100
    max_procs: int = msgspec.field(default_factory=default_max_procs)
    max_retries: int = 3
    test_timeout: float = 30.0
    python: str = "python3"
    verify: str = "pytest"
    repeat: int = 1
    resume: str | None = None

    stream: bool = True
    max_tokens: int | None = None
    temperature: float | None = 0.0
    seed: int | None = None
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    call_timeout: float = 300.0
    task_timeout: float = 1800.0
    llm_retries: int = 6
    backoff_base: float = 0.25
    backoff_max: float = 20.0
    retry_budget: float = 120.0
    max_completion_bytes: int = 1 << 20
    socket_rcvbuf: int = 16 * 1024
    http_client: str = "wire"
    output_cap: int = 64 * 1024
    feedback_chars: int = 4000

    results_dir: str = "results/raw"
    work_dir: str | None = None
    keep_workspaces: bool = False
    trace: str | None = None
    progress: bool = False
    sample_interval: float = 0.05
    sim_profile: str = ""
    sandbox: bool = True
    network: bool = False
