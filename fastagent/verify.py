"""How an attempt is judged: the files, the command, the environment and the pass rule.

>>> pytest_argv("python3")[:6]
('python3', '-B', '-P', '-s', '-m', 'pytest')
>>> passed(ExecResult(0, ExitCause.EXIT, b"", b"", 0, 0, 0.0, 0.0, probe=Verdict.PASSED))
True

The agent writes ``solution.py`` and ``test_solution.py`` into its workspace and runs
:func:`pytest_argv` there: no cwd on ``sys.path`` (``-P``), no user site, no ini file,
conftest files only from the workspace, and the probe plugin (``fastagent.sandbox.probe``)
loaded from the package. A pass counts only when the plugin reports ``test_humaneval``
passed over its private channel, never from the exit code alone or printed text.
``--verify trivial`` (:func:`trivial_argv`) stands in for pytest at scale against the
simulated endpoint.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from .config import Config, VerifyMode
from .sandbox.channel import PROBE_PLUGIN, Verdict
from .sandbox.tools import ExecResult, ExitCause, scrubbed_env

__all__ = [
    "SOLUTION_FILE",
    "TEST_FILE",
    "WRONG_ANSWER_MARKER",
    "Verification",
    "passed",
    "pytest_argv",
    "trivial_argv",
    "verification_env",
]

SOLUTION_FILE = "solution.py"
TEST_FILE = "test_solution.py"
#: What the simulated endpoint's wrong answers raise (``fastagent.sim`` writes it).
WRONG_ANSWER_MARKER = "simulated wrong answer"
#: Variables that would change what pytest loads, dropped from the test's environment.
_PYTEST_STEERING_ENV = (
    "PYTEST_ADDOPTS",
    "PYTEST_PLUGINS",
    "PYTHONPATH",
    "PYTHONSTARTUP",
    "PYTHONUSERBASE",
)


def pytest_argv(python: str) -> tuple[str, ...]:
    """The verification command run in the workspace."""
    return (
        python, "-B", "-P", "-s", "-m", "pytest", "-q", "-rA", "--tb=short",
        "-c", os.devnull, "--rootdir", ".", "--confcutdir", ".", "-p", "no:cacheprovider",
        "-p", PROBE_PLUGIN, TEST_FILE,
    )  # fmt: skip


def trivial_argv() -> tuple[str, ...]:
    """``--verify trivial``: one cheap process per attempt standing in for pytest at scale.

    It fails exactly the code that carries the simulated endpoint's wrong-answer marker, so
    on that endpoint it reaches pytest's verdicts (every canonical solution passes its test
    and every simulated wrong answer fails it: scripts/build_humaneval_dataset.py
    --validate) for about 1/100 of pytest's CPU. It means nothing against a real model.
    """
    script = (
        f'if grep -q "{WRONG_ANSWER_MARKER}" {SOLUTION_FILE}; '
        'then echo "1 failed (trivial check)"; exit 1; fi; echo "1 passed (trivial check)"'
    )
    return ("/bin/sh", "-c", script)


def verification_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The test process's environment: no credentials, nothing that steers pytest."""
    return {k: v for k, v in scrubbed_env(base).items() if k not in _PYTEST_STEERING_ENV}


def passed(result: ExecResult, probed: bool = True) -> bool:
    """A pass: exit status 0 and (for pytest) the probe's nonce-signed report that
    test_humaneval passed."""
    if result.exit_code != 0 or result.cause is not ExitCause.EXIT:
        return False
    return result.probe is Verdict.PASSED if probed else True


class Verification:
    """The run's verification: the command, whether the probe judges it, the environment."""

    __slots__ = ("argv", "env", "probed")

    def __init__(self, config: Config) -> None:
        self.probed = VerifyMode(config.verify) is VerifyMode.PYTEST
        self.argv = pytest_argv(config.python) if self.probed else trivial_argv()
        self.env = verification_env()

    def passed(self, result: ExecResult) -> bool:
        return passed(result, self.probed)
