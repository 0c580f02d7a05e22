"""``fastagent bench --check``: is this machine ready to run the benchmark?

Each check gives one line, ``ok``, ``note``, ``warn`` or ``FAIL`` with what to do; the exit
code is 1 when any check failed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path

import msgspec

from .config import Config
from .dataset import default_checksum_path, default_dataset_path, load_tasks, verify_checksum
from .errors import FastAgentError, LLMError, SimError

__all__ = ["run_checks"]

#: (status, text): status is "ok", "note", "warn" or "FAIL".
Line = tuple[str, str]


def run_checks(config: Config, out: Callable[[str], None] = print) -> int:
    """Print one line per check; 1 if any failed, else 0."""
    failed = False
    for check in (_python, _dataset, _speedups, _endpoint):
        for status, text in check(config):
            failed |= status == "FAIL"
            out(f"{status:<4}  {text}")
    return 1 if failed else 0


def _python(config: Config) -> Iterator[Line]:
    from .runner import check_python

    try:
        yield "ok", f"{config.python} imports pytest {check_python(config.python)}"
    except FastAgentError as exc:
        yield "FAIL", str(exc)


def _dataset(config: Config) -> Iterator[Line]:
    dataset = Path(config.dataset) if config.dataset else default_dataset_path()
    checksum = dataset.with_suffix(".sha256") if config.dataset else default_checksum_path()
    try:
        yield "ok", f"dataset {dataset}: {len(load_tasks(dataset))} tasks"
        if checksum.is_file():
            digest = verify_checksum(dataset, checksum)
            yield "ok", f"dataset sha256 {digest[:16]}… matches {checksum.name}"
        else:
            yield "note", f"dataset {dataset.name} has no checksum file; hash not verified"
    except FastAgentError as exc:
        yield "FAIL", str(exc)


def _speedups(config: Config) -> Iterator[Line]:
    from .speedups import IMPLEMENTATION, NO_EXTENSIONS

    if IMPLEMENTATION == "cython":
        yield "ok", "speedups: compiled Cython module loaded"
    elif NO_EXTENSIONS:
        yield "note", "speedups: PURE PYTHON, as asked (FASTAGENT_NO_EXTENSIONS / --pure-python)"
    else:
        yield (
            "warn",
            (
                "speedups: PURE PYTHON: the compiled module is not installed (a pure wheel, "
                "or no C compiler at install time); results will say implementation=pure"
            ),
        )


def _endpoint(config: Config) -> Iterator[Line]:
    if config.base_url:
        yield _models(config)
        return
    from .sim.launcher import SimProcess

    dataset = config.dataset or str(default_dataset_path())
    try:
        with SimProcess.for_bench(dataset, config.sim_profile) as sim:
            status, text = _models(msgspec.structs.replace(config, base_url=sim.base_url))
    except SimError as exc:
        status, text = "FAIL", str(exc)
    yield status, f"built-in simulated endpoint: {text}"


def _models(config: Config) -> Line:
    from .llm import LLMClient

    async def probe() -> list[str]:
        async with LLMClient(config) as client:
            return await client.list_models()

    try:
        models = asyncio.run(probe())
    except LLMError as exc:
        return "FAIL", str(exc)
    wanted = config.model
    if wanted and wanted not in models:
        return "FAIL", f"{config.base_url} answers but does not list model {wanted!r} ({models})"
    return "ok", f"{config.base_url} answers /models: {', '.join(models) or '(none)'}"
