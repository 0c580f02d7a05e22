"""What the sim answers, loaded once: the tasks, their solutions, the plan and the replies.

With ``N`` tasks in the solutions file, a ``random.Random(seed)`` permutation of their ids
makes the first ``round(p_first * N)`` right on every attempt (:attr:`Outcome.FIRST`), the
next ``round(p_recover * N)`` wrong on the first attempt and right once the conversation
holds an assistant message (:attr:`Outcome.RECOVER`), and the rest wrong on every attempt
(:attr:`Outcome.WRONG`). A wrong answer is the task's prompt with ``raise
NotImplementedError("simulated wrong answer")`` as the body, so every test fails. A prompt
is matched to the task whose ``spec`` occurs verbatim in one of its messages (system or user,
in order; :mod:`.app`), whatever a stack's wording around it.
"""

from __future__ import annotations

import enum
import random
import re
from collections.abc import Iterable
from pathlib import Path
from typing import TypeVar

import msgspec

from ..errors import SimDataError
from ..verify import WRONG_ANSWER_MARKER
from .faults import FAULTS, FaultKind
from .profile import SimProfile

__all__ = [
    "STREAM_TAIL",
    "UNKNOWN_REPLY",
    "WRONG_BODY",
    "Outcome",
    "Reply",
    "SimData",
    "TaskIndex",
    "plan",
    "tokenize",
    "wrong_code",
]


class Outcome(enum.StrEnum):
    """A task's fixed fate in the plan."""

    #: right on every attempt
    FIRST = "first"
    #: wrong on the first attempt, right on every retry
    RECOVER = "recover"
    #: wrong on every attempt
    WRONG = "wrong"


WRONG_BODY = f'raise NotImplementedError("{WRONG_ANSWER_MARKER}")'
UNKNOWN_REPLY = (
    "I could not find a task in this prompt. Please include the function signature and "
    "docstring you would like me to implement.\n"
)
_FIRST_TEMPLATE = (
    "Here is the implementation.\n\n```python\n{code}```\n\n"
    "It handles the edge cases in the docstring.\n"
)
_RETRY_TEMPLATE = (
    "Here is the corrected implementation.\n\n```python\n{code}```\n\n"
    "This version addresses the failing test from your feedback.\n"
)
#: What follows a content chunk's JSON string in its event.
STREAM_TAIL = b'},"finish_reason":null}]}\n\n'
#: How many distinct prompts the task index remembers before it starts over.
_CACHE_LIMIT = 8192

_TOKEN_RE = re.compile(r"\s*\S{1,4}|\s+")
_DEF_RE = re.compile(r"\bdef\s+([A-Za-z_]\w*)\s*\(")
_json_str = msgspec.json.Encoder().encode


def plan(profile: SimProfile, task_ids: Iterable[str]) -> dict[str, Outcome]:
    """Map each task id to its fixed outcome.

    Counts are exact: a ``random.Random(profile.seed)`` shuffle of the ids (in the order
    given, duplicates dropped) puts ``round(p_first * N)`` first, ``round(p_recover * N)``
    next, and the rest are wrong. The result keeps the given order.
    """
    ids = list(dict.fromkeys(task_ids))
    order = ids[:]
    random.Random(profile.seed).shuffle(order)
    n = len(order)
    n_first = min(n, round(profile.p_first * n))
    n_recover = min(n - n_first, round(profile.p_recover * n))
    outcome = {tid: Outcome.FIRST for tid in order[:n_first]}
    outcome.update((tid, Outcome.RECOVER) for tid in order[n_first : n_first + n_recover])
    outcome.update((tid, Outcome.WRONG) for tid in order[n_first + n_recover :])
    return {tid: outcome[tid] for tid in ids}


def tokenize(text: str) -> list[str]:
    """Split text into ~4-character "tokens" that concatenate back to ``text``."""
    return _TOKEN_RE.findall(text)


