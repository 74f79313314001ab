"""Which container owns an IP address on this node.

Read from the container's own network namespace through /proc/<pid>/net
(fib_trie LOCAL host routes for IPv4, if_inet6 for IPv6), which works for
any runtime and any network setup, including hand-made veths. A pid of the
container comes from its cgroup's cgroup.procs.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable, Iterator
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
_FORGING = (
    ("udp", "a UDP socket on port 53", _local_port_53),
    ("udp6", "a UDP socket on port 53", _local_port_53),
    ("tcp", "a TCP socket on port 53", _local_port_53),
    ("tcp6", "a TCP socket on port 53", _local_port_53),
    ("raw", "a raw socket", _any_socket),
    ("raw6", "a raw socket", _any_socket),
    ("packet", "a packet socket", _any_socket),
)


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


def _net_files(pid: int, proc: str) -> Iterator[tuple[str, str, Callable[[str], bool], str | None]]:
    """(file, what it holds, the test, its text or None when unreadable) for each of _FORGING."""
    for name, what, has in _FORGING:
        try:
            with open(f"{proc}/{pid}/net/{name}") as f:
                yield name, what, has, f.read()
        except OSError:
            yield name, what, has, None


def _forging_in(pid: int, proc: str) -> str | None:
    for _name, what, has, text in _net_files(pid, proc):
        if text is not None and has(text):
            return what
    return None


def forging_socket(pid: int, proc: str = "/proc") -> str | None:
    """A socket in the network namespace of `pid` that could answer its
    DNS queries with anything (sensor/telemetry/names.py FlowNamer.distrust):
    one on port 53, raw or packet. None when there is none, or the namespace
    is the host's (a host-network container: the host's resolver and DHCP
    client are not the container's)."""
    host = _host_netns(proc)
    try:
        if host is None or os.stat(f"{proc}/{pid}/ns/net").st_ino == host:
            return None
    except OSError:
        return None
    return _forging_in(pid, proc)


def cgroup_pids(cgroup_dir: str, limit: int = 4096) -> list[int] | None:
    """The processes of a cgroup and its sub-cgroups; None when there are
    more than `limit` or the cgroup cannot be read (gone, or not a cgroup)."""
    out: list[int] = []
    if not os.path.isfile(os.path.join(cgroup_dir, "cgroup.procs")):
        return None
    for d, _subdirs, files in os.walk(cgroup_dir):
        if "cgroup.procs" not in files:
            continue
        try:
            with open(os.path.join(d, "cgroup.procs")) as f:
                out += [int(x) for x in f.read().split()]
        except (OSError, ValueError):
            return None
        if len(out) > limit:
            return None
    return out


def forging_unseen(pids: list[int], proc: str = "/proc") -> str | None:
    """Why these processes could still answer DNS queries with anything
    (a forging socket in one of their network namespaces, or a namespace
    that cannot be told apart from the host's or read), or None when every
    one of their namespaces was read and holds none. Stricter than
    forging_socket: a host-network container is never found clean (its
    sockets are the host's), and what cannot be read counts against."""
    host = _host_netns(proc)
    if host is None:
        return "the host's network namespace cannot be read"
    seen: dict[int, int] = {}  # netns inode -> a pid in it
    for pid in pids:
        try:
            ino = os.stat(f"{proc}/{pid}/ns/net").st_ino
        except OSError:
            continue  # exited
        if ino == host:
            return "it shares the host's network namespace"
        seen.setdefault(ino, pid)
    for pid in seen.values():
        for name, what, has, text in _net_files(pid, proc):
            if text is None:
                return f"/proc/{pid}/net/{name} could not be read"
            if has(text):
                return f"it holds {what}"
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
