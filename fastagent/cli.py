"""Command line: ``fastagent bench`` (the measured run) and the commands around it.

``bench``'s flags are built from :class:`fastagent.config.Config`'s fields, each read from
its flag, else its environment variable (LLM_BASE_URL, LLM_MODEL, BENCH_DATASET,
BENCH_CONCURRENCY, BENCH_PYTHON), else the field's default, and every value goes through
one converter made from the field's own type and bounds. Bad input exits 2 with one line
saying what is wrong, never a traceback. ``sim``, ``report``, ``sweep`` load their module
(and its imports) only when they run, so the measured process never imports them; the
bench's own heavy imports happen after the flags are read, so ``--pure-python`` selects the
speedups before they load.
"""

from __future__ import annotations

import argparse
import enum
import importlib
import os
import sys
import types
import typing
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

import msgspec

from . import __version__
from .config import API_KEY_ENV, Config, make_config
from .errors import ExitCode, FastAgentError, UsageError

__all__ = ["build_parser", "config_from_args", "main", "value_parser"]


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line on stderr and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(ExitCode.BAD_INPUT, f"{self.prog}: error: {message} (see --help)\n")


# ---- values: one converter per type, built from the type itself ---------------------------


def _unwrap(tp: Any) -> tuple[Any, list[msgspec.Meta], bool]:
    """(base type, its Meta objects, whether None is allowed) of an annotation."""
    metas: list[msgspec.Meta] = []
    optional = False
    while True:
        if typing.get_origin(tp) is typing.Annotated:
            metas.extend(m for m in tp.__metadata__ if isinstance(m, msgspec.Meta))
            tp = tp.__origin__
        elif typing.get_origin(tp) in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            optional = True
            if len(args) != 1:
                return tp, metas, optional
            tp = args[0]
        else:
            return tp, metas, optional


