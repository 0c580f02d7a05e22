"""``fastagent bench --check``: is this machine ready to run the benchmark?

Each check prints one line, "ok" or "FAIL" with what to do; the exit code is 1 when
any check failed.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from .config import Config
from .errors import FastAgentError, LLMError, SimError


def run_checks(config: Config) -> int:
    failures = 0

    def report(ok: bool, text: str) -> None:
        nonlocal failures
        failures += not ok
        print(f"{'ok  ' if ok else 'FAIL'}  {text}")

    from .runner import check_python

    try:
        version = check_python(config.python)
        report(True, f"{config.python} imports pytest {version}")
    except FastAgentError as exc:
        report(False, str(exc))

    from .dataset import default_checksum_path, default_dataset_path, load_tasks, verify_checksum

    dataset = Path(config.dataset) if config.dataset else default_dataset_path()
    try:
        tasks = load_tasks(dataset)
        report(True, f"dataset {dataset}: {len(tasks)} tasks")
        checksum = dataset.with_suffix(".sha256") if config.dataset else default_checksum_path()
        if checksum.is_file():
            digest = verify_checksum(dataset, checksum)
            report(True, f"dataset sha256 {digest[:16]}… matches {checksum.name}")
        else:
            print(f"note  dataset {dataset.name} has no checksum file; hash not verified")
    except FastAgentError as exc:
        report(False, str(exc))

    from .speedups import IMPLEMENTATION, NO_EXTENSIONS

    if IMPLEMENTATION == "cython":
        report(True, "speedups: compiled Cython module loaded")
    elif NO_EXTENSIONS:
        print("note  speedups: PURE PYTHON, as asked (FASTAGENT_NO_EXTENSIONS / --pure-python)")
    else:
        print(
            "warn  speedups: PURE PYTHON: the compiled module is not installed (a pure wheel, "
            "or no C compiler at install time); results will say implementation=pure"
        )

    if config.base_url:
        report(*_check_endpoint(config))
    else:
        from .sim.launcher import SimProcess

        try:
            with SimProcess.for_bench(str(dataset), config.sim_profile) as sim:
                from msgspec import structs

                ok, text = _check_endpoint(structs.replace(config, base_url=sim.base_url))
                report(ok, f"built-in simulated endpoint: {text}")
        except SimError as exc:
            report(False, f"built-in simulated endpoint: {exc}")
    return 1 if failures else 0


def _check_endpoint(config: Config) -> tuple[bool, str]:
    from .llm import LLMClient

    async def probe() -> list[str]:
        async with LLMClient(config) as client:
            return await client.list_models()

    try:
        models = asyncio.run(probe())
    except LLMError as exc:
        return False, str(exc)
    wanted = config.model
    if wanted and wanted not in models:
        return False, f"{config.base_url} answers but does not list model {wanted!r} ({models})"
    return True, f"{config.base_url} answers /models: {', '.join(models) or '(none)'}"
