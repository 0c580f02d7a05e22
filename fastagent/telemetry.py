"""What the run costs: memory, CPU, event-loop lag and latency distributions.

Everything here is sized for the measured process: histograms are fixed arrays of
counters (no per-sample lists), the RSS sampler is one daemon thread reading /proc,
and the trace is streamed to disk line by line::

    >>> h = Histogram()
    >>> for v in (0.010, 0.020, 0.030):
    ...     h.add(v)
    >>> round(h.percentile(50), 3)
    0.02
"""

from __future__ import annotations

import asyncio
import math
import os
import resource
import struct
import time
from array import array
from collections.abc import Iterable, Mapping
from typing import IO, Any, Protocol

import msgspec

from .schema import Distribution, Latency, LoopLag

_PAGE = os.sysconf("SC_PAGE_SIZE")


def _ms(seconds: float) -> float:
    return round(seconds * 1000.0, 3)


def descendants(root: int, exclude: frozenset[int] = frozenset()) -> list[int]:
    """Every live descendant of ``root`` (not under an ``exclude`` pid), from the kernel's
    ``/proc/PID/task/PID/children`` lists: a few small reads, no scan of all processes."""
    found: list[int] = []
    frontier = [root]
    while frontier:
        pid = frontier.pop()
        try:
            with open(f"/proc/{pid}/task/{pid}/children", "rb") as f:
                kids = [int(k) for k in f.read().split()]
        except (OSError, ValueError):
            continue
        for kid in kids:
            if kid not in exclude:
                found.append(kid)
                frontier.append(kid)
    return found


def kernel_peak_rss_kib() -> int:
    """The kernel's high-water mark of this process's resident set (VmHWM), in KiB."""
    with open("/proc/self/status", "rb") as f:
        for line in f:
            if line.startswith(b"VmHWM:"):
                return int(line.split()[1])
    return 0


def current_rss_kib() -> int:
    """This process's resident set now, in KiB (one read of /proc/self/statm)."""
    with open("/proc/self/statm", "rb") as f:
        return int(f.read().split()[1]) * _PAGE // 1024


def cpu_seconds() -> tuple[float, float]:
    """(runtime user+sys, reaped children user+sys) in seconds."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime, kids.ru_utime + kids.ru_stime


class ServerTiming(msgspec.Struct, gc=False):
    """What an endpoint that reports its timing (the simulator's ``fastagent_timing`` in the
    last chunk) says of one request, on the machine's shared monotonic clock (seconds)."""

    #: the request parsed, its handling begun
    started: float
    #: the last byte of the response written
    last_byte: float
    #: the first content event written
    first_byte: float | None = None
    #: the request's first byte read
    accepted: float | None = None


class ServerDurations(msgspec.Struct, gc=False):
    """What llama.cpp's ``llama-server`` says of one request (the ``timings`` object of its
    last streamed chunk): its own compute in milliseconds, without timestamps. ``prompt_ms``
    ends when the first token is sampled, ``predicted_ms`` runs from there to the last."""

    prompt_ms: float
    predicted_ms: float
    prompt_n: int | None = None
    predicted_n: int | None = None
    cache_n: int | None = None


