"""Which container owns an IP address on this node.

Read from the container's own network namespace through /proc/<pid>/net
(fib_trie LOCAL host routes for IPv4, if_inet6 for IPv6), which works for
any runtime and any network setup, including hand-made veths. A pid of the
container comes from its cgroup's cgroup.procs.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sensor.attribution.registry import ContainerLife


def parse_fib_trie_local(text: str) -> set[str]:
    """IPv4 addresses with a `/32 host LOCAL` entry (loopback excluded)."""
    out: set[str] = set()
    last = ""
    for line in text.splitlines():
        s = line.strip()
        if s.startswith(("|--", "+--")):
            last = s[3:].split()[0]
        elif s.startswith("/32 host LOCAL") and last and not last.startswith("127."):
            out.add(last)
    return out


def parse_if_inet6(text: str) -> set[str]:
    out: set[str] = set()
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 6 and parts[5] != "lo":
            a = ipaddress.IPv6Address(bytes.fromhex(parts[0]))
            if not a.is_link_local and not a.is_loopback:
                out.add(str(a))
    return out


def addresses_of_pid(pid: int, proc: str = "/proc") -> set[str]:
    addrs: set[str] = set()
    for name, parse in (("fib_trie", parse_fib_trie_local), ("if_inet6", parse_if_inet6)):
        try:
            with open(f"{proc}/{pid}/net/{name}") as f:
                addrs |= parse(f.read())
        except OSError:
            pass
    return addrs


def _local_port_53(text: str) -> bool:
    """/proc/net/{udp,tcp}[6]: any socket whose local port is 53."""
    for line in text.splitlines()[1:]:
        parts = line.split()
        if len(parts) > 1 and parts[1].rsplit(":", 1)[-1] == "0035":
            return True
    return False


def _any_socket(text: str) -> bool:
    """/proc/net/{raw,raw6,packet}: any socket at all (past the header)."""
    return any(line.strip() for line in text.splitlines()[1:])


# /proc/<pid>/net file -> (what it holds, when it says the namespace has one)
_FORGING: dict[str, tuple[str, Callable[[str], bool]]] = {
    "udp": ("a UDP socket on port 53", _local_port_53),
    "udp6": ("a UDP socket on port 53", _local_port_53),
    "tcp": ("a TCP socket on port 53", _local_port_53),
    "tcp6": ("a TCP socket on port 53", _local_port_53),
    "raw": ("a raw socket", _any_socket),
    "raw6": ("a raw socket", _any_socket),
    "packet": ("a packet socket", _any_socket),
}


def _host_netns(proc: str) -> int | None:
    """The host's network namespace: pid 1's (the sensor runs with the
    host's pid namespace, not always its network namespace: the DaemonSet
    does not); where pid 1's link cannot be read even by root (a sandboxed
    pid 1), the sensor's own."""
    for who in ("1", "self"):
        try:
            return os.stat(f"{proc}/{who}/ns/net").st_ino
        except OSError:
            continue
    return None


# Every /proc/<pid>/net table that lists sockets, and the column of its
# inode: a socket a process holds must be in one of its namespaces'.
SOCKET_TABLES = {
    **{n: 9 for n in ("tcp", "tcp6", "udp", "udp6", "udplite", "udplite6", "raw", "raw6", "icmp", "icmp6")},
    "packet": 8,
    "unix": 6,
    "netlink": 9,
}
MAX_TABLE_BYTES = 8 << 20  # a table longer than this is not read: not clean
MAX_TASK_SOCKETS = 65536  # sockets held, all threads together, per container and rescan


def cgroup_tasks(cgroup_dir: str, limit: int | None = None) -> list[int] | None:
    """Every thread (cgroup.threads) of a cgroup and its sub-cgroups: a
    process whose main thread exited still runs its other threads, and
    only they can still be read (or signalled: kill(2) with any thread's
    id reaches its whole process). None when the cgroup cannot be read
    (gone, or not a cgroup) or has more than `limit`."""
    out: list[int] = []
    if not os.path.isfile(os.path.join(cgroup_dir, "cgroup.threads")):
        return None
    for d, _subdirs, files in os.walk(cgroup_dir):
        if "cgroup.threads" not in files:
            continue
        try:
            with open(os.path.join(d, "cgroup.threads")) as f:
                out += [int(x) for x in f.read().split()]
        except (OSError, ValueError):
            return None
        if limit is not None and len(out) > limit:
            return None
    return out


