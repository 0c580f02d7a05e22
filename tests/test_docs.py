"""What the docs point at exists: every test they cite, every file and command they name."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
CITED = re.compile(r"`(tests/[\w/]+\.py)::(\w+)")


def _test_names(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {
        node.name
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
    }


def test_every_cited_test_exists() -> None:
    missing = []
    for doc in DOCS:
        for file, name in CITED.findall(doc.read_text()):
            path = ROOT / file
            if not path.is_file() or name not in _test_names(path):
                missing.append(f"{doc.name}: {file}::{name}")
    assert not missing, missing


def test_every_module_path_in_the_layout_table_exists() -> None:
    text = (ROOT / "README.md").read_text()
    layout = text[text.index("## Layout") : text.index("## Dataset")]
    paths = re.findall(r"^\| `([\w/.]+)`", layout, re.M)
    assert len(paths) > 15
    missing = [p for p in paths if not (ROOT / p).exists()]
    assert not missing, missing
