"""Where model-written code runs: the tools of one workspace and the test process's confinement.

=================  ==================================================================
module             owns
=================  ==================================================================
``tools``          ``ToolDispatcher``: write_file, read_file, list_dir, search, exec
``policy``         ``Sandbox``: the exec-wrapper chain (bwrap, unshare, prlimit), its modes
``cgroup``         the run's pids cgroup: caps and sweeps every test's processes
``channel``        ``ProbeChannel``: the test's verdict out of band, nonce-signed
``probe``          the pytest plugin on the other end (loaded in the test process only)
=================  ==================================================================

Importing this package imports none of them (the names below load on first use): the
probe plugin is imported through it by the test interpreter, which may lack msgspec.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ExecResult": "tools",
    "ExitCause": "tools",
    "ToolDispatcher": "tools",
    "scrubbed_env": "tools",
    "Limits": "policy",
    "Sandbox": "policy",
    "SandboxMode": "policy",
    "ProbeChannel": "channel",
    "Verdict": "channel",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
