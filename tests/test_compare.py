"""`fastagent compare`: the referee. Real parts throughout: a real simulated endpoint in its
own process, real stacks as child processes (fastagent bench, and a tiny contract-following
runner written here), real process trees read from /proc."""

from __future__ import annotations

import argparse
import http.client
import importlib.util
import json
import os
import socket
import subprocess
import sys
import textwrap
import urllib.parse
from pathlib import Path

import jsonschema
import msgspec
import pytest
from _child import child_env
from _wait import wait_until

from fastagent import cli
from fastagent.analysis import compare, compare_run, compare_table, idle, proctree
from fastagent.analysis.compare_schema import Comparison, json_schema
from fastagent.dataset import default_dataset_path, load_tasks
from fastagent.sim.launcher import SimProcess
from fastagent.sim.wire import SimRun

ROOT = Path(__file__).resolve().parent.parent
#: Seconds after which a wait gives up: a guard against a hang, never a claim about speed.
HANG_GUARD = 120.0
SCHEMA = ROOT / "docs" / "compare.schema.json"

#: A runner that follows the contract with nothing but the standard library: the spec goes in
#: the SYSTEM message (TINY_PROMPT=none: no spec anywhere), one streamed completion per task,
#: pytest on the code, results/raw/tiny_<ts>.csv and _summary.json. TINY_RSS_FACTOR scales
#: the peak RSS it reports (a stack that misreports itself).
TINY = textwrap.dedent(
    """
    import concurrent.futures, csv, http.client, json, os, re, resource, subprocess, tempfile
    import time, urllib.parse
    from pathlib import Path

    URL = urllib.parse.urlsplit(os.environ["LLM_BASE_URL"])
    MODEL = os.environ["LLM_MODEL"]
    PROMPT = os.environ.get("TINY_PROMPT", "system")

    def complete(messages):
        conn = http.client.HTTPConnection(URL.hostname, URL.port, timeout=120)
        body = json.dumps({"model": MODEL, "messages": messages, "stream": True})
        conn.request("POST", URL.path + "/chat/completions", body,
                     {"Content-Type": "application/json"})
        text = []
        for line in conn.getresponse():
            if line.startswith(b"data: {"):
                for choice in json.loads(line[6:])["choices"]:
                    text.append((choice.get("delta") or {}).get("content") or "")
        conn.close()
        return "".join(text)

    def solve(task):
        if PROMPT == "none":
            messages = [{"role": "user", "content": "Write me some Python, please."}]
        else:
            messages = [{"role": "system", "content": "Implement:\\n" + task["spec"]},
                        {"role": "user", "content": "Answer in one python block."}]
        found = re.search(r"```python\\n(.*?)```", complete(messages), re.S)
        if not found:
            return False
        with tempfile.TemporaryDirectory() as work:
            Path(work, "solution.py").write_text(found.group(1))
            Path(work, "test_solution.py").write_text(task["test"])
            argv = ["python3", "-B", "-m", "pytest", "-q", "-p", "no:cacheprovider"]
            return subprocess.run(argv, cwd=work, capture_output=True).returncode == 0

    tasks = json.load(open(os.environ["BENCH_DATASET"]))
    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(int(os.environ["BENCH_CONCURRENCY"])) as pool:
        passed = list(pool.map(solve, tasks))
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    out = Path("results/raw")
    out.mkdir(parents=True)
    with open(out / f"tiny_{stamp}.csv", "w", newline="") as f:
        csv.writer(f).writerows([["task_id", "status"]] + [
            [t["id"], "passed" if ok else "failed"] for t, ok in zip(tasks, passed)])
    usage = resource.getrusage(resource.RUSAGE_SELF)
    factor = float(os.environ.get("TINY_RSS_FACTOR", "1"))
    (out / f"tiny_{stamp}_summary.json").write_text(json.dumps({
        "runtime": "tiny", "total_tasks": len(tasks), "passed": sum(passed),
        "peak_rss_mb": usage.ru_maxrss / 1024 * factor,
        "cpu_seconds": usage.ru_utime + usage.ru_stime,
        "wall_time_s": time.monotonic() - started}))
    """
)


