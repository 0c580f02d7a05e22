"""The run's settings: one struct whose fields carry every default, bound, flag and variable."""

from __future__ import annotations

import msgspec
import pytest

from fastagent.cli import bench_flags, describe
from fastagent.config import Config, HttpClient, VerifyMode, make_config


def test_make_config_with_nothing_is_the_defaults() -> None:
    config = make_config()
    assert config == Config()
    assert (config.concurrency, config.max_retries, config.http_client, config.verify) == (
        100, 3, HttpClient.WIRE, VerifyMode.PYTEST
    )  # fmt: skip
    assert config.max_procs >= 1


def test_values_are_converted_to_the_field_types() -> None:
    config = make_config(http_client="aiohttp", verify="trivial", concurrency=5)
    assert config.http_client is HttpClient.AIOHTTP and config.verify is VerifyMode.TRIVIAL


@pytest.mark.parametrize(
    ("values", "where"),
    [
        ({"concurrency": 0}, "$.concurrency"),
        ({"max_retries": -1}, "$.max_retries"),
        ({"read_timeout": 0.0}, "$.read_timeout"),
        ({"temperature": 3.0}, "$.temperature"),
        ({"http_client": "curl"}, "$.http_client"),
        ({"model": ""}, "$.model"),
        ({"retries": 3}, "retries"),  # not a field
    ],
)
def test_out_of_bounds_values_name_their_field(values: dict[str, object], where: str) -> None:
    with pytest.raises(msgspec.ValidationError, match=rf"{where.replace('$', '[$]')}"):
        make_config(**values)


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("localhost:8000", "must start with http"),
        ("http://[::1", "not a valid URL"),
        ("http:///v1", "has no host"),
        ("http://h:0/v1", "port 0"),
        ("http://h/v1?x=1", "query"),
    ],
)
def test_base_url_is_checked(url: str, words: str) -> None:
    with pytest.raises(msgspec.ValidationError, match=words):
        make_config(base_url=url)


def test_good_base_urls() -> None:
    for url in ("http://127.0.0.1:8000/v1", "https://api.openai.com/v1", "http://[::1]:80/v1"):
        assert make_config(base_url=url).base_url == url


def test_flags_and_variables_are_unique_and_grouped() -> None:
    flags = bench_flags()
    names = [f.flag for f in flags]
    envs = [f.env for f in flags if f.env]
    assert len(names) == len(set(names)) and len(envs) == len(set(envs))
    assert set(envs) == {"LLM_BASE_URL", "LLM_MODEL", "BENCH_DATASET", "BENCH_CONCURRENCY",
                         "BENCH_PYTHON"}  # fmt: skip
    assert {f.group for f in flags} == {"endpoint", "workload", "output"}
    assert all(f.help for f in flags)


def test_describe_says_bounds_in_words() -> None:
    hints = {f.field: f.type for f in bench_flags()}
    assert describe(hints["concurrency"]) == "an integer >= 1"
    assert describe(hints["max_retries"]) == "an integer >= 0"
    assert describe(hints["read_timeout"]) == "a number > 0 and <= 31536000"
    assert describe(hints["http_client"]) == "one of wire, aiohttp"
    assert describe(hints["model"]) == "a non-empty string"
