"""How the simulated model behaves: :class:`SimProfile`, and the text that makes one.

    >>> parse_profile("seed=3,p_first=0.9,itl_ms=0,faults=http_503:0.2+reset").faults
    ((<FaultKind.HTTP_503: 'http_503'>, 0.2), (<FaultKind.RESET: 'reset'>, 1.0))

Each field's bounds are stated once, in its ``msgspec.Meta``: ``fastagent sim``'s flags are
converted and checked against them (:mod:`.server`), and a SimProfile checks them when it is
made, however it is made, with a message naming the profile key.
"""

from __future__ import annotations

import math
import typing
from collections.abc import Iterable
from typing import Annotated, Any

import msgspec
from msgspec import Meta

from .faults import FaultKind

__all__ = [
    "FIELD_TYPES",
    "PROFILE_KEYS",
    "Millis",
    "Share",
    "SimProfile",
    "parse_fault",
    "parse_faults",
    "parse_profile",
]

#: A share of tasks or of requests.
Share = Annotated[float, Meta(ge=0.0, le=1.0)]
#: A delay in milliseconds (also finite: SimProfile checks that).
Millis = Annotated[float, Meta(ge=0.0)]


class SimProfile(msgspec.Struct, frozen=True):
    """How the simulated model behaves: its accuracy, its speed and the faults it injects."""

    seed: int = 0
    p_first: Annotated[Share, Meta(description="share right at once")] = 0.87
    p_recover: Annotated[Share, Meta(description="share right after feedback")] = 0.06
    ttft_ms: Annotated[Millis, Meta(description="delay to the first chunk")] = 50.0
    itl_ms: Annotated[Millis, Meta(description="delay between chunks")] = 2.0
    start_delay_ms: Annotated[
        Millis, Meta(description="delay from a chat request read to its start")
    ] = 0.0
    tokens_per_chunk: Annotated[int, Meta(ge=1)] = 1
    model: Annotated[str, Meta(description="model name to report")] = "fastagent-sim"
    faults: tuple[tuple[FaultKind, float], ...] = ()

    def __post_init__(self) -> None:
        msgspec.structs.force_setattr(self, "faults", _check_faults(self.faults))
        for key, metas in _BOUNDS.items():
            _check_bounds(f"profile key {key!r}", getattr(self, key), metas)
        if self.p_first + self.p_recover > 1.0 + 1e-9:
            raise ValueError(
                f"profile keys 'p_first' + 'p_recover' must not exceed 1, "
                f"got {self.p_first!r} + {self.p_recover!r}"
            )
        if not self.model:
            raise ValueError("profile key 'model' must not be empty")

    def as_dict(self) -> dict[str, Any]:
        return msgspec.structs.asdict(self)


def _metas(tp: Any) -> tuple[Any, list[Meta]]:
    """(base type, its Meta objects) of a field's annotation."""
    if typing.get_origin(tp) is Annotated:
        base, *extras = typing.get_args(tp)
        return base, [m for m in extras if isinstance(m, Meta)]
    return tp, []


#: Each field's annotation, its Meta objects included (what ``fastagent sim``'s flags use).
FIELD_TYPES: dict[str, Any] = typing.get_type_hints(SimProfile, include_extras=True)
PROFILE_KEYS: tuple[str, ...] = tuple(FIELD_TYPES)
_SPLIT = {key: _metas(tp) for key, tp in FIELD_TYPES.items()}
#: The base type of each field: what its text converts to.
_BASES: dict[str, Any] = {key: base for key, (base, _) in _SPLIT.items()}
#: The Meta objects of each field with numeric bounds.
_BOUNDS: dict[str, list[Meta]] = {
    key: metas
    for key, (_, metas) in _SPLIT.items()
    if any(m.ge is not None or m.le is not None for m in metas)
}
_RATE_BOUNDS = _metas(Share)[1]
_WORDS = {int: "an integer", float: "a number", str: "a string"}