def _fastagent(*argv: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fastagent", *argv],
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


# ---- the pieces ------------------------------------------------------------------------------


def test_parse_stack() -> None:
    assert compare.parse_stack("fa=fastagent bench --pure-python") == (
        "fa",
        "fastagent bench --pure-python",
    )
    assert compare.parse_stack("x.y+z-1=a=b") == ("x.y+z-1", "a=b")
    for bad in ("nameonly", "=cmd", "a b=cmd", "a=", "a=   "):
        with pytest.raises(argparse.ArgumentTypeError, match=r"NAME=COMMAND|empty"):
            compare.parse_stack(bad)


def test_relative_paths_in_a_command_are_made_absolute(tmp_path: Path) -> None:
    (tmp_path / "stacks" / "x").mkdir(parents=True)
    (tmp_path / "stacks" / "x" / "run.py").write_text("")
    given = "stacks/x/run.py --flag=stacks/x/run.py; echo a/b 'stacks/x/run.py' /abs/p"
    made = compare_run.resolve_command(given, tmp_path)
    full = str(tmp_path / "stacks" / "x" / "run.py")
    assert made == f"{full} --flag={full}; echo a/b '{full}' /abs/p"
    assert compare_run.resolve_command("fastagent bench", tmp_path) == "fastagent bench"
    # a link (a venv's bin/python) stays a link: resolving it would leave the venv
    (tmp_path / "venv").symlink_to(tmp_path / "stacks")
    made = compare_run.resolve_command("venv/x/run.py", tmp_path)
    assert made == str(tmp_path / "venv" / "x" / "run.py")


def test_spread_over_runs() -> None:
    one = compare_table.spread([2.0])
    assert (one.n, one.median, one.min, one.max, one.cv) == (1, 2.0, 2.0, 2.0, None)
    assert compare_table.spread([]).median is None
    three = compare_table.spread([1.0, 3.0, 2.0])
    assert (three.median, three.min, three.max, three.cv) == (2.0, 1.0, 3.0, 0.5)


def test_the_idle_rule_waits_for_quiet_windows_and_gives_up_at_its_cap() -> None:
    clock = [0.0]

    def sleep(seconds: float) -> None:
        clock[0] += seconds

    # busy ticks per 100: 90, 10, 90, 10, 10 -> idle after the 5th window (two quiet in a row)
    readings = iter([(0, 0), (90, 100), (100, 200), (190, 300), (200, 400), (210, 500)])
    rule = idle.IdleRule(threshold=0.25, window=1.0, windows=2, cap=60)
    got = idle.wait_idle(rule, sleep=sleep, ticks=lambda: next(readings), clock=lambda: clock[0])
    assert (got.idle, got.waited_s, got.busy_share) == (True, 5.0, 0.1)

    clock[0] = 0.0
    busy = iter((i * 100, i * 100) for i in range(100))
    capped = idle.IdleRule(threshold=0.25, window=1.0, windows=2, cap=3)
    got = idle.wait_idle(capped, sleep=sleep, ticks=lambda: next(busy), clock=lambda: clock[0])
    assert (got.idle, got.waited_s, got.busy_share) == (False, 3.0, 1.0)
    assert idle.wait_idle(idle.IdleRule(cap=0)) == idle.IdleWait(0.0, None, False)


def test_the_idle_wait_reads_this_machine() -> None:
    got = idle.wait_idle(idle.IdleRule(window=0.2, cap=0.5))
    assert got.waited_s >= 0.2 and got.busy_share is not None and 0 <= got.busy_share <= 1


def test_the_rule_picks_the_most_connections_then_the_longest_held() -> None:
    def record(pid: int, conns: int, scans: int, start: int) -> proctree.Record:
        r = proctree.Record(pid, start, 1, 1, f"p{pid}", 0.0, 0.0)
        r.max_connections, r.connection_scans = conns, scans
        return r

    assert proctree.pick_runtime([record(1, 0, 0, 1)]) is None
    picked = proctree.pick_runtime([record(1, 0, 0, 1), record(2, 5, 2, 2), record(3, 9, 1, 3)])
    assert picked is not None and (picked.record.pid, picked.holders) == (3, 2)
    tied = proctree.pick_runtime([record(2, 5, 1, 2), record(3, 5, 4, 3), record(4, 5, 4, 1)])
    assert tied is not None and tied.record.pid == 4  # more scans, then the older
    # pid 2, seen holding in one scan only (a child between fork and exec), is no holder
    assert tied.holders == 2


HOLDER = textwrap.dedent(
    """
    import socket, subprocess, sys
    port, n = int(sys.argv[1]), int(sys.argv[2])
    conns = [socket.create_connection(("127.0.0.1", port)) for _ in range(n)]
    child = subprocess.Popen(["sleep", "300"])        # a descendant without connections
    sys.stdout.write("ready\\n"); sys.stdout.flush()
    sys.stdin.read()                                  # until the test closes our stdin
    child.kill(); child.wait()
    """
)


def test_the_process_rule_finds_the_holder_of_the_connections_under_a_wrapper(
    tmp_path: Path,
) -> None:
    script = tmp_path / "holder.py"
    script.write_text(HOLDER)
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        port = listener.getsockname()[1]
        # sh runs two commands, so it cannot exec the holder: a wrapper stays at the top
        command = f"true; {sys.executable} {script} {port} 3; true"
        proc = subprocess.Popen(
            ["/bin/sh", "-c", command], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        watch = proctree.TreeWatch(proc.pid, port, interval=0.05, conn_interval=0.05)
        try:
            assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
            watch.start()

            def found() -> bool:
                picked = watch.pick()
                return (
                    picked is not None
                    and picked.record.max_connections == 3
                    and (picked.record.peak_descendants >= 1 and picked.record.hwm_kib > 0)
                )

            assert wait_until(found, timeout=120)
        finally:
            assert proc.stdin is not None
            proc.stdin.close()
            proc.wait(120)
            watch.stop()
    picked = watch.pick()
    assert picked is not None and picked.holders == 1
    runtime = picked.record
    assert runtime.depth == 1 and str(script) in runtime.command_line
    assert runtime.ppid == proc.pid  # the wrapper shell is its parent, not the runtime
    assert runtime.cpu_s > 0 and runtime.startup_cpu_s is not None
    shell = watch.records[next(k for k in watch.records if k[0] == proc.pid)]
    assert shell.max_connections == 0 and shell.peak_descendants >= 2
    assert watch.alive() == []


def test_endpoint_sockets_sees_a_connection_by_its_inode() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port)) as client:
            inode = os.fstat(client.fileno()).st_ino
            assert inode in proctree.endpoint_sockets(port)
            assert inode in proctree._proc_net_tcp(port)


