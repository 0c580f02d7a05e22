"""The compiled speedups and their pure-Python twin: every rule, on both, and their agreement.

Tests taking the ``speedups`` fixture (tests/conftest.py) run once per implementation; the
property tests drive both implementations on the same input and compare.
"""

from __future__ import annotations

import importlib
import itertools
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastagent
import fastagent._speedups_py as pure
import fastagent.speedups
from fastagent.errors import MalformedChunk, SSELineTooLong

NO_EXTENSIONS = os.environ.get("FASTAGENT_NO_EXTENSIONS", "") not in ("", "0")
compiled: ModuleType | None = (
    None if NO_EXTENSIONS else importlib.import_module("fastagent._speedups")
)
needs_compiled = pytest.mark.skipif(NO_EXTENSIONS, reason="FASTAGENT_NO_EXTENSIONS is set")
PROPERTY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

BOM = b"\xef\xbb\xbf"
CHUNK = (
    b'{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1700000000,"model":"m",'
    b'"choices":[{"index":0,"delta":{"content":" foo"},"finish_reason":null}]}'
)


def feed_all(module: ModuleType, chunks: Sequence[bytes], max_line: int = 1 << 20) -> list[bytes]:
    parser = module.SSEParser(max_line)
    out: list[bytes] = []
    for chunk in chunks:
        out += parser.feed(chunk)
    return out + parser.close()


def events(module: ModuleType, stream: bytes) -> list[bytes]:
    """The payloads of ``stream`` fed whole, then byte by byte; both must agree."""
    whole = feed_all(module, [stream])
    assert feed_all(module, [stream[i : i + 1] for i in range(len(stream))]) == whole
    return whole


# ---- SSEParser -------------------------------------------------------------------------------


def test_line_ends_lf_cr_crlf(speedups: ModuleType) -> None:
    stream = b"data: a\n\ndata: b\r\rdata: c\r\n\r\ndata: d\n\r\n"
    assert events(speedups, stream) == [b"a", b"b", b"c", b"d"]


def test_crlf_split_across_chunks_is_one_line_end(speedups: ModuleType) -> None:
    parser = speedups.SSEParser()
    assert parser.feed(b"data: a\r") == []
    assert parser.feed(b"\ndata: b\r") == []
    assert parser.feed(b"\n") == []
    assert parser.feed(b"\r") == [b"a\nb"]
    assert parser.feed(b"\n\ndata: c\r\n\r\n") == [b"c"]


def test_lone_cr_then_lf_later_is_not_skipped(speedups: ModuleType) -> None:
    parser = speedups.SSEParser()
    assert parser.feed(b"data: a\r") == []
    assert parser.feed(b"x\n") == []
    assert parser.feed(b"\n") == [b"a"]


def test_comments_are_ignored(speedups: ModuleType) -> None:
    assert events(speedups, b": hello\ndata: x\n:\n: data: y\n\n") == [b"x"]
    assert events(speedups, b":only comments\n\n") == []


def test_one_leading_space_of_the_value_is_stripped(speedups: ModuleType) -> None:
    assert events(speedups, b"data:x\n\ndata: x\n\ndata:  x\n\ndata:\tx\n\n") == [
        b"x",
        b"x",
        b" x",
        b"\tx",
    ]


def test_field_split_at_first_colon(speedups: ModuleType) -> None:
    assert events(speedups, b"data: a: b:c\n\n") == [b"a: b:c"]


def test_line_without_colon_is_field_with_empty_value(speedups: ModuleType) -> None:
    assert events(speedups, b"data\n\n") == [b""]
    assert events(speedups, b"data\ndata\n\n") == [b"\n"]


def test_empty_data_dispatches_empty_payload(speedups: ModuleType) -> None:
    assert events(speedups, b"data:\n\n") == [b""]
    assert events(speedups, b"data: \n\n") == [b""]


def test_blank_lines_without_data_dispatch_nothing(speedups: ModuleType) -> None:
    assert events(speedups, b"\n\n\r\n\revent: x\nid: 1\n\nretry: 5\n\n") == []


def test_multi_line_data_joined_with_lf(speedups: ModuleType) -> None:
    assert events(speedups, b"data: a\ndata: b\r\ndata\rdata: c\n\n") == [b"a\nb\n\nc"]


def test_unknown_and_wrong_case_fields_are_ignored(speedups: ModuleType) -> None:
    assert events(speedups, b"foo: bar\nData: no\ndata : no\n data: no\ndata: yes\n\n") == [b"yes"]