class CallParts(msgspec.Struct, gc=False, frozen=True):
    """One call's time split on the shared monotonic clock (seconds); the parts add up:
    ``pre_send + endpoint_queue + server + last_byte_lag == e2e``.

    ``pre_send`` is the runtime's before the request left (pool wait, connect, encode,
    write); ``endpoint_queue`` the request's way to the endpoint's handler (transit and the
    endpoint's backlog); ``server`` the endpoint's own time; ``last_byte_lag`` (and
    ``first_byte_lag``) how far the runtime's parsing of the last (first content) byte
    trailed its writing. Without the endpoint's timing only ``e2e`` and ``pre_send`` are
    known; the rest are None, never folded into the runtime's share.

    >>> parts = split_call(10.0, 10.001, 10.2, 10.5, ServerTiming(10.003, 10.499, 10.1995))
    >>> round(parts.runtime_overhead, 6), round(parts.endpoint_queue, 6), round(parts.server, 6)
    (0.002, 0.002, 0.496)
    """

    e2e: float
    pre_send: float
    endpoint_queue: float | None = None
    server: float | None = None
    first_byte_lag: float | None = None
    last_byte_lag: float | None = None

    @property
    def runtime_overhead(self) -> float | None:
        """The runtime's share of the call: pre-send plus the end-of-stream lag."""
        if self.last_byte_lag is None:
            return None
        return self.pre_send + self.last_byte_lag

    def trace_fields(self) -> dict[str, float]:
        """The known parts, rounded to the microsecond, for the call's trace line."""
        fields = {name: getattr(self, name) for name in _PART_NAMES}
        return {name: round(value, 6) for name, value in fields.items() if value is not None}


def split_call(
    asked: float, written: float, first: float | None, done: float, timing: ServerTiming | None
) -> CallParts:
    """The parts of a call the agent asked for at ``asked`` whose request's last byte went at
    ``written``, whose first content byte and last byte were parsed at ``first`` and ``done``."""
    written = min(max(written, asked), done) if written else asked
    if timing is None:
        return CallParts(e2e=done - asked, pre_send=written - asked)
    return CallParts(
        e2e=done - asked,
        pre_send=written - asked,
        endpoint_queue=timing.started - written,
        server=timing.last_byte - timing.started,
        first_byte_lag=None
        if first is None or timing.first_byte is None
        else first - timing.first_byte,
        last_byte_lag=done - timing.last_byte,
    )


def split_durations(
    asked: float, written: float, first: float | None, done: float, timings: ServerDurations
) -> CallParts:
    """The parts of a call to a server that reports only its durations (llama-server).

    Its time is ``prompt_ms + predicted_ms``. The first content byte arrives ``prompt_ms``
    after the server began the request (plus the first token's way out), so the endpoint's
    queue is what the first byte waited beyond that: ``first - written - prompt_ms``
    (the wait for a slot, tokenizing, transit); the last byte's lag is what the stream took
    beyond ``predicted_ms``: ``done - first - predicted_ms``, clamped at 0 and at the
    queue's 0 with the server's time shortened to keep the sum (its clock and ours differ
    by rounding only). Without a content byte only the server's time is known.

    >>> d = ServerDurations(prompt_ms=150.0, predicted_ms=800.0)
    >>> p = split_durations(10.0, 10.001, 10.251, 11.052, d)
    >>> [round(x, 6) for x in (p.pre_send, p.endpoint_queue, p.server, p.last_byte_lag)]
    [0.001, 0.1, 0.95, 0.001]
    """
    written = min(max(written, asked), done) if written else asked
    server = (timings.prompt_ms + timings.predicted_ms) / 1000
    if first is None:
        return CallParts(e2e=done - asked, pre_send=written - asked, server=server)
    queue = max(0.0, first - written - timings.prompt_ms / 1000)
    lag = max(0.0, done - first - timings.predicted_ms / 1000)
    server = min(server, done - written - queue - lag)
    return CallParts(
        e2e=done - asked,
        pre_send=written - asked,
        endpoint_queue=queue,
        server=server,
        last_byte_lag=lag,
    )


#: A call's parts as histogram, trace and summary names.
_PART_NAMES = (
    "pre_send",
    "endpoint_queue",
    "server",
    "first_byte_lag",
    "last_byte_lag",
    "runtime_overhead",
)