def thread_group(tid: int, proc: str = "/proc") -> int:
    """The process a thread belongs to (its Tgid; the thread itself when
    unreadable)."""
    try:
        with open(f"{proc}/{tid}/status") as f:
            for line in f:
                if line.startswith("Tgid:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return tid


def socket_fds(pid: int, proc: str = "/proc") -> list[tuple[int, int]] | None:
    """(descriptor, socket inode) of each socket a task holds; None when its
    open files cannot be listed (gone, or not readable)."""
    fd_dir = f"{proc}/{pid}/fd"
    try:
        fds = os.listdir(fd_dir)
    except OSError:
        return None
    out: list[tuple[int, int]] = []
    for fd in fds:
        try:
            target = os.readlink(f"{fd_dir}/{fd}")
        except OSError:
            continue  # closed meanwhile
        if target.startswith("socket:[") and target.endswith("]") and target[8:-1].isdigit() and fd.isdigit():
            out.append((int(fd), int(target[8:-1])))
    return out


def socket_inodes(pid: int, proc: str = "/proc") -> set[int] | None:
    """Inodes of the sockets a task holds; None when its open files cannot
    be listed (gone, or not readable)."""
    fds = socket_fds(pid, proc)
    return None if fds is None else {ino for _fd, ino in fds}


TOO_LONG = "\0too long"  # _read_table: the table is longer than MAX_TABLE_BYTES


def _read_table(path: str) -> str | None:
    """A /proc/net table; None when it cannot be read, TOO_LONG when it is
    longer than MAX_TABLE_BYTES."""
    try:
        with open(path) as f:
            text = f.read(MAX_TABLE_BYTES + 1)
    except OSError:
        return None
    return text if len(text) <= MAX_TABLE_BYTES else TOO_LONG


def table_inodes(text: str, column: int) -> set[int]:
    """Socket inodes from a /proc/<pid>/net table (its `column`, per
    SOCKET_TABLES), past the header."""
    out = set()
    for line in text.splitlines()[1:]:
        parts = line.split()
        if len(parts) > column and parts[column].isdigit():
            out.add(int(parts[column]))
    return out


def forging_unseen(tasks: list[int], proc: str = "/proc", strict: bool = True) -> str | None:
    """Why these threads could still answer DNS queries with anything, or
    None when every network namespace they are in was read and holds no
    socket on port 53, raw or packet, and every socket they hold is listed
    in one of those namespaces (a socket made in another namespace and
    passed in, by a process since gone, is not).

    strict (a distrust is cleared only on this): a host-network container
    is never found clean (its sockets are the host's), and whatever cannot
    be read counts against. Not strict (the scan at start, which distrusts
    on what it finds): threads in the host's namespace are skipped (the
    host's resolver and DHCP client are not the container's) and what
    cannot be read is passed over; only a finding counts."""
    host = _host_netns(proc)
    if host is None:
        return "the host's network namespace cannot be read" if strict else None
    by_ns: dict[int, list[int]] = {}  # netns inode -> its threads
    for tid in tasks:
        try:
            ino = os.stat(f"{proc}/{tid}/ns/net").st_ino
        except OSError:
            if strict and os.path.exists(f"{proc}/{tid}"):
                return f"the network namespace of task {tid} cannot be read"
            continue  # exited
        if ino == host:
            if strict:
                return "it shares the host's network namespace"
            continue
        by_ns.setdefault(ino, []).append(tid)
    listed: set[int] = set()
    for members in by_ns.values():
        tid = members[0]
        for name, column in SOCKET_TABLES.items():
            text = _read_table(f"{proc}/{tid}/net/{name}")
            if text is TOO_LONG:
                # not passed over even at start: a namespace filled with
                # sockets must not hide the one that forges
                return f"/proc/{tid}/net/{name} is too long to read"
            if text is None:
                if strict and (os.path.exists(f"{proc}/{tid}/net/{name}") or name in _FORGING):
                    return f"/proc/{tid}/net/{name} could not be read (gone)"
                continue  # a table this kernel does not have
            forging = _FORGING.get(name)
            if forging is not None and forging[1](text):
                return f"it holds {forging[0]}"
            listed |= table_inodes(text, column)
    held = 0
    for tid in (t for members in by_ns.values() for t in members):
        sockets = socket_inodes(tid, proc)
        if sockets is None:
            if strict and os.path.exists(f"{proc}/{tid}"):
                return f"the open files of task {tid} cannot be read"
            continue
        held += len(sockets)
        if held > MAX_TASK_SOCKETS:
            return "too many sockets to check"
        if sockets - listed:
            return "it holds a socket of another network namespace (or of a kind not listed)"
    return None


def _thread_netns(pid: int, proc: str) -> set[int]:
    """The network namespaces of a process's threads (those readable)."""
    out: set[int] = set()
    try:
        tids = os.listdir(f"{proc}/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            out.add(os.stat(f"{proc}/{pid}/task/{tid}/ns/net").st_ino)
        except OSError:
            continue
    return out


class NetnsIndex:
    """Which processes are in which network namespace: one pass over /proc
    that every netns_shared() of a re-check can share (an isolated
    container's check reads every process on the node)."""

    def __init__(self, proc: str = "/proc") -> None:
        self.proc = proc
        self.problem = ""  # why the index could not be built (then everything counts as shared)
        self.pids: dict[int, list[int]] = {}  # netns inode -> processes in it
        try:
            pids = [int(p) for p in os.listdir(proc) if p.isdigit()]
        except OSError:
            self.problem = f"{proc} cannot be listed"
            return
        for pid in pids:
            try:
                inos = {os.stat(f"{proc}/{pid}/ns/net").st_ino}
            except OSError:
                inos = _thread_netns(pid, proc)  # a zombie leader: its threads may still run
            for ino in inos:
                self.pids.setdefault(ino, []).append(pid)


def netns_shared(tasks: list[int], proc: str = "/proc", index: NetnsIndex | None = None) -> str | None:
    """Why the network namespaces of these threads (a container's) are not
    theirs alone, or None when they are: the host's namespace, or one a
    process outside them is in (a pod's other containers, a container
    started with --network container:, a process that entered it). Such a
    loopback reaches processes outside the container, which could relay
    for it (sensor/response/containment.py). What cannot be read counts as
    shared. index: the processes' namespaces, read once for several calls
    (built here when not given)."""
    host = _host_netns(proc)
    if host is None:
        return "the host's network namespace cannot be read"
    mine: set[int] = set()
    for tid in tasks:
        try:
            mine.add(os.stat(f"{proc}/{tid}/ns/net").st_ino)
        except OSError:
            if os.path.exists(f"{proc}/{tid}/task"):
                return f"the network namespace of task {tid} cannot be read"
    if host in mine:
        return "it is the host's network namespace"
    if not mine:
        return "none of its processes could be read"
    index = index if index is not None else NetnsIndex(proc)
    if index.problem:
        return index.problem
    inside = set(tasks)
    for ino in sorted(mine):
        for pid in index.pids.get(ino, ()):
            if pid in inside:
                continue
            try:
                with open(f"{proc}/{pid}/comm") as f:
                    comm = f.read().strip()
            except OSError:
                comm = "?"
            return f"process {pid} ({comm}), outside the container, is in its network namespace"
    return None


def first_pid(cgroup_dir: str) -> int | None:
    try:
        with open(os.path.join(cgroup_dir, "cgroup.procs")) as f:
            for line in f:
                if line.strip():
                    return int(line)
    except (OSError, ValueError):
        return None
    return None


class NetMap:
    """ip -> container id, refreshed per container on demand."""

    def __init__(self, host_addresses: set[str] | None = None) -> None:
        self._by_ip: dict[str, str] = {}
        self._by_container: dict[str, set[str]] = {}
        # the host's own addresses are never a container's
        self.host = host_addresses if host_addresses is not None else addresses_of_pid(1)

    def refresh(self, container_id: str, cgroup_dir: str) -> None:
        pid = first_pid(cgroup_dir)
        if pid is None:
            return
        addrs = addresses_of_pid(pid) - self.host
        for ip in self._by_container.get(container_id, set()) - addrs:
            self._by_ip.pop(ip, None)
        self._by_container[container_id] = addrs
        for ip in addrs:
            self._by_ip[ip] = container_id

    def has(self, container_id: str) -> bool:
        return bool(self._by_container.get(container_id))

    def container_of(self, ip: str) -> str | None:
        return self._by_ip.get(ip)

    def containers_removed(self, lives: list[ContainerLife]) -> None:
        """ContainerRegistry subscription: stopped containers' addresses go."""
        for life in lives:
            self.forget(life.info.id)

    def forget(self, container_id: str) -> None:
        for ip in self._by_container.pop(container_id, set()):
            if self._by_ip.get(ip) == container_id:
                del self._by_ip[ip]
