"""The simulated endpoint's own cost and queue under load: a git ref's sim and this tree's,
side by side in one run.

    .venv/bin/python bench/bench_sim.py                      # before = 626607e, after = here
    .venv/bin/python bench/bench_sim.py --levels 100,1000 --repeat 5
    .venv/bin/python bench/bench_sim.py --after-args=--workers=2 --levels 10000

Each run is one fresh ``fastagent sim`` process (``--profile``, default
``ttft_ms=100,itl_ms=20``) and one fresh load generator process: a uvloop loop holding N
keep-alive connections (raw ``asyncio.Protocol`` sockets, requests pre-built the way the
runtime builds them, bodies of the bundled tasks' real prompts), which

1. warms the sim up with one short request per distinct prompt (at most 100 at once);
2. writes one streamed request on every connection at once (the *burst*: N agents
   starting together), then on each connection, as soon as its response has ended, the next
   one (*steady*: closed loop, ``--rounds`` requests per connection in all);
3. takes the time after each request's last byte went to the kernel (``written``) and reads
   the sim's ``fastagent_timing`` from each response's last event.

What it prints, medians over ``--repeat`` runs (runs of the variants interleaved):

- ``queue``: ``started − written`` (this tree's sim), ``received − written`` (the old one's
  timing has no ``started``; its ``received`` is taken where its chat handler begins, the
  same point): the request's way to its handler, i.e. the endpoint's backlog;
- ``late``: how far a stream's last byte trailed its schedule, ``last_byte − (start + ttft +
  (n − 1) · itl)``, n its content events: the pacing falling behind;
- ``CPU``: the sim's user+system time over the measured window (``/proc/PID/stat``, summed over
  its worker processes), per request and per streamed content event. Per event is the
  difference between the full replies and ``max_tokens=1`` replies (workload ``short``), per
  request the short workload's figure;
- ``gen CPU``: the load generator's own share of one core, to show it was not the bottleneck.

Both processes need file descriptors: the generator raises its own soft limit, the sim
raises its own. Clock ticks of /proc are 10 ms, so the CPU figures of a 100-stream run move by
some percent between runs; the medians are what to read.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import resource
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DATASET = ROOT / "dataset" / "humaneval_100.json"
SOLUTIONS = ROOT / "dataset" / "humaneval_100_solutions.json"
READY = "FASTAGENT_SIM_READY"
BEFORE = "626607e"
TAIL = 4096
END = b"\r\n0\r\n\r\n"
_TIMING_RE = re.compile(rb'"fastagent_timing":(\{[^}]*\})')
_TOKENS_RE = re.compile(rb'"completion_tokens":(\d+)')
_CLK = os.sysconf("SC_CLK_TCK")


# ---- the load generator (its own process) --------------------------------------------------


def _requests(max_tokens: int | None) -> list[bytes]:
    """One pre-built HTTP request per bundled task, its body as the runtime encodes it."""
    import msgspec

    from fastagent.dataset import load_tasks
    from fastagent.prompts import SYSTEM_PROMPT, build_prompt

    out = []
    for task in load_tasks(DATASET):
        body: dict[str, Any] = {
            "model": "fastagent-sim",
            "messages": [
                {"role": "system", "content": SYSTEM_PROMPT},
                {"role": "user", "content": build_prompt(task)},
            ],
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if max_tokens is not None:
            body["max_tokens"] = max_tokens
        raw = msgspec.json.encode(body)
        head = (
            "POST /v1/chat/completions HTTP/1.1\r\nHost: sim\r\n"
            "Content-Type: application/json\r\n"
            f"Content-Length: {len(raw)}\r\n\r\n"
        )
        out.append(head.encode() + raw)
    return out


class _Client(asyncio.Protocol):
    """One keep-alive connection sending its requests one after another."""

    def __init__(self, gen: _Gen, index: int) -> None:
        self.gen = gen
        self.index = index
        self.transport: asyncio.Transport | None = None
        self.tail = b""
        self.left = 0
        self.round = 0
        self.written = 0.0
        self.reqs: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def send(self, request: bytes) -> None:
        assert self.transport is not None
        self.tail = b""
        self.transport.write(request)
        self.written = time.monotonic()

    def data_received(self, data: bytes) -> None:
        tail = self.tail + data if len(data) < TAIL else data
        if len(tail) > TAIL:
            tail = tail[-TAIL:]
        self.tail = tail
        if tail.endswith(END):
            self.gen.finished(self, tail)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.left:
            self.gen.lost(self)


class _Gen:
    def __init__(self, n: int, rounds: int, requests: list[bytes]) -> None:
        self.n = n
        self.rounds = rounds
        self.requests = requests
        self.results: list[tuple[int, float, dict[str, float], int]] = []
        self.errors = 0
        self.pending = 0
        self.all_done: asyncio.Future[None] | None = None
        self.clients: list[_Client] = []

    def finished(self, client: _Client, tail: bytes) -> None:
        timing = _TIMING_RE.search(tail)
        tokens = _TOKENS_RE.search(tail)
        if timing is None or tokens is None:
            self.errors += 1
        else:
            self.results.append(
                (client.round, client.written, json.loads(timing.group(1)), int(tokens.group(1)))
            )
        self._next(client)

    def lost(self, client: _Client) -> None:
        self.errors += client.left
        client.left = 1
        client.round = self.rounds
        self._next(client)

    def _next(self, client: _Client) -> None:
        client.left -= 1
        if client.left > 0:
            client.round += 1
            client.send(self.requests[(client.index + client.round) % len(self.requests)])
            return
        self.pending -= 1
        if self.pending == 0 and self.all_done is not None and not self.all_done.done():
            self.all_done.set_result(None)

    async def wave(self, clients: list[_Client], per_client: int) -> None:
        """Each of ``clients`` sends ``per_client`` requests, the first all at once."""
        self.all_done = asyncio.get_running_loop().create_future()
        self.pending = len(clients)
        for client in clients:
            client.left = per_client
            client.round = 0
        for client in clients:
            client.send(self.requests[client.index % len(self.requests)])
        await self.all_done


def _cpu_of(pids: list[int]) -> tuple[float, float]:
    """(user, system) seconds of ``pids``."""
    user = system = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        user += int(fields[11])
        system += int(fields[12])
    return user / _CLK, system / _CLK


def _family(pid: int) -> list[int]:
    """The sim's process and its children (worker processes)."""
    kids = [pid]
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                ppid = int(f.read().rsplit(b")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if ppid == pid:
            kids.append(int(entry))
    return kids


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, -(-len(ordered) * q // 100) - 1))]


async def _load(args: argparse.Namespace) -> dict[str, Any]:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    host, port = args.host, args.port
    requests = _requests(1 if args.workload == "short" else None)
    warm = _requests(1)
    gen = _Gen(args.connections, args.rounds, requests)
    loop = asyncio.get_running_loop()
    for start in range(0, args.connections, 256):
        batch = range(start, min(args.connections, start + 256))
        made = await asyncio.gather(
            *(loop.create_connection(lambda i=i: _Client(gen, i), host, port) for i in batch)
        )
        gen.clients.extend(client for _, client in made)
    # warm-up: every distinct prompt once, short replies (not measured)
    gen.requests = warm
    await gen.wave(gen.clients[: len(warm)], 1)
    gen.requests, gen.results, gen.errors = requests, [], 0
    await asyncio.sleep(0.3)
    family = _family(args.pid)
    cpu0, own0, t0 = _cpu_of(family), time.process_time(), time.monotonic()
    await gen.wave(gen.clients, args.rounds)
    cpu1, own1, t1 = _cpu_of(family), time.process_time(), time.monotonic()
    for client in gen.clients:
        if client.transport is not None:
            # a reset, not a FIN: no TIME_WAIT, so runs of 10,000 do not run out of ports
            sock = client.transport.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            client.transport.abort()
    cpu = (cpu1[0] - cpu0[0], cpu1[1] - cpu0[1])
    return _stats(args, gen, cpu, own1 - own0, t1 - t0, len(family))


def _stats(
    args: argparse.Namespace,
    gen: _Gen,
    cpu: tuple[float, float],
    own: float,
    wall: float,
    procs: int,
) -> dict[str, Any]:
    ttft, itl = args.ttft_ms / 1000, args.itl_ms / 1000
    burst, steady, late, accept = [], [], [], []
    events = 0
    for rnd, written, timing, tokens in gen.results:
        start = timing.get("started", timing.get("received", 0.0))
        (burst if rnd == 0 else steady).append(start - written)
        if "accepted" in timing:
            accept.append(timing["accepted"] - written)
        n = -(-tokens // args.tokens_per_chunk)
        events += n
        late.append(timing["last_byte"] - (start + ttft + max(0, n - 1) * itl))
    ms = 1000.0

    def dist(values: list[float]) -> dict[str, float]:
        return {
            "p50": _pct(values, 50) * ms,
            "p99": _pct(values, 99) * ms,
            "max": max(values, default=float("nan")) * ms,
        }

    return {
        "requests": len(gen.results),
        "errors": gen.errors,
        "events": events,
        "queue_burst": dist(burst),
        "queue_steady": dist(steady),
        "accept_burst": dist(accept),
        "late": dist(late),
        "sim_cpu_s": cpu[0] + cpu[1],
        "sim_sys_s": cpu[1],
        "gen_cpu_s": own,
        "wall_s": wall,
        "sim_procs": procs,
    }


# ---- the driver ----------------------------------------------------------------------------


def _tree(ref: str, tmp: Path) -> Path:
    """``ref``'s fastagent package, extracted into ``tmp``."""
    dest = tmp / ref.replace("/", "_")
    dest.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", ref, "fastagent"], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest


def _start_sim(tree: Path, profile: str, extra: list[str]) -> tuple[subprocess.Popen[str], str]:
    argv = [sys.executable, "-m", "fastagent", "sim", "--port", "0", "--dataset", str(DATASET),
            "--solutions", str(SOLUTIONS), "--profile", profile, *extra]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(tree)}
    proc = subprocess.Popen(argv, cwd=tree, env=env, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith(READY):
        proc.kill()
        sys.exit(f"sim in {tree} did not start: {line!r}")
    return proc, line.split()[1]


def _run_one(tree: Path, extra: list[str], args: argparse.Namespace, n: int, workload: str) -> Any:
    proc, url = _start_sim(tree, args.profile, extra)
    rounds = args.short_rounds if workload == "short" else args.rounds
    try:
        host, port = url.removeprefix("http://").split("/")[0].rsplit(":", 1)
        argv = [sys.executable, __file__, "--loadgen", "--host", host, "--port", port,
                "--pid", str(proc.pid), "--connections", str(n), "--rounds", str(rounds),
                "--workload", workload, "--profile", args.profile]  # fmt: skip
        out = subprocess.run(argv, capture_output=True, text=True, timeout=args.timeout)
        if out.returncode != 0:
            sys.exit(f"load generator failed:\n{out.stderr}")
        return json.loads(out.stdout)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _profile_ms(profile: str) -> dict[str, float]:
    values = {"ttft_ms": 50.0, "itl_ms": 2.0, "tokens_per_chunk": 1.0}
    for item in profile.split(","):
        key, _, raw = item.partition("=")
        if key.strip() in values:
            values[key.strip()] = float(raw)
    return values


def _median(runs: list[dict[str, Any]], *path: str) -> float:
    values = []
    for run in runs:
        value: Any = run
        for key in path:
            value = value[key]
        values.append(value)
    return statistics.median(values)


def _table(results: dict[tuple[str, int, str], list[Any]], variants: list[str], args: Any) -> str:
    from fastagent.analysis.tables import format_table

    headers = ["streams", "sim", "queue burst p50/p99/max ms", "queue steady p50/p99 ms",
               "late p50/p99 ms", "CPU µs/request", "CPU µs/event", "sim CPU %",
               "gen CPU %", "errors"]  # fmt: skip
    rows: list[Any] = []
    for n in args.levels:
        for variant in variants:
            full = results.get((variant, n, "full"), [])
            short = results.get((variant, n, "short"), [])
            runs = full or short  # the queue and lateness of the full replies, if run
            if not runs:
                continue
            nan = float("nan")
            req_us = ev_us = nan
            if short:
                req_us = statistics.median(r["sim_cpu_s"] / r["requests"] for r in short) * 1e6
            if full and short:
                extra = statistics.median(r["sim_cpu_s"] / r["requests"] for r in full) * 1e6
                ev = statistics.median(r["events"] / r["requests"] for r in full)
                ev_short = statistics.median(r["events"] / r["requests"] for r in short)
                ev_us = (extra - req_us) / max(1.0, ev - ev_short)
            qb = [_median(runs, "queue_burst", k) for k in ("p50", "p99", "max")]
            qs = [_median(runs, "queue_steady", k) for k in ("p50", "p99")]
            late = [_median(runs, "late", k) for k in ("p50", "p99")]
            cpu_pct = statistics.median(100 * r["sim_cpu_s"] / r["wall_s"] for r in runs)
            gen_pct = statistics.median(100 * r["gen_cpu_s"] / r["wall_s"] for r in runs)
            errors = sum(r["errors"] for r in full + short)
            rows.append([
                str(n), variant, "/".join(f"{v:.1f}" for v in qb),
                "/".join(f"{v:.1f}" for v in qs), "/".join(f"{v:.1f}" for v in late),
                f"{req_us:.0f}", f"{ev_us:.1f}", f"{cpu_pct:.0f}", f"{gen_pct:.0f}", str(errors),
            ])  # fmt: skip
    return format_table(headers, rows, markdown=args.markdown)


def _ratios(results: dict[tuple[str, int, str], list[Any]], variants: list[str], args: Any) -> str:
    """after / before of the main figures, per level."""
    if len(variants) < 2:
        return ""
    base, *others = variants
    lines = []
    for n in args.levels:
        b = results.get((base, n, "full"))
        for other in others:
            o = results.get((other, n, "full"))
            if not b or not o:
                continue
            qb = _median(o, "queue_burst", "p99") / _median(b, "queue_burst", "p99")
            cpu = statistics.median(r["sim_cpu_s"] / r["requests"] for r in o) / statistics.median(
                r["sim_cpu_s"] / r["requests"] for r in b
            )
            lines.append(
                f"{n:>6} streams, {other} / {base}: queue burst p99 ×{qb:.3f}, "
                f"CPU per request (full reply) ×{cpu:.3f}"
            )
    return "\n".join(lines)


# ---- same answers ----------------------------------------------------------------------------

_SAME_FAULTS = "+".join(
    f"{kind}:0.05"
    for kind in ("http_429", "http_500", "http_502", "http_503", "refuse", "reset", "cut_json",
                 "malformed_json", "huge_line", "invalid_utf8", "empty", "no_code")
)  # fmt: skip
_NORMALISE = [
    (re.compile(rb'"id":"chatcmpl-[^"]*"'), b'"id":"ID"'),
    (re.compile(rb'"created":\d+'), b'"created":0'),
    (re.compile(rb',"fastagent_timing":\{[^}]*\}'), b""),
]


def _dechunk(body: bytes) -> bytes:
    out, rest = bytearray(), body
    while rest:
        size_line, sep, rest = rest.partition(b"\r\n")
        if not sep:
            break
        size = int(size_line, 16)
        out += rest[:size]
        rest = rest[size + 2 :]
    return bytes(out)


async def _exchange(host: str, port: int, request: bytes) -> bytes:
    """One request on a fresh connection: status line, the headers that are part of the
    answer, and the body (chunked coding undone; ids, times and timing blanked)."""
    reader, writer = await asyncio.open_connection(host, port)
    got = bytearray()
    try:
        writer.write(request)
        async with asyncio.timeout(10):
            while piece := await reader.read(1 << 20):
                got += piece
                head, sep, body = bytes(got).partition(b"\r\n\r\n")
                if sep and (body.endswith(b"0\r\n\r\n") or _whole(head, body)):
                    break
    except (ConnectionError, TimeoutError) as exc:
        got += f"<{type(exc).__name__}>".encode()
    finally:
        writer.close()
    head, _, body = bytes(got).partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    names = (b"content-type", b"retry-after", b"connection")
    kept = [lines[0], *sorted(line for line in lines[1:] if line.split(b":")[0].lower() in names)]
    if b"transfer-encoding: chunked" in head.lower():
        body = _dechunk(body)
    for pattern, blank in _NORMALISE:
        body = pattern.sub(blank, body)
    if body.endswith(b"<ConnectionResetError>"):  # how much came before the RST is a race
        body = b"(some of the body)<ConnectionResetError>"
    return b"\r\n".join(kept) + b"\r\n\r\n" + body


def _whole(head: bytes, body: bytes) -> bool:
    match = re.search(rb"(?i)content-length: (\d+)", head)
    return match is not None and len(body) >= int(match.group(1))


async def _answers(url: str) -> list[bytes]:
    import msgspec

    from fastagent.dataset import load_tasks
    from fastagent.prompts import SYSTEM_PROMPT, build_prompt

    host, port = url.removeprefix("http://").split("/")[0].rsplit(":", 1)
    out = []
    for path in (b"/v1/models", b"/v1/sim/plan"):
        out.append(await _exchange(host, int(port), b"GET %s HTTP/1.1\r\nHost: s\r\n\r\n" % path))
    for i, task in enumerate(load_tasks(DATASET)):
        for attempt in (0, 1):
            messages = [
                {"role": "system", "content": SYSTEM_PROMPT},
                {"role": "user", "content": build_prompt(task)},
            ]
            if attempt:
                messages += [
                    {"role": "assistant", "content": "```python\npass\n```"},
                    {"role": "user", "content": "The tests failed."},
                ]
            body: dict[str, Any] = {"messages": messages, "stream": (i + attempt) % 2 == 0}
            if i % 7 == 3:
                body["max_tokens"] = 7
            raw = msgspec.json.encode(body)
            request = b"POST /v1/chat/completions HTTP/1.1\r\nHost: s\r\n"
            request += b"Content-Length: %d\r\n\r\n%s" % (len(raw), raw)
            out.append(await _exchange(host, int(port), request))
    stats = b"GET /v1/sim/stats HTTP/1.1\r\nHost: s\r\n\r\n"
    out.append(await _exchange(host, int(port), stats))
    return out


def _same_answers(variants: list[tuple[str, Path, list[str]]]) -> None:
    """Every variant's answers to one sequence of requests (seeded faults included), compared."""
    profile = f"seed=7,ttft_ms=0,itl_ms=0,faults={_SAME_FAULTS}"
    got = {}
    for label, tree, extra in variants:
        proc, url = _start_sim(tree, profile, extra)
        try:
            got[label] = asyncio.run(_answers(url))
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(10)
    (base, answers), *others = got.items()
    for label, theirs in others:
        pairs = list(zip(answers, theirs, strict=True))
        same = sum(a == b for a, b in pairs)
        # a body cut at its half (reset, cut_json) is cut elsewhere when the timing it holds
        # is longer: the same bytes up to the shorter cut
        cut = [
            n for n, (a, b) in enumerate(pairs) if a != b and (a.startswith(b) or b.startswith(a))
        ]
        print(f"same answers, {label} vs {base}: {same} of {len(pairs)} responses identical, "
              f"{len(cut)} the same up to where the body is cut (responses {cut})")  # fmt: skip
        for n, (a, b) in enumerate(pairs):
            if a != b and n not in cut:
                at = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), 0)
                print(f"  response {n} differs from byte {at}:")
                print(
                    f"    {a[max(0, at - 80) : at + 120]!r}\n    {b[max(0, at - 80) : at + 120]!r}"
                )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--loadgen", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--host", default="127.0.0.1", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--pid", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--connections", type=int, default=100, help=argparse.SUPPRESS)
    parser.add_argument("--workload", default="full", help=argparse.SUPPRESS)
    parser.add_argument("--levels", default="100,1000,10000", help="concurrent streams")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2, help="requests per connection")
    parser.add_argument("--short-rounds", type=int, default=10,
                        help="requests per connection of the short workload")  # fmt: skip
    parser.add_argument("--profile", default="ttft_ms=100,itl_ms=20")
    parser.add_argument("--before", default=BEFORE, help="git ref of the 'before' sim ('' = none)")
    parser.add_argument("--before-args", default="", help="extra sim flags, space-separated")
    parser.add_argument("--after-args", default="", help="extra sim flags of this tree's sim")
    parser.add_argument("--also", action="append", default=[],
                        help="another variant of this tree's sim: LABEL=FLAGS")  # fmt: skip
    parser.add_argument("--workloads", default="full,short")
    parser.add_argument("--timeout", type=float, default=900)
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument(
        "--same-answers",
        action="store_true",
        help="compare the variants' answers to one seeded sequence of requests, then stop",
    )
    args = parser.parse_args()
    if args.loadgen:
        args.__dict__.update(_profile_ms(args.profile))
        import uvloop

        print(json.dumps(uvloop.run(_load(args))))
        return
    args.levels = [int(x) for x in args.levels.split(",")]
    with tempfile.TemporaryDirectory(prefix="bench-sim-") as tmp:
        variants: list[tuple[str, Path, list[str]]] = []
        if args.before:
            variants.append((f"before {args.before}", _tree(args.before, Path(tmp)),
                             args.before_args.split()))  # fmt: skip
        variants.append(("after", ROOT, args.after_args.split()))
        for spec in args.also:
            label, _, flags = spec.partition("=")
            variants.append((label, ROOT, flags.split()))
        if args.same_answers:
            _same_answers(variants)
            return
        results: dict[tuple[str, int, str], list[Any]] = {}
        for workload in args.workloads.split(","):
            for n in args.levels:
                for rep in range(args.repeat):
                    for label, tree, extra in variants:
                        got = _run_one(tree, extra, args, n, workload)
                        results.setdefault((label, n, workload), []).append(got)
                        print(f"{workload:>5} {n:>6} #{rep + 1} {label}: "
                              f"queue burst p99 {got['queue_burst']['p99']:.1f} ms, "
                              f"late p99 {got['late']['p99']:.1f} ms, "
                              f"sim CPU {got['sim_cpu_s']:.2f} s (sys {got['sim_sys_s']:.2f}) / "
                            f"{got['requests']} req, {got['events']} events, "
                              f"gen CPU {got['gen_cpu_s']:.2f} s, wall {got['wall_s']:.1f} s, "
                              f"errors {got['errors']}", file=sys.stderr, flush=True)  # fmt: skip
        names = [label for label, _, _ in variants]
        print(f"profile {args.profile}, {args.rounds} requests per connection, "
              f"medians of {args.repeat}")  # fmt: skip
        print(_table(results, names, args))
        print(_ratios(results, names, args))


if __name__ == "__main__":
    main()
