"""What the agent says to the model: the first prompt and the feedback after a failed attempt.

>>> from fastagent.dataset import Task
>>> build_prompt(Task("T/0", "def f():\\n", "def test_humaneval(): ...\\n")).splitlines()[0]
'Implement this function in `solution.py`:'

Attempt 1 sends the system prompt, the spec and the pytest module; every later attempt adds
the previous code as the assistant's turn and the (bounded) test output as the user's.
"""

from __future__ import annotations

from .dataset import Task
from .llm import Message
from .sandbox.tools import ExecResult, ExitCause
from .verify import SOLUTION_FILE, TEST_FILE

__all__ = ["SYSTEM_PROMPT", "build_feedback", "build_prompt", "describe_run"]

SYSTEM_PROMPT = (
    "You are a careful Python programmer. Implement the requested function so that the "
    "given pytest module passes. Reply with the complete module (imports, helpers and the "
    "function) in a single ```python code block."
)
#: What the agent answers for a reply that held no code block.
NO_CODE_FEEDBACK = "Your reply had no ```python block."


def build_prompt(task: Task) -> str:
    """The first user message: the spec to implement and the pytest module that judges it."""
    return (
        f"Implement this function in `{SOLUTION_FILE}`:\n\n```python\n{task.spec}```\n\n"
        f"It must pass this pytest module (`{TEST_FILE}`):\n\n```python\n{task.test}```\n"
    )


def build_feedback(code: str | None, outcome: str) -> tuple[Message, Message]:
    """The assistant turn (the previous code) and the user turn (what went wrong)."""
    if code is None:
        return (
            Message("assistant", "(no code block)"),
            Message("user", f"{outcome}\nReply with the complete module in one ```python block."),
        )
    return (
        Message("assistant", f"```python\n{code}```"),
        Message(
            "user",
            f"The tests failed:\n\n```\n{outcome}\n```\n\n"
            "Fix the code and reply with the complete corrected module in one ```python block.",
        ),
    )


def describe_run(result: ExecResult, limit: int) -> str:
    """The test output for the model: stdout then stderr, bounded to ``limit`` characters."""
    text = result.stdout.decode("utf-8", "replace")
    if result.stderr:
        text += "\n" + result.stderr.decode("utf-8", "replace")
    if result.cause is ExitCause.TIMEOUT:
        text += "\n(the test run was killed: it exceeded its time limit)"
    elif result.cause is ExitCause.SIGNAL:
        text += f"\n(the test process was killed by signal {-result.exit_code})"
    text = text.strip()
    if len(text) > limit:
        head = limit * 2 // 3
        text = f"{text[:head]}\n… [{len(text) - limit} characters cut] …\n{text[-(limit - head) :]}"
    return text
