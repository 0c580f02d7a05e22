"""The whole loop against a real server and a real model: llama.cpp's own C++ server
(``llama-server``, built by ``make real-model-install``) serving Qwen2.5-Coder-0.5B-Instruct
(Q4_K_M GGUF assembled from PyPI wheels) on this machine's CPU.

The ``real_model`` tests start one llama-server on a free loopback port for the module and
stop it at the end (about 3-6 minutes on 2 cores, most of it the 10-task bench slice). They
skip when ``make real-model-install`` has not been run, unless FASTAGENT_REQUIRE_REAL_MODEL=1,
where they fail. The other tests check scripts/real_model.py's own behaviour (bad input,
stopping the server) with a stand-in server and need nothing installed.
"""

from __future__ import annotations

import asyncio
import hashlib
import http.client
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from _wait import wait_until

from fastagent.analysis import children
from fastagent.config import Config
from fastagent.dataset import default_dataset_path, load_tasks
from fastagent.llm import LLMClient, Message
from fastagent.prompts import SYSTEM_PROMPT, build_prompt
from fastagent.results import read_rows
from fastagent.speedups import SSEParser, delta_content, extract_code

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "real_model.py"
SLICE_TASKS = 10
#: The first 10 tasks passed 7 of 10 in the slice runs with the default settings, and 7 and 6
#: of 10 in bench/bench_slots.py's 20-task runs on 1 and 2 slots (results/real-model/): how
#: requests share a batch changes the floating-point sums, so a task or two flips between
#: runs. The bound leaves room for that and for another CPU's SIMD kernels.
SLICE_MIN_PASSED = 4


