"""The agent's tools, confined to one workspace: write_file, read_file, list_dir, search, exec.

>>> import asyncio, tempfile
>>> tools = ToolDispatcher(tempfile.mkdtemp())
>>> tools.write_file("hello.py", "print('hi')\\n")
>>> asyncio.run(tools.exec(["python3", "hello.py"], timeout=10)).stdout
b'hi\\n'

``exec`` runs the child in its own session (so its whole process group can be killed),
with stdin closed, separate stdout/stderr read in bounded chunks and kept up to a cap
(the overflow is counted, not stored), an environment without API keys (HOME and TMPDIR
in the workspace), and a timeout that SIGKILLs the group. After the child exits the group
is killed too, so a grandchild that kept the pipes open cannot hold the agent.

With a :class:`~fastagent.sandbox.policy.Sandbox` the child is also confined (PID and
network namespaces, read-only filesystem outside the workspace, rlimits, a pids cgroup that
is swept after every run: see :mod:`.policy`), and ``exec(..., probe=True)`` hands the
pytest plugin :mod:`.probe` a private channel for the test's verdict (``ExecResult.probe``).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import os
import re
import signal
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import msgspec

from ..errors import ToolError
from .channel import ProbeChannel, Verdict
from .policy import Launch, Sandbox
from .spawn import Child, spawn

__all__ = ["ExecResult", "ExitCause", "ToolDispatcher", "scrubbed_env"]

_SECRET_ENV = re.compile(r"(KEY|TOKEN|SECRET|PASS|CREDENTIAL|AUTH|PRIVATE|COOKIE)", re.IGNORECASE)
_SECRET_VALUE = re.compile(r"://[^/@\s:]+:[^/@\s]+@")
_DRAIN_GRACE = 1.0


class ExitCause(enum.StrEnum):
    """How a child process ended."""

    #: it exited by itself (``exit_code`` is its status, negative: killed by that signal)
    EXIT = "exit"
    #: the wall-clock limit passed and its process group was killed
    TIMEOUT = "timeout"
    #: a signal killed it
    SIGNAL = "signal"


class ExecResult(msgspec.Struct, frozen=True, gc=False):
    """Outcome of one child process.

    ``exit_code`` is the process's return code (negative: killed by that signal);
    ``cause`` how it ended; ``spawn_s`` is request → process running;
    ``wall_s`` is process running → reaped and pipes drained. ``sandbox`` is how the child
    was confined ("off", "bwrap+cgroup", …); ``probe`` is the pytest probe's verdict
    (None unless asked for, see ``ProbeChannel.verdict``) and ``test_cpu_s`` the test process's
    own user+sys seconds as the probe reported them (None without a probe report).
    """

    exit_code: int
    cause: ExitCause
    stdout: bytes
    stderr: bytes
    stdout_dropped: int
    stderr_dropped: int
    spawn_s: float
    wall_s: float
    sandbox: str = "off"
    probe: Verdict | None = None
    test_cpu_s: float | None = None

    @property
    def timed_out(self) -> bool:
        return self.cause is ExitCause.TIMEOUT

    @property
    def exit_label(self) -> str:
        """``exit_<code>``, ``timeout`` or ``signal``: the CSV's ``test_exit``."""
        return f"exit_{self.exit_code}" if self.cause is ExitCause.EXIT else self.cause.value


def scrubbed_env(base: Mapping[str, str] | None = None, **extra: str) -> dict[str, str]:
    """A copy of the environment without anything that looks like a credential.

    Dropped: names containing KEY, TOKEN, SECRET, PASS, CREDENTIAL, AUTH, PRIVATE or COOKIE,
    and values holding a URL with a password (``scheme://user:pw@host``).
    """
    env = {
        k: v
        for k, v in (os.environ if base is None else base).items()
        if not _SECRET_ENV.search(k) and not _SECRET_VALUE.search(v)
    }
    env.update(extra)
    return env


