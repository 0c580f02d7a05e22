"""``fastagent bench --shards N`` over a real local Ray instance, against the built-in
simulated endpoint (one per shard): rows, counts, the exact merge of the shards' samples, a
shard killed mid-run and resumed, Ctrl-C, and the one-line errors. Every wait polls for its
condition under a generous hang guard; nothing depends on how busy the machine is.
"""

from __future__ import annotations

import csv
import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest
from _child import child_env
from _wait import wait_until

from fastagent.analysis.samples import read_samples
from fastagent.dataset import default_dataset_path, load_tasks, repeat_tasks
from fastagent.schema import Summary
from fastagent.shards.merge import MERGED_COLUMNS, read_samples_lenient
from fastagent.shards.split import parse_indices, round_robin, select_tasks

#: 20 tasks (10 x 2), cheap verification, a fast simulated endpoint
WORKLOAD = ["--tasks", "10", "--repeat", "2", "--verify", "trivial"]
FAST = "ttft_ms=100,itl_ms=1,seed=0"
#: slow enough that a shard is still running when the test acts on it
SLOW = "ttft_ms=700,itl_ms=1,seed=0"
HANG_GUARD = 600.0


# ---- helpers ----------------------------------------------------------------------------


def start(tmp: Path, *args: str, name: str = "run") -> tuple[subprocess.Popen[bytes], Path]:
    """The coordinator as a child process, its output in files (Ray's processes never hold
    a pipe of ours open)."""
    out = tmp / f"{name}.out"
    with open(out, "wb") as f:
        proc = subprocess.Popen(
            [sys.executable, "-m", "fastagent", "bench", "--shards", "2", *args],
            env=child_env(), cwd=tmp, stdin=subprocess.DEVNULL, stdout=f, stderr=f,
        )  # fmt: skip
    return proc, out


def finish(proc: subprocess.Popen[bytes], out: Path) -> tuple[int, str]:
    try:
        code = proc.wait(HANG_GUARD)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise AssertionError(f"the sharded run hung:\n{out.read_text()}") from None
    return code, out.read_text()


def descendants(root: int) -> list[int]:
    """Every live descendant of ``root``, from one pass over /proc's parent links."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_bytes()
            except OSError:
                continue
            parents[int(entry)] = int(stat[stat.rfind(b")") + 2 :].split()[1])
    found, frontier = [], [root]
    while frontier:
        pid = frontier.pop()
        kids = [kid for kid, parent in parents.items() if parent == pid]
        found += kids
        frontier += kids
    return found


def shard_benches(coordinator: int, shard: int | None = None) -> list[int]:
    """The bench processes of the run's shards (of one shard when given)."""
    mark = b"--task-indices"
    found = []
    for pid in descendants(coordinator):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if mark in cmd and b"bench" in cmd and (shard is None or f"shard{shard}-".encode() in cmd):
            found.append(pid)
    return found


def merged_files(results: Path) -> tuple[Path, Summary]:
    (csv_path,) = [p for p in results.glob("python_*.csv")]
    summary = msgspec.json.decode(csv_path.with_name(f"{csv_path.stem}_summary.json")
                                  .read_bytes(), type=Summary)  # fmt: skip
    return csv_path, summary


def merged_rows(csv_path: Path) -> list[dict[str, str]]:
    with open(csv_path, newline="") as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames or ()) == MERGED_COLUMNS
        return list(reader)


def task_ids() -> list[str]:
    return [t.id for t in repeat_tasks(load_tasks(default_dataset_path(), 10), 2)]


def nearest_rank(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[max(0, math.ceil(len(ordered) * q / 100) - 1)] * 1000.0, 3)


# ---- without Ray running ----------------------------------------------------------------


def test_the_split_is_disjoint_deterministic_and_round_robin() -> None:
    shares = round_robin(list(range(23)), 5)
    assert shares == round_robin(list(range(23)), 5)
    assert sorted(i for share in shares for i in share) == list(range(23))
    assert shares[2] == [2, 7, 12, 17, 22]
    assert round_robin([4, 9], 3) == [[4], [9], []]


def test_task_indices_select_tasks_in_order_and_refuse_bad_ones(tmp_path: Path) -> None:
    f = tmp_path / "idx"
    f.write_text("3, 0\n2")
    assert select_tasks(list("abcd"), str(f)) == ["d", "a", "c"]
    for text, why in (("1 1", "listed twice"), ("x", "not a task index"), ("", "no task")):
        with pytest.raises(Exception, match=why):
            parse_indices(text, "f")
    f.write_text("4")
    with pytest.raises(Exception, match="out of range"):
        select_tasks(list("abcd"), str(f))


