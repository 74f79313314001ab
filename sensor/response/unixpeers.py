"""Unix connections from an isolated container to a peer outside it, cut
when the isolation starts.

The kernel refuses an isolated container's new unix connects
(sensor/kernel/unixconnect.py), but a connection made before stays open: a
process that connected to a mounted docker.sock before the isolation could
still `docker run` through it afterwards. `cut` ends such connections:

- The sockets come from the kernel's sock_diag (the dump `ss -x` reads)
  of the container's network namespace, each with its peer's inode, and
  who holds each end comes from /proc/<pid>/fd across the node. Both ends
  of a stream connection live in the connecting socket's namespace (the
  kernel makes the accepted socket there), so the namespace alone does
  not say who is outside: a connection is the container's when one of its
  processes holds an end, and leads outside when a process outside the
  container holds the other (or its peer is a socket of another namespace:
  a daemon's bound datagram socket).
- The container's ends that live in the host's namespace are looked at
  too: a host process that connected to its listener on a shared volume
  made the accepted socket there (the connecting socket's namespace).
- In a namespace of its own, an end held by no process is the container's
  too: a descriptor parked in flight in an SCM_RIGHTS message (the trick a
  review used to hide a packet socket from the packet-socket sweep). In a
  shared namespace (the host's, a pod's) a parked end cannot be told from
  anyone else's and is not cut.
- A connection is cut through a duplicate of a descriptor taken with
  pidfd_getfd(2): the container's own end when one of its processes holds
  it, else the peer's end from whoever holds that on the node. A stream or
  seqpacket connection is shut down both ways (the other end reads EOF); a
  connected datagram socket is disconnected (AF_UNSPEC connect), so its
  next send needs a connect, which the kernel refuses.

(sock_diag: sensor/attribution/unixdiag.py.)
"""

from __future__ import annotations

import ctypes as ct
import errno
import os
import socket
import struct
import time
from dataclasses import dataclass

from sensor.attribution.netmap import socket_fds
from sensor.attribution.unixdiag import SHUTDOWN_MASK, UnixSocket, dump, same_netns

PIDFD_THREAD = os.O_EXCL  # pidfd_open(2) on a thread, Linux 6.9+
# how long isolate may walk every descriptor on the node for the holder of
# a parked connection's other end (it runs on the sensor's main loop)
NODE_WALK_BUDGET_S = 1.0
# attempts to catch a connection whose holder keeps moving its descriptor
SEVER_TRIES = 64
SYS_PIDFD_GETFD = 438
SOCK_DGRAM = 2

_libc = ct.CDLL(None, use_errno=True)
_libc.syscall.restype = ct.c_long


@dataclass(frozen=True)
class Cut:
    inode: int
    peer: int
    peer_name: str  # the peer's bound name when known (docker.sock's path as its daemon bound it)
    holder_pid: int  # whose descriptor was used
    inside: bool  # the container's own end (else the peer's)


def _fd_holders(
    tasks: list[int], inodes: set[int] | None, proc: str, budget_s: float | None = None
) -> tuple[dict[int, list[tuple[int, int]]], bool]:
    """socket inode -> (task, fd) of these tasks holding it (of `inodes`
    only, when given), and whether the walk finished within budget_s. Each
    task's own descriptor table is read (/proc/<tid>/fd: a thread whose
    process's main thread exited has one only there)."""
    out: dict[int, list[tuple[int, int]]] = {}
    deadline = None if budget_s is None else time.monotonic() + budget_s
    for tid in tasks:
        if deadline is not None and time.monotonic() > deadline:
            return out, False
        for fd, ino in socket_fds(tid, proc) or ():
            if inodes is None or ino in inodes:
                out.setdefault(ino, []).append((tid, fd))
    return out, True


def _pidfd(tid: int) -> int:
    """A pidfd for the task itself (PIDFD_THREAD, Linux 6.9+: a thread whose
    process's main thread exited holds its descriptors there), else for its
    process."""
    try:
        return os.pidfd_open(tid, PIDFD_THREAD)
    except OSError:
        return os.pidfd_open(tid)