def test_event_id_retry_fields(speedups: ModuleType) -> None:
    parser = speedups.SSEParser()
    assert parser.event is None
    assert parser.last_event_id == b""
    assert parser.retry is None
    assert parser.feed(b"event: delta\nid: 42\nretry: 1500\ndata: x\n\n") == [b"x"]
    assert (parser.event, parser.last_event_id, parser.retry) == (b"delta", b"42", 1500)
    assert parser.feed(b"data: y\n\n") == [b"y"]
    assert parser.event == b"message"
    assert parser.last_event_id == b"42"
    parser.feed(b"event: lost\n\ndata: z\n\n")
    assert parser.event == b"message"


def test_id_with_nul_is_ignored_and_empty_id_resets(speedups: ModuleType) -> None:
    parser = speedups.SSEParser()
    parser.feed(b"id: 7\nid: a\0b\n")
    assert parser.last_event_id == b"7"
    parser.feed(b"id\n")
    assert parser.last_event_id == b""


def test_retry_only_ascii_digits(speedups: ModuleType) -> None:
    parser = speedups.SSEParser()
    for line in (
        b"retry: 12a\n",
        b"retry: -1\n",
        b"retry:\n",
        b"retry: 1 \n",
        b"retry: \xd9\xa1\n",
    ):
        parser.feed(line)
        assert parser.retry is None
    parser.feed(b"retry: 0042\n")
    assert parser.retry == 42
    parser.feed(b"retry: " + b"9" * 19 + b"\n")
    assert parser.retry == 42
    parser.feed(b"retry: " + b"9" * 18 + b"\n")
    assert parser.retry == 999_999_999_999_999_999


def test_bom_dropped_at_stream_start(speedups: ModuleType) -> None:
    assert events(speedups, BOM + b"data: x\n\n") == [b"x"]
    assert events(speedups, BOM + b"\n" + b"data: x\n\n") == [b"x"]


def test_bom_split_across_chunks(speedups: ModuleType) -> None:
    parser = speedups.SSEParser()
    assert parser.feed(b"\xef") == []
    assert parser.feed(b"") == []
    assert parser.feed(b"\xbb") == []
    assert parser.feed(b"\xbfdata: x\n\n") == [b"x"]


def test_only_one_bom_and_only_at_start(speedups: ModuleType) -> None:
    assert events(speedups, BOM + BOM + b"data: x\n\n") == []
    assert events(speedups, b"data: x\n\n" + BOM + b"data: y\n\n") == [b"x"]
    assert events(speedups, b"\xef\xbbdata: x\n\n") == []
    assert events(speedups, b"\xef\xbb\ndata: x\n\n") == [b"x"]


def test_non_ascii_payload_bytes_pass_through(speedups: ModuleType) -> None:
    text = "héllo → 世界 🎉".encode()
    assert events(speedups, b"data: " + text + b"\n\n") == [text]
    assert events(speedups, b"data: \xff\xfe\n\n") == [b"\xff\xfe"]


def test_close_dispatches_pending_line_and_event(speedups: ModuleType) -> None:
    parser = speedups.SSEParser()
    assert parser.feed(b"data: a\ndata: b") == []
    assert parser.close() == [b"a\nb"]
    assert parser.feed(b"data: c\n") == []
    assert parser.close() == [b"c"]
    assert parser.close() == []
    assert parser.feed(b"data: d\r") == []
    assert parser.close() == [b"d"]


def test_close_without_data_and_with_partial_bom(speedups: ModuleType) -> None:
    parser = speedups.SSEParser()
    assert parser.close() == []
    assert parser.feed(b"event: x\nid: 3") == []
    assert parser.close() == []
    assert parser.last_event_id == b"3"
    assert parser.feed(b"\xef\xbb") == []
    assert parser.close() == []


def test_close_resets_for_a_new_stream(speedups: ModuleType) -> None:
    parser = speedups.SSEParser()
    parser.feed(b"id: 9\nretry: 10\ndata: x\r")
    assert parser.close() == [b"x"]
    assert parser.feed(BOM + b"data: y\n\n") == [b"y"]
    assert (parser.last_event_id, parser.retry) == (b"9", 10)
    parser.feed(b"data: z\r")
    assert parser.close() == [b"z"]
    assert parser.feed(b"\ndata: w\n") == []
    assert parser.close() == [b"w"]


def test_feed_empty_chunk(speedups: ModuleType) -> None:
    parser = speedups.SSEParser()
    assert parser.feed(b"") == []
    assert parser.feed(b"data: x\n\n") == [b"x"]


