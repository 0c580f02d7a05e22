"""A stack's process tree watched from outside: which process is the runtime, and its figures.

``fastagent compare`` runs each stack's command as ``/bin/sh -c COMMAND``; what that starts
is a tree: maybe wrapper shells or scripts, the runtime process, its test processes and
their sandbox wrappers. :class:`TreeWatch` follows the tree from its root, in a thread of
the referee, and at the end names the runtime by one rule, the same for every stack:

    **the runtime is the process of the tree that held the most TCP connections to the
    endpoint at once** (ties: the one seen holding connections in more scans, then the one
    started first).

A wrapper holds none; test processes hold none (the sandbox even takes their network away);
the runtime holds one per stream in flight. A tree where no process ever held a connection
to the endpoint has no runtime (the stack never talked to it), and a tree where several did,
in more than one scan each, is flagged (``holders``; a child caught between fork and exec
shares its parent's sockets for an instant and is not counted): a stack that spreads its
agents over processes is measured as its biggest one, the others count among its
descendants only when they are its children.

How each figure is read, all from ``/proc``, never by asking the process:

* peak RSS: the kernel's high-water mark ``VmHWM`` (``/proc/PID/status``), re-read every
  ``fast_interval`` (20 ms) while the process holds connections: a high-water mark loses
  nothing between reads, only what it might grow after the last read before the process
  exits;
* CPU: ``utime + stime`` of ``/proc/PID/stat`` (all its threads, its children excluded;
  clock ticks, 10 ms), re-read at the same pace, so at most one interval of CPU at its very
  end goes unseen; ``cutime + cstime`` (the children it reaped) beside it;
* descendants: every ``interval`` (200 ms) the tree is walked through the kernel's
  ``/proc/PID/task/TID/children`` lists (a few small reads; psutil's ``children(recursive=True)``
  scans every process on the machine instead) and each process's RSS read from its
  ``stat``; the peak count and peak summed RSS of every process's descendants are kept;
* connections: the endpoint's client sockets come from one ``sock_diag`` netlink dump
  filtered on the endpoint's port by the kernel (``ss``'s source; ``/proc/net/tcp`` is
  the fallback, tens of ms on a machine with 10,000 sockets, and psutil re-reads it per
  process), matched against each process's ``/proc/PID/fd`` links: every ``interval``
  until a holder is found, then every ``conn_interval``.

Standard library only (``fastagent compare`` may use psutil around it, for cleanup).
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

__all__ = [
    "RULE",
    "Picked",
    "ProcStat",
    "Record",
    "TreeWatch",
    "children",
    "endpoint_sockets",
    "pick_runtime",
    "read_hwm_kib",
    "read_stat",
    "socket_inodes",
]

#: The process rule in one sentence (compare.json's settings.process_rule).
RULE = (
    "the runtime is the process of the command's tree that held the most TCP connections to "
    "the endpoint at once (ties: seen holding some in more scans, then the oldest); its VmHWM "
    "and user+sys (children excluded) are read from /proc every 20 ms, its descendants every "
    "--sample-interval"
)

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024

# ---- /proc readers ----------------------------------------------------------------------


@dataclass(frozen=True)
class ProcStat:
    """The fields of ``/proc/PID/stat`` the referee uses (times in seconds)."""

    ppid: int
    cpu_s: float
    children_cpu_s: float
    start_ticks: int
    rss_kib: int


def read_stat(pid: int) -> ProcStat | None:
    """``/proc/PID/stat`` of a live process, None once it is gone (or a zombie)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    fields = raw[raw.rfind(b")") + 2 :].split()
    if len(fields) < 22 or fields[0] in (b"Z", b"X"):
        return None
    ticks = float(CLK_TCK)
    return ProcStat(
        ppid=int(fields[1]),
        cpu_s=(int(fields[11]) + int(fields[12])) / ticks,
        children_cpu_s=(int(fields[13]) + int(fields[14])) / ticks,
        start_ticks=int(fields[19]),
        rss_kib=int(fields[21]) * PAGE_KIB,
    )


def read_hwm_kib(pid: int) -> int | None:
    """The kernel's high-water mark of the process's resident set (VmHWM), in KiB."""
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def children(pid: int) -> list[int]:
    """The live children of ``pid``, from every thread's ``children`` list (a thread other
    than the main one may have started some)."""
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return []
    found: list[int] = []
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/children", "rb") as f:
                found.extend(int(kid) for kid in f.read().split())
        except (OSError, ValueError):
            continue
    return found


def command_line(pid: int, limit: int = 240) -> str:
    """The process's argv joined by spaces (cut at ``limit`` characters)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            raw = f.read(limit * 4)
    except OSError:
        return ""
    text = raw.rstrip(b"\0").replace(b"\0", b" ").decode("utf-8", "replace")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def socket_inodes(pid: int) -> set[int]:
    """The inodes of the sockets among the process's open files."""
    found: set[int] = set()
    try:
        entries = os.scandir(f"/proc/{pid}/fd")
    except OSError:
        return found
    with entries:
        for entry in entries:
            try:
                target = os.readlink(entry.path)
            except OSError:
                continue
            if target.startswith("socket:["):
                found.add(int(target[8:-1]))
    return found


