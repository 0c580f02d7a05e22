"""The machine's process tree from /proc: shared by the coordinator and the shard actor."""

from __future__ import annotations

import os

__all__ = ["process_tree"]


def process_tree() -> dict[int, list[int]]:
    """Every process's children, from one pass over /proc (a parent's threads fork too, so
    its main thread's children list is not enough)."""
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2 :].split()
        if len(fields) > 1:
            tree.setdefault(int(fields[1]), []).append(int(entry))
    return tree
