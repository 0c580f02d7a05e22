"""Every exception fastagent raises on purpose, and the process exit codes.

The tree::

    FastAgentError                      base of all of them; the CLI prints one line, exits 2
    ├── UsageError                      a flag or environment value is unusable
    ├── DatasetError                    the tasks file or its checksum is missing or wrong
    ├── RunError                        a run cannot start (no pytest, results dir, endpoint)
    ├── SandboxError                    a requested sandbox mode cannot be set up here
    ├── ToolError                       a tool call was refused or its process could not start
    ├── LLMError                        a completion could not be had (``cause`` says why)
    ├── SimError                        the simulated endpoint did not start
    ├── SimDataError (ValueError)       the simulator's dataset or solutions are unusable
    ├── ReportError                     a summary given to ``report``/``sweep`` is unusable
    ├── SweepError                      a sweep cannot start
    ├── CompareError                    a comparison cannot start (``fastagent compare``)
    ├── SSELineTooLong (ValueError)     an event-stream line or event grew past its cap
    ├── MalformedChunk (ValueError)     a chat-completion payload is not the expected JSON
    ├── TransportError (OSError)        the HTTP exchange with the endpoint failed
    │   ├── ConnectFailed               no connection; nothing of the request was sent
    │   └── ConnectionBroken            the connection failed after the request went out
    │       ├── StaleConnection         a kept-alive connection was closed before any answer:
    │       │                           sending again is safe
    │       └── ProtocolError           the server broke HTTP/1.1; the message names how
    └── FirstByteTimeout (TimeoutError) no byte of a response within the first-byte timeout:
                                        the server has not begun it (a queue, or a hang)

A response that has begun and then sends no byte for the read timeout raises the built-in
``TimeoutError``.

Import nothing but the standard library here: every part of the package, the compiled
speedups included, imports this module.
"""

from __future__ import annotations

import enum

__all__ = [
    "CompareError",
    "ConnectFailed",
    "ConnectionBroken",
    "DatasetError",
    "ExitCode",
    "FastAgentError",
    "FirstByteTimeout",
    "LLMError",
    "MalformedChunk",
    "ProtocolError",
    "ReportError",
    "RunError",
    "SSELineTooLong",
    "SandboxError",
    "SimDataError",
    "SimError",
    "StaleConnection",
    "SweepError",
    "ToolError",
    "TransportError",
    "UsageError",
]


class ExitCode(enum.IntEnum):
    """What a ``fastagent`` command's exit status means."""

    OK = 0
    #: every task of the run ended in error, or a sweep level wrote no summary
    FAILED = 1
    #: bad input: a flag, an environment value, a file; one line on stderr says which
    BAD_INPUT = 2
    #: interrupted by SIGINT (128 + 2); SIGTERM gives 128 + 15
    INTERRUPTED = 130


class FastAgentError(Exception):
    """Base class of every error fastagent raises on purpose."""


class UsageError(FastAgentError):
    """A flag or environment value is unusable; the message says which and why."""


class DatasetError(FastAgentError):
    """The dataset or its checksum file is missing, malformed or does not match."""


class RunError(FastAgentError):
    """The run could not start (bad input, unreachable endpoint); nothing was measured."""


class SandboxError(FastAgentError):
    """The requested sandbox mode cannot be set up on this machine."""


class ToolError(FastAgentError):
    """A tool call was refused (path outside the workspace) or could not run."""


class LLMError(FastAgentError):
    """A completion could not be had. ``cause`` is a short machine-readable label
    (``connect``, ``read_timeout``, ``http_503``, ``stream_truncated``, …).

    ``retryable`` says whether sending the request again may help, ``retry_after`` is the
    server's Retry-After in seconds, and ``retries`` how many times the call was retried
    before it gave up (so it sent ``retries + 1`` requests).
    """

    def __init__(
        self, message: str, cause: str, retryable: bool = False, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.cause = cause
        self.retryable = retryable
        self.retry_after = retry_after
        self.retries = 0


class SimError(FastAgentError):
    """The simulated endpoint did not start; the message carries its own error line."""


class SimDataError(FastAgentError, ValueError):
    """The simulator's dataset or solutions file is missing, malformed or inconsistent."""


class ReportError(FastAgentError):
    """An input file is missing, is not JSON, or is not a benchmark summary."""


class SweepError(FastAgentError):
    """The sweep cannot start (bad option, dataset, output directory or endpoint)."""


class CompareError(FastAgentError):
    """The comparison cannot start (bad stack, option, dataset or output directory)."""


class SSELineTooLong(FastAgentError, ValueError):
    """An event-stream line (or one event's data) grew past the parser's ``max_line`` cap."""


class MalformedChunk(FastAgentError, ValueError):
    """A chat-completion payload is not valid JSON of the expected shape."""


class TransportError(FastAgentError, OSError):
    """The HTTP exchange with the endpoint failed."""


class ConnectFailed(TransportError):
    """No connection to the endpoint could be made; nothing of the request was sent."""


class ConnectionBroken(TransportError):
    """The connection failed, or the server broke HTTP, after the request went out."""


class StaleConnection(ConnectionBroken):
    """A kept-alive connection was closed by the server before it answered: send again."""


class ProtocolError(ConnectionBroken):
    """The server's bytes are not HTTP/1.1 a client may accept; the message names what."""


class FirstByteTimeout(FastAgentError, TimeoutError):
    """No byte of the response came within the first-byte timeout: the server has not begun
    answering (a server with busy slots queues a request without sending anything)."""