class Histogram:
    """Latency distribution in log-spaced buckets: exact count/mean/min/max, percentiles within 1%.

    Values are seconds from 1 µs to ~3 hours; memory is fixed (~13 KiB) however many
    samples arrive, so 10,000 agents streaming millions of chunks cost no more than one.
    """

    __slots__ = ("_counts", "count", "max", "min", "total")
    _LOW = 1e-6
    _GROWTH = math.log(1.01)
    _SIZE = int(math.log(1e4 / 1e-6) / math.log(1.01)) + 2

    def __init__(self) -> None:
        self._counts = array("I", bytes(4 * self._SIZE))
        self.count = 0
        self.total = 0.0
        self.min = math.inf
        self.max = 0.0

    def add(self, value: float) -> None:
        if value < 0.0:
            value = 0.0
        self.count += 1
        self.total += value
        if value < self.min:
            self.min = value
        if value > self.max:
            self.max = value
        if value <= self._LOW:
            index = 0
        else:
            index = min(int(math.log(value / self._LOW) / self._GROWTH) + 1, self._SIZE - 1)
        self._counts[index] += 1

    @classmethod
    def bucket(cls, value: float) -> int:
        """The index of the bucket :meth:`add` counts ``value`` in (a histogram kept elsewhere,
        e.g. in shared memory, counts with it and is read back through :meth:`merged`)."""
        if value <= cls._LOW:
            return 0
        return min(int(math.log(value / cls._LOW) / cls._GROWTH) + 1, cls._SIZE - 1)

    @classmethod
    def buckets(cls) -> int:
        """How many buckets a histogram has."""
        return cls._SIZE

    def percentile(self, q: float) -> float:
        """The q-th percentile (0 < q <= 100), nearest-rank, clamped to the observed min/max."""
        if not self.count:
            return math.nan
        rank = max(1, math.ceil(q / 100.0 * self.count))
        seen = 0
        for index, n in enumerate(self._counts):
            seen += n
            if seen >= rank:
                if index == 0:
                    value = self._LOW
                else:
                    value = self._LOW * math.exp((index - 0.5) * self._GROWTH)
                return min(max(value, self.min), self.max)
        return self.max

    def state(self) -> dict[str, object]:
        """Everything that makes this histogram, for merging with others (bucket: count)."""
        counts = {i: n for i, n in enumerate(self._counts) if n}
        return {"counts": counts, "count": self.count, "total": self.total,
                "min": self.min if self.count else None, "max": self.max}  # fmt: skip

    @classmethod
    def merged(cls, states: Iterable[Mapping[str, Any]]) -> Histogram:
        """One histogram of every sample of several, from their :meth:`state`: exactly the
        histogram one process would have made of them all."""
        merged = cls()
        for state in states:
            for index, n in state["counts"].items():
                merged._counts[int(index)] += n
            merged.count += state["count"]
            merged.total += state["total"]
            if state["count"]:
                merged.min = min(merged.min, state["min"])
                merged.max = max(merged.max, state["max"])
        return merged

    def summary(self) -> Distribution:
        """count, mean, p50, p95, p99, max, in milliseconds."""
        if not self.count:
            return Distribution()
        return Distribution(
            count=self.count,
            mean=_ms(self.total / self.count),
            p50=_ms(self.percentile(50)),
            p95=_ms(self.percentile(95)),
            p99=_ms(self.percentile(99)),
            max=_ms(self.max),
        )


