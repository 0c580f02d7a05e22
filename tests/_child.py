"""The environment of a `python -m fastagent` child process in the tests, and its results."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import msgspec

from fastagent.schema import Summary

#: The test interpreter's bin directory (its venv): the child's `fastagent`, `python` and
#: pytest come from there.
VENV_BIN = str(Path(sys.executable).parent)

_ENDPOINT_VARS = ("LLM_BASE_URL", "LLM_MODEL", "BENCH_DATASET", "BENCH_CONCURRENCY")


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This environment with the venv's bin first on PATH and no endpoint or dataset variables
    from the developer's shell, then ``extra``."""
    env = {**os.environ, "PATH": VENV_BIN + os.pathsep + os.environ.get("PATH", "")}
    for name in _ENDPOINT_VARS:
        env.pop(name, None)
    env.update(extra or {})
    return env


def read_summary(path: Path) -> Summary:
    """A summary JSON, decoded (and so checked) against the schema."""
    return msgspec.json.decode(path.read_bytes(), type=Summary)
