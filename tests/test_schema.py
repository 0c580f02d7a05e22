"""The published results schema: committed JSON Schemas, CSV columns, and their documentation."""

from __future__ import annotations

import importlib.util
import re
import sys
import typing
from pathlib import Path

import msgspec

from fastagent.schema import (
    COLUMNS,
    SCHEMA_VERSION,
    Distribution,
    LoopLag,
    RssTimeline,
    Summary,
    TaskRow,
)

ROOT = Path(__file__).resolve().parent.parent


def _schemas_script():  # scripts/schemas.py, imported as a module
    spec = importlib.util.spec_from_file_location("schemas_script", ROOT / "scripts" / "schemas.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("schemas_script", module)
    spec.loader.exec_module(module)
    return module


def test_committed_json_schemas_are_what_the_structs_make() -> None:
    for name, data in _schemas_script().rendered().items():
        committed = (ROOT / "docs" / name).read_bytes()
        assert committed == data, f"docs/{name} is stale: run scripts/schemas.py"


def test_csv_columns_are_the_row_schema_in_order() -> None:
    schema = msgspec.json.decode((ROOT / "docs" / "task_row.schema.json").read_bytes())
    row = schema["$defs"]["TaskRow"]
    assert tuple(row["properties"]) == COLUMNS == TaskRow.__struct_fields__
    assert row["required"] == list(COLUMNS)  # every column is always written


def test_summary_schema_requires_every_top_level_field() -> None:
    schema = msgspec.json.decode((ROOT / "docs" / "summary.schema.json").read_bytes())
    summary = schema["$defs"]["Summary"]
    # sharding and machine came after schema 2's first summaries: optional, so those (and
    # other stacks' that never shard) stay valid
    assert set(Summary.__struct_fields__) - set(summary["required"]) == {"machine", "sharding"}
    assert SCHEMA_VERSION == 2


#: Value types: documented as one row each (``latency.ttft_ms``), not field by field.
_VALUES = (Distribution, LoopLag, RssTimeline)


def _leaf_paths(struct: type, prefix: str = "") -> list[str]:
    hints = typing.get_type_hints(struct)
    paths = []
    for name in struct.__struct_fields__:
        tp = hints[name]
        if isinstance(tp, type) and issubclass(tp, msgspec.Struct) and tp not in _VALUES:
            paths.extend(_leaf_paths(tp, f"{prefix}{name}."))
        else:
            paths.append(prefix + name)
    return paths


def test_results_doc_defines_every_column_and_summary_field() -> None:
    """docs/results.md has a row for every CSV column and every summary field (by its last
    name, or its dotted path), so a reader of any key finds its definition."""
    doc = (ROOT / "docs" / "results.md").read_text()
    cells = {
        name.strip(" `")
        for first in re.findall(r"^\| *([^|]+?) *\|", doc, re.M)
        for name in first.split(",")
    }
    missing = [c for c in COLUMNS if c not in cells]
    assert not missing, f"CSV columns without a row in docs/results.md: {missing}"
    paths = _leaf_paths(Summary)
    missing = [p for p in paths if p not in cells and p.rsplit(".", 1)[-1] not in cells]
    assert not missing, f"summary fields without a row in docs/results.md: {missing}"