def test_feed_takes_bytes_like_objects_only(speedups: ModuleType) -> None:
    parser = speedups.SSEParser()
    assert parser.feed(bytearray(b"data: a\n")) == []
    assert parser.feed(memoryview(b"\ndata: b\n\n")) == [b"a", b"b"]
    for wrong in ("data: x\n\n", 5, None):
        with pytest.raises(TypeError):
            parser.feed(wrong)


def test_max_line_must_be_positive(speedups: ModuleType) -> None:
    with pytest.raises(ValueError):
        speedups.SSEParser(0)
    assert speedups.SSEParser(7).max_line == 7
    assert speedups.SSEParser().max_line == 1 << 20


def test_line_at_the_cap_passes_and_one_byte_more_raises(speedups: ModuleType) -> None:
    assert feed_all(speedups, [b"data: 1234\n\n"], max_line=10) == [b"1234"]
    with pytest.raises(SSELineTooLong):
        feed_all(speedups, [b"data: 12345\n\n"], max_line=10)
    with pytest.raises(SSELineTooLong):
        feed_all(speedups, [b": comment is a line too\n"], max_line=10)


def test_unterminated_long_line_raises_as_soon_as_buffered(speedups: ModuleType) -> None:
    parser = speedups.SSEParser(max_line=10)
    assert parser.feed(b"data: 12") == []
    assert parser.feed(b"34") == []
    with pytest.raises(SSELineTooLong):
        parser.feed(b"5")
    parser = speedups.SSEParser(max_line=1000)
    with pytest.raises(SSELineTooLong):
        parser.feed(b"x" * 1001)


def test_accumulated_event_data_is_capped(speedups: ModuleType) -> None:
    ok = b"data:12345\ndata:123456\n\n"
    assert feed_all(speedups, [ok], max_line=12) == [b"12345\n123456"]
    with pytest.raises(SSELineTooLong):
        feed_all(speedups, [b"data:12345\ndata:1234567\n\n"], max_line=12)
    parser = speedups.SSEParser(max_line=12)
    parser.feed(b"data:12345\n")
    parser.feed(b"data:123456")
    with pytest.raises(SSELineTooLong):
        parser.feed(b"7\r")


def test_parser_is_reset_after_line_too_long(speedups: ModuleType) -> None:
    parser = speedups.SSEParser(max_line=10)
    with pytest.raises(SSELineTooLong) as caught:
        parser.feed(b"data: a\n\ndata: 0123456789")
    assert isinstance(caught.value, ValueError)
    assert parser.feed(BOM + b"data: ok\n\n") == [b"ok"]
    with pytest.raises(SSELineTooLong):
        parser.feed(b"x" * 11)
    assert parser.feed(b"data: ok2\r\n\r\n") == [b"ok2"]
    assert parser.close() == []


def test_openai_stream_in_odd_chunks(speedups: ModuleType) -> None:
    stream = b"".join(b"data: " + CHUNK + b"\n\n" for _ in range(5)) + b"data: [DONE]\n\n"
    for size in (1, 3, 7, 64, 200, 4096):
        got = feed_all(speedups, [stream[i : i + size] for i in range(0, len(stream), size)])
        assert got == [CHUNK] * 5 + [b"[DONE]"]


# ---- delta_content ---------------------------------------------------------------------------