def describe(tp: Any) -> str:
    """What a value of ``tp`` must be, in words: ``an integer >= 1``, ``one of wire, aiohttp``."""
    base, metas, _ = _unwrap(tp)
    if isinstance(base, type) and issubclass(base, enum.Enum):
        return "one of " + ", ".join(str(m.value) for m in base)
    words = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}
    text = words.get(base, getattr(base, "__name__", str(base)))
    if base is str and any(m.min_length for m in metas):
        text = "a non-empty string"
    bounds = []
    for meta in metas:
        for attr, sign in (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<=")):
            limit = getattr(meta, attr)
            if limit is not None:
                shown = int(limit) if float(limit).is_integer() else limit
                bounds.append(f"{sign} {shown}")
    return f"{text} {' and '.join(bounds)}" if bounds else text


def value_parser(tp: Any) -> Callable[[str], Any]:
    """An argparse ``type`` converting text to ``tp`` and checking its bounds."""
    expected = describe(tp)

    def parse(text: str) -> Any:
        try:
            return msgspec.convert(text, tp, strict=False)
        except msgspec.ValidationError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None

    parse.__name__ = expected  # what argparse names in its own messages
    return parse


# ---- bench's flags, from Config -------------------------------------------------------------


class _Flag(msgspec.Struct, frozen=True):
    field: str
    flag: str
    env: str | None
    group: str
    help: str
    metavar: str | None
    type: Any
    default: Any


def bench_flags() -> list[_Flag]:
    """One entry per Config field that is a flag (its metadata has a description)."""
    hints = typing.get_type_hints(Config, include_extras=True)
    flags = []
    for field in msgspec.structs.fields(Config):
        _, metas, _ = _unwrap(hints[field.name])
        doc = next((m for m in metas if m.description), None)
        if doc is None:
            continue
        extra = doc.extra or {}
        default = field.default if field.default is not msgspec.NODEFAULT else None
        flags.append(
            _Flag(
                field=field.name,
                flag=extra.get("flag") or "--" + field.name.replace("_", "-"),
                env=extra.get("env"),
                group=extra["group"],
                help=doc.description or "",
                metavar=extra.get("metavar"),
                type=hints[field.name],
                default=default,
            )
        )
    return flags


def _add_flag(group: argparse._ArgumentGroup, flag: _Flag) -> None:
    base, _, optional = _unwrap(flag.type)
    help_text = flag.help
    if flag.env:
        help_text += f" [env {flag.env}]"
    if base is bool and optional:
        group.add_argument(
            flag.flag, dest=flag.field, action=argparse.BooleanOptionalAction, help=help_text
        )
        return
    if base is bool:
        action = "store_false" if flag.flag.startswith("--no-") else "store_true"
        group.add_argument(flag.flag, dest=flag.field, action=action, default=None, help=help_text)
        return
    if flag.default not in (None, "") and "(default" not in help_text:
        help_text += f" (default {flag.default})"
    choices = list(base) if isinstance(base, type) and issubclass(base, enum.Enum) else None
    group.add_argument(
        flag.flag,
        dest=flag.field,
        type=value_parser(flag.type),
        choices=choices,
        metavar=flag.metavar,
        default=None,
        help=help_text,
    )


def _add_bench(sub: Any) -> None:
    bench = sub.add_parser(
        "bench",
        help="run the HumanEval write → pytest → retry loop and measure the runtime",
        description="Run the benchmark. Without LLM_BASE_URL it starts the built-in "
        "simulated endpoint in its own process.",
    )
    groups: dict[str, argparse._ArgumentGroup] = {}
    for flag in bench_flags():
        if flag.group not in groups:
            groups[flag.group] = bench.add_argument_group(flag.group)
        _add_flag(groups[flag.group], flag)
    mode = bench.add_argument_group("mode")
    mode.add_argument(
        "--pure-python",
        action="store_true",
        help="use the pure-Python speedups (sets FASTAGENT_NO_EXTENSIONS=1)",
    )
    mode.add_argument("--check", action="store_true", help="check the environment and exit")
    bench.set_defaults(handler=_bench)


#: Commands whose module (and its imports) load only when that command runs, so the
#: measured `fastagent bench` process never imports the simulator, report or sweep code.
#: name -> (module with add_arguments(parser) and main(args), summary, description)
_COMMANDS = {
    "sim": (
        "fastagent.sim.server",
        "serve the simulated OpenAI-compatible endpoint",
        "The simulated endpoint: answers from the canonical solutions with a seeded, realistic "
        "profile of right, recovered and wrong answers, and injects faults on request.",
    ),
    "report": (
        "fastagent.analysis.report",
        "compare summary JSON files side by side (and draw charts with --plot)",
        "Side-by-side table of any number of summaries: this stack's runs and other stacks'.",
    ),
    "sweep": (
        "fastagent.analysis.sweep",
        "run the bench at several concurrency levels against one simulated endpoint",
        "One fresh `fastagent bench` process per level; writes a table and a chart of peak RSS, "
        "runtime CPU per task, per-call overhead p99 and loop lag p99 against the agents.",
    ),
    "compare": (
        "fastagent.analysis.compare",
        "run stacks' runners under identical conditions and measure each from outside",
        "The referee: one simulated endpoint for every stack, runs interleaved on an idle "
        "machine, each stack's runtime process found and measured from /proc the same way.",
    ),
}


def build_parser(selected: str | None = None) -> Parser:
    """The parser; only the ``selected`` lazily loaded command gets its full arguments."""
    parser = Parser(
        prog="fastagent",
        description="The Python stack of a controlled benchmark of coding-agent runtimes.",
    )
    parser.add_argument("--version", action="version", version=f"fastagent {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    _add_bench(sub)
    for name, (module_name, summary, description) in _COMMANDS.items():
        command = sub.add_parser(name, help=summary, description=description)
        if name == selected:
            module = importlib.import_module(module_name)
            module.add_arguments(command)
            command.set_defaults(handler=module.main)
    return parser


def _selected_command(argv: Sequence[str]) -> str | None:
    return next((arg for arg in argv if not arg.startswith("-")), None)


def config_from_args(args: argparse.Namespace) -> Config:
    """Each bench flag's value, else its environment variable's, else the default."""
    values: dict[str, Any] = {}
    for flag in bench_flags():
        value = getattr(args, flag.field, None)
        if value is None and flag.env:
            text = os.environ.get(flag.env)
            if text:
                try:
                    value = value_parser(flag.type)(text)
                except argparse.ArgumentTypeError as exc:
                    raise UsageError(f"environment variable {flag.env}: {exc}") from None
        if value is not None:
            values[flag.field] = value
    api_key = next((os.environ[k] for k in API_KEY_ENV if os.environ.get(k)), None)
    if api_key:
        values["api_key"] = api_key
    try:
        return make_config(**values)
    except msgspec.ValidationError as exc:
        raise UsageError(str(exc)) from None


def _bench(args: argparse.Namespace) -> int:
    if args.pure_python:
        os.environ["FASTAGENT_NO_EXTENSIONS"] = "1"
    config = config_from_args(args)
    if args.check:
        from .check import run_checks

        return run_checks(config)
    if config.shards is not None:
        # the coordinator: it imports Ray; each shard it starts is an ordinary bench process
        from .shards import run_sharded

        return run_sharded(config)
    from .results import format_summary
    from .runner import run_bench

    outcome = run_bench(config)
    print(format_summary(outcome.summary))
    print(f"results: {outcome.paths.csv}\n         {outcome.paths.summary}")
    return outcome.exit_code


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(_selected_command(argv))
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args))
    except FastAgentError as exc:
        print(f"fastagent {args.command}: error: {exc}", file=sys.stderr)
        return ExitCode.BAD_INPUT
    except KeyboardInterrupt:
        print("fastagent: interrupted", file=sys.stderr)
        return ExitCode.INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