# ---- the simulator's part: the task in any message, a run's figures ------------------------


def _http(base: str, method: str, path: str, body: object = None) -> tuple[int, bytes]:
    url = urllib.parse.urlsplit(base)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=HANG_GUARD)
    try:
        data = None if body is None else json.dumps(body)
        conn.request(method, url.path + path, data, {"Content-Type": "application/json"})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def _sim_run(base: str, reset: bool = False) -> SimRun:
    status, raw = _http(base, "POST" if reset else "GET", "/sim/run/reset" if reset else "/sim/run")
    assert status == 200, raw
    return msgspec.json.decode(raw, type=SimRun)


def _chat(base: str, messages: list[dict[str, str]], stream: bool = True) -> tuple[int, str, int]:
    """(status, the reply's text, its completion tokens)"""
    status, raw = _http(
        base,
        "POST",
        "/chat/completions",
        {"model": "fastagent-sim", "messages": messages, "stream": stream},
    )
    if status != 200:
        return status, "", 0
    if not stream:
        body = json.loads(raw)
        return status, body["choices"][0]["message"]["content"], body["usage"]["completion_tokens"]
    text, tokens = [], 0
    for line in raw.split(b"\n"):
        if line.startswith(b"data: {"):
            event = json.loads(line[6:])
            for choice in event["choices"]:
                text.append(choice["delta"].get("content") or "")
            tokens = (event.get("usage") or {}).get("completion_tokens", tokens)
    return status, "".join(text), tokens