class Sampler:
    """RSS timeline of the runtime plus summed RSS and count of its live children.

    Each :meth:`sample` reads ``/proc/self/statm`` and, for each descendant process
    (sandbox wrappers, test processes and whatever they started; ``exclude`` names subtrees
    to leave out, such as the simulated endpoint), ``/proc/PID/statm``. The
    :class:`LagProbe`'s timer calls it every ``interval`` seconds: no thread of its own, whose
    wake-ups (the GIL handed over and back 20 times a second) cost the runtime more CPU than
    the reads (``bench/bench_idle.py``). Reading /proc directly, rather than through psutil
    (the library one would expect here), is deliberate too: psutil's
    ``children(recursive=True)`` scans every process on the machine at every tick, and
    importing it costs the measured process half a MiB (machine-facts: 37.2 → 38.1 MiB).
    The timeline is two float arrays, 8 bytes a sample. The peak RSS of record is the
    kernel's VmHWM, never sampled; a loop blocked for a while leaves a gap in the timeline.
    """

    def __init__(self, interval: float = 0.05, exclude: Iterable[int] = ()) -> None:
        self.interval = interval
        self.exclude = frozenset(exclude)
        self._pid = os.getpid()
        self.times = array("f")
        self.rss_mib = array("f")
        self.peak_children_rss_kib = 0
        self.peak_children = 0
        self.last_rss_kib = current_rss_kib()
        self._t0 = time.monotonic()

    def sample(self) -> None:
        rss = current_rss_kib()
        self.last_rss_kib = rss
        self.times.append(time.monotonic() - self._t0)
        self.rss_mib.append(rss / 1024.0)
        total = live = 0
        for pid in descendants(self._pid, self.exclude):
            try:
                with open(f"/proc/{pid}/statm", "rb") as f:
                    total += int(f.read().split()[1]) * _PAGE // 1024
            except (OSError, IndexError, ValueError):
                continue
            live += 1
        if live > self.peak_children:
            self.peak_children = live
        if total > self.peak_children_rss_kib:
            self.peak_children_rss_kib = total


class LagProbe:
    """Event-loop health: how late a timer scheduled every ``interval`` seconds really fires;
    the same timer drives the ``sampler`` (every ``sampler.interval``).

    One ``loop.call_at`` handle at a time, re-armed from its own callback: no task, no
    future per tick.
    """

    def __init__(self, interval: float = 0.05, sampler: Sampler | None = None) -> None:
        self.interval = interval
        self.lag = Histogram()
        self.sampler = sampler
        self._handle: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._expected = 0.0
        self._next_sample = 0.0

    def start(self) -> None:
        self._loop = loop = asyncio.get_running_loop()
        self._expected = self._next_sample = loop.time() + self.interval
        self._handle = loop.call_at(self._expected, self._tick)

    def _tick(self) -> None:
        loop = self._loop
        assert loop is not None
        now = loop.time()
        self.lag.add(now - self._expected)
        sampler = self.sampler
        if sampler is not None and now >= self._next_sample:
            sampler.sample()
            self._next_sample = max(self._next_sample + sampler.interval, now)
        self._expected = now + self.interval
        self._handle = loop.call_at(self._expected, self._tick)

    async def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def summary(self) -> LoopLag:
        lag = self.lag.summary()
        return LoopLag(p50=lag.p50, p99=lag.p99, max=lag.max)


class TraceWriter:
    """One JSON line per event, written through a small buffer so the trace holds no memory.

    >>> import io
    >>> out = io.BytesIO()
    >>> TraceWriter(out).event("retry", task="HumanEval/0", cause="http_503")
    """

    def __init__(self, stream: Any) -> None:
        self._stream = stream
        self._encode = msgspec.json.Encoder().encode
        self._t0 = time.monotonic()

    def event(self, kind: str, **fields: Any) -> None:
        fields["t"] = round(time.monotonic() - self._t0, 6)
        fields["event"] = kind
        self._stream.write(self._encode(fields) + b"\n")

    def close(self) -> None:
        self._stream.close()


#: The samples file: a header line, then one record per sample (``SAMPLE``: the index of its
#: distribution in ``Telemetry.LATENCIES``, its value in seconds), then a trailer (``TRAILER``
#: byte, one JSON line) with the histograms that are not sampled one by one (ITL: a sample
#: per streamed token would cost the runtime more than the rest of its telemetry).
SAMPLES_MAGIC = b"fastagent-samples 1\n"
SAMPLE = struct.Struct("<Bd")
TRAILER = 0xFF