def _sever(tid: int, fd: int, inode: int, stype: int) -> None:
    """Cut the connection of task tid's descriptor fd through a duplicate
    of it (pidfd_getfd: same open file, same socket), after checking the
    duplicate is that socket: the holder may have moved it to another
    number (and put a decoy, or a host daemon's new client, at this one)
    since the walk."""
    pidfd = _pidfd(tid)
    try:
        dup = int(_libc.syscall(SYS_PIDFD_GETFD, pidfd, fd, 0))
        if dup < 0:
            e = ct.get_errno()
            raise OSError(e, f"pidfd_getfd {tid}/{fd}: {os.strerror(e)}")
    finally:
        os.close(pidfd)
    try:
        if os.fstat(dup).st_ino != inode:
            raise OSError(errno.ESTALE, f"descriptor {tid}/{fd} is no longer socket {inode}")
        if stype == SOCK_DGRAM:
            unspec = struct.pack("=H14x", socket.AF_UNSPEC)
            if _libc.connect(dup, unspec, len(unspec)) != 0:
                e = ct.get_errno()
                raise OSError(e, f"disconnect {tid}/{fd}: {os.strerror(e)}")
        elif _libc.shutdown(dup, socket.SHUT_RDWR) != 0:
            e = ct.get_errno()
            if e != errno.ENOTCONN:  # (the peer already went away)
                raise OSError(e, f"shutdown {tid}/{fd}: {os.strerror(e)}")
    finally:
        os.close(dup)


def _all_processes(proc: str) -> list[int]:
    """Every process on the node: its threads share its descriptor table,
    so one read each (a walk of every thread read dockerd's table once per
    thread and ran out of its budget under load)."""
    return [int(n) for n in os.listdir(proc) if n.isdigit()]


@dataclass
class _Plan:
    """What cut() found: the container's ends and their holders, socket
    names, the connections to cut through the container's end, and those
    parked in flight (neither end held by the container)."""

    inside: dict[int, list[tuple[int, int]]]
    names: dict[int, str]
    through: list[tuple[UnixSocket, int]]
    parked: list[UnixSocket]


def _plan(tasks: list[int], netns: str, shared: bool, proc: str) -> _Plan:
    socks = dump(netns)
    holding, _ = _fd_holders(tasks, None, proc)  # every socket the container holds
    names = {i: u.name for i, u in socks.items() if u.name}
    own_ns = not shared and not same_netns(netns)
    if any(u.peer and u.peer not in socks for u in socks.values()) or (own_ns and any(i not in socks for i in holding)):
        try:  # a peer in another namespace (the sensor's: the host's): its name
            host = dump(None)
        except OSError:
            host = {}
        names.update((i, u.name) for i, u in host.items() if u.name)
        if own_ns:
            # the container's ends that live in the host's namespace: a
            # host process connected to its listener on a shared volume
            # (the accepted socket is made in the connecting socket's
            # namespace), or a socket handed to it
            into = {i: host[i] for i in holding if i in host and i not in socks and host[i].peer}
            socks.update(into)
            socks.update((u.peer, host[u.peer]) for u in into.values() if u.peer in host)
    inside = {i: h for i, h in holding.items() if i in socks}
    pairs: set[frozenset[int]] = set()
    through: list[tuple[UnixSocket, int]] = []
    parked: list[UnixSocket] = []
    for u in sorted(socks.values(), key=lambda x: x.inode):
        # a datagram socket is its own: each connected one is disconnected
        # through itself (review: keyed by the pair, the container's end of a
        # socketpair was skipped when the outside end had the lower inode)
        key = frozenset((u.inode,)) if u.type == SOCK_DGRAM else frozenset((u.inode, u.peer))
        if not u.peer or key in pairs:
            continue
        pairs.add(key)
        held = [e for e in (u.inode, u.peer) if e in inside]
        if not held:
            if not shared and u.type != SOCK_DGRAM and u.peer in socks:
                parked.append(u)
            continue
        if len(held) == 2 and u.peer in socks:
            continue  # both ends the container's: its own IPC
        end = u.inode if u.type == SOCK_DGRAM else held[0]
        mine = socks.get(end)
        if mine is not None and mine.shutdown & SHUTDOWN_MASK == SHUTDOWN_MASK:
            continue  # cut already (shut both ways; the descriptors stay open): not again every window
        if end in inside:  # (a datagram socket is disconnected only through its own, connected, end)
            through.append((u, end))
    return _Plan(inside, names, through, parked)


def pending(tasks: list[int], netns: str, shared: bool, proc: str = "/proc") -> bool:
    """Would cut() find a connection to cut through the container's own end?
    Read only, nothing frozen, no walk of the node (the per-window sweep
    asks first, and freezes the container only when there is one)."""
    return bool(_plan(tasks, netns, shared, proc).through)


