"""Exceptions shared by the compiled and the pure speedups and by the runtime."""


class FastAgentError(Exception):
    """Base class of every error fastagent raises on purpose."""


class SSELineTooLong(FastAgentError, ValueError):
    """An event-stream line (or one event's data) grew past the parser's ``max_line`` cap."""


class MalformedChunk(FastAgentError, ValueError):
    """A chat-completion payload is not valid JSON of the expected shape."""


class ConnectFailed(FastAgentError, OSError):
    """No connection to the endpoint could be made; nothing of the request was sent."""


class ConnectionBroken(FastAgentError, OSError):
    """The connection failed, or the server broke HTTP, after the request went out."""
