"""The measured process imports only what the run needs (docs/architecture.md says what)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from _child import child_env

#: Never in `fastagent bench`'s process with the default lean HTTP client.
FORBIDDEN = (
    "aiohttp", "orjson", "psutil", "matplotlib", "ray", "fastagent.analysis",
    "fastagent.sim.app", "fastagent.sim.server", "fastagent.sim.data", "fastagent.sim.faults",
    "fastagent.sim.profile", "fastagent.sandbox.probe", "fastagent._transports.aiohttp",
)  # fmt: skip

RUN = """
import json, sys
from fastagent.cli import main
code = main(sys.argv[1:])
print(json.dumps({"code": code, "modules": sorted(sys.modules)}))
"""


def modules_of_a_run(tmp_path: Path, *args: str) -> list[str]:
    proc = subprocess.run(
        [sys.executable, "-c", RUN, "bench", "--tasks", "2", "--verify", "trivial",
         "--results-dir", str(tmp_path / "out"), "--sim-profile", "ttft_ms=1", *args],
        env=child_env(), capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.splitlines()[-1])
    assert report["code"] == 0
    return list(report["modules"])


def _loaded(modules: list[str], name: str) -> bool:
    return any(m == name or m.startswith(name + ".") for m in modules)


@pytest.mark.slow
def test_a_default_run_imports_nothing_it_does_not_need(tmp_path: Path) -> None:
    modules = modules_of_a_run(tmp_path)
    loaded = [name for name in FORBIDDEN if _loaded(modules, name)]
    assert not loaded, loaded
    # what it does use
    for name in ("uvloop", "msgspec", "httptools", "fastagent._transports.wire",
                 "fastagent.sim.launcher", "fastagent.sandbox.channel"):  # fmt: skip
        assert _loaded(modules, name), name


@pytest.mark.slow
def test_aiohttp_is_one_flag_away(tmp_path: Path) -> None:
    modules = modules_of_a_run(tmp_path, "--http-client", "aiohttp")
    assert _loaded(modules, "aiohttp") and _loaded(modules, "fastagent._transports.aiohttp")
    assert not _loaded(modules, "fastagent._transports.wire")