def test_delta_content_openai_chunk(speedups: ModuleType) -> None:
    assert speedups.delta_content(CHUNK) == " foo"


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (b'{"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}', ""),
        (b'{"choices":[{"index":0,"delta":{"role":"assistant"}}]}', None),
        (b'{"choices":[{"delta":{"content":null},"finish_reason":"stop"}]}', None),
        (b'{"choices":[{"delta":{}}]}', None),
        (b'{"choices":[{}]}', None),
        (b'{"choices":[{"delta":null}]}', None),
        (b'{"id":"x","choices":[],"usage":{"prompt_tokens":3,"total_tokens":9}}', None),
        (b'{"choices":null}', None),
        (b"{}", None),
        (b' \r\n\t{"choices":[{"delta":{"content":"x"}}]} \n', "x"),
        (b'{"choices":[{"message":{"role":"assistant","content":"hello"}}]}', "hello"),
        (b'{"choices":[{"delta":null,"message":{"content":"m"}}]}', "m"),
        (b'{"choices":[{"delta":{"content":"d"},"message":{"content":"m"}}]}', "d"),
        (b'{"choices":[{"delta":{},"message":{"content":"m"}}]}', None),
        (b'{"choices":[{"delta":{"content":"a"}},{"delta":{"content":"b"}}]}', "a"),
        (b'{"choices":[{"delta":{"content":"a\\n\\"\\\\\\/\\b\\f\\r\\t"}}]}', 'a\n"\\/\b\f\r\t'),
        (b'{"choices":[{"delta":{"content":"\\u00e9\\u4E16\\ud83d\\ude00\\u0000"}}]}', "é世😀\0"),
        ('{"choices":[{"delta":{"content":"é世😀"}}]}'.encode(), "é世😀"),
        ('{"model":"ü","choices":[{"delta":{"content":"x"}}]}'.encode(), "x"),
        (b'{"ch\\u006fices":[{"delta":{"content":"esc"}}]}', "esc"),
        (b'{"choices":[{"delta":{"content":"a"}}],"choices":[{"delta":{"content":"b"}}]}', "b"),
        (b'{"choices":[{"delta":{"content":"a","content":"b"}}]}', "b"),
        (b'{"n":[1,-0,2.5e-3,1E+9,true,false,null,{"a":[]}],"choices":[]}', None),
    ],
)
def test_delta_content_shapes(speedups: ModuleType, payload: bytes, expected: str | None) -> None:
    assert speedups.delta_content(payload) == expected


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"[DONE]",
        b"{",
        b'{"choices":[{"delta":{"content":"x"}}]',
        b'{"choices":[{"delta":{"content":"x"}}]}x',
        b"[]",
        b'"text"',
        b"null",
        b'{"choices":{}}',
        b'{"choices":5}',
        b'{"choices":[5]}',
        b'{"choices":[{"delta":{"content":"x"}},null]}',
        b'{"choices":[{"delta":"x"}]}',
        b'{"choices":[{"delta":{"content":5}}]}',
        b'{"choices":[{"delta":{"content":true}}]}',
        b'{"choices":[{"delta":{"content":["x"]}}]}',
        b'{"choices":[{"delta":{"content":"x"}},{"message":{"content":1}}]}',
        b'{"id":"\xff","choices":[]}',
        b'{"id":"\xed\xa0\x80","choices":[]}',
        b'{"choices":[{"delta":{"content":"\xc3"}}]}',
        b'{"choices":[{"delta":{"content":"\\ud83d"}}]}',
        b'{"choices":[{"delta":{"content":"\\ude00"}}]}',
        b'{"choices":[{"delta":{"content":"\\x"}}]}',
        b'{"choices":[{"delta":{"content":"a\x01"}}]}',
        b'{"a":01}',
        b'{"a":1.}',
        b'{"a":NaN}',
        b'{"a":[1,]}',
        b'{"a":1,}',
        BOM + b"{}",
        b'{"a":' + b"[" * 5000 + b"]" * 5000 + b"}",
    ],
)
def test_delta_content_malformed(speedups: ModuleType, payload: bytes) -> None:
    with pytest.raises(MalformedChunk) as caught:
        speedups.delta_content(payload)
    assert isinstance(caught.value, ValueError)


def test_delta_content_long_escaped_content(speedups: ModuleType) -> None:
    text = 'ligne\n"é"\t😀 ' * 200
    payload = json.dumps({"choices": [{"delta": {"content": text}}]}).encode()
    assert speedups.delta_content(payload) == text


# ---- extract_code ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Here:\n```python\nx = 1\n```\nbye", "x = 1\n"),
        ("```python\nx = 1\n```", "x = 1\n"),
        ("```Python\nx = 1\n```", "x = 1\n"),
        ("```PY\nx = 1\n```", "x = 1\n"),
        ("```py\nx = 1\n```", "x = 1\n"),
        ("```\nx = 1\n```", "x = 1\n"),
        ("```python title=x.py\nx = 1\n```", "x = 1\n"),
        ("```bash\nls\n```\ntext\n```python\nx = 1\n```", "x = 1\n"),
        ("```text\n```\n```\nbare\n```", "bare\n"),
        ("```bash\nls\n```\n", None),
        ("no code at all", None),
        ("", None),
        ("inline ```python x``` only", None),
        ("```python\r\nx = 1\r\ny = 2\r\n```\r\nafter", "x = 1\ny = 2\n"),
        ("```python\nx = 1\ny = 2", "x = 1\ny = 2\n"),
        ("```python\nx = 1\n", "x = 1\n"),
        ("```python\n```", ""),
        ("```python", ""),
        ("```python\n\n```", "\n"),
        ("  ```python\n  if x:\n      y\n z\n  ```", "if x:\n    y\nz\n"),
        ("    ```python\nx\n", None),
        ("````python\n```\ninner\n```\n````", "```\ninner\n```\n"),
        ("```python\nx\n```  \t\ny", "x\n"),
        ("```python\nx\n``` not a close\n```", "x\n``` not a close\n"),
        ("```py`thon\nx\n```", ""),
        ("```py`thon\nx\n", None),
        ("~~~python\nx\n~~~", None),
        ("```python3\nx\n```", None),
        ("```python\nline\rwith cr\n```", "line\rwith cr\n"),
        ("```\tpython \nx\n```", "x\n"),
    ],
)
def test_extract_code(speedups: ModuleType, text: str, expected: str | None) -> None:
    assert speedups.extract_code(text) == expected


