"""Command line: ``fastagent bench`` (the measured run), ``fastagent sim`` (the simulated endpoint).

Flags win over environment variables (LLM_BASE_URL, LLM_MODEL, LLM_API_KEY or
OPENAI_API_KEY, BENCH_DATASET, BENCH_CONCURRENCY, BENCH_PYTHON). Bad input exits 2 with
one line saying what is wrong; the bench's heavy imports happen only after the flags are
read, so ``--pure-python`` can select the speedups before they load.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from . import __version__

EXIT_BAD_INPUT = 2


class UsageError(Exception):
    """A flag or environment value is unusable; the message says which and why."""


def _number(kind: type, minimum: float | None, name: str) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{name} must be a {kind.__name__}, got {text!r}"
            ) from None
        if minimum is not None and value < minimum:
            raise argparse.ArgumentTypeError(f"{name} must be >= {minimum:g}, got {text!r}")
        return value

    parse.__name__ = name
    return parse


positive_int = _number(int, 1, "a positive integer")
non_negative_int = _number(int, 0, "a non-negative integer")
positive_float = _number(float, 1e-9, "a positive number")
non_negative_float = _number(float, 0, "a non-negative number")


def _env(name: str, parse: Callable[[str], Any] | None = None) -> Any:
    value = os.environ.get(name)
    if value in (None, ""):
        return None
    if parse is None:
        return value
    try:
        return parse(value)
    except argparse.ArgumentTypeError as exc:
        raise UsageError(f"environment variable {name}: {exc}") from None


def build_parser(selected: str | None = None) -> argparse.ArgumentParser:
    """The parser; only the ``selected`` lazily loaded command gets its full arguments."""
    parser = argparse.ArgumentParser(
        prog="fastagent",
        description="The Python stack of a controlled benchmark of coding-agent runtimes.",
    )
    parser.add_argument("--version", action="version", version=f"fastagent {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    bench = sub.add_parser(
        "bench",
        help="run the HumanEval write → pytest → retry loop and measure the runtime",
        description="Run the benchmark. Without LLM_BASE_URL it starts the built-in "
        "simulated endpoint in its own process.",
    )
    g = bench.add_argument_group("endpoint")
    g.add_argument(
        "--base-url",
        help="OpenAI-compatible base URL, e.g. http://host:8000/v1 "
        "[env LLM_BASE_URL; default: the built-in simulated endpoint]",
    )
    g.add_argument("--model", help="model name [env LLM_MODEL; default: the first of /models]")
    g.add_argument(
        "--no-stream", dest="stream", action="store_false", help="ask for non-streamed completions"
    )
    g.add_argument("--max-tokens", type=positive_int, help="max_tokens sent with each request")
    g.add_argument(
        "--temperature",
        type=non_negative_float,
        default=0.0,
        help="sampling temperature sent with each request (default 0)",
    )
    g.add_argument("--seed", type=int, help="seed sent with each request")
    g.add_argument(
        "--sim-profile",
        default="",
        metavar="K=V,...",
        help="profile of the built-in endpoint, e.g. ttft_ms=200,itl_ms=5,seed=1 "
        "(see 'fastagent sim --help')",
    )
    g.add_argument("--connect-timeout", type=positive_float, default=10.0, metavar="S")
    g.add_argument(
        "--read-timeout",
        type=positive_float,
        default=60.0,
        metavar="S",
        help="longest silence between bytes of a response (default 60)",
    )
    g.add_argument(
        "--call-timeout",
        type=positive_float,
        default=300.0,
        metavar="S",
        help="deadline of one LLM request (default 300)",
    )
    g.add_argument(
        "--llm-retries",
        type=non_negative_int,
        default=6,
        metavar="N",
        help="retries of one LLM call on connection errors, 408/409/429/5xx (default 6)",
    )

    g.add_argument(
        "--http-client",
        choices=("wire", "aiohttp"),
        default="wire",
        help="HTTP client of the LLM calls: 'wire', fastagent's lean HTTP/1.1 client on uvloop "
        "protocols (default; a fraction of aiohttp's memory per connection, and aiohttp is "
        "never imported), or 'aiohttp'",
    )
    g.add_argument(
        "--socket-rcvbuf",
        type=non_negative_int,
        default=16 * 1024,
        metavar="BYTES",
        help="receive buffer of each connection; bounds what a stream the runtime cannot "
        "keep up with buffers in its heap (default 16384; 0 = the kernel's autotuning)",
    )

    g = bench.add_argument_group("workload")
    g.add_argument(
        "--dataset", help="tasks JSON [env BENCH_DATASET; default: the bundled HumanEval 100]"
    )
    g.add_argument("--tasks", type=positive_int, metavar="N", help="run only the first N tasks")
    g.add_argument(
        "--repeat",
        type=positive_int,
        default=1,
        metavar="K",
        help="run the tasks K times over (ids ID#k), e.g. 1,000 agents from 100 tasks",
    )
    g.add_argument(
        "--concurrency",
        type=positive_int,
        metavar="N",
        help="concurrent agents [env BENCH_CONCURRENCY; default 100]",
    )
    g.add_argument(
        "--max-procs",
        type=positive_int,
        metavar="N",
        help="concurrent test processes (default: one per core)",
    )
    g.add_argument(
        "--max-retries",
        type=non_negative_int,
        default=3,
        metavar="N",
        help="retries after a failed test run (default 3, so 4 attempts)",
    )
    g.add_argument(
        "--test-timeout",
        type=positive_float,
        default=30.0,
        metavar="S",
        help="time limit of one pytest run (default 30)",
    )
    g.add_argument(
        "--task-timeout",
        type=positive_float,
        default=1800.0,
        metavar="S",
        help="deadline of one whole task (default 1800)",
    )
    g.add_argument(
        "--python", help="interpreter that runs pytest [env BENCH_PYTHON; default python3 on PATH]"
    )
    g.add_argument(
        "--verify",
        choices=("pytest", "trivial"),
        default="pytest",
        help="how an attempt is judged: pytest (default), or trivial, a cheap stand-in process "
        "for scale runs against the simulated endpoint (fails exactly its wrong answers)",
    )
    g.add_argument(
        "--no-sandbox",
        dest="sandbox",
        action="store_false",
        help="run tests in a plain process group (no namespaces, rlimits or pids cgroup)",
    )
    g.add_argument(
        "--network", action="store_true", help="let the test process use the network (default off)"
    )

    g = bench.add_argument_group("output")
    g.add_argument("--results-dir", default="results/raw", help="where the CSV and summary go")
    g.add_argument("--work-dir", help="where agent workspaces go (default results/runs/<run>)")
    g.add_argument("--keep-workspaces", action="store_true", help="keep each agent's workspace")
    g.add_argument(
        "--resume",
        metavar="RESULTS_CSV",
        help="finish an interrupted run: skip the tasks with a row in RESULTS_CSV, append the "
        "rest and write one complete summary (pass the same workload flags)",
    )
    g.add_argument("--trace", metavar="FILE", help="write one JSON line per event to FILE")
    g.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="live progress line (default: on when stderr is a terminal)",
    )
    g.add_argument(
        "--sample-interval",
        type=positive_float,
        default=0.05,
        metavar="S",
        help="RSS sampler period (default 0.05)",
    )

    g = bench.add_argument_group("mode")
    g.add_argument(
        "--pure-python",
        action="store_true",
        help="use the pure-Python speedups (sets FASTAGENT_NO_EXTENSIONS=1)",
    )
    g.add_argument("--check", action="store_true", help="check the environment and exit")
    bench.set_defaults(handler=_bench)

    for name, (summary, description) in _COMMANDS.items():
        command = sub.add_parser(name, help=summary, description=description)
        if name == selected:
            module = importlib.import_module(f"{__package__}.{name}")
            module.add_arguments(command)
            command.set_defaults(handler=module.main)
    return parser


#: Commands whose module (and its imports) load only when that command runs, so the
#: measured `fastagent bench` process never imports the simulator, report or sweep code.
_COMMANDS = {
    "sim": (
        "serve the simulated OpenAI-compatible endpoint",
        "The simulated endpoint: answers from the canonical solutions with a seeded, realistic "
        "profile of right, recovered and wrong answers, and injects faults on request.",
    ),
    "report": (
        "compare summary JSON files side by side (and draw charts with --plot)",
        "Side-by-side table of any number of summaries: this stack's runs and other stacks'.",
    ),
    "sweep": (
        "run the bench at several concurrency levels against one simulated endpoint",
        "One fresh `fastagent bench` process per level; writes a table and a chart of peak RSS, "
        "runtime CPU per task, per-call overhead p99 and loop lag p99 against the agents.",
    ),
}


def _selected_command(argv: Sequence[str]) -> str | None:
    return next((arg for arg in argv if not arg.startswith("-")), None)


def config_from_args(args: argparse.Namespace) -> Any:
    """Merge flags over environment into a Config (flags win)."""
    from .config import API_KEY_ENV, Config

    concurrency = args.concurrency or _env("BENCH_CONCURRENCY", positive_int) or 100
    fields: dict[str, Any] = {
        "base_url": args.base_url or _env("LLM_BASE_URL"),
        "model": args.model or _env("LLM_MODEL"),
        "api_key": next((os.environ[k] for k in API_KEY_ENV if os.environ.get(k)), None),
        "dataset": args.dataset or _env("BENCH_DATASET"),
        "tasks": args.tasks,
        "repeat": args.repeat,
        "verify": args.verify,
        "resume": args.resume,
        "concurrency": concurrency,
        "max_retries": args.max_retries,
        "test_timeout": args.test_timeout,
        "task_timeout": args.task_timeout,
        "python": args.python or _env("BENCH_PYTHON") or "python3",
        "stream": args.stream,
        "max_tokens": args.max_tokens,
        "temperature": args.temperature,
        "seed": args.seed,
        "connect_timeout": args.connect_timeout,
        "read_timeout": args.read_timeout,
        "call_timeout": args.call_timeout,
        "llm_retries": args.llm_retries,
        "socket_rcvbuf": args.socket_rcvbuf,
        "http_client": args.http_client,
        "results_dir": args.results_dir,
        "work_dir": args.work_dir,
        "keep_workspaces": args.keep_workspaces,
        "trace": args.trace,
        "progress": sys.stderr.isatty() if args.progress is None else args.progress,
        "sample_interval": args.sample_interval,
        "sim_profile": args.sim_profile,
        "sandbox": args.sandbox,
        "network": args.network,
    }
    if args.max_procs:
        fields["max_procs"] = args.max_procs
    base_url = fields["base_url"]
    if base_url and not base_url.startswith(("http://", "https://")):
        raise UsageError(f"LLM base URL {base_url!r} must start with http:// or https://")
    if args.sim_profile:
        from .sim import parse_profile

        try:
            parse_profile(args.sim_profile)
        except ValueError as exc:
            raise UsageError(f"--sim-profile: {exc}") from None
    return Config(**fields)


def _bench(args: argparse.Namespace) -> int:
    if args.pure_python:
        os.environ["FASTAGENT_NO_EXTENSIONS"] = "1"
    config = config_from_args(args)
    if args.check:
        from ._check import run_checks

        return run_checks(config)
    from .runner import run_bench

    outcome = run_bench(config)
    print(format_summary(outcome.summary))
    print(f"results: {outcome.paths.csv}\n         {outcome.paths.summary}")
    return outcome.exit_code


def format_summary(s: dict[str, Any]) -> str:
    """The few lines a person reads at the end of a run."""
    where = "simulated" if s.get("simulated") else s.get("base_url")
    lines = [
        f"fastagent bench: python / {s['implementation']} / {s['event_loop']} — "
        f"model {s['model']} ({where}), concurrency {s['concurrency']}",
        f"  tasks {s['tasks']}   passed {s['passed']} (pass@1 {s['pass_at_1'] * 100:.1f}%)   "
        f"first-attempt {s['first_attempt_passes']}   recovered {s['recovered']}   "
        f"failed {s['failed']}   errors {s['errors']}   avg retries {s['avg_retries']:.2f}",
        f"  wall {s['wall_seconds']:.1f} s   peak RSS {s['peak_rss_mib']:.1f} MiB   "
        f"runtime CPU {s['runtime_cpu_seconds']:.2f} s "
        f"({s['runtime_cpu_ms_per_task'] or 0:.1f} ms/task)   "
        f"children CPU {s['children_cpu_seconds']:.1f} s",
    ]
    lat = s["latency"]
    if lat["ttft_ms"]["count"]:
        lines.append(
            f"  LLM calls {s['llm_calls']}   TTFT p50 {lat['ttft_ms']['p50']:.1f} ms   "
            f"E2E p50 {lat['llm_e2e_ms']['p50']:.1f} ms   "
            f"overhead p50 {_ms(lat['llm_overhead_ms']['p50'])}   loop lag p99 "
            f"{_ms(s['loop_lag_ms']['p99'])}"
        )
    if s.get("interrupted"):
        lines.append("  INTERRUPTED: the summary covers the tasks that finished")
    return "\n".join(lines)


def _ms(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f} ms"


def main(argv: Sequence[str] | None = None) -> int:
    from .errors import FastAgentError

    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(_selected_command(argv))
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args))
    except (UsageError, FastAgentError) as exc:
        print(f"fastagent: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("fastagent: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
