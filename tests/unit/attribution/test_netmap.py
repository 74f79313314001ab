"""Which container owns an address: /proc/<pid>/net parsing and NetMap."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sensor.attribution.netmap import (
    NetMap,
    NetnsIndex,
    addresses_of_pid,
    cgroup_tasks,
    first_pid,
    forging_unseen,
    netns_shared,
    parse_fib_trie_local,
    parse_if_inet6,
)

# /proc/self/net/fib_trie as read on the development machine: one interface
# with 192.0.2.2/24, plus loopback.
FIB_TRIE_HOST = """\
Main:
  +-- 0.0.0.0/0 3 0 5
     |-- 0.0.0.0
        /0 universe UNICAST
     +-- 127.0.0.0/8 2 0 2
        +-- 127.0.0.0/31 1 0 0
           |-- 127.0.0.0
              /8 host LOCAL
           |-- 127.0.0.1
              /32 host LOCAL
        |-- 127.255.255.255
           /32 link BROADCAST
     +-- 192.0.2.0/24 2 0 2
        +-- 192.0.2.0/30 2 0 2
           |-- 192.0.2.0
              /24 link UNICAST
           |-- 192.0.2.2
              /32 host LOCAL
        |-- 192.0.2.255
           /32 link BROADCAST
Local:
  +-- 0.0.0.0/0 3 0 5
     |-- 0.0.0.0
        /0 universe UNICAST
     +-- 127.0.0.0/8 2 0 2
        +-- 127.0.0.0/31 1 0 0
           |-- 127.0.0.0
              /8 host LOCAL
           |-- 127.0.0.1
              /32 host LOCAL
        |-- 127.255.255.255
           /32 link BROADCAST
     +-- 192.0.2.0/24 2 0 2
        +-- 192.0.2.0/30 2 0 2
           |-- 192.0.2.0
              /24 link UNICAST
           |-- 192.0.2.2
              /32 host LOCAL
        |-- 192.0.2.255
           /32 link BROADCAST
"""

# A container on the default bridge with a second address on its interface.
FIB_TRIE_CONTAINER = """\
Main:
  +-- 0.0.0.0/0 3 0 4
     |-- 0.0.0.0
        /0 universe UNICAST
     +-- 10.1.2.0/24 2 0 2
        |-- 10.1.2.0
           /24 link UNICAST
        |-- 10.1.2.3
           /32 host LOCAL
     +-- 172.17.0.0/16 2 0 2
        +-- 172.17.0.0/30 2 0 2
           |-- 172.17.0.0
              /16 link UNICAST
           |-- 172.17.0.2
              /32 host LOCAL
        |-- 172.17.255.255
           /32 link BROADCAST
Local:
  +-- 0.0.0.0/0 3 0 4
     +-- 127.0.0.0/8 2 0 2
        +-- 127.0.0.0/31 1 0 0
           |-- 127.0.0.0
              /8 host LOCAL
           |-- 127.0.0.1
              /32 host LOCAL
        |-- 127.255.255.255
           /32 link BROADCAST
     |-- 172.17.0.2
        /32 host LOCAL
