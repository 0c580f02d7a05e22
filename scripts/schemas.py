#!/usr/bin/env python3
"""Write the published JSON Schemas into docs/ (run after changing schema.py or
fastagent/analysis/compare_schema.py).

    .venv/bin/python scripts/schemas.py          # rewrites docs/summary.schema.json, ...
    .venv/bin/python scripts/schemas.py --check  # exit 1 if a committed file differs

Other stacks validate their own ``*_summary.json`` and CSV rows against summary.schema.json
and task_row.schema.json; compare.schema.json is ``fastagent compare``'s ``compare.json``.
tests/test_schema.py and tests/test_compare.py fail when a committed file is not what the
Structs make.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import msgspec

from fastagent.analysis.compare_schema import json_schema as compare_schema
from fastagent.schema import json_schemas

DOCS = Path(__file__).resolve().parent.parent / "docs"


def schemas() -> dict[str, dict[str, object]]:
    """Every published schema, by file name under docs/."""
    return {**json_schemas(), "compare.schema.json": compare_schema()}


def rendered() -> dict[str, bytes]:
    """Each schema file's committed bytes: indented JSON and a final newline."""
    return {
        name: msgspec.json.format(msgspec.json.encode(schema), indent=2) + b"\n"
        for name, schema in schemas().items()
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only compare, write nothing")
    args = parser.parse_args()
    stale = []
    for name, data in rendered().items():
        path = DOCS / name
        if path.exists() and path.read_bytes() == data:
            continue
        stale.append(name)
        if not args.check:
            path.write_bytes(data)
            print(f"wrote {path}")
    if args.check and stale:
        print(f"stale: {', '.join(stale)} (run scripts/schemas.py)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
