"""fastagent: the Python stack of a cross-language benchmark of coding-agent runtimes.

Run it::

    $ fastagent bench                # 100 HumanEval tasks on the built-in simulated endpoint
    $ fastagent bench --pure-python  # the same with the pure-Python speedups

Use it from code::

    >>> from fastagent import load_tasks, extract_code
    >>> extract_code("```python\\nx = 1\\n```")
    'x = 1\\n'

Importing the package is cheap: the public names below load their module on first use,
so the measured process pays only for what it touches.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "SSEParser": "fastagent.speedups",
    "delta_content": "fastagent.speedups",
    "extract_code": "fastagent.speedups",
    "IMPLEMENTATION": "fastagent.speedups",
    "Task": "fastagent.dataset",
    "load_tasks": "fastagent.dataset",
    "DatasetError": "fastagent.dataset",
    "Config": "fastagent.config",
    "LLMClient": "fastagent.llm",
    "ToolDispatcher": "fastagent.tools",
    "AgentLoop": "fastagent.agent",
    "run_bench": "fastagent.runner",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'fastagent' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