def test_a_killed_shards_samples_file_is_read_to_its_last_whole_sample(tmp_path: Path) -> None:
    import io

    from fastagent.telemetry import Telemetry

    out = io.BytesIO()
    t = Telemetry(samples=out)
    for v in (0.01, 0.02, 0.03):
        t.hist["ttft"].add(v)
    cut = out.getvalue()[:-4]  # no trailer, the last sample half-written
    assert list(read_samples_lenient(cut, "x").values["ttft"]) == [0.01, 0.02]
    assert read_samples_lenient(b"", "x").values == {}


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--ray-address", "127.0.0.1:1"], "cannot reach the Ray cluster at 127.0.0.1:1"),
        (["--ray-address", "no-port"], "expected HOST:PORT"),
        (["--trace", "t.jsonl"], "not with --shards"),
        (["--resume", "missing.csv"], "does not exist"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path: Path, args: list[str], says: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "fastagent", "bench", "--shards", "2", *WORKLOAD, *args],
        env=child_env(), cwd=tmp_path, capture_output=True, text=True, timeout=HANG_GUARD,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and says in proc.stderr, proc.stderr


def test_without_ray_it_says_how_to_install_it(tmp_path: Path) -> None:
    code = (
        "import sys; sys.modules['ray'] = None\n"
        "from fastagent.cli import main\n"
        "sys.exit(main(['bench', '--shards', '2', '--tasks', '2']))"
    )
    proc = subprocess.run([sys.executable, "-c", code], env=child_env(), cwd=tmp_path,
                          capture_output=True, text=True, timeout=HANG_GUARD)  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.strip().endswith("--shards needs Ray: pip install 'fastagent[ray]'")
    assert proc.stderr.count("\n") == 1


# ---- a real local Ray instance ----------------------------------------------------------


def test_two_shards_merge_every_row_and_the_exact_percentiles(tmp_path: Path) -> None:
    results = tmp_path / "out"
    args = [*WORKLOAD, "--concurrency", "3", "--sim-profile", FAST, "--results-dir", str(results)]
    proc, out = start(tmp_path, *args)
    # while a shard's bench runs: it is an ordinary bench that never loaded Ray
    seen: list[str] = []

    def a_bench_mapped() -> bool:
        for pid in shard_benches(proc.pid):
            try:
                seen.append(Path(f"/proc/{pid}/maps").read_text())
            except OSError:
                continue
        return bool(seen) or proc.poll() is not None

    assert wait_until(a_bench_mapped, HANG_GUARD, interval=0.05)
    code, text = finish(proc, out)
    assert code == 0, text
    assert seen, "no shard bench was seen running"
    assert not any("site-packages/ray/" in maps or "_raylet" in maps for maps in seen)

    csv_path, summary = merged_files(results)
    rows = merged_rows(csv_path)
    ids = task_ids()
    assert sorted(r["task_id"] for r in rows) == sorted(ids)  # every task once
    assert all(r["shard"] == str(ids.index(r["task_id"]) % 2) for r in rows)  # round-robin
    sh = summary.sharding
    assert sh is not None and sh.count == 2 and sh.not_run == [] and sh.failed_shards == []
    assert [s.rows for s in sh.shards] == [10, 10]
    assert all(Path(s.csv).exists() and s.summary and Path(s.summary).exists() for s in sh.shards)

    # counts: summed, and the same as one process running the same tasks
    single = subprocess.run(
        [sys.executable, "-m", "fastagent", "bench", *WORKLOAD, "--concurrency", "3",
         "--sim-profile", FAST, "--results-dir", str(tmp_path / "single"), "--no-progress"],
        env=child_env(), cwd=tmp_path, capture_output=True, text=True, timeout=HANG_GUARD,
    )  # fmt: skip
    assert single.returncode == 0, single.stderr
    (one,) = (tmp_path / "single").glob("*_summary.json")
    alone = msgspec.json.decode(one.read_bytes(), type=Summary)
    assert summary.outcomes == alone.outcomes
    assert summary.totals.llm_calls == alone.totals.llm_calls
    shard_summaries = [msgspec.json.decode(Path(s.summary or "").read_bytes(), type=Summary)
                       for s in sh.shards]  # fmt: skip
    assert summary.totals.llm_calls == sum(s.totals.llm_calls for s in shard_summaries)
    assert sh.peak_rss_mib_max == max(s.memory.peak_rss_mib for s in shard_summaries)

    # latency: exact over every raw sample of both shards, never averaged
    files = [read_samples(s.samples or "") for s in sh.shards]
    for name in ("ttft", "llm_e2e", "task_wall"):
        values = [v for f in files for v in f.values[name]]
        dist = getattr(summary.latency, f"{name}_ms")
        assert dist.count == len(values) > 0
        assert (dist.p50, dist.p99) == (nearest_rank(values, 50), nearest_rank(values, 99))
    assert summary.latency.itl_ms.count == sum(s.latency.itl_ms.count for s in shard_summaries)