def _check_bounds(what: str, value: int | float, metas: list[Meta]) -> None:
    """ValueError ``<what> must be within [0, 1], got 1.5`` unless ``value`` meets ``metas``.

    A float must also be finite.
    """
    ge = next((m.ge for m in metas if m.ge is not None), None)
    le = next((m.le for m in metas if m.le is not None), None)
    ok = not isinstance(value, float) or math.isfinite(value)
    ok = ok and (ge is None or value >= ge) and (le is None or value <= le)
    if ok:
        return
    if ge is not None and le is not None:
        bound = f"within [{ge:g}, {le:g}]"
    elif isinstance(value, float):
        bound = f"a finite number >= {ge:g}"
    else:
        bound = f">= {ge:g}"
    raise ValueError(f"{what} must be {bound}, got {value!r}")


def _check_faults(faults: Any) -> tuple[tuple[FaultKind, float], ...]:
    """``faults`` as a tuple of ``(kind, rate)`` with float rates; ValueError when invalid."""
    if isinstance(faults, str | bytes) or not isinstance(faults, Iterable):
        raise ValueError(f"profile key 'faults' must be (kind, rate) pairs, got {faults!r}")
    checked: list[tuple[FaultKind, float]] = []
    for item in faults:
        try:
            name, rate = item
        except (TypeError, ValueError):
            raise ValueError(f"fault {item!r} is not a (kind, rate) pair") from None
        try:
            kind = FaultKind(name)
        except ValueError:
            kinds = ", ".join(FaultKind)
            raise ValueError(f"unknown fault {name!r} (kinds: {kinds})") from None
        if isinstance(rate, bool) or not isinstance(rate, int | float):
            raise ValueError(f"fault {kind.value!r}: rate must be a number, got {rate!r}")
        _check_bounds(f"fault {kind.value!r}: rate", rate, _RATE_BOUNDS)
        if any(kind is seen for seen, _ in checked):
            raise ValueError(f"fault {kind.value!r} is given twice")
        checked.append((kind, float(rate)))
    return tuple(checked)


def parse_fault(text: str) -> tuple[FaultKind, float]:
    """Parse ``"KIND"`` or ``"KIND:RATE"`` (RATE in [0, 1], default 1) into ``(kind, rate)``."""
    kind, sep, raw = text.strip().partition(":")
    kind = kind.strip().replace("-", "_")
    rate = 1.0
    if sep:
        try:
            rate = float(raw)
        except ValueError:
            raise ValueError(
                f"fault {kind!r}: rate must be a number, got {raw.strip()!r}"
            ) from None
    return _check_faults([(kind, rate)])[0]


def parse_faults(text: str) -> tuple[tuple[FaultKind, float], ...]:
    """Parse ``"KIND[:RATE]+KIND[:RATE]..."`` (the profile's ``faults`` value); ``""`` is none."""
    return _check_faults([parse_fault(item) for item in text.split("+") if item.strip()])


def parse_profile(text: str, base: SimProfile | None = None) -> SimProfile:
    """Parse ``"key=value,key=value"`` (dashes in keys allowed) over ``base`` or the defaults.

    ``faults`` takes ``KIND[:RATE]`` items joined by ``+``, e.g. ``faults=http_429:0.2+reset``.
    Values convert as ``fastagent sim``'s flags do (msgspec, from text).
    """
    valid = ", ".join(PROFILE_KEYS)
    values = (base or SimProfile()).as_dict()
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        key, sep, raw = item.partition("=")
        key = key.strip().replace("-", "_")
        raw = raw.strip()
        if not sep:
            raise ValueError(f"profile item {item!r} is not KEY=VALUE (valid keys: {valid})")
        if key not in FIELD_TYPES:
            raise ValueError(f"unknown profile key {key!r} (valid keys: {valid})")
        if key == "faults":
            values[key] = parse_faults(raw)
            continue
        kind = _BASES[key]
        try:
            values[key] = msgspec.convert(raw, kind, strict=False)
        except msgspec.ValidationError:
            raise ValueError(f"profile key {key!r} expects {_WORDS[kind]}, got {raw!r}") from None
    return SimProfile(**values)
