"""Finding the holders of packet sockets from /proc (a fake /proc tree:
the parsing and matching are pure; the kill is tested on real containers in
tests/adversarial/test_raw_sockets.py)."""

from __future__ import annotations

import os
from pathlib import Path

from sensor.attribution.netmap import SOCKET_TABLES, cgroup_tasks, socket_inodes, table_inodes
from sensor.response.packetsockets import holders

NET_PACKET = """sk               RefCnt Type Proto  Iface R Rmem   User   Inode
ffff8881033d6000 3      3    0003   2     1 0      0      91234
ffff8881033d7000 3      2    0608   2     1 0      0      91240
"""


def _proc(root: Path, pid: int, netns: str, packet_table: str, fds: dict[int, str], comm: str = "arping") -> None:
    d = root / str(pid)
    (d / "fd").mkdir(parents=True)
    (d / "ns").mkdir()
    (d / "net").mkdir()
    ns = root / f"netns-{netns}"
    if not ns.exists():
        ns.write_text("")
    os.link(ns, d / "ns" / "net")  # same inode: same network namespace
    (d / "net" / "packet").write_text(packet_table)
    (d / "comm").write_text(comm + "\n")
    for fd, target in fds.items():
        os.symlink(target, d / "fd" / str(fd))


def parse_packet_inodes(text: str) -> set[int]:
    return table_inodes(text, SOCKET_TABLES["packet"])


def test_packet_table_inodes() -> None:
    assert parse_packet_inodes(NET_PACKET) == {91234, 91240}
    assert parse_packet_inodes(NET_PACKET.splitlines()[0]) == set()
    assert parse_packet_inodes("") == set()


def test_holders_are_the_processes_with_a_packet_socket_of_their_netns(tmp_path: Path) -> None:
    _proc(tmp_path, 10, "a", NET_PACKET, {0: "/dev/null", 3: "socket:[91234]", 4: "socket:[777]"})
    _proc(tmp_path, 11, "a", NET_PACKET, {3: "socket:[777]", 5: "pipe:[91240]"}, comm="sh")
    # a socket inode that is a packet socket in another netns only
    _proc(tmp_path, 12, "b", "sk RefCnt Type Proto Iface R Rmem User Inode\n", {3: "socket:[91240]"})
    assert socket_inodes(10, str(tmp_path)) == {91234, 777}
    assert socket_inodes(99, str(tmp_path)) is None  # gone
    found = holders([10, 11, 12, 99], str(tmp_path))
    assert [(h.pid, h.comm, h.inodes) for h in found] == [(10, "arping", (91234,))]


def test_every_thread_of_the_cgroups_is_a_candidate(tmp_path: Path) -> None:
    """cgroup.threads, not cgroup.procs: a process whose main thread exited
    is seen (and killed) only through its other threads."""
    (tmp_path / "sub").mkdir()
    (tmp_path / "cgroup.threads").write_text("1\n7\n8\n")
    (tmp_path / "sub" / "cgroup.threads").write_text("9\n")
    assert sorted(cgroup_tasks(str(tmp_path)) or []) == [1, 7, 8, 9]


def test_a_process_is_reported_once_by_its_thread_group(tmp_path: Path) -> None:
    """Threads 20 and 21 of process 20 (and 22, a thread of 20 whose main
    thread's links are gone) share one socket table: one holder, pid 20."""
    for tid in (21, 22):
        _proc(tmp_path, tid, "a", NET_PACKET, {3: "socket:[91234]"})
        (tmp_path / str(tid) / "status").write_text(f"Name:\tarping\nTgid:\t20\nPid:\t{tid}\n")
    found = holders([21, 22], str(tmp_path))
    assert [(h.pid, h.inodes) for h in found] == [(20, (91234,))]