def test_a_killed_shard_keeps_its_rows_and_resume_runs_exactly_the_rest(tmp_path: Path) -> None:
    results = tmp_path / "out"
    workload = [*WORKLOAD, "--concurrency", "1", "--sim-profile", SLOW]
    proc, out = start(tmp_path, *workload, "--results-dir", str(results))

    def shard1_rows() -> int:
        found = list(results.glob("*_shards/shard1.csv"))
        return max(0, len(found[0].read_text().splitlines()) - 1) if found else 0

    assert wait_until(lambda: shard1_rows() >= 2 or proc.poll() is not None, HANG_GUARD)
    victims = shard_benches(proc.pid, shard=1)
    assert len(victims) == 1, f"shard 1's bench not found: {out.read_text()}"
    os.kill(victims[0], signal.SIGKILL)
    code, text = finish(proc, out)
    assert code == 1, text
    assert "killed by signal 9" in text and "--resume" in text

    csv_path, summary = merged_files(results)
    rows = merged_rows(csv_path)
    sh = summary.sharding
    assert sh is not None
    killed = sh.shards[1]
    assert killed.exit_status == -signal.SIGKILL and killed.error == "killed by signal 9"
    assert sh.failed_shards == [1] and sh.shards[0].error is None
    kept = [r["task_id"] for r in rows if r["shard"] == "1"]
    assert 2 <= len(kept) == killed.rows < killed.tasks  # its finished rows are kept
    ids = task_ids()
    missing = [i for i in ids if i not in {r["task_id"] for r in rows}]
    assert sh.not_run == killed.not_run == missing
    assert summary.outcomes.tasks == len(rows) == len(ids) - len(missing)

    proc, out = start(tmp_path, *workload, "--resume", str(csv_path), name="resume")
    code, text = finish(proc, out)
    assert code == 0, text
    rows = merged_rows(csv_path)
    assert sorted(r["task_id"] for r in rows) == sorted(ids)  # one complete merged result
    _, summary = merged_files(results)
    sh = summary.sharding
    assert sh is not None and sh.not_run == [] and sh.count == 4
    new = [s for s in sh.shards if s.run == 1]
    assert [s.index for s in new] == [2, 3] and sum(s.tasks for s in new) == len(missing)
    assert sorted(r["task_id"] for r in rows if r["shard"] in ("2", "3")) == sorted(missing)
    assert summary.outcomes.tasks == len(ids)


def test_ctrl_c_stops_every_shard_and_writes_what_finished(tmp_path: Path) -> None:
    results = tmp_path / "out"
    args = [*WORKLOAD, "--concurrency", "1", "--sim-profile", SLOW, "--results-dir", str(results)]
    proc, out = start(tmp_path, *args)

    def rows_so_far() -> int:
        found = list(results.glob("python_*.csv"))
        return max(0, len(found[0].read_text().splitlines()) - 1) if found else 0

    assert wait_until(lambda: rows_so_far() >= 2 or proc.poll() is not None, HANG_GUARD)
    assert proc.poll() is None, out.read_text()
    proc.send_signal(signal.SIGINT)
    code, text = finish(proc, out)
    assert code == 130, text
    csv_path, summary = merged_files(results)
    sh = summary.sharding
    assert summary.interrupted and sh is not None
    assert all(s.exit_status == 130 and s.summary for s in sh.shards)  # each wrote its own
    assert summary.outcomes.tasks == len(merged_rows(csv_path)) == sum(s.rows for s in sh.shards)
    assert json.loads(Path(sh.shards[0].summary or "").read_text())["interrupted"] is True