# ---- selector --------------------------------------------------------------------------------


def test_compiled_module_is_selected() -> None:
    if NO_EXTENSIONS:
        assert fastagent.speedups.IMPLEMENTATION == "pure"
        return
    assert fastagent.speedups.IMPLEMENTATION == "cython", "the compiled speedups did not load"
    assert compiled is not None
    assert fastagent.speedups.SSEParser is compiled.SSEParser
    assert fastagent.speedups.delta_content is compiled.delta_content
    assert fastagent.speedups.extract_code is compiled.extract_code


def test_same_public_names_and_docstrings() -> None:
    assert sorted(fastagent.speedups.__all__) == [
        "IMPLEMENTATION",
        "NO_EXTENSIONS",
        "SSEParser",
        "delta_content",
        "extract_code",
    ]
    if compiled is None:
        return
    assert compiled.__all__ == pure.__all__
    for name in pure.__all__:
        assert getattr(compiled, name).__doc__ == getattr(pure, name).__doc__, name
    for name in ("feed", "close", "max_line"):
        assert getattr(compiled.SSEParser, name).__doc__ == getattr(pure.SSEParser, name).__doc__


def _implementation_in_subprocess(prelude: str = "", **env: str) -> str:
    root = str(Path(fastagent.__file__).resolve().parent.parent)
    environ = {k: v for k, v in os.environ.items() if k != "FASTAGENT_NO_EXTENSIONS"}
    environ["PYTHONPATH"] = os.pathsep.join(filter(None, [root, environ.get("PYTHONPATH")]))
    code = prelude + "import fastagent.speedups as s; print(s.IMPLEMENTATION)"
    result = subprocess.run(
        [sys.executable, "-c", code],
        env={**environ, **env},
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout.strip()


def test_no_extensions_env_forces_pure() -> None:
    assert _implementation_in_subprocess(FASTAGENT_NO_EXTENSIONS="1") == "pure"
    assert _implementation_in_subprocess(FASTAGENT_NO_EXTENSIONS="yes") == "pure"


@needs_compiled
def test_no_extensions_zero_or_empty_keeps_cython() -> None:
    assert _implementation_in_subprocess(FASTAGENT_NO_EXTENSIONS="0") == "cython"
    assert _implementation_in_subprocess(FASTAGENT_NO_EXTENSIONS="") == "cython"


def test_import_error_falls_back_to_pure() -> None:
    blocked = "import sys; sys.modules['fastagent._speedups'] = None; "
    assert _implementation_in_subprocess(blocked) == "pure"


# ---- properties: the two implementations agree, and chunking never matters ----------------

_line_text = st.text(
    alphabet=st.characters(codec="utf-8", exclude_characters="\r\n"), max_size=12
).map(str.encode)
_values = st.builds(
    bytes.__add__,
    st.sampled_from([b"", b"", b" ", b"  "]),
    _line_text | st.binary(max_size=8) | st.sampled_from([b"", b"[DONE]", b"12", CHUNK]),
)
_lines = st.one_of(
    st.builds(lambda sp, v: b"data:" + sp + v, st.sampled_from([b"", b" ", b"  "]), _values),
    st.builds(lambda v: b":" + v, _values),
    st.just(b""),
    st.builds(
        lambda f, v: f + b":" + v,
        st.sampled_from([b"event", b"id", b"retry", b"Data", b"foo", b"data "]),
        _values | st.integers(0, 10**20).map(lambda i: str(i).encode()),
    ),
    st.sampled_from([b"data", b"event", b"id", b"retry", b"\0", BOM, BOM + b"data: b"]),
    st.integers(0, 300).map(lambda n: b"data: " + b"x" * n),
)
_ends = st.sampled_from([b"\n", b"\r", b"\r\n"])
streams = st.builds(
    lambda bom, body, tail: (BOM[:bom]) + b"".join(line + end for line, end in body) + tail,
    st.sampled_from([0, 0, 1, 2, 3]),
    st.lists(st.tuples(_lines, _ends), max_size=25),
    st.one_of(st.just(b""), _lines),
)
max_lines = st.sampled_from([1 << 20] * 6 + [1, 2, 8, 16, 40, 150])


def reference_events(stream: bytes) -> list[bytes]:
    """A direct, whole-stream reading of the rules, for streams without over-long lines."""
    stream = stream.removeprefix(BOM)
    *lines, tail = re.split(rb"\r\n|\r|\n", stream)
    if tail:
        lines.append(tail)
    out: list[bytes] = []
    data: list[bytes] | None = None
    for line in lines:
        if not line:
            if data is not None:
                out.append(b"\n".join(data))
            data = None
        elif not line.startswith(b":"):
            field, _, value = line.partition(b":")
            if field == b"data":
                data = [*(data or []), value.removeprefix(b" ")]
    if data is not None:
        out.append(b"\n".join(data))
    return out


Run = tuple[list[list[bytes]], int | None, list[tuple[Any, ...]]]


def run_chunks(module: ModuleType, chunks: Sequence[bytes], max_line: int) -> Run:
    """Per-call outputs (the close() last), the index of the call that raised, and the
    attributes (event, last_event_id, retry) after each call."""
    parser = module.SSEParser(max_line)
    outs: list[list[bytes]] = []
    attrs: list[tuple[Any, ...]] = []
    failed: int | None = None
    try:
        for chunk in [*chunks, None]:
            outs.append(parser.feed(chunk) if chunk is not None else parser.close())
            attrs.append((parser.event, parser.last_event_id, parser.retry))
    except SSELineTooLong:
        failed = len(outs)
    return outs, failed, attrs


def cut(stream: bytes, points: list[int]) -> list[bytes]:
    bounds = [0, *sorted(p % (len(stream) + 1) for p in points), len(stream)]
    return [stream[a:b] for a, b in itertools.pairwise(bounds)]


def flat(outs: Sequence[list[bytes]]) -> list[bytes]:
    return [payload for out in outs for payload in out]


def implementations() -> list[ModuleType]:
    return [pure] if compiled is None else [compiled, pure]


@PROPERTY
@given(stream=streams, points=st.lists(st.integers(0, 10**6), max_size=12), max_line=max_lines)
def test_any_chunking_gives_the_same_events_at_the_same_point(
    stream: bytes, points: list[int], max_line: int
) -> None:
    chunks = cut(stream, points)
    bytewise = [stream[i : i + 1] for i in range(len(stream))]
    for module in implementations():
        by_byte, byte_failed, byte_attrs = run_chunks(module, bytewise, max_line)
        outs, failed, attrs = run_chunks(module, chunks, max_line)
        whole, whole_failed, whole_attrs = run_chunks(module, [stream], max_line)
        ends = [len(b"".join(chunks[: j + 1])) for j in range(len(chunks))]
        if byte_failed is None:
            assert failed is None and whole_failed is None
            assert attrs[-1] == byte_attrs[-1] == whole_attrs[-1]
            for j, end in enumerate(ends):
                assert flat(outs[: j + 1]) == flat(by_byte[:end])
            assert flat(outs) == flat(by_byte) == flat(whole)
            if max_line == 1 << 20:
                assert flat(whole) == reference_events(stream)
        else:
            # The first byte of the stream that breaks the cap; len(stream) means close().
            offset = byte_failed
            expected = next((j for j, end in enumerate(ends) if offset < end), len(chunks))
            assert failed == expected
            start = ends[failed - 1] if failed else 0
            assert flat(outs) == flat(by_byte[:start])
            assert whole_failed == (0 if offset < len(stream) else 1)
    if compiled is not None:
        assert run_chunks(compiled, chunks, max_line) == run_chunks(pure, chunks, max_line)


@PROPERTY
@given(
    data=st.binary(max_size=300) | streams,
    points=st.lists(st.integers(0, 10**6), max_size=10),
    max_line=max_lines,
)
def test_arbitrary_bytes_only_ever_raise_line_too_long(
    data: bytes, points: list[int], max_line: int
) -> None:
    chunks = cut(data, points)
    results = [run_chunks(module, chunks, max_line) for module in implementations()]
    assert all(result == results[0] for result in results)


def outcome(function: Callable[[Any], Any], argument: Any) -> tuple[str, Any]:
    """The result, or the MalformedChunk message; any other exception fails the test."""
    try:
        return "ok", function(argument)
    except MalformedChunk as exc:
        return "malformed", str(exc)


_json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**20), 10**20)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)
_content = (
    st.none() | st.sampled_from(["", " a", "b\n", "é😀"]) | st.text(max_size=20) | _json_values
)
_message = st.one_of(
    st.none(),
    st.fixed_dictionaries({}, optional={"role": st.just("assistant"), "content": _content}),
    st.fixed_dictionaries({"content": _content}, optional={"x": _json_values}),
    _json_values,
)
_logprobs = st.none() | st.fixed_dictionaries(
    {
        "content": st.lists(
            st.fixed_dictionaries(
                {
                    "token": st.text(max_size=4),
                    "logprob": st.floats(-50, 0),
                    "bytes": st.lists(st.integers(0, 255), max_size=3),
                    "top_logprobs": st.lists(st.just({}), max_size=2),
                }
            ),
            max_size=2,
        )
    }
)
_usage = st.none() | st.fixed_dictionaries(
    {"prompt_tokens": st.integers(0, 99), "total_tokens": st.integers(0, 999)},
    optional={"details": st.dictionaries(st.text(max_size=3), st.integers() | st.none())},
)
_choice = st.one_of(
    st.fixed_dictionaries(
        {"delta": _message},
        optional={"index": st.integers(0, 3), "message": _message, "logprobs": _logprobs},
    ),
    st.fixed_dictionaries({}, optional={"delta": _message, "message": _message, "f": st.none()}),
    _json_values,
)
_chunk = st.one_of(
    st.fixed_dictionaries(
        {"choices": st.lists(_choice, min_size=1, max_size=3)},
        optional={
            "id": st.text(max_size=10),
            "created": st.integers(0, 2**40),
            "usage": _usage,
            "extra": _json_values,
        },
    ),
    st.fixed_dictionaries(
        {},
        optional={"choices": st.lists(_choice, max_size=3) | _json_values, "usage": _usage},
    ),
    _json_values,
)


