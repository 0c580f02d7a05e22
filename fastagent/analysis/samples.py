"""Samples files (``fastagent bench --samples FILE``) read back, and merged exactly.

A run's summary gives each distribution's percentiles from a histogram (within 1 %); the
percentiles of several runs together (the shards of one) cannot be had from theirs. Each
run's samples file holds every per-call and per-task sample it took, so a merge sorts them
all and takes nearest-rank percentiles: exact. Distributions with a sample per streamed
token (ITL) are in the file as histogram bucket counts, merged bucket by bucket: exactly the
histogram one process would have made of them all, so within 1 % like a single run's::

    >>> import io
    >>> from fastagent.telemetry import Telemetry
    >>> out = io.BytesIO()
    >>> t = Telemetry(samples=out)
    >>> for v in (0.010, 0.020, 0.030, 0.040):
    ...     t.hist["ttft"].add(v)
    >>> t.finish_samples()
    >>> s = read_samples(io.BytesIO(out.getvalue()))
    >>> list(s.values["ttft"]), exact(s.values["ttft"]).p50
    ([0.01, 0.02, 0.03, 0.04], 20.0)
"""

from __future__ import annotations

import math
import os
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import IO

import msgspec

from ..errors import ReportError
from ..schema import Distribution
from ..telemetry import SAMPLE, SAMPLES_MAGIC, TRAILER, Histogram

__all__ = ["Samples", "exact", "merge", "read_samples"]


@dataclass
class Samples:
    """One or more runs' samples: raw values by distribution name (seconds), and the
    histograms of the distributions not sampled one by one."""

    values: dict[str, array[float]] = field(default_factory=dict)
    histograms: dict[str, Histogram] = field(default_factory=dict)


def read_samples(source: str | os.PathLike[str] | IO[bytes]) -> Samples:
    """Read a samples file; ReportError (one line) when it is not one."""
    if isinstance(source, str | os.PathLike):
        try:
            with open(source, "rb") as f:
                data = f.read()
        except OSError as exc:
            raise ReportError(f"cannot read samples file {source}: {exc.strerror}") from None
        where = str(source)
    else:
        data, where = source.read(), "samples"
    if not data.startswith(SAMPLES_MAGIC):
        raise ReportError(f"{where}: not a fastagent samples file")
    header_end = data.index(b"\n", len(SAMPLES_MAGIC))
    names: list[str] = msgspec.json.decode(data[len(SAMPLES_MAGIC) : header_end])
    out = Samples({name: array("d") for name in names})
    columns = [out.values[name] for name in names]
    pos, size, unpack = header_end + 1, SAMPLE.size, SAMPLE.unpack_from
    while pos < len(data) and data[pos] != TRAILER:
        if pos + size > len(data):
            raise ReportError(f"{where}: cut off inside a sample (the run did not finish)")
        index, value = unpack(data, pos)
        columns[index].append(value)
        pos += size
    if pos < len(data):
        trailer = msgspec.json.decode(data[pos + 1 :].strip())
        out.histograms = {name: Histogram.merged([state]) for name, state in trailer.items()}
    return out


def merge(runs: Iterable[Samples]) -> Samples:
    """Every run's samples as one run's."""
    merged = Samples()
    states: dict[str, list[Histogram]] = {}
    for run in runs:
        for name, values in run.values.items():
            merged.values.setdefault(name, array("d")).extend(values)
        for name, hist in run.histograms.items():
            states.setdefault(name, []).append(hist)
    merged.histograms = {
        name: Histogram.merged(h.state() for h in hists) for name, hists in states.items()
    }
    return merged


def exact(values: Sequence[float]) -> Distribution:
    """The distribution of ``values`` (seconds) in milliseconds, percentiles nearest-rank and
    exact."""
    if not values:
        return Distribution()
    ordered = sorted(values)
    n = len(ordered)

    def ms(q: float) -> float:  # nearest rank: the smallest value with q % at or below it
        return round(ordered[max(0, math.ceil(n * q / 100) - 1)] * 1000.0, 3)

    return Distribution(
        count=len(ordered),
        mean=round(sum(ordered) / len(ordered) * 1000.0, 3),
        p50=ms(50),
        p95=ms(95),
        p99=ms(99),
        max=round(ordered[-1] * 1000.0, 3),
    )
