"""The environment of a `python -m fastagent` child process in the tests, and its results.

Both come from :mod:`fastagent.analysis.children`, which the sweep and the bench scripts use
too: the venv's bin first on PATH, none of the developer's LLM_*/BENCH_* variables, no
FASTAGENT_NO_EXTENSIONS unless a test asks for the pure-Python speedups.
"""

from __future__ import annotations

from fastagent.analysis.children import VENV_BIN, child_env, read_summary

__all__ = ["VENV_BIN", "child_env", "read_summary"]
