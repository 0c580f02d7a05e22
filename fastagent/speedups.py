"""The hot helpers, compiled when possible: SSE parsing, chunk decoding, code extraction.

>>> from fastagent.speedups import IMPLEMENTATION, SSEParser, delta_content, extract_code
>>> parser = SSEParser()
>>> chunk = b'data: {"choices":[{"delta":{"content":"hi"}}]}\\n\\n'
>>> [delta_content(payload) for payload in parser.feed(chunk)]
['hi']
>>> extract_code("```py\\nprint(1)\\n```")
'print(1)\\n'

``fastagent._speedups`` (Cython) is used unless it cannot be imported or the environment
variable ``FASTAGENT_NO_EXTENSIONS`` is set to a non-empty value other than ``"0"``; then the
pure-Python twin ``fastagent._speedups_py``, with identical results, is used.
``IMPLEMENTATION`` says which: ``"cython"`` or ``"pure"``.
"""

from __future__ import annotations

import os

__all__ = ["IMPLEMENTATION", "NO_EXTENSIONS", "SSEParser", "delta_content", "extract_code"]

#: ``FASTAGENT_NO_EXTENSIONS`` is set (to anything but ``""`` or ``"0"``): use the pure twin.
NO_EXTENSIONS = os.environ.get("FASTAGENT_NO_EXTENSIONS", "") not in ("", "0")
IMPLEMENTATION: str

# The twins have the same signatures (fastagent/_speedups.pyi; tests/test_speedups.py checks
# that they agree); only the one selected is imported, so the measured process pays for one.
if not NO_EXTENSIONS:
    try:
        from fastagent._speedups import SSEParser, delta_content, extract_code
    except ImportError:
        from fastagent._speedups_py import (  # type: ignore[assignment]
            SSEParser,
            delta_content,
            extract_code,
        )

        IMPLEMENTATION = "pure"
    else:
        IMPLEMENTATION = "cython"
else:
    from fastagent._speedups_py import (  # type: ignore[assignment]
        SSEParser,
        delta_content,
        extract_code,
    )

    IMPLEMENTATION = "pure"