"""

IF_INET6 = """\
00000000000000000000000000000001 01 80 10 80       lo
fe8000000000000000fc00fffe000001 04 40 20 80     eth0
fd000000000000000000000000000002 04 40 00 82     eth0
20010db8000000010000000000000042 05 40 00 80     eth1
"""


def test_parse_fib_trie_host() -> None:
    assert parse_fib_trie_local(FIB_TRIE_HOST) == {"192.0.2.2"}


def test_parse_fib_trie_container() -> None:
    assert parse_fib_trie_local(FIB_TRIE_CONTAINER) == {"172.17.0.2", "10.1.2.3"}


def test_parse_fib_trie_loopback_only_and_empty() -> None:
    lo_only = "\n".join(line for line in FIB_TRIE_HOST.splitlines() if "192.0.2" not in line)
    assert parse_fib_trie_local(lo_only) == set()
    assert parse_fib_trie_local("") == set()


def test_parse_if_inet6() -> None:
    assert parse_if_inet6(IF_INET6) == {"fd00::2", "2001:db8:0:1::42"}
    assert parse_if_inet6("") == set()
    assert parse_if_inet6("garbage line\n") == set()


def test_addresses_of_pid_with_a_proc_tree(tmp_path: Path) -> None:
    net = tmp_path / "4321" / "net"
    net.mkdir(parents=True)
    (net / "fib_trie").write_text(FIB_TRIE_CONTAINER)
    (net / "if_inet6").write_text(IF_INET6)
    assert addresses_of_pid(4321, str(tmp_path)) == {"172.17.0.2", "10.1.2.3", "fd00::2", "2001:db8:0:1::42"}
    assert addresses_of_pid(999, str(tmp_path)) == set()


def test_first_pid(tmp_path: Path) -> None:
    cg = tmp_path / "cg"
    cg.mkdir()
    assert first_pid(str(cg)) is None  # no cgroup.procs
    (cg / "cgroup.procs").write_text("")
    assert first_pid(str(cg)) is None  # an empty cgroup
    (cg / "cgroup.procs").write_text("\n  \n815\n816\n")
    assert first_pid(str(cg)) == 815
    (cg / "cgroup.procs").write_text("not-a-pid\n")
    assert first_pid(str(cg)) is None


UDP_HEAD = "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n"
UDP_53 = (
    UDP_HEAD
    + "  301: 0B00007F:0035 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 81234 2 0 0\n"
)
UDP_5353 = (
    UDP_HEAD
    + "  301: 00000000:14E9 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 81235 2 0 0\n"
)
RAW_ONE = (
    UDP_HEAD
    + "    1: 00000000:0001 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 81236 2 0 0\n"
)


def proc_tree(tmp_path: Path, pid: int, files: dict[str, str], host_ns: bool = False) -> str:
    """/proc/<pid>/net files and ns/net (pid 1's too: the host's; the
    sensor's own, "self", in a namespace of its own)."""
    for p, ino in (("1", "host"), ("self", "sensor"), (pid, "host" if host_ns else "ctr")):
        (tmp_path / str(p) / "ns").mkdir(parents=True, exist_ok=True)
        target = tmp_path / f"netns-{ino}"
        target.touch()
        link = tmp_path / str(p) / "ns" / "net"
        if not link.exists():
            link.symlink_to(target)
    net = tmp_path / str(pid) / "net"
    net.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (net / name).write_text(text)
    return str(tmp_path)


def test_forging_found_at_start_in_a_containers_namespace(tmp_path: Path) -> None:
    """The scan at start (not strict): port 53 (any address, UDP or TCP),
    raw or packet sockets in a container's namespace distrust it; a
    host-network container is not judged by the host's sockets, and what
    cannot be read is passed over."""

    def found(root: str, tasks: list[int] | None = None) -> str | None:
        return forging_unseen(tasks or [10], root, strict=False)

    assert found(proc_tree(tmp_path / "a", 10, {"udp": UDP_53})) == "it holds a UDP socket on port 53"
    assert found(proc_tree(tmp_path / "b", 10, {"udp": UDP_5353, "raw": UDP_HEAD})) is None
    assert found(proc_tree(tmp_path / "c", 10, {"udp": UDP_5353, "raw6": RAW_ONE})) == "it holds a raw socket"
    assert found(proc_tree(tmp_path / "d", 10, {"packet": "sk RefCnt Type\nffff 3 3\n"})) == (
        "it holds a packet socket"
    )
    assert found(proc_tree(tmp_path / "e", 10, {"udp": UDP_53}, host_ns=True)) is None
    assert found(str(tmp_path / "a"), [99]) is None  # gone
    # a zombie leader (nothing under /proc/10 but its directory) beside a
    # thread that holds the socket: the thread is read
    root = proc_tree(tmp_path / "z", 11, {"raw": RAW_ONE})
    (Path(root) / "10").mkdir()
    assert found(root, [10, 11]) == "it holds a raw socket"
    assert forging_unseen([10, 11], root) == "the network namespace of task 10 cannot be read"  # strict
    # pid 1's link unreadable (a sandbox): the sensor's own namespace stands for the host's
    root = proc_tree(tmp_path / "f", 10, {"udp": UDP_53})
    (Path(root) / "1" / "ns" / "net").unlink()
    assert found(root) == "it holds a UDP socket on port 53"
    (Path(root) / "self" / "ns" / "net").unlink()
    (Path(root) / "self" / "ns" / "net").symlink_to(Path(root) / "netns-ctr")
    assert found(root) is None


def own_cgroup(tmp_path: Path, name: str) -> str:
    d = tmp_path / name
    d.mkdir()
    (d / "cgroup.procs").write_text(f"{os.getpid()}\n")
    return str(d)


def test_netmap_refresh_and_forget_with_own_process(tmp_path: Path) -> None:
    mine = addresses_of_pid(os.getpid())
    assert not any(a.startswith("127.") or a == "::1" for a in mine)
    m = NetMap(host_addresses=set())
    cg = own_cgroup(tmp_path, "c1")
    m.refresh("c1", cg)
    assert m.has("c1") is bool(mine)
    for ip in mine:
        assert m.container_of(ip) == "c1"
    assert m.container_of("127.0.0.1") is None and m.container_of("198.51.100.1") is None
    m.forget("c1")
    assert not m.has("c1")
    for ip in mine:
        assert m.container_of(ip) is None
    m.forget("c1")  # forgetting twice is harmless


def test_netmap_host_addresses_are_never_a_containers(tmp_path: Path) -> None:
    mine = addresses_of_pid(os.getpid())
    m = NetMap(host_addresses=set(mine))
    m.refresh("c1", own_cgroup(tmp_path, "c1"))
    assert not m.has("c1")
    for ip in mine:
        assert m.container_of(ip) is None


def test_netmap_address_moves_to_the_newest_owner(tmp_path: Path) -> None:
    mine = addresses_of_pid(os.getpid())
    m = NetMap(host_addresses=set())
    m.refresh("old", own_cgroup(tmp_path, "old"))
    m.refresh("new", own_cgroup(tmp_path, "new"))
    for ip in mine:
        assert m.container_of(ip) == "new"
    m.forget("old")  # must not drop what "new" owns now
    for ip in mine:
        assert m.container_of(ip) == "new"


def test_netmap_refresh_without_a_pid_changes_nothing(tmp_path: Path) -> None:
    m = NetMap(host_addresses=set())
    empty = tmp_path / "empty"
    empty.mkdir()
    m.refresh("c1", str(empty))
    assert not m.has("c1")
    m.refresh("c2", str(tmp_path / "missing"))
    assert not m.has("c2")


QUIET = {n: UDP_HEAD for n in ("udp", "udp6", "tcp", "tcp6", "raw", "raw6")} | {"packet": "sk RefCnt Type Inode\n"}


def _fds(root: str, pid: int, targets: list[str]) -> None:
    """/proc/<pid>/fd: exactly these links."""
    d = Path(root) / str(pid) / "fd"
    d.mkdir(parents=True, exist_ok=True)
    for old in d.iterdir():
        old.unlink()
    for i, t in enumerate(targets):
        (d / str(i)).symlink_to(t)


def test_forging_unseen_is_strict(tmp_path: Path) -> None:
    """What clears a distrust (pipeline.recheck_distrust) must read every
    namespace and find nothing: a forging socket, the host's namespace (a
    host-network container's sockets are the host's), a socket held that
    none of the read namespaces lists (made elsewhere and passed in), or
    anything that cannot be read all say why not."""
    root = proc_tree(tmp_path / "a", 10, QUIET | {"udp": UDP_5353})
    _fds(root, 10, ["/dev/null", "socket:[81235]"])  # its UDP socket on 5353, listed
    assert forging_unseen([10], root) is None
    assert forging_unseen([10, 11], root) is None  # 11 exited: nothing of it to read
    assert forging_unseen([], root) is None  # no task left: nothing to forge with
    _fds(root, 10, ["socket:[99999]"])  # not in any table it has
    assert forging_unseen([10], root) == "it holds a socket of another network namespace (or of a kind not listed)"
    root = proc_tree(tmp_path / "b", 10, {k: v for k, v in QUIET.items() if k != "udp6"})
    _fds(root, 10, [])
    assert forging_unseen([10], root) == "/proc/10/net/udp6 could not be read (gone)"
    root = proc_tree(tmp_path / "c", 10, QUIET | {"raw": RAW_ONE})
    _fds(root, 10, [])
    assert forging_unseen([10], root) == "it holds a raw socket"
    root = proc_tree(tmp_path / "d", 10, QUIET, host_ns=True)
    assert forging_unseen([10], root) == "it shares the host's network namespace"
    root = proc_tree(tmp_path / "e", 10, QUIET)
    assert forging_unseen([10], root) == "the open files of task 10 cannot be read"  # no fd directory
    # a thread whose namespace link is hidden (its process's main thread
    # exited: /proc/<tid> stays, ns/net does not) is not taken as exited
    (Path(root) / "12").mkdir()
    _fds(root, 10, [])
    assert forging_unseen([10, 12], root) == "the network namespace of task 12 cannot be read"
    (Path(root) / "1" / "ns" / "net").unlink()
    (Path(root) / "self" / "ns" / "net").unlink()
    assert forging_unseen([10], root) == "the host's network namespace cannot be read"


def test_a_table_too_long_to_read_is_not_clean(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sensor.attribution.netmap as netmap

    root = proc_tree(tmp_path, 10, QUIET | {"tcp": UDP_HEAD + UDP_5353 * 50})
    _fds(root, 10, [])
    assert forging_unseen([10], root) is None
    monkeypatch.setattr(netmap, "MAX_TABLE_BYTES", 1000)
    assert forging_unseen([10], root) == "/proc/10/net/tcp is too long to read"
    # not passed over at start either: a namespace filled with sockets must
    # not hide the one that forges
    assert forging_unseen([10], root, strict=False) == "/proc/10/net/tcp is too long to read"


def test_cgroup_tasks_walks_sub_cgroups_within_a_limit(tmp_path: Path) -> None:
    cg = tmp_path / "ctr"
    (cg / "sub").mkdir(parents=True)
    assert cgroup_tasks(str(cg)) is None  # not a cgroup
    (cg / "cgroup.threads").write_text("10\n11\n")
    (cg / "sub" / "cgroup.threads").write_text("12\n")
    assert sorted(cgroup_tasks(str(cg)) or []) == [10, 11, 12]
    assert cgroup_tasks(str(cg), limit=2) is None
    (cg / "sub" / "cgroup.threads").write_text("twelve\n")
    assert cgroup_tasks(str(cg)) is None


def test_netns_shared(tmp_path: Path) -> None:
    """A container's network namespace is its own unless it is the host's or
    a process outside the container is in it (then its loopback reaches a
    possible relay); what cannot be read counts as shared."""

    def world(name: str, others: dict[int, str], host_ns: bool = False) -> str:
        root = proc_tree(tmp_path / name, 10, {}, host_ns=host_ns)
        (Path(root) / "11" / "ns").mkdir(parents=True)
        (Path(root) / "11" / "task").mkdir()
        (Path(root) / "11" / "ns" / "net").symlink_to(Path(root) / ("netns-host" if host_ns else "netns-ctr"))
        for pid, ns in others.items():
            (Path(root) / str(pid) / "ns").mkdir(parents=True)
            (Path(root) / str(pid) / "comm").write_text("envoy\n")
            target = Path(root) / f"netns-{ns}"
            target.touch()
            (Path(root) / str(pid) / "ns" / "net").symlink_to(target)
        return root

    assert netns_shared([10, 11], world("own", {20: "other"})) is None
    pod = world("pod", {20: "ctr"})
    assert netns_shared([10, 11], pod) == "process 20 (envoy), outside the container, is in its network namespace"
    # one /proc pass shared by several containers' checks: the same answers
    index = NetnsIndex(pod)
    assert index.pids and not index.problem
    assert netns_shared([10, 11], pod, index) == netns_shared([10, 11], pod)
    assert "outside the container, is in its network namespace" in (netns_shared([20], pod, index) or "")
    assert NetnsIndex(str(tmp_path / "no-such-proc")).problem.endswith("cannot be listed")
    assert (netns_shared([10, 11], pod, NetnsIndex(str(tmp_path / "no-such-proc"))) or "").endswith("cannot be listed")
    assert netns_shared([10, 11], world("host", {}, host_ns=True)) == "it is the host's network namespace"
    root = world("unread", {})
    (Path(root) / "11" / "ns" / "net").unlink()
    assert netns_shared([10, 11], root) == "the network namespace of task 11 cannot be read"
    assert netns_shared([99], root) == "none of its processes could be read"
