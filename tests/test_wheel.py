"""The wheels benchmark hosts install: built with `python -m build`, run outside the tree."""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
from _child import read_summary

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow


def sh(*argv: str | Path, cwd: Path | None = None, env: dict[str, str] | None = None,
       timeout: float = 900) -> subprocess.CompletedProcess[str]:  # fmt: skip
    proc = subprocess.run(
        [str(a) for a in argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, f"{argv} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def build(out: Path, pure: bool) -> Path:
    env = {k: v for k, v in os.environ.items() if k != "FASTAGENT_NO_EXTENSIONS"}
    if pure:
        env["FASTAGENT_NO_EXTENSIONS"] = "1"
    kinds = ["--wheel"] if pure else ["--sdist", "--wheel"]
    sh(sys.executable, "-m", "build", *kinds, "--outdir", out, ROOT, env=env)
    (wheel,) = out.glob("fastagent-*.whl")
    return wheel


def install_and_run(wheel: Path, tmp: Path) -> dict:
    venv = tmp / "venv"
    sh(sys.executable, "-m", "venv", venv)
    sh(venv / "bin" / "python", "-m", "pip", "install", "--quiet", wheel)
    run_dir = tmp / "elsewhere"
    run_dir.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LLM_", "BENCH_", "PYTHON"))}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env.pop("FASTAGENT_NO_EXTENSIONS", None)
    proc = sh(
        venv / "bin" / "fastagent", "bench", "--tasks", "5", "--concurrency", "5",
        "--results-dir", "out", cwd=run_dir, env=env,
    )  # fmt: skip
    assert "Traceback" not in proc.stderr
    check = sh(venv / "bin" / "fastagent", "bench", "--check", cwd=run_dir, env=env)
    assert "sha256" in check.stdout and "100 tasks" in check.stdout
    assert ("PURE PYTHON" in check.stdout) == ("none-any" in wheel.name)
    (summary,) = (run_dir / "out").glob("*_summary.json")
    data = read_summary(summary)
    o = data.outcomes
    assert o.tasks == 5 and o.errors == 0 and o.passed >= 4
    assert str(ROOT) not in data.settings.dataset
    return data


def test_platform_wheel_and_sdist(tmp_path: Path) -> None:
    wheel = build(tmp_path / "dist", pure=False)
    assert "-cp3" in wheel.name and "linux" in wheel.name
    names = zipfile.ZipFile(wheel).namelist()
    assert any(n.startswith("fastagent/_speedups.") and n.endswith(".so") for n in names)
    assert "fastagent/_speedups_py.py" in names
    assert {"fastagent/_data/humaneval_100.json", "fastagent/_data/humaneval_100_solutions.json",
            "fastagent/_data/humaneval_100.sha256"} <= set(names)  # fmt: skip
    assert {"fastagent/py.typed", "fastagent/_speedups.pyi", "fastagent/sandbox/probe.py",
            "fastagent/_transports/base.py", "fastagent/sim/launcher.py",
            "fastagent/analysis/__init__.py"} <= set(names)  # fmt: skip
    (sdist,) = (tmp_path / "dist").glob("fastagent-*.tar.gz")
    with tarfile.open(sdist) as tar:
        members = {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}
    # what the test suite needs to pass from the sdist
    assert {"tests/data/cpp_summary.json", "docs/summary.schema.json", "docs/results.md",
            "scripts/schemas.py", "fastagent/_data/humaneval_100.json",
            "dataset/humaneval_100.json"} <= members  # fmt: skip
    summary = install_and_run(wheel, tmp_path)
    assert summary.implementation == "cython"


def test_pure_wheel(tmp_path: Path) -> None:
    wheel = build(tmp_path / "dist", pure=True)
    assert wheel.name.endswith("-py3-none-any.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert not any(n.endswith(".so") for n in names)
    summary = install_and_run(wheel, tmp_path)
    assert summary.implementation == "pure"
