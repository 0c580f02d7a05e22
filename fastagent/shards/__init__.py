"""``fastagent bench --shards N``: one run spread over N ordinary bench processes by Ray.

Not written yet: see issue 15.
"""

from __future__ import annotations

from ..config import Config
from ..errors import UsageError

__all__ = ["run_sharded"]


def run_sharded(config: Config) -> int:
    raise UsageError("--shards is not available yet")