def _tasks() -> dict[str, str]:
    return {t.id: t.spec for t in load_tasks(default_dataset_path(), 3)}


def test_the_sim_places_the_task_from_any_message_and_counts_what_it_cannot() -> None:
    spec = _tasks()["HumanEval/0"]
    with SimProcess(["--profile", "ttft_ms=0,itl_ms=0,p_first=1,p_recover=0"]) as sim:
        base = sim.base_url
        _sim_run(base, reset=True)
        in_system = [
            {"role": "system", "content": f"Solve:\n{spec}"},
            {"role": "user", "content": "Go."},
        ]
        in_second_user = [
            {"role": "user", "content": "Hello."},
            {"role": "user", "content": f"Now this one:\n{spec}"},
        ]
        nowhere = [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Write some code."},
        ]
        for messages in (in_system, in_second_user):
            for stream in (True, False):
                status, text, _ = _chat(base, messages, stream)
                assert status == 200 and "def has_close_elements" in text, text
        status, text, _ = _chat(base, nowhere)
        assert status == 200 and "could not find a task" in text
        run = _sim_run(base)
    assert (run.requests, run.unplaced) == (5, 1)


def test_the_sim_counts_a_run_and_a_reset_starts_the_next() -> None:
    specs = _tasks()
    profile = "ttft_ms=30,itl_ms=0,seed=2,faults=http_503:0.5"
    with SimProcess(["--profile", profile]) as sim:
        base = sim.base_url
        first = _sim_run(base, reset=True)
        results = [_chat(base, [{"role": "user", "content": spec}]) for spec in specs.values()]
        results += [_chat(base, [{"role": "user", "content": specs["HumanEval/1"]}], False)]
        run = _sim_run(base)
        again = _sim_run(base, reset=True)
        statuses = [_chat(base, [{"role": "user", "content": spec}])[0] for spec in specs.values()]
        after = _sim_run(base)
    served = [tokens for status, _, tokens in results if status == 200]
    assert first.epoch + 1 == again.epoch == after.epoch
    assert run.requests == 4 and run.unplaced == 0 and run.output_tokens == sum(served)
    assert run.ttft_ms.count == run.server_ms.count == len(served) >= 1
    assert run.ttft_ms.p50 is not None and run.ttft_ms.p50 >= 30  # the profile's TTFT, served
    assert run.server_ms.max is not None and run.server_seconds * 1000 >= run.server_ms.max
    assert run.peak_streams >= 1 and run.streams == 0
    assert (again.requests, again.output_tokens, again.ttft_ms.count) == (0, 0, 0)
    # the request numbering restarted: the same fault draws as the run before
    assert statuses == [status for status, _, _ in results[:3]]
    assert after.requests == 3