def expected_content(document: Any) -> tuple[str, Any]:
    """What delta_content must make of a decoded document: ("ok", value) or ("malformed", None)."""
    bad = ("malformed", None)
    if not isinstance(document, dict):
        return bad
    choices = document.get("choices")
    if choices is None:
        return "ok", None
    if not isinstance(choices, list) or not all(isinstance(c, dict) for c in choices):
        return bad
    for choice in choices:
        for key in ("delta", "message"):
            message = choice.get(key)
            if message is None:
                continue
            if not isinstance(message, dict):
                return bad
            if not isinstance(message.get("content"), str | None):
                return bad
    if not choices:
        return "ok", None
    message = choices[0].get("delta")
    if message is None:
        message = choices[0].get("message")
    return "ok", None if message is None else message.get("content")


@PROPERTY
@given(
    document=_chunk,
    ensure_ascii=st.booleans(),
    separators=st.sampled_from([(",", ":"), (", ", ": "), (" ,\n", " :\t")]),
)
def test_delta_content_matches_the_document(
    document: Any, ensure_ascii: bool, separators: tuple[str, str]
) -> None:
    payload = json.dumps(document, ensure_ascii=ensure_ascii, separators=separators).encode()
    expected = expected_content(document)
    for module in implementations():
        got = outcome(module.delta_content, payload)
        assert got[0] == expected[0]
        if expected[0] == "ok":
            assert got[1] == expected[1]
    if compiled is not None:
        assert outcome(compiled.delta_content, payload) == outcome(pure.delta_content, payload)