class ToolDispatcher:
    """Tools bound to one workspace directory; every path argument is relative to it.

    ``env`` defaults to the scrubbed environment with HOME and TMPDIR set to the workspace.
    ``sandbox`` None runs children in a plain process group (``sandbox_mode`` "off").
    """

    def __init__(
        self,
        workspace: str | os.PathLike[str],
        *,
        env: Mapping[str, str] | None = None,
        output_cap: int = 64 * 1024,
        timeout: float = 30.0,
        sandbox: Sandbox | None = None,
    ) -> None:
        self.workspace = Path(workspace).resolve()
        self.workspace.mkdir(parents=True, exist_ok=True)
        # Shared, not copied: thousands of dispatchers can use one scrubbed environment;
        # exec adds HOME and TMPDIR (the workspace) when it builds the child's.
        self.env = scrubbed_env() if env is None else env
        self.output_cap = output_cap
        self.timeout = timeout
        self.sandbox = sandbox

    @property
    def sandbox_mode(self) -> str:
        """How children are confined, e.g. "bwrap+cgroup", or "off"."""
        return "off" if self.sandbox is None else self.sandbox.label

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
        """Write atomically: a temp file beside the target, then os.replace.

        A plain name (no directory part: every attempt's solution.py and test file) skips
        resolving the path, whose lstat of each component cost the event loop ~40 µs per
        write: the temp file is created with O_EXCL | O_NOFOLLOW, so a link of the child's
        at that name is refused rather than followed, and os.replace swaps a link at the
        target for the file without following it either."""
        if path and os.sep not in path and path not in (".", ".."):
            target = Path(self.workspace, path)
        else:
            target = self.resolve(path)
            target.parent.mkdir(parents=True, exist_ok=True)
        data = content.encode() if isinstance(content, str) else content
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)  # one left by an earlier write that failed half-way
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
        fd = os.open(tmp, flags, 0o644)
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
        """Empty the workspace so the next attempt sees only what the loop puts there.

        Hidden files, symlinks and read-only directories go too; ToolError if anything
        survives (e.g. an immutable file), so an attempt never runs beside leftovers.
        """
        for _ in range(2):
            for entry in os.scandir(self.workspace):
                if entry.is_dir(follow_symlinks=False):
                    _rmtree(Path(entry.path))
                else:
                    with contextlib.suppress(OSError):  # what stays is reported below
                        os.unlink(entry.path)
            left = os.listdir(self.workspace)
            if not left:
                return
        raise ToolError(f"cannot empty the workspace: {sorted(left)[:5]} remain")

    async def bash(self, command: str, timeout: float | None = None) -> ExecResult:
        """Run ``command`` with bash -c in the workspace."""
        return await self.exec(["bash", "-c", command], timeout=timeout)

    async def exec(
        self, argv: Sequence[str], timeout: float | None = None, *, probe: bool = False
    ) -> ExecResult:
        """Run ``argv`` in the workspace; see the module docstring for the guarantees.

        ``probe=True`` passes the pytest probe its channel (the command must load it with
        ``-p fastagent.sandbox.probe``) and puts the verdict in ``ExecResult.probe``.
        """
        timeout = self.timeout if timeout is None else timeout
        t_request = time.monotonic()
        launch = self.sandbox.command(argv, self.workspace, timeout) if self.sandbox else None
        channel = ProbeChannel() if probe else None
        try:
            return await self._run(argv, timeout, t_request, launch, channel)
        finally:
            if channel is not None:
                channel.close()
            if launch is not None:
                await launch.close()

    async def _run(
        self,
        argv: Sequence[str],
        timeout: float,
        t_request: float,
        launch: Launch | None,
        channel: ProbeChannel | None,
    ) -> ExecResult:
        home = str(self.workspace)
        env = {**self.env, "HOME": home, "TMPDIR": home, **(channel.env() if channel else {})}
        try:
            child = spawn(
                launch.argv if launch else argv,
                cwd=home,
                env=env,
                output_cap=self.output_cap,
                pass_fds=channel.child_fds if channel else (),
            )
        except OSError as exc:
            raise ToolError(f"cannot start {argv[0]!r}: {exc.strerror or exc}") from exc
        finally:
            if channel is not None:
                channel.close_child_ends()
        t_running = time.monotonic()
        cause = ExitCause.EXIT
        try:
            async with asyncio.timeout(timeout):
                await child.wait()
        except TimeoutError:
            cause = ExitCause.TIMEOUT
        finally:
            await _reap(child, launch)
        await child.drain(_DRAIN_GRACE)
        stdout, stdout_dropped, stderr, stderr_dropped = child.output()
        code = child.returncode if child.returncode is not None else -signal.SIGKILL
        if self.sandbox is not None and cause is ExitCause.EXIT:
            code = self.sandbox.decode_exit(code)
        if cause is ExitCause.EXIT and code < 0:
            cause = ExitCause.SIGNAL
        return ExecResult(
            exit_code=code,
            cause=cause,
            stdout=stdout,
            stderr=stderr,
            stdout_dropped=stdout_dropped,
            stderr_dropped=stderr_dropped,
            spawn_s=t_running - t_request,
            wall_s=time.monotonic() - t_running,
            sandbox=launch.label if launch else "off",
            probe=channel.verdict() if channel is not None else None,
            test_cpu_s=channel.cpu_s if channel is not None else None,
        )


async def _reap(child: Child, launch: Launch | None) -> None:
    """Kill the group and the run's cgroup, reap the child, sweep the cgroup until empty."""
    child.kill_group()
    if launch is not None:
        launch.kill()
    await child.wait()
    if launch is not None:
        await launch.close()


def _rmtree(path: Path) -> None:
    """Remove a tree the child may have made hard to remove (directories chmod 0 or 0500).

    Directories get u+rwx top-down first (never through a symlink: the child's processes
    are dead by now, so nothing can swap a directory for a link meanwhile).
    """
    import shutil

    with contextlib.suppress(OSError):
        os.chmod(path, 0o700)
    for root, dirs, _ in os.walk(path):
        for name in dirs:
            sub = os.path.join(root, name)
            if not os.path.islink(sub):
                with contextlib.suppress(OSError):
                    os.chmod(sub, 0o700)
    shutil.rmtree(path, ignore_errors=True)