class SampleWriter:
    """Every per-call and per-task sample, as it is taken, into a compact file
    (``--samples FILE``, 9 bytes a sample, buffered): a merge of several runs (the shards of
    one) computes exact percentiles over all their calls from these files, never from their
    percentiles (:mod:`fastagent.analysis.samples` reads them)."""

    __slots__ = ("_pack", "_stream")

    def __init__(self, stream: IO[bytes], names: Iterable[str]) -> None:
        self._stream = stream
        self._pack = SAMPLE.pack
        stream.write(SAMPLES_MAGIC + msgspec.json.encode(list(names)) + b"\n")

    def write(self, index: int, value: float) -> None:
        self._stream.write(self._pack(index, value))

    def finish(self, histograms: dict[str, Histogram]) -> None:
        """The trailer: the bucket counts of the histograms not sampled one by one."""
        trailer = {name: h.state() for name, h in histograms.items()}
        self._stream.write(bytes([TRAILER]) + msgspec.json.encode(trailer) + b"\n")


class Recorder(Protocol):
    """What a distribution's callers see: a place to add samples (seconds)."""

    def add(self, value: float) -> None: ...


class _Recorded:
    """A histogram whose every sample also goes to the samples file."""

    __slots__ = ("_hist", "_index", "_out")

    def __init__(self, hist: Histogram, index: int, out: SampleWriter) -> None:
        self._hist = hist
        self._index = index
        self._out = out

    def add(self, value: float) -> None:
        self._hist.add(value)
        self._out.write(self._index, value)


class Telemetry:
    """The run's shared counters and distributions; agents and clients report into it."""

    LATENCIES = (
        "ttft",
        "itl",
        "tpot",
        "llm_e2e",
        "first_byte_wait",
        *_PART_NAMES,
        "tool_spawn",
        "tool_wall",
        "task_wall",
        "task_overhead",
    )

    #: Distributions with a sample per token, kept as histograms only (see SAMPLES_MAGIC).
    UNSAMPLED = ("itl",)

    def __init__(self, trace: TraceWriter | None = None, samples: IO[bytes] | None = None) -> None:
        self.histograms = {name: Histogram() for name in self.LATENCIES}
        self.hist: dict[str, Recorder] = dict(self.histograms)
        self.samples = SampleWriter(samples, self.LATENCIES) if samples is not None else None
        if self.samples is not None:
            for index, name in enumerate(self.LATENCIES):
                if name not in self.UNSAMPLED:
                    self.hist[name] = _Recorded(self.histograms[name], index, self.samples)
        self.retry_causes: dict[str, int] = {}
        self.error_causes: dict[str, int] = {}
        self.exit_causes: dict[str, int] = {}
        self.llm_calls = 0
        self.output_tokens = 0
        self.in_flight = 0
        self.peak_in_flight = 0
        self.trace = trace

    def count(self, table: dict[str, int], key: str) -> None:
        table[key] = table.get(key, 0) + 1

    def agent_started(self) -> None:
        self.in_flight += 1
        if self.in_flight > self.peak_in_flight:
            self.peak_in_flight = self.in_flight

    def agent_finished(self) -> None:
        self.in_flight -= 1

    def event(self, kind: str, **fields: Any) -> None:
        if self.trace is not None:
            self.trace.event(kind, **fields)

    def add_parts(self, parts: CallParts) -> None:
        """One finished call's parts into their histograms (the unknown ones left out)."""
        hist = self.hist
        for name in _PART_NAMES:
            value = getattr(parts, name)
            if value is not None:
                hist[name].add(value)

    def latency(self) -> Latency:
        """Every distribution, in milliseconds."""
        return Latency(**{f"{name}_ms": h.summary() for name, h in self.histograms.items()})

    def finish_samples(self) -> None:
        """Close the samples file's records with the histograms not sampled one by one."""
        if self.samples is not None:
            self.samples.finish({name: self.histograms[name] for name in self.UNSAMPLED})
