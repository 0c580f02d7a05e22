"""Tests for fastagent.dataset and for the committed HumanEval dataset files."""

import ast
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from fastagent.dataset import (
    DatasetError,
    Task,
    default_checksum_path,
    default_dataset_path,
    default_solutions_path,
    load_tasks,
    verify_checksum,
)
from fastagent.errors import FastAgentError

GOOD = [
    {"id": "T/0", "spec": "def f():\n    pass\n", "test": "def test_f():\n    pass\n"},
    {"id": "T/1", "spec": "def g():\n    pass\n", "test": "def test_g():\n    pass\n"},
    {"id": "T/2", "spec": "def h():\n    pass\n", "test": "def test_h():\n    pass\n"},
]


def write(tmp_path: Path, content: object, name: str = "data.json") -> Path:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif isinstance(content, str):
        path.write_text(content, encoding="utf-8")
    else:
        path.write_text(json.dumps(content), encoding="utf-8")
    return path


def load_error(path: Path, limit: int | None = None) -> str:
    with pytest.raises(DatasetError) as info:
        load_tasks(path, limit)
    message = str(info.value)
    assert "\n" not in message
    return message


# --------------------------------------------------------------------------- loader


def test_load_good_file(tmp_path: Path) -> None:
    tasks = load_tasks(write(tmp_path, GOOD))
    assert tasks == [Task(**entry) for entry in GOOD]
    assert [t.id for t in tasks] == ["T/0", "T/1", "T/2"]
    assert isinstance(tasks[0], Task)


def test_load_accepts_str_path(tmp_path: Path) -> None:
    assert len(load_tasks(str(write(tmp_path, GOOD)))) == 3


def test_task_is_frozen() -> None:
    task = Task(id="a", spec="b", test="c")
    with pytest.raises(AttributeError):
        task.id = "x"  # type: ignore[misc]


def test_dataset_error_is_fastagent_error() -> None:
    assert issubclass(DatasetError, FastAgentError)


def test_limit_takes_first_n(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD)
    assert [t.id for t in load_tasks(path, limit=2)] == ["T/0", "T/1"]
    assert [t.id for t in load_tasks(path, limit=3)] == ["T/0", "T/1", "T/2"]
    assert [t.id for t in load_tasks(path, limit=1)] == ["T/0"]


@pytest.mark.parametrize("limit", [0, -1])
def test_limit_below_one(tmp_path: Path, limit: int) -> None:
    assert ">= 1" in load_error(write(tmp_path, GOOD), limit)


def test_limit_not_int(tmp_path: Path) -> None:
    assert "integer" in load_error(write(tmp_path, GOOD), "2")  # type: ignore[arg-type]
    assert "integer" in load_error(write(tmp_path, GOOD), True)


def test_limit_above_count(tmp_path: Path) -> None:
    message = load_error(write(tmp_path, GOOD), 4)
    assert "limit 4" in message
    assert "3 tasks" in message


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.json"
    message = load_error(path)
    assert message == (
        f"dataset not found: {path} (set BENCH_DATASET or --dataset, "
        "or run scripts/build_humaneval_dataset.py)"
    )


def test_directory(tmp_path: Path) -> None:
    assert "directory" in load_error(tmp_path)


def test_empty_file(tmp_path: Path) -> None:
    assert "empty file" in load_error(write(tmp_path, b""))


def test_not_json(tmp_path: Path) -> None:
    message = load_error(write(tmp_path, "this is not json"))
    assert "not valid JSON" in message
    assert "build_humaneval_dataset.py" in message


def test_trailing_garbage(tmp_path: Path) -> None:
    assert "not valid JSON" in load_error(write(tmp_path, json.dumps(GOOD) + " x"))


@pytest.mark.parametrize("content", [{"id": "a"}, "a string", 3, None])
def test_not_an_array(tmp_path: Path, content: object) -> None:
    message = load_error(write(tmp_path, json.dumps(content)))
    assert "must be a JSON array" in message


def test_entry_not_an_object(tmp_path: Path) -> None:
    message = load_error(write(tmp_path, [*GOOD, "oops"]))
    assert "entry 3" in message
    assert "Expected `object`, got `str`" in message


def test_missing_field(tmp_path: Path) -> None:
    entries = [dict(e) for e in GOOD]
    del entries[1]["spec"]
    message = load_error(write(tmp_path, entries))
    assert "entry 1" in message
    assert "spec" in message
    assert "missing" in message


def test_wrong_type(tmp_path: Path) -> None:
    entries = [dict(e) for e in GOOD]
    entries[2]["test"] = 42
    message = load_error(write(tmp_path, entries))
    assert "entry 2, field 'test'" in message
    assert "Expected `str`, got `int`" in message


@pytest.mark.parametrize("field", ["id", "spec", "test"])
@pytest.mark.parametrize("value", ["", "   \n"])
def test_empty_string(tmp_path: Path, field: str, value: str) -> None:
    entries = [dict(e) for e in GOOD]
    entries[1][field] = value
    message = load_error(write(tmp_path, entries))
    assert f"entry 1, field {field!r}: empty string" in message


def test_duplicate_id(tmp_path: Path) -> None:
    entries = [dict(e) for e in GOOD]
    entries[2]["id"] = "T/0"
    message = load_error(write(tmp_path, entries))
    assert "duplicate id 'T/0'" in message
    assert "entries 0 and 2" in message


def test_empty_array(tmp_path: Path) -> None:
    assert "no tasks" in load_error(write(tmp_path, []))


def test_unknown_fields_are_ignored(tmp_path: Path) -> None:
    entries = [{**e, "extra": 1} for e in GOOD]
    assert len(load_tasks(write(tmp_path, entries))) == 3


