"""The agent's tools, confined to one workspace: write_file, read_file, list_dir, search, exec.

>>> import asyncio, tempfile
>>> tools = ToolDispatcher(tempfile.mkdtemp())
>>> tools.write_file("hello.py", "print('hi')\\n")
>>> asyncio.run(tools.exec(["python3", "hello.py"], timeout=10)).stdout
b'hi\\n'

``exec`` runs the child in its own session (so its whole process group can be killed),
with stdin closed, separate stdout/stderr read in bounded chunks and kept up to a cap
(the overflow is counted, not stored), an environment without API keys, and a timeout
that SIGKILLs the group. After the child exits the group is killed too, so a grandchild
that kept the pipes open cannot hold the agent.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import msgspec

from .errors import FastAgentError

_SECRET_ENV = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD|CREDENTIAL|AUTH)", re.IGNORECASE)
_READ_CHUNK = 64 * 1024
_DRAIN_GRACE = 1.0


class ToolError(FastAgentError):
    """A tool call was refused (path outside the workspace) or could not run."""


class ExecResult(msgspec.Struct, frozen=True, gc=False):
    """Outcome of one child process.

    ``exit_code`` is the process's return code (negative: killed by that signal);
    ``cause`` is "exit", "timeout" or "signal"; ``spawn_s`` is request → process running;
    ``wall_s`` is process running → reaped and pipes drained.
    """

    exit_code: int
    cause: str
    stdout: bytes
    stderr: bytes
    stdout_dropped: int
    stderr_dropped: int
    spawn_s: float
    wall_s: float

    @property
    def timed_out(self) -> bool:
        return self.cause == "timeout"


def scrubbed_env(base: Mapping[str, str] | None = None, **extra: str) -> dict[str, str]:
    """A copy of the environment without anything that looks like a credential."""
    env = {
        k: v for k, v in (os.environ if base is None else base).items() if not _SECRET_ENV.search(k)
    }
    env.update(extra)
    return env


class ToolDispatcher:
    """Tools bound to one workspace directory; every path argument is relative to it."""

    def __init__(
        self,
        workspace: str | os.PathLike[str],
        *,
        env: Mapping[str, str] | None = None,
        output_cap: int = 64 * 1024,
        timeout: float = 30.0,
    ) -> None:
        self.workspace = Path(workspace).resolve()
        self.workspace.mkdir(parents=True, exist_ok=True)
        self.env = dict(env) if env is not None else scrubbed_env()
        self.output_cap = output_cap
        self.timeout = timeout

    def resolve(self, path: str | os.PathLike[str]) -> Path:
        """The absolute path of ``path`` inside the workspace; ToolError if it would leave it."""
        rel = Path(path)
        if rel.is_absolute() or ".." in rel.parts or str(path) == "":
            raise ToolError(f"path {str(path)!r} must be relative and stay inside the workspace")
        full = self.workspace / rel
        resolved = full.resolve()
        if resolved != self.workspace and self.workspace not in resolved.parents:
            raise ToolError(f"path {str(path)!r} resolves outside the workspace")
        return full

    def write_file(self, path: str, content: str | bytes) -> None:
        """Write atomically: a temp file beside the target, then os.replace."""
        target = self.resolve(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        data = content.encode() if isinstance(content, str) else content
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
        os.replace(tmp, target)

    def read_file(self, path: str, max_bytes: int = 1 << 20) -> str:
        """The file's text (UTF-8, undecodable bytes replaced), at most ``max_bytes``."""
        with open(self.resolve(path), "rb") as f:
            return f.read(max_bytes).decode("utf-8", "replace")

    def list_dir(self, path: str = ".") -> list[str]:
        """Sorted entry names; directories end with "/"."""
        base = self.workspace if path in (".", "") else self.resolve(path)
        return sorted(e.name + "/" if e.is_dir() else e.name for e in os.scandir(base))

    def search(
        self, pattern: str, path: str = ".", max_results: int = 100
    ) -> list[tuple[str, int, str]]:
        """(relative path, line number, line) for lines matching the regex ``pattern``."""
        regex = re.compile(pattern)
        base = self.workspace if path in (".", "") else self.resolve(path)
        hits: list[tuple[str, int, str]] = []
        for root, dirs, files in os.walk(base):
            dirs.sort()
            for name in sorted(files):
                file = Path(root, name)
                try:
                    text = file.read_text("utf-8", "replace")
                except OSError:
                    continue
                for number, line in enumerate(text.splitlines(), 1):
                    if regex.search(line):
                        hits.append((str(file.relative_to(self.workspace)), number, line))
                        if len(hits) >= max_results:
                            return hits
        return hits

    def reset(self) -> None:
        """Empty the workspace so the next attempt sees only what the loop puts there."""
        for entry in os.scandir(self.workspace):
            if entry.is_dir(follow_symlinks=False):
                _rmtree(Path(entry.path))
            else:
                os.unlink(entry.path)

    async def bash(self, command: str, timeout: float | None = None) -> ExecResult:
        """Run ``command`` with bash -c in the workspace."""
        return await self.exec(["bash", "-c", command], timeout=timeout)

    async def exec(self, argv: Sequence[str], timeout: float | None = None) -> ExecResult:
        """Run ``argv`` in the workspace; see the module docstring for the guarantees."""
        timeout = self.timeout if timeout is None else timeout
        cap = self.output_cap
        t_request = time.monotonic()
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                cwd=self.workspace,
                env=self.env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,
            )
        except OSError as exc:
            raise ToolError(f"cannot start {argv[0]!r}: {exc.strerror or exc}") from exc
        t_running = time.monotonic()
        assert proc.stdout is not None and proc.stderr is not None
        out = asyncio.ensure_future(_read_capped(proc.stdout, cap))
        err = asyncio.ensure_future(_read_capped(proc.stderr, cap))
        cause = "exit"
        try:
            await asyncio.wait_for(proc.wait(), timeout)
        except TimeoutError:
            cause = "timeout"
        finally:
            _kill_group(proc.pid)
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        done, pending = await asyncio.wait((out, err), timeout=_DRAIN_GRACE)
        for task in pending:
            task.cancel()
        stdout, stdout_dropped = out.result() if out in done else (b"", 0)
        stderr, stderr_dropped = err.result() if err in done else (b"", 0)
        code = proc.returncode if proc.returncode is not None else -signal.SIGKILL
        if cause == "exit" and code < 0:
            cause = "signal"
        return ExecResult(
            exit_code=code,
            cause=cause,
            stdout=stdout,
            stderr=stderr,
            stdout_dropped=stdout_dropped,
            stderr_dropped=stderr_dropped,
            spawn_s=t_running - t_request,
            wall_s=time.monotonic() - t_running,
        )


async def _read_capped(stream: asyncio.StreamReader, cap: int) -> tuple[bytes, int]:
    kept = bytearray()
    dropped = 0
    while True:
        chunk = await stream.read(_READ_CHUNK)
        if not chunk:
            return bytes(kept), dropped
        room = cap - len(kept)
        if room > 0:
            kept += chunk[:room]
        dropped += max(0, len(chunk) - max(room, 0))


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _rmtree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)
