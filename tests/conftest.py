"""Shared pytest fixtures. Each section belongs to the test module named in its header."""

from __future__ import annotations

import importlib
import os
from types import ModuleType

import pytest

# ---- speedups (tests/test_speedups.py) -------------------------------------------------------

_SPEEDUPS_MODULES = {"cython": "fastagent._speedups", "pure": "fastagent._speedups_py"}


@pytest.fixture(params=["cython", "pure"], ids=["cython", "pure"])
def speedups(request: pytest.FixtureRequest) -> ModuleType:
    """Each speedups implementation in turn: the compiled module itself, then the pure twin.

    The compiled one is imported directly, so a missing build fails instead of being skipped,
    unless FASTAGENT_NO_EXTENSIONS is set (a pure install), where it is skipped.
    """
    if request.param == "cython" and os.environ.get("FASTAGENT_NO_EXTENSIONS", "") not in ("", "0"):
        pytest.skip("FASTAGENT_NO_EXTENSIONS is set: the compiled module is not expected")
    return importlib.import_module(_SPEEDUPS_MODULES[request.param])


# ---- end of speedups -------------------------------------------------------------------------