# ---- the endpoint's client sockets -----------------------------------------------------------

_NETLINK_SOCK_DIAG = 4
_SOCK_DIAG_BY_FAMILY = 20
_NLM_F_REQUEST_DUMP = 0x1 | 0x300
_NLMSG_ERROR, _NLMSG_DONE = 2, 3
_NLMSG_HDR = struct.Struct("=IHHII")


def _diag_request(family: int, port: int) -> bytes:
    # struct inet_diag_req_v2 (family, protocol, ext, pad, states) + inet_diag_sockid; the
    # kernel skips established sockets whose destination port differs from a non-zero dport
    body = struct.pack("=BBBxI", family, socket.IPPROTO_TCP, 0, 0xFFFFFFFF)
    body += struct.pack(">HH", 0, port) + bytes(32) + struct.pack("=III", 0, 0xFFFFFFFF, 0xFFFFFFFF)
    return (
        _NLMSG_HDR.pack(
            _NLMSG_HDR.size + len(body), _SOCK_DIAG_BY_FAMILY, _NLM_F_REQUEST_DUMP, 1, 0
        )
        + body
    )


def _diag_dump(family: int, port: int) -> set[int]:
    """Inodes of the TCP sockets of ``family`` whose remote port is ``port`` (netlink)."""
    found: set[int] = set()
    with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, _NETLINK_SOCK_DIAG) as nl:
        nl.settimeout(5.0)
        nl.send(_diag_request(family, port))
        while True:
            data = nl.recv(1 << 17)
            offset = 0
            while offset + _NLMSG_HDR.size <= len(data):
                length, kind, _, _, _ = _NLMSG_HDR.unpack_from(data, offset)
                if kind == _NLMSG_DONE:
                    return found
                if kind == _NLMSG_ERROR:
                    (errno,) = struct.unpack_from("=i", data, offset + _NLMSG_HDR.size)
                    raise OSError(-errno, os.strerror(-errno))
                body = offset + _NLMSG_HDR.size
                (dport,) = struct.unpack_from(">H", data, body + 6)
                (inode,) = struct.unpack_from("=I", data, body + 68)
                if dport == port and inode:
                    found.add(inode)
                offset += (length + 3) & ~3
            if not data:
                return found


def _proc_net_tcp(port: int) -> set[int]:
    """The same from ``/proc/net/tcp{,6}``: slow on a machine with many sockets."""
    found: set[int] = set()
    wanted = f":{port:04X}"
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(name) as f:
            next(f, None)
            for line in f:
                parts = line.split()
                if len(parts) > 9 and parts[2].endswith(wanted) and parts[9] != "0":
                    found.add(int(parts[9]))
    return found


def endpoint_sockets(port: int) -> set[int]:
    """Inodes of every TCP socket on this machine (this network namespace) connected to
    ``port``: the clients of an endpoint listening there."""
    try:
        return _diag_dump(socket.AF_INET, port) | _diag_dump(socket.AF_INET6, port)
    except OSError:
        return _proc_net_tcp(port)


# ---- the watch -----------------------------------------------------------------------------


@dataclass
class Record:
    """One process of the tree as the watch saw it."""

    pid: int
    start_ticks: int
    ppid: int
    depth: int
    #: read when first seen (maybe before its exec), again when it first holds a connection
    command_line: str
    first_seen: float
    last_seen: float
    cpu_s: float = 0.0
    children_cpu_s: float = 0.0
    hwm_kib: int = 0
    max_connections: int = 0
    connection_scans: int = 0
    peak_descendants: int = 0
    peak_descendants_rss_kib: int = 0
    #: its CPU when first seen holding an endpoint connection: start-up, imports, set-up
    startup_cpu_s: float | None = None
    gone: bool = False
    #: fast reads of this process (a holder's VmHWM and CPU)
    samples: int = 0


@dataclass(frozen=True)
class Picked:
    """The runtime by the rule, and how many processes held endpoint connections."""

    record: Record
    holders: int


def pick_runtime(records: Iterable[Record]) -> Picked | None:
    """The rule: most connections at once, then most scans holding any, then the oldest.

    ``holders`` counts the pick and every other process seen holding endpoint connections
    in more than one scan: a child caught between fork and exec still shares its parent's
    sockets for an instant, and is no second runtime."""
    holders = [r for r in records if r.max_connections > 0]
    if not holders:
        return None
    best = max(holders, key=lambda r: (r.max_connections, r.connection_scans, -r.start_ticks))
    others = sum(1 for r in holders if r is not best and r.connection_scans > 1)
    return Picked(best, 1 + others)