def test_peak_streams_counts_requests_in_progress_at_once() -> None:
    spec = _tasks()["HumanEval/2"]
    body = json.dumps(
        {"model": "m", "stream": True, "messages": [{"role": "user", "content": spec}]}
    ).encode()
    with SimProcess(["--profile", "ttft_ms=0,itl_ms=0,faults=stall:1"]) as sim:
        base = sim.base_url
        _sim_run(base, reset=True)
        url = urllib.parse.urlsplit(base)
        head = (
            f"POST {url.path}/chat/completions HTTP/1.1\r\nHost: x\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        clients = [socket.create_connection((url.hostname, url.port)) for _ in range(3)]
        try:
            for client in clients:
                client.sendall(head.encode() + body)
            assert wait_until(lambda: _sim_run(base).streams == 3, HANG_GUARD)  # all stalled
        finally:
            for client in clients:
                client.close()
        assert wait_until(lambda: _sim_run(base).streams == 0, HANG_GUARD)
        run = _sim_run(base)
        assert (run.peak_streams, run.requests, run.ttft_ms.count) == (3, 3, 0)
        assert _sim_run(base, reset=True).peak_streams == 0


def test_workers_share_a_runs_figures() -> None:
    specs = list(_tasks().values())
    with SimProcess(["--profile", "ttft_ms=0,itl_ms=0", "--workers", "2"]) as sim:
        base = sim.base_url
        epoch = _sim_run(base, reset=True).epoch
        served = [_chat(base, [{"role": "user", "content": specs[i % 3]}])[2] for i in range(12)]
        runs = [_sim_run(base) for _ in range(4)]  # whichever worker answers
    for run in runs:
        assert (run.epoch, run.requests, run.output_tokens) == (epoch, 12, sum(served))
        assert run.ttft_ms.count == 12 and run.unplaced == 0


# ---- the command line -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["nameonly"], "NAME=COMMAND"),
        (["a=true", "a=false"], "stack name given twice: a"),
        (["a=true", "--tasks", "0"], "--tasks"),
        (["a=true", "--tasks", "500"], "task limit 500 exceeds"),
        (["a=true", "--sim-profile", "bogus=1"], "--sim-profile"),
        (["a=true", "--idle-threshold", "2"], "--idle-threshold"),
        (["a=true", "--out", "/proc/nope"], "--out"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(argv: list[str], said: str) -> None:
    proc = _fastagent("compare", *argv, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and said in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr


def test_compare_is_a_fastagent_command() -> None:
    assert "compare" in cli._COMMANDS
    parser = cli.build_parser("compare")
    args = parser.parse_args(["compare", "a=true", "--repeats", "2"])
    assert args.stacks == [("a", "true")] and args.repeats == 2 and args.tasks == 100


# ---- the schema ---------------------------------------------------------------------------


def _schemas_script():  # scripts/schemas.py, imported as a module
    spec = importlib.util.spec_from_file_location("schemas_script", ROOT / "scripts" / "schemas.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_committed_compare_schema_is_what_the_structs_make() -> None:
    rendered = _schemas_script().rendered()
    assert SCHEMA.read_bytes() == rendered["compare.schema.json"], "run scripts/schemas.py"
    assert json.loads(SCHEMA.read_text()) == json.loads(msgspec.json.encode(json_schema()))


# ---- end to end -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def comparison(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[subprocess.CompletedProcess[str], Path]:
    """One comparison of five stacks, 2 tasks, 2 repeats, against one simulated endpoint."""
    tmp = tmp_path_factory.mktemp("compare")
    tiny = tmp / "tiny.py"
    tiny.write_text(TINY)
    out = tmp / "out"
    proc = _fastagent(
        "compare",
        "fastagent=fastagent bench --verify trivial",
        f"tiny=python3 {tiny}",
        # a wrapper shell around the runner (two commands: sh cannot exec it), which also
        # reports twice its real peak RSS
        f"wrapped=sh -c 'TINY_RSS_FACTOR=2 python3 {tiny}; true'; true",
        f"unplaced=TINY_PROMPT=none python3 {tiny}",
        "broken=no-such-runner --tasks 2",
        *("--tasks", "2", "--concurrency", "2", "--repeats", "2", "--idle-cap", "0"),
        # requests that take ~0.5 s: long enough for the connection scans to see them
        *("--sim-profile", "ttft_ms=300,itl_ms=2,seed=1", "--sample-interval", "0.05"),
        *("--out", str(out), "--plot"),
    )
    return proc, out


def _report(out: Path) -> Comparison:
    return compare.decode_report((out / "compare.json").read_bytes())


@pytest.mark.slow
def test_compare_json_validates_against_its_schema(comparison: tuple) -> None:
    proc, out = comparison
    assert proc.returncode == 1, proc.stderr  # one stack fails, the others ran
    jsonschema.validate(
        json.loads((out / "compare.json").read_text()), json.loads(SCHEMA.read_text())
    )
    report = _report(out)
    assert report.order == [
        f"{name}#{r}"
        for r in (1, 2)
        for name in ("fastagent", "tiny", "wrapped", "unplaced", "broken")
    ]
    assert report.endpoint is not None and report.finished_at and not report.interrupted


@pytest.mark.slow
def test_every_good_run_has_every_figure(comparison: tuple) -> None:
    _, out = comparison
    report = _report(out)
    good = {s.name: s for s in report.stacks if s.name in ("fastagent", "tiny", "wrapped")}
    for stack in good.values():
        assert len(stack.runs) == 2 and not stack.errors, stack.errors
        for run in stack.runs:
            rt, ep, mine = run.runtime, run.endpoint, run.self_reported
            assert run.error is None and rt is not None and ep is not None and mine is not None
            assert rt.peak_rss_mib > 5 and rt.cpu_seconds > 0 and rt.lifetime_s > 0
            assert rt.endpoint_connections >= 1 and rt.holders == 1 and rt.samples > 0
            assert ep.requests >= 2 and ep.unplaced == 0 and ep.output_tokens > 0
            assert ep.peak_streams >= 1 and ep.ttft_ms.count == ep.requests
            assert ep.server_ms.count == ep.requests and ep.server_seconds > 0
            assert mine.tasks == 2 and mine.passed is not None and mine.peak_rss_mib
            assert run.wall_seconds > 0 and (out / run.log).is_file()
        for key in ("peak_rss_mib", "cpu_seconds", "wall_seconds", "requests", "ttft_p50_ms"):
            assert stack.stats[key].n == 2 and stack.stats[key].median is not None, key
    # the same tasks, the same endpoint: the same model-side outcome for every stack
    assert len({run.self_reported.passed for s in good.values() for run in s.runs}) == 1
    assert (out / "compare.md").is_file() and (out / "compare.png").is_file()


@pytest.mark.slow
def test_the_rule_finds_the_runtime_inside_each_wrapper(comparison: tuple) -> None:
    _, out = comparison
    stacks = {s.name: s for s in _report(out).stacks}
    for run in stacks["fastagent"].runs:
        assert run.runtime is not None and "fastagent bench" in run.runtime.command_line
    for run in stacks["wrapped"].runs:
        rt = run.runtime
        assert rt is not None and rt.depth == 2 and "tiny.py" in rt.command_line
        assert rt.peak_descendants >= 1 or rt.children_cpu_seconds > 0  # its pytest runs
        # the stack said twice what the referee saw: flagged
        assert run.self_reported is not None and run.self_reported.rss_difference is not None
        assert run.self_reported.rss_difference > 0.5
        assert any("peak RSS" in flag for flag in run.flags), run.flags
    for run in stacks["tiny"].runs:
        assert not any("peak RSS" in flag for flag in run.flags), run.flags


@pytest.mark.slow
def test_an_unplaceable_prompt_is_that_stacks_error(comparison: tuple) -> None:
    proc, out = comparison
    stack = next(s for s in _report(out).stacks if s.name == "unplaced")
    assert len(stack.errors) == 2
    for run in stack.runs:
        assert run.endpoint is not None and run.endpoint.unplaced == run.endpoint.requests >= 2
        assert run.error is not None and "could not place" in run.error
    assert "unplaced#1: error: the endpoint could not place" in proc.stderr


@pytest.mark.slow
def test_a_failing_command_is_one_line_and_the_others_go_on(comparison: tuple) -> None:
    proc, out = comparison
    stack = next(s for s in _report(out).stacks if s.name == "broken")
    lines = [line for line in proc.stderr.splitlines() if "broken#" in line and "error" in line]
    assert len(lines) == 2, proc.stderr
    assert "exit status 127" in lines[0] and "no-such-runner" in lines[0]
    assert all(run.error and "exit status 127" in run.error for run in stack.runs)
    assert "Traceback" not in proc.stderr
    table = proc.stdout
    assert "broken" in table and "fastagent" in table and "0/2" in table
