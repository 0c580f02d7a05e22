"""``fastagent bench --shards N``: one run spread over N ordinary bench processes by Ray.

The coordinator (this process, Ray's driver) deals the tasks round-robin
(:mod:`~fastagent.shards.split`), starts one Ray actor per shard with SPREAD scheduling and
``num_cpus=0`` (so Ray's accounting never caps how many run at once), and each actor starts
an ordinary ``python -m fastagent bench --task-indices FILE --samples FILE`` on its node
(:mod:`~fastagent.shards.node`): the measured process never imports Ray. The coordinator
polls every actor for the rows its bench has written, copies them into one merged CSV with
a ``shard`` column as they come, and at the end merges the shards' summaries and samples
into one summary whose latency percentiles are exact over every call of every shard
(:mod:`~fastagent.shards.merge`). ``docs/results.md`` ("Sharded runs") says what each
merged figure is.

Importing this package imports nothing but the standard library: a shard's bench imports
:mod:`fastagent.shards.split`; Ray is imported by :func:`run_sharded` only.
"""

from __future__ import annotations

from ..config import Config

__all__ = ["run_sharded"]


def run_sharded(config: Config) -> int:
    """Run ``config`` over ``config.shards`` shards; the exit code (errors raise
    :class:`~fastagent.errors.FastAgentError`, one line)."""
    from .coordinator import run

    return run(config)