@dataclass
class TreeWatch:
    """Follows the tree under ``root`` (a pid) in a thread until :meth:`stop`."""

    root: int
    port: int
    interval: float = 0.2
    fast_interval: float = 0.02
    conn_interval: float = 1.0
    records: dict[tuple[int, int], Record] = field(default_factory=dict)
    scans: int = 0
    connection_scans: int = 0

    def __post_init__(self) -> None:
        self._live: dict[int, Record] = {}
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name="tree-watch", daemon=True)

    def start(self) -> None:
        self.scan()
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread (after one last scan)."""
        self._stop.set()
        self._thread.join()

    def pick(self) -> Picked | None:
        with self._lock:
            return pick_runtime(self.records.values())

    def alive(self) -> list[Record]:
        """Processes of the tree seen and not yet seen gone (checked now, by start time)."""
        with self._lock:
            records = list(self.records.values())
        out = []
        for record in records:
            stat = read_stat(record.pid)
            if stat is not None and stat.start_ticks == record.start_ticks:
                out.append(record)
        return out

    def _loop(self) -> None:
        next_tree = next_conn = time.monotonic()
        while not self._stop.wait(self.fast_interval):
            now = time.monotonic()
            if now >= next_tree:
                self.scan()
                next_tree = now + self.interval
            if now >= next_conn:
                found = self.scan_connections()
                next_conn = now + (self.conn_interval if found else self.interval)
            self._fast()
        self.scan()
        self._fast()

    def _fast(self) -> None:
        """VmHWM and CPU of every process that holds endpoint connections."""
        with self._lock:
            for record in self._live.values():
                if record.max_connections == 0:
                    continue
                hwm = read_hwm_kib(record.pid)
                stat = read_stat(record.pid)
                if hwm is None or stat is None or stat.start_ticks != record.start_ticks:
                    continue
                record.hwm_kib = max(record.hwm_kib, hwm)
                record.cpu_s, record.children_cpu_s = stat.cpu_s, stat.children_cpu_s
                record.samples += 1

    def scan(self) -> None:
        """Walk the tree: each process's CPU and RSS, every process's descendants' peaks."""
        now = time.monotonic()
        seen: dict[int, tuple[Record, ProcStat]] = {}
        kids: dict[int, list[int]] = {}
        frontier = [(self.root, 0)]
        with self._lock:
            while frontier:
                pid, depth = frontier.pop()
                stat = read_stat(pid)
                if stat is None or pid in seen:
                    continue
                record = self._record(pid, stat, depth, now)
                seen[pid] = (record, stat)
                kids[pid] = children(pid)
                frontier.extend((kid, depth + 1) for kid in kids[pid])
            for pid, record in list(self._live.items()):
                if pid not in seen:
                    record.gone = True
                    del self._live[pid]
            self._descendant_peaks(seen, kids)
            self.scans += 1

    def _record(self, pid: int, stat: ProcStat, depth: int, now: float) -> Record:
        record = self._live.get(pid)
        if record is None or record.start_ticks != stat.start_ticks:
            record = Record(pid, stat.start_ticks, stat.ppid, depth, command_line(pid), now, now)
            self.records[pid, stat.start_ticks] = record
            self._live[pid] = record
        record.last_seen = now
        record.cpu_s, record.children_cpu_s = stat.cpu_s, stat.children_cpu_s
        return record

    def _descendant_peaks(
        self, seen: dict[int, tuple[Record, ProcStat]], kids: dict[int, list[int]]
    ) -> None:
        """Count and summed RSS of each process's live descendants; the peaks kept."""
        totals: dict[int, tuple[int, int]] = {}

        def subtree(pid: int) -> tuple[int, int]:  # (count, rss) of pid's descendants
            count = rss = 0
            for kid in kids.get(pid, ()):
                if kid in seen:
                    sub_count, sub_rss = totals[kid] if kid in totals else subtree(kid)
                    count += 1 + sub_count
                    rss += seen[kid][1].rss_kib + sub_rss
            totals[pid] = (count, rss)
            return count, rss

        for pid, (record, _) in seen.items():
            count, rss = totals[pid] if pid in totals else subtree(pid)
            record.peak_descendants = max(record.peak_descendants, count)
            record.peak_descendants_rss_kib = max(record.peak_descendants_rss_kib, rss)

    def scan_connections(self) -> bool:
        """Count each live process's connections to the endpoint; True when any holds one.
        The socket table is dumped only when some process of the tree holds a socket."""
        with self._lock:
            pids = list(self._live)
        held_by = {pid: socket_inodes(pid) for pid in pids}
        inodes = endpoint_sockets(self.port) if any(held_by.values()) else set()
        held = False
        with self._lock:
            for pid, mine in held_by.items():
                record = self._live.get(pid)
                count = len(mine & inodes)
                if record is None or not count:
                    continue
                held = True
                if record.startup_cpu_s is None:  # a new holder: it has long since exec'd
                    stat = read_stat(pid)
                    record.startup_cpu_s = stat.cpu_s if stat else record.cpu_s
                    record.command_line = command_line(pid) or record.command_line
                record.connection_scans += 1
                record.max_connections = max(record.max_connections, count)
            self.connection_scans += 1
        if held:
            self._fast()
        return held