# --------------------------------------------------------------------------- checksum


def test_checksum_ok(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    sums = write(tmp_path, f"{digest}  data.json\n", "data.sha256")
    assert verify_checksum(path, sums) == digest
    assert verify_checksum(str(path), str(sums)) == digest


def test_checksum_mismatch(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD)
    sums = write(tmp_path, f"{'0' * 64}  data.json\n", "data.sha256")
    with pytest.raises(DatasetError, match=r"sha256 [0-9a-f]{64} but .* expects 0{64}"):
        verify_checksum(path, sums)


def test_checksum_file_missing(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD)
    with pytest.raises(DatasetError, match="checksum file not found"):
        verify_checksum(path, tmp_path / "missing.sha256")


def test_checksum_file_garbage(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD)
    sums = write(tmp_path, "not a digest\n", "data.sha256")
    with pytest.raises(DatasetError, match="SHA-256 hex digest"):
        verify_checksum(path, sums)


def test_checksum_dataset_missing(tmp_path: Path) -> None:
    sums = write(tmp_path, f"{'0' * 64}  data.json\n", "data.sha256")
    with pytest.raises(DatasetError, match="dataset not found"):
        verify_checksum(tmp_path / "data.json", sums)


# --------------------------------------------------------------------------- committed dataset

HELPERS = {"HumanEval/32": "poly", "HumanEval/38": "encode_cyclic", "HumanEval/50": "encode_shift"}


@pytest.fixture(scope="module")
def tasks() -> list[Task]:
    return load_tasks(default_dataset_path())


@pytest.fixture(scope="module")
def solutions() -> list[dict[str, str]]:
    return json.loads(default_solutions_path().read_text(encoding="utf-8"))


def test_default_paths_exist() -> None:
    for path in (default_dataset_path(), default_solutions_path(), default_checksum_path()):
        assert path.is_file(), path


def test_committed_dataset_has_100_tasks_in_order(tasks: list[Task]) -> None:
    assert [t.id for t in tasks] == [f"HumanEval/{i}" for i in range(100)]


def test_committed_dataset_key_order() -> None:
    raw = json.loads(default_dataset_path().read_text(encoding="utf-8"))
    assert all(list(entry) == ["id", "spec", "test"] for entry in raw)


def test_committed_checksum_matches() -> None:
    digest = verify_checksum(default_dataset_path(), default_checksum_path())
    assert default_checksum_path().read_text() == f"{digest}  humaneval_100.json\n"


def test_every_test_module_is_well_formed(tasks: list[Task]) -> None:
    for task in tasks:
        tree = ast.parse(task.test, filename=task.id)
        compile(tree, task.id, "exec")
        spec_tree = ast.parse(task.spec)
        entry = [n.name for n in spec_tree.body if isinstance(n, ast.FunctionDef)][-1]
        top_functions = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
        assert {"check", "test_humaneval"} <= top_functions, task.id
        imports = [
            (n.module, [a.name for a in n.names])
            for n in tree.body
            if isinstance(n, ast.ImportFrom) and n.module == "solution"
        ]
        assert imports == [("solution", [entry])], task.id
        assert f"from {task.id} " in task.test.splitlines()[0], task.id


def test_helpers_are_defined_in_the_test_module(tasks: list[Task]) -> None:
    by_id = {t.id: t for t in tasks}
    for task_id, helper in HELPERS.items():
        tree = ast.parse(by_id[task_id].test)
        names = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
        assert helper in names, task_id
    assert "import math" in by_id["HumanEval/32"].test.splitlines()
    # No other module copies a prompt function.
    for task in tasks:
        if task.id not in HELPERS:
            names = {n.name for n in ast.parse(task.test).body if isinstance(n, ast.FunctionDef)}
            assert names == {"check", "test_humaneval"}, task.id


def test_prompt_imports_are_in_the_test_module(tasks: list[Task]) -> None:
    for task in tasks:
        for node in ast.parse(task.spec).body:
            if isinstance(node, ast.Import | ast.ImportFrom):
                assert ast.unparse(node) in task.test, task.id


def test_solutions_file_matches(tasks: list[Task], solutions: list[dict[str, str]]) -> None:
    assert [s["id"] for s in solutions] == [t.id for t in tasks]
    for task, solution in zip(tasks, solutions, strict=True):
        assert list(solution) == ["id", "entry_point", "solution"]
        assert solution["solution"].startswith(task.spec)
        assert f"from solution import {solution['entry_point']} as candidate" in task.test
        compile(solution["solution"], task.id, "exec")


def _run_pytest(tmp_path: Path, solution: str, test: str) -> subprocess.CompletedProcess[str]:
    tmp_path.mkdir()
    (tmp_path / "solution.py").write_text(solution, encoding="utf-8")
    (tmp_path / "test_solution.py").write_text(test, encoding="utf-8")
    cmd = [sys.executable, "-B", "-m", "pytest", "-q", "-p", "no:cacheprovider"]
    return subprocess.run(
        [*cmd, "test_solution.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_canonical_solutions_pass_and_stub_fails(
    tmp_path: Path, tasks: list[Task], solutions: list[dict[str, str]]
) -> None:
    for index in (0, 32, 45):
        run = _run_pytest(tmp_path / str(index), solutions[index]["solution"], tasks[index].test)
        assert run.returncode == 0, run.stdout + run.stderr
        assert "1 passed" in run.stdout
    stub = tasks[0].spec + "    raise NotImplementedError\n"
    run = _run_pytest(tmp_path / "stub", stub, tasks[0].test)
    assert run.returncode == 1, run.stdout + run.stderr
    assert "NotImplementedError" in run.stdout