_JSON_TOKENS = [
    b"{", b"}", b"[", b"]", b",", b":", b'"', b"\\", b" ", b"\n", b"\t", b"\x0c", b"0", b"1",
    b"9", b"-", b"+", b".", b"e", b"E", b"u", b"d8", b"dc", b"D83D", b"n", b"t", b"f", b"true",
    b"null", b"/", b"\x00", b"\x1f", b"\x7f", b"\xc3", b"\xa9", b"\xed\xa0\x80",
    b"\xf0\x9f\x98\x80", b"\xff", b"\xef\xbb\xbf",
]  # fmt: skip
_json_bytes = st.lists(st.sampled_from(_JSON_TOKENS), max_size=8).map(b"".join)
_templates = [
    b'{"a":%s,"choices":[{"delta":{"content":"x"}}]}',
    b'{"choices":[{"delta":{"content":%s}}]}',
    b'{"choices":[{"delta":{"content":"%s"}}]}',
    b'{"choices":[{"delta":{"content":"x"},"message":%s}]}',
    b'{"choices":[{"delta":{"content":"x"}},%s]}',
    b'{"choices":[{"delta":{"content":"x"}}],"b":[1,{"c":%s}]}',
    b'{"choices":[{"delta":%s}]}',
    b'{"choices":%s}',
    b'{"%s":1,"choices":[]}',
    b"%s",
    b'{"choices":[]}%s',
]