def _load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("real_model", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("real_model", module)
    spec.loader.exec_module(module)
    return module


rm = _load_script()


def _unavailable(reason: str) -> None:
    if os.environ.get("FASTAGENT_REQUIRE_REAL_MODEL", "") not in ("", "0"):
        pytest.fail(f"FASTAGENT_REQUIRE_REAL_MODEL is set but {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """The cached llama-server with the verified model on a free loopback port (the run's
    defaults: slots, context, threads). Stopped at teardown."""
    binary = rm.cached_server()
    if binary is None:
        _unavailable(
            f"llama-server is not built ({rm.server_dir()} is missing): "
            "run 'make real-model-install'"
        )
    model = rm.model_ready()
    if model is None:
        _unavailable(
            f"the model is not assembled ({rm.model_path()}): run 'make real-model-install'"
        )
    log = tmp_path_factory.mktemp("llama-server") / "server.log"
    srv = rm.Server(binary, model, log_path=log)
    try:
        srv.start()
    except (rm.BadInput, rm.BuildFailed) as exc:
        pytest.fail(str(exc))
    try:
        yield srv
    finally:
        srv.stop()


def _post_stream(srv: object, body: dict[str, object]) -> tuple[http.client.HTTPResponse, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=300)  # type: ignore[attr-defined]
    try:
        conn.request(
            "POST", "/v1/chat/completions", json.dumps(body), {"Content-Type": "application/json"}
        )
        resp = conn.getresponse()
        return resp, resp.read()
    finally:
        conn.close()


# ---- against the real server -----------------------------------------------------------------


@pytest.mark.real_model
def test_server_reports_its_build(server: object) -> None:
    """What the runtime can learn over HTTP: the Server header, /props build_info and slots,
    and the same build in every chunk's system_fingerprint."""
    info = server.info()  # type: ignore[attr-defined]
    assert info["server_header"] == "llama.cpp"
    assert info["build_info"] == f"b{rm.LLAMA_BUILD_NUMBER}-{rm.LLAMA_CPP_COMMIT}"
    assert info["total_slots"] == rm.DEFAULT_SLOTS
    assert info["n_ctx_per_slot"] == rm.DEFAULT_CTX_PER_SLOT
    assert info["model_alias"] == rm.MODEL.alias
    assert rm.LLAMA_CPP_COMMIT in info["version"]
    models = rm.http_json(server.origin, "/v1/models")  # type: ignore[attr-defined]
    assert [m["id"] for m in models["data"]] == [rm.MODEL.alias]


@pytest.mark.real_model
def test_stream_is_one_token_per_event_with_timings_last(server: object) -> None:
    """llama-server's own SSE bytes: a role-only first chunk, then one event per generated
    token, a last chunk with usage and ``timings``, then [DONE]; fastagent's parser takes
    them split anywhere."""
    max_tokens = 48
    body = {
        "model": rm.MODEL.alias,
        "messages": [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": "Write a Python function that sums a list of ints."},
        ],
        "stream": True,
        "max_tokens": max_tokens,
        "temperature": 0,
        "seed": 0,
        "stream_options": {"include_usage": True},
    }
    resp, raw = _post_stream(server, body)
    assert resp.status == 200, raw[:300]
    assert resp.getheader("Content-Type", "").startswith("text/event-stream")
    assert resp.getheader("Server") == "llama.cpp"

    parser = SSEParser()  # any split of the bytes gives the same payloads: 7 at a time
    payloads = [p for i in range(0, len(raw), 7) for p in parser.feed(raw[i : i + 7])]
    payloads += parser.close()
    assert payloads[-1] == b"[DONE]", raw[-300:]
    chunks = [json.loads(p) for p in payloads[:-1]]
    first, last = chunks[0], chunks[-1]
    assert first["choices"][0]["delta"].get("role") == "assistant"
    assert not first["choices"][0]["delta"].get("content")
    assert delta_content(payloads[0]) is None  # role only: not a token
    contents = [c for c in (delta_content(p) for p in payloads[:-1]) if c]

    timings = last["timings"]
    assert {"prompt_n", "prompt_ms", "predicted_n", "predicted_ms", "cache_n"} <= set(timings)
    assert last["usage"]["completion_tokens"] == timings["predicted_n"]
    assert timings["predicted_ms"] > 0 and timings["prompt_ms"] > 0
    assert timings["prompt_n"] + timings["cache_n"] == last["usage"]["prompt_tokens"]
    # it ran to max_tokens (finish_reason "length"): every generated token was one event
    finish = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
    assert finish[-1] == "length"
    assert timings["predicted_n"] == max_tokens
    assert len(contents) == max_tokens, contents
    text = "".join(contents)
    n = len(rm.http_json(server.origin, "/tokenize", {"content": text})["tokens"])  # type: ignore[attr-defined]
    assert abs(n - max_tokens) <= 2  # the events re-tokenize to about as many tokens
    assert all(
        c["system_fingerprint"] == f"b{rm.LLAMA_BUILD_NUMBER}-{rm.LLAMA_CPP_COMMIT}" for c in chunks
    )


@pytest.mark.real_model
def test_client_streams_real_tokens(server: object) -> None:
    """fastagent's own client on the first task: many chunks, a TTFT, a code block."""
    task = load_tasks(str(default_dataset_path()), 1)[0]
    messages = [Message("system", SYSTEM_PROMPT), Message("user", build_prompt(task))]

    async def call() -> object:
        config = Config(
            base_url=server.base_url,  # type: ignore[attr-defined]
            model=rm.MODEL.alias,
            max_tokens=rm.DEFAULT_MAX_TOKENS,
            temperature=0.0,
            seed=0,
            concurrency=1,
        )
        async with LLMClient(config) as client:
            return await client.complete(messages, task=task.id)

    done = asyncio.run(call())
    assert done.chunks > 10  # type: ignore[attr-defined]
    assert done.ttft is not None and 0 < done.ttft < done.e2e  # type: ignore[attr-defined]
    # one chunk per token; the end-of-turn token is counted but not streamed
    assert done.completion_tokens - 1 <= done.chunks <= done.completion_tokens  # type: ignore[attr-defined]
    assert extract_code(done.text) is not None, done.text  # type: ignore[attr-defined]


@pytest.mark.real_model
def test_bench_slice_against_real_model(server: object, tmp_path: Path) -> None:
    """`fastagent bench` on 10 tasks at concurrency 10: 10 rows, each passed or failed (no
    errors), at least SLICE_MIN_PASSED passed, and the run's checks hold."""
    trace = tmp_path / "trace.jsonl"
    results = tmp_path / "results"
    args = rm.bench_args(
        server.base_url,  # type: ignore[attr-defined]
        rm.MODEL.alias,
        tasks=SLICE_TASKS,
        concurrency=SLICE_TASKS,
        max_tokens=rm.DEFAULT_MAX_TOKENS,
        trace=trace,
        extra=rm.QUEUE_SAFE_TIMEOUTS,
    )
    with rm.MetricsWatch(server.origin, interval=0.5) as watch:  # type: ignore[attr-defined]
        run = children.run_bench(args, results_dir=results, cwd=tmp_path, capture_stderr=True)
    assert run.returncode == 0, run.stderr
    assert run.summary is not None
    # the queueing side, from the server: 10 agents on fewer slots, so some requests waited
    metrics = watch.summary()
    assert metrics["scrapes"] > 0 and metrics["requests_processing_max"] >= 1, metrics
    assert metrics["requests_deferred_max"] >= 1 and metrics["tokens_predicted_total"] > 0, metrics
    summary = json.loads(Path(run.summary).read_text())
    assert (
        summary["endpoint"]["server"] == f"llama.cpp b{rm.LLAMA_BUILD_NUMBER}-{rm.LLAMA_CPP_COMMIT}"
    )
    # every call split by the server's timings, the parts adding up to its E2E
    latency = summary["latency"]
    calls = latency["llm_e2e_ms"]["count"]  # the calls that completed
    assert calls > 0 and latency["server_ms"]["count"] == calls
    assert latency["runtime_overhead_ms"]["count"] == calls
    for ev in rm.read_trace(trace):
        if ev.get("event") == "completion":
            parts = ev["pre_send"] + ev["endpoint_queue"] + ev["server"] + ev["last_byte_lag"]
            assert abs(parts - ev["e2e"]) < 1e-5, ev
    (csv_path,) = results.glob("python_*.csv")
    rows = read_rows(csv_path)
    assert len(rows) == SLICE_TASKS
    statuses = {r.task_id: str(r.status) for r in rows}
    assert set(statuses.values()) <= {"passed", "failed"}, [(r.task_id, r.reason) for r in rows]
    passed = sum(s == "passed" for s in statuses.values())
    assert passed >= SLICE_MIN_PASSED, statuses
    problems, figures = rm.check_run(csv_path, run.summary, trace, rm.first_task_ids(SLICE_TASKS))
    assert problems == [], json.dumps(figures, indent=2)


# ---- the script's own behaviour (no llama-server needed) -------------------------------------


def _script(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def _one_line_exit_2(proc: subprocess.CompletedProcess[str], words: str) -> None:
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert words in lines[0], lines[0]


@pytest.fixture
def fake_gguf(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.gguf"
    path.write_bytes(b"GGUF" + bytes(60))
    return path


#: A stand-in llama-server: answers --version, and /health and /props on the --port it is
#: given; writes its pid to $FAKE_PID_FILE.
FAKE_SERVER = """#!{python}
import http.server, json, os, sys
if "--version" in sys.argv:
    sys.exit(print("version: 0.0.0 (build 0, commit fake)"))
port = int(sys.argv[sys.argv.index("--port") + 1])
open(os.environ["FAKE_PID_FILE"], "w").write(str(os.getpid()))
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({{"status": "ok", "build_info": "b0-fake", "total_slots": 1,
                           "default_generation_settings": {{"n_ctx": 64}}}}).encode()
        self.send_response(200)
        self.send_header("Server", "fake")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
http.server.HTTPServer(("127.0.0.1", port), H).serve_forever()
"""


@pytest.fixture
def fake_server(tmp_path: Path) -> Path:
    path = tmp_path / "llama-server"
    path.write_text(FAKE_SERVER.format(python=sys.executable))
    path.chmod(0o755)
    return path


def test_missing_binary_is_one_line(tmp_path: Path) -> None:
    proc = _script("run", "--tasks", "1", env={"REAL_MODEL_CACHE": str(tmp_path / "empty")})
    _one_line_exit_2(proc, "run 'make real-model-install'")
    proc = _script("serve", "--server-bin", str(tmp_path / "nope"))
    _one_line_exit_2(proc, "is not an executable file")


def test_wrong_gguf_is_one_line(tmp_path: Path, fake_server: Path) -> None:
    not_gguf = tmp_path / "model.gguf"
    not_gguf.write_bytes(b"PK\x03\x04 a zip, not a model")
    proc = _script("serve", "--server-bin", str(fake_server), "--model-file", str(not_gguf))
    _one_line_exit_2(proc, "is not a GGUF file")
    proc = _script("serve", "--server-bin", str(fake_server), "--model-file", str(tmp_path / "x"))
    _one_line_exit_2(proc, "--model-file")


def test_port_in_use_is_one_line(fake_server: Path, fake_gguf: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        proc = _script(
            "serve", "--server-bin", str(fake_server), "--model-file", str(fake_gguf),
            "--port", str(port),
        )  # fmt: skip
    _one_line_exit_2(proc, f"port {port}")


def test_server_exiting_at_start_is_one_line(tmp_path: Path, fake_gguf: Path) -> None:
    broken = tmp_path / "llama-server"
    broken.write_text("#!/bin/sh\necho 'error: failed to load model' >&2\nexit 1\n")
    broken.chmod(0o755)
    proc = _script("serve", "--server-bin", str(broken), "--model-file", str(fake_gguf))
    _one_line_exit_2(proc, "failed to load model")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (not yet reaped by its parent) counts as gone
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0] != "Z"


@pytest.mark.parametrize("how", ["SIGTERM", "SIGINT", "SIGKILL"])
def test_server_stopped_whatever_stops_the_script(
    how: str, tmp_path: Path, fake_server: Path, fake_gguf: Path
) -> None:
    """`serve` stops the server on SIGTERM and Ctrl-C; the kernel kills it when the script
    is SIGKILLed (PR_SET_PDEATHSIG)."""
    pid_file = tmp_path / "pid"
    proc = subprocess.Popen(
        [sys.executable, str(SCRIPT), "serve", "--server-bin", str(fake_server),
         "--model-file", str(fake_gguf)],
        env={**os.environ, "FAKE_PID_FILE": str(pid_file)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # printed once /health answered
        assert line.startswith("LLM_BASE_URL=http://127.0.0.1:"), line
        server_pid = int(pid_file.read_text())
        assert _alive(server_pid)
        proc.send_signal(getattr(signal, how))
        proc.wait(30)
        assert wait_until(lambda: not _alive(server_pid), timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if how != "SIGKILL":
        assert proc.returncode in (0, 130), proc.stderr


def _fake_wheels(dest: Path, spec: object, pieces: list[bytes]) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    for i, (package, piece) in enumerate(zip(spec.packages, pieces, strict=True), 1):  # type: ignore[attr-defined]
        name = package.replace("-", "_")
        with zipfile.ZipFile(dest / f"{name}-{spec.version}-py3-none-any.whl", "w") as z:  # type: ignore[attr-defined]
            z.writestr(spec.member(i), piece)  # type: ignore[attr-defined]


@pytest.mark.parametrize("good", [True, False])
def test_model_assembled_in_order_and_verified(
    good: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pieces are concatenated in package order; a size or sha256 other than the
    pinned one is refused with one line and leaves no model behind."""
    pieces = [b"GGUF" + b"a" * 10, b"b" * 7, b"c" * 3]
    whole = b"".join(pieces)
    spec = rm.ModelSpec(
        name="tiny",
        alias="tiny",
        version="1.0",
        packages=("tiny-part1", "tiny-part2", "tiny-part3"),
        size=len(whole),
        sha256=hashlib.sha256(whole if good else whole + b"!").hexdigest(),
    )
    monkeypatch.setattr(rm, "CACHE", tmp_path)
    monkeypatch.setattr(rm, "pip_download", lambda args, dest: _fake_wheels(dest, spec, pieces))
    if good:
        path = rm.assemble_model(spec)
        assert path.read_bytes() == whole
        assert rm.model_ready(spec) == path
        # verified, nothing downloaded again
        monkeypatch.setattr(rm, "pip_download", lambda args, dest: pytest.fail("downloaded"))
        assert rm.assemble_model(spec) == path
    else:
        with pytest.raises(rm.BadInput, match="refusing it"):
            rm.assemble_model(spec)
        assert not rm.model_path(spec).exists()
        assert rm.model_ready(spec) is None


def test_build_key_follows_sources_and_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REAL_MODEL_NO_AVX512", "1")  # the same key on any CPU
    key = rm.build_key()
    assert len(key) == 12 and rm.server_dir(key).name == f"llama-server-{rm.LLAMA_CPP_PYTHON}-{key}"
    assert rm.build_key([*rm.CMAKE_FLAGS, "-DGGML_AVX512=ON"]) != key
    monkeypatch.setenv("REAL_MODEL_CMAKE_ARGS", "-DGGML_AVX512=ON")
    assert rm.build_key() == rm.build_key([*rm.CMAKE_FLAGS, "-DGGML_AVX512=ON"])