def cut(
    tasks: list[int], netns: str, shared: bool, proc: str = "/proc", budget_s: float = NODE_WALK_BUDGET_S
) -> tuple[list[Cut], list[str]]:
    """End the unix connections of a container (its threads `tasks`, its
    network namespace `netns` as /proc/<pid>/ns/net, `shared` when other
    processes are in it) with a peer outside it. Returns what was cut and
    what could not be (one line each).

    Both ends of a stream connection live in the connecting socket's
    namespace (the kernel makes the accepted socket there), so the
    namespace alone does not say who is outside. A connection one of whose
    ends a task of the container holds and the other not (or whose peer is
    a socket of another namespace: a daemon's bound datagram socket) is cut
    through the container's end. In a namespace of its own, a connection
    neither end of which the container holds is cut when one end is held by
    no task at all (parked in flight by the container) and the other by a
    process outside: through that end, found by a walk of the node's
    descriptors bounded by budget_s (the main loop waits for it)."""
    plan = _plan(tasks, netns, shared, proc)
    inside, names = plan.inside, plan.names
    mine = set(tasks)
    done: list[Cut] = []
    failed: list[str] = []
    parked = plan.parked
    retry: list[tuple[UnixSocket, list[str]]] = []  # the container's end could not be caught
    for u, end in plan.through:
        lines: list[str] = []
        if not _try_cut(u, end, inside[end], names, done, lines, True, proc):
            if u.type == SOCK_DGRAM:
                failed += lines
            else:  # its holder kept moving it: the other end, outside, ends it too
                retry.append((u, lines))
    for u, lines in retry:
        other = u.peer if u.inode in inside else u.inode
        holders, finished = _fd_holders(_all_processes(proc), {other}, proc, budget_s)
        outside = [h for h in holders.get(other, []) if h[0] not in mine]
        if not outside:
            why = f"ran out of its {budget_s} s" if not finished else "found no holder outside the container"
            lines.append(f"its other end, {other}: the walk of the node's descriptors {why}")
        if not (outside and _try_cut(u, other, outside, names, done, lines, False, proc)):
            failed.append("; then ".join(lines))  # one line per connection not cut
    if parked and budget_s > 0:  # (0: the per-window sweep, which leaves parked sockets to the isolation's)
        want = {e for u in parked for e in (u.inode, u.peer)}
        everyone, finished = _fd_holders(_all_processes(proc), want, proc, budget_s)
        for u in parked:
            by_end = {e: everyone.get(e, []) for e in (u.inode, u.peer)}
            ours = [(e, h) for e, hs in by_end.items() for h in hs if h[0] in mine]
            if ours:
                # the container's end after all: its holder moved it while
                # the first walk read (dup2 from number to number)
                _try_cut(u, ours[0][0], [h for _e, h in ours], names, done, failed, True, proc)
                continue
            if all(by_end.values()):
                continue  # both ends held outside: not the container's
            if not finished:
                failed.append(f"socket {u.inode}: the walk of the node's descriptors ran out of its {budget_s} s")
                continue
            if not any(by_end.values()):
                failed.append(f"socket {u.inode} (peer {u.peer}): no task holds either end")
                continue
            end = next(e for e, h in by_end.items() if h)
            _try_cut(u, end, by_end[end], names, done, failed, False, proc)
    return done, failed


def _try_cut(
    u: UnixSocket,
    end: int,
    holders: list[tuple[int, int]],
    names: dict[int, str],
    done: list[Cut],
    failed: list[str],
    container_end: bool,
    proc: str = "/proc",
) -> bool:
    """Sever one connection through `end` (socket inode) by one of its
    holders whose descriptor still is that socket. A holder that moves it
    between descriptor numbers (dup2, decoys at the old number: review) is
    read again, up to SEVER_TRIES times. Returns whether it was cut (else a
    line in `failed`)."""
    # the named end: a daemon's accepted socket carries its listener's path
    peer_name = names.get(u.peer) or names.get(u.inode, "")
    errors: list[str] = []
    todo = list(holders)
    tasks = sorted({t for t, _fd in holders})
    for _ in range(SEVER_TRIES):
        if not todo:
            todo = _fd_holders(tasks, {end}, proc)[0].get(end, [])
            if not todo:
                break
        tid, fd = todo.pop(0)
        try:
            _sever(tid, fd, end, u.type)
        except OSError as e:
            errors.append(e.strerror or str(e))
            continue
        done.append(Cut(u.inode, u.peer, peer_name, tid, container_end))
        return True
    failed.append(f"socket {u.inode} (peer {peer_name or u.peer}): {'; '.join(errors[-2:]) or 'no holder left'}")
    return False