def wrong_code(spec: str, entry_point: str) -> str:
    """The task's prompt completed with a body that raises, keeping any helpers intact."""
    code = spec if spec.endswith("\n") else spec + "\n"
    defs = list(re.finditer(rf"^([ \t]*)def\s+{re.escape(entry_point)}\s*\(", code, re.M))
    def_indent = defs[-1].group(1) if defs else ""
    last = next((line for line in reversed(code.splitlines()) if line.strip()), "")
    indent = last[: len(last) - len(last.lstrip())]
    if len(indent) <= len(def_indent):
        indent = def_indent + "    "
    candidates = [
        f"{code}{indent}{WRONG_BODY}\n",
        f"{code}{def_indent}    {WRONG_BODY}\n",
        f"def {entry_point}(*args, **kwargs):\n    {WRONG_BODY}\n",
    ]
    for candidate in candidates:
        try:
            compile(candidate, "<wrong>", "exec")
        except (SyntaxError, ValueError):
            continue
        return candidate
    return candidates[-1]


class Reply:
    """A canned reply, tokenised, its chunks of ``tokens_per_chunk`` tokens JSON-encoded once,
    and the ends of their streamed events framed for HTTP's chunked coding once."""

    __slots__ = ("_sizes", "chunks", "step", "tails", "text", "tokens")

    def __init__(self, text: str, tokens_per_chunk: int) -> None:
        self.text = text
        self.tokens = tokenize(text)
        self.step = step = tokens_per_chunk
        self.chunks = [
            _json_str("".join(self.tokens[i : i + step])) for i in range(0, len(self.tokens), step)
        ]
        #: each chunk as the end of its event's piece of a chunked body: chunk, tail, CRLF
        self.tails = [chunk + STREAM_TAIL + b"\r\n" for chunk in self.chunks]
        self._sizes: dict[int, list[bytes]] = {}

    def framing(self, n_tokens: int, head_len: int) -> tuple[list[bytes], list[bytes]]:
        """The first ``n_tokens`` tokens' content events as pieces of a chunked body, each
        ``size_lines[i] + head + tails[i]`` for an event head of ``head_len`` bytes: the size
        lines and the tails (the reply's own lists when it is whole: not to be changed)."""
        sizes = self._sizes.get(head_len)
        if sizes is None:
            sizes = self._sizes[head_len] = [
                b"%x\r\n" % (head_len + len(t) - 2) for t in self.tails
            ]
        if n_tokens == len(self.tokens):
            return sizes, self.tails
        n_full, rest = divmod(n_tokens, self.step)
        sizes, tails = sizes[:n_full], self.tails[:n_full]
        if rest:
            tail = self.chunks_of(n_tokens)[-1] + STREAM_TAIL + b"\r\n"
            sizes.append(b"%x\r\n" % (head_len + len(tail) - 2))
            tails.append(tail)
        return sizes, tails

    def text_of(self, n_tokens: int) -> str:
        """The text of the first ``n_tokens`` tokens."""
        return self.text if n_tokens == len(self.tokens) else "".join(self.tokens[:n_tokens])

    def chunks_of(self, n_tokens: int) -> list[bytes]:
        """The encoded content chunks of the first ``n_tokens`` tokens (the reply's own list
        when it is whole: not to be changed)."""
        if n_tokens == len(self.tokens):
            return self.chunks
        n_full, rest = divmod(n_tokens, self.step)
        chunks = self.chunks[:n_full]
        if rest:
            chunks.append(_json_str("".join(self.tokens[n_full * self.step : n_tokens])))
        return chunks

    def n_chunks(self, n_tokens: int) -> int:
        """How many content chunks the first ``n_tokens`` tokens make."""
        return -(-n_tokens // self.step)


class _SpecRow(msgspec.Struct):
    id: str
    spec: str


class _SolutionRow(msgspec.Struct):
    id: str
    entry_point: str
    solution: str


_Row = TypeVar("_Row", _SpecRow, _SolutionRow)


def _load_rows(path: Path, row_type: type[_Row], what: str) -> list[_Row]:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise SimDataError(f"{what} file not found: {path}") from None
    except OSError as exc:
        raise SimDataError(f"cannot read {what} file {path}: {exc.strerror or exc}") from None
    try:
        rows = msgspec.json.decode(raw, type=list[row_type])  # type: ignore[valid-type]
    except msgspec.DecodeError as exc:
        raise SimDataError(f"malformed {what} file {path}: {exc}") from None
    if not rows:
        raise SimDataError(f"{what} file {path} holds no tasks")
    return rows


class TaskIndex:
    """Finds which task's spec occurs verbatim in a prompt, via the ``def name(`` lines."""

    def __init__(self, specs: dict[str, str]) -> None:
        self._by_name: dict[str, list[tuple[str, str]]] = {}
        self._nameless: list[tuple[str, str]] = []
        for tid, spec in specs.items():
            needle = spec.strip()
            names = set(_DEF_RE.findall(needle))
            for name in names:
                self._by_name.setdefault(name, []).append((tid, needle))
            if not names:
                self._nameless.append((tid, needle))
        self._cache: dict[str, str | None] = {}

    def find(self, text: str) -> str | None:
        """The id of the task with the longest spec that occurs in ``text``, or None."""
        try:
            return self._cache[text]
        except KeyError:
            pass
        best: tuple[str, str] | None = None
        seen: set[str] = set()
        for name in _DEF_RE.findall(text):
            for tid, needle in self._by_name.get(name, ()):
                if tid in seen:
                    continue
                seen.add(tid)
                if needle in text and (best is None or len(needle) > len(best[1])):
                    best = (tid, needle)
        if best is None:
            for tid, needle in self._nameless:
                if needle in text and (best is None or len(needle) > len(best[1])):
                    best = (tid, needle)
        found = best[0] if best else None
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()
        self._cache[text] = found
        return found


class SimData:
    """The tasks, the plan and every reply, loaded and encoded once at start.

    Raises :class:`~fastagent.errors.SimDataError` when a file is missing or malformed, or a
    task of the dataset has no solution.
    """

    def __init__(self, profile: SimProfile, tasks_path: Path, solutions_path: Path) -> None:
        spec_rows = _load_rows(tasks_path, _SpecRow, "dataset")
        solution_rows = _load_rows(solutions_path, _SolutionRow, "solutions")
        solutions = {row.id: row for row in solution_rows}
        specs = {row.id: row.spec for row in spec_rows}
        missing = [tid for tid in specs if tid not in solutions]
        if missing:
            shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
            raise SimDataError(
                f"{len(missing)} dataset task(s) have no entry in {solutions_path}: {shown}"
            )
        self.plan = plan(profile, solutions)
        self.index = TaskIndex(specs)
        tpc = profile.tokens_per_chunk
        self._replies: dict[tuple[str, bool], Reply] = {}
        for tid, spec in specs.items():
            row = solutions[tid]
            right = row.solution if row.solution.endswith("\n") else row.solution + "\n"
            wrong = wrong_code(spec, row.entry_point)
            outcome = self.plan[tid]
            first_code = right if outcome is Outcome.FIRST else wrong
            retry_code = wrong if outcome is Outcome.WRONG else right
            self._replies[tid, False] = Reply(_FIRST_TEMPLATE.format(code=first_code), tpc)
            self._replies[tid, True] = Reply(_RETRY_TEMPLATE.format(code=retry_code), tpc)
        self._unknown = Reply(UNKNOWN_REPLY, tpc)
        #: the replies that faults put in place of the planned one
        self.fault_replies: dict[FaultKind, Reply] = {
            kind: Reply(fault.reply, tpc)
            for kind, fault in FAULTS.items()
            if fault.reply is not None
        }

    def reply(self, task_id: str | None, retry: bool) -> Reply:
        """The planned reply to a task's first attempt or a retry; for no task, a request for
        one."""
        return self._unknown if task_id is None else self._replies[task_id, retry]
