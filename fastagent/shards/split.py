"""How a ``--shards N`` run deals its tasks, and how a shard reads its share back.

The tasks are the list a single run would have (``--tasks``, then ``--repeat``), numbered
from 0. The indices still to run are dealt round-robin: shard ``k`` of ``N`` gets the
``k``-th, ``k + N``-th, ... of them, so every task is in exactly one shard and the same ``N``
always makes the same split::

    >>> round_robin([0, 1, 2, 3, 4, 5, 6], 3)
    [[0, 3, 6], [1, 4], [2, 5]]
    >>> parse_indices(format_indices([0, 3, 6]) + "\\n", "f")
    [0, 3, 6]

A shard is an ordinary ``fastagent bench`` given ``--task-indices FILE``, the file
:func:`format_indices` writes; the runner keeps those tasks (:func:`select_tasks`). Standard
library only: the measured process imports this module when it is a shard.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TypeVar

from ..errors import RunError

__all__ = ["format_indices", "parse_indices", "round_robin", "select_tasks"]

T = TypeVar("T")
_SEPARATORS = re.compile(r"[\s,]+")


def round_robin(indices: Sequence[int], shards: int) -> list[list[int]]:
    """``indices`` dealt over ``shards`` lists in turn (some empty when there are fewer)."""
    return [list(indices[k::shards]) for k in range(shards)]


def format_indices(indices: Sequence[int]) -> str:
    """The text of a ``--task-indices`` file: the indices, space-separated."""
    return " ".join(str(i) for i in indices)


def parse_indices(text: str, where: str) -> list[int]:
    """The indices a ``--task-indices`` file lists, in order; RunError (one line) when a word
    is not an index >= 0 or one appears twice."""
    indices: list[int] = []
    seen: set[int] = set()
    for word in _SEPARATORS.split(text.strip()):
        if not word:
            continue
        if not word.isdigit():
            raise RunError(f"--task-indices {where}: {word!r} is not a task index (0, 1, ...)")
        index = int(word)
        if index in seen:
            raise RunError(f"--task-indices {where}: index {index} is listed twice")
        seen.add(index)
        indices.append(index)
    if not indices:
        raise RunError(f"--task-indices {where}: lists no task index")
    return indices


def select_tasks(tasks: Sequence[T], path: str) -> list[T]:
    """The tasks at the positions the file at ``path`` lists, in its order."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as exc:
        raise RunError(f"--task-indices: cannot read {path}: {exc.strerror}") from None
    indices = parse_indices(text, path)
    beyond = [i for i in indices if i >= len(tasks)]
    if beyond:
        raise RunError(
            f"--task-indices {path}: index {beyond[0]} is out of range: the task list has "
            f"{len(tasks)} tasks (pass the same --dataset/--tasks/--repeat)"
        )
    return [tasks[i] for i in indices]