@PROPERTY
@given(template=st.sampled_from(_templates), fragment=_json_bytes)
def test_delta_content_agrees_on_json_fragments(template: bytes, fragment: bytes) -> None:
    payload = template % fragment
    results = [outcome(module.delta_content, payload) for module in implementations()]
    assert all(result == results[0] for result in results)


_SMALL_TOKENS = [b"", b"0", b"1", b"-", b".", b"e", b"+", b",", b":", b"[", b"]", b"{", b"}",
                 b'"', b"\\", b"u", b"n", b"null", b"true", b" ", b"\x01", b"\xc3"]  # fmt: skip
_SMALL_TEMPLATES = [
    b'{"u":[%s],"choices":[{"delta":{"content":"x"}}]}',
    b'{"u":{"k":%s},"choices":[]}',
    b'{"u":"%s","choices":[{"delta":{"content":"x"}}]}',
    b'{"choices":[{"delta":{"content":%s}}]}',
    b'{"choices":[{"delta":{"content":"x"}}%s]}',
]


def test_delta_content_agrees_on_every_small_fragment() -> None:
    if compiled is None:
        pytest.skip("needs the compiled module")
    for template in _SMALL_TEMPLATES:
        for a in _SMALL_TOKENS:
            for b in _SMALL_TOKENS:
                for c in _SMALL_TOKENS:
                    payload = template % (a + b + c)
                    assert outcome(compiled.delta_content, payload) == outcome(
                        pure.delta_content, payload
                    ), payload


# (this, that): replace one occurrence of ``this`` with ``that``; classic ways JSON goes wrong.
_CORRUPTIONS = [
    (b"]", b",]"), (b"}", b",}"), (b"[", b"[,"), (b"{", b"{,"), (b",", b""), (b",", b",,"),
    (b":", b"::"), (b":", b""), (b":", b":,"), (b"0", b"00"), (b"1", b"01"), (b"-", b"-0"),
    (b"-", b"--"), (b"-", b"+"), (b".", b"."), (b".", b".e"), (b"e", b""), (b"e+", b"e"),
    (b'"', b""), (b'"', b'\\"'), (b'"', b'"\\'), (b'"', b'"\\u12'), (b'"', b'"\\ud83d'),
    (b'"', b'"\\udc00'), (b'"', b'"\\ud83d\\u0041'), (b'"', b'"\\x'), (b'"', b'"\x01'),
    (b'"', b'"\x7f'), (b'"', b'"\xff'), (b'"', b'"\xc3'), (b'"', b'"\xed\xa0\x80'),
    (b'"', b'"\xf4\x90\x80\x80'), (b'"', b'"\xe0\x80\xaf'), (b"true", b"tru"),
    (b"null", b"nul"), (b"null", b"NULL"), (b"{", b"{{"), (b"[", b"[["), (b"}", b"}}"),
    (b"]", b"]]"), (b",", b" \x0c"), (b",", b"\t,\r\n"), (b"}", b"}\x00"),
]  # fmt: skip


@PROPERTY
@given(
    document=_chunk,
    corruptions=st.lists(
        st.tuples(st.sampled_from(_CORRUPTIONS), st.integers(0, 100)), min_size=1, max_size=2
    ),
)
def test_delta_content_agrees_on_damaged_json(
    document: Any, corruptions: list[tuple[tuple[bytes, bytes], int]]
) -> None:
    payload = json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode()
    for (this, that), k in corruptions:
        places = [m.start() for m in re.finditer(re.escape(this), payload)]
        if places:
            at = places[k % len(places)]
            payload = payload[:at] + that + payload[at + len(this) :]
    results = [outcome(module.delta_content, payload) for module in implementations()]
    assert all(result == results[0] for result in results)


@PROPERTY
@given(payload=st.binary(max_size=200))
def test_delta_content_agrees_on_arbitrary_bytes(payload: bytes) -> None:
    results = [outcome(module.delta_content, payload) for module in implementations()]
    assert all(result == results[0] for result in results)


_code_tokens = st.sampled_from(
    ["```", "````", "`", "```python", "```py", "```PY", "```Python", "```bash", "```text",
     "````python", "```python3", "``` py x", "\n", "\n", "\n", "\r\n", "\r", " ", "   ",
     "    ", "\t", "x = 1", "é", "~~~", "python", ":"]
)  # fmt: skip
code_texts = st.lists(_code_tokens, max_size=40).map("".join) | st.text(max_size=60)


@PROPERTY
@given(text=code_texts)
def test_extract_code_agrees(text: str) -> None:
    results = [module.extract_code(text) for module in implementations()]
    assert all(result == results[0] for result in results)
    body = results[0]
    assert body is None or body == "" or body.endswith("\n")
