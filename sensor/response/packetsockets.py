"""AF_PACKET sockets of contained containers, stopped from user space.

Without the BPF LSM socket hook, the kernel side (bpf/socket.bpf.c
sl_packet_guard, bpf/packet.bpf.c) kills a contained process when it creates
a packet socket, or after it sends on one. A process that already holds a
packet socket when its container is contained would only be killed after
its next send, so that frame would leave: `sweep` finds such holders when
containment starts and kills them from here (the container's PID 1
included: a SIGKILL from the host's PID namespace reaches it).

A packet socket is found the way `ss -0p` finds one, from /proc: each
network namespace lists its packet sockets by inode in /proc/<pid>/net/packet,
and /proc/<pid>/fd names the socket inodes a process holds
("socket:[<inode>]"). Every thread of the contained container's cgroups is
read (a process whose main thread exited is seen only through its other
threads, and a kill(2) to any of them ends it), so the cost is the
container's thread and descriptor count.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterable
from dataclasses import dataclass

from sensor.attribution.netmap import SOCKET_TABLES, cgroup_tasks, socket_inodes, table_inodes, thread_group
from sensor.text import safe_text


@dataclass(frozen=True)
class Holder:
    pid: int
    comm: str
    inodes: tuple[int, ...]


def _comm(pid: int, proc: str) -> str:
    try:
        with open(f"{proc}/{pid}/comm", "rb") as f:
            return safe_text(f.read().strip())
    except OSError:
        return ""


def holders(pids: Iterable[int], proc: str = "/proc") -> list[Holder]:
    """The processes among `pids` (threads: each process once, by its
    thread group id) that hold a packet socket."""
    by_netns: dict[int, set[int]] = {}  # netns inode -> its packet socket inodes
    out = []
    seen: set[int] = set()
    for tid in pids:
        pid = thread_group(tid, proc)
        if pid in seen:
            continue
        try:
            # the thread's own links: a process whose main thread exited
            # has none left under its process id
            netns = os.stat(f"{proc}/{tid}/ns/net").st_ino
            if netns not in by_netns:
                with open(f"{proc}/{tid}/net/packet") as f:
                    by_netns[netns] = table_inodes(f.read(), SOCKET_TABLES["packet"])
        except OSError:
            continue  # gone
        if not by_netns[netns]:
            continue
        held = (socket_inodes(tid, proc) or set()) & by_netns[netns]
        if held:
            seen.add(pid)
            out.append(Holder(pid, _comm(tid, proc), tuple(sorted(held))))
    return out


def sweep(cgroup_dirs: Iterable[str], proc: str = "/proc") -> list[Holder]:
    """Kill every process of these cgroups that holds a packet socket;
    returns those signalled."""
    killed = []
    for h in holders([t for d in cgroup_dirs for t in cgroup_tasks(d) or ()], proc):
        try:
            os.kill(h.pid, signal.SIGKILL)
        except OSError:
            continue  # exited meanwhile
        killed.append(h)
    return killed
