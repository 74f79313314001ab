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

Why sock_diag by hand rather than pyroute2: its DiagSocket calls its own
get_sock_stats a work in progress whose signature will change, and has no
way to open the socket in another network namespace; the one request and
reply used here are four fixed structs.
"""

from __future__ import annotations

import ctypes as ct
import errno
import os
import socket
import struct
import threading
import time
from dataclasses import dataclass

from sensor.attribution.netmap import socket_fds

NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLM_F_REQUEST = 0x1
NLM_F_DUMP = 0x300
NLMSG_ERROR = 2
NLMSG_DONE = 3
UDIAG_SHOW_NAME = 0x1
UDIAG_SHOW_PEER = 0x4
UNIX_DIAG_NAME = 0
UNIX_DIAG_PEER = 2
CLONE_NEWNET = 0x40000000
PIDFD_THREAD = os.O_EXCL  # pidfd_open(2) on a thread, Linux 6.9+
# how long isolate may walk every descriptor on the node for the holder of
# a parked connection's other end (it runs on the sensor's main loop)
NODE_WALK_BUDGET_S = 1.0
# attempts to catch a connection whose holder keeps moving its descriptor
SEVER_TRIES = 64
SYS_PIDFD_GETFD = 438
SOCK_DGRAM = 2

_NLMSGHDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid
_REQ = struct.Struct("=BBHIII2I")  # unix_diag_req
_MSG = struct.Struct("=BBBBI2I")  # unix_diag_msg
_RTA = struct.Struct("=HH")

_libc = ct.CDLL(None, use_errno=True)
_libc.syscall.restype = ct.c_long


@dataclass(frozen=True)
class UnixSocket:
    inode: int
    type: int  # SOCK_STREAM 1, SOCK_DGRAM 2, SOCK_SEQPACKET 5
    peer: int  # the peer's inode, 0 when not connected
    name: str  # its bound name ("@name" when abstract), "" when none


@dataclass(frozen=True)
class Cut:
    inode: int
    peer: int
    peer_name: str  # the peer's bound name when known (docker.sock's path as its daemon bound it)
    holder_pid: int  # whose descriptor was used
    inside: bool  # the container's own end (else the peer's)


def parse(data: bytes) -> tuple[list[UnixSocket], bool]:
    """The unix_diag_msg records of a sock_diag reply; and whether the dump
    is done (NLMSG_DONE seen). Raises OSError for an NLMSG_ERROR."""
    out: list[UnixSocket] = []
    off = 0
    while off + _NLMSGHDR.size <= len(data):
        length, mtype, _flags, _seq, _pid = _NLMSGHDR.unpack_from(data, off)
        if length < _NLMSGHDR.size or off + length > len(data):
            break
        body = off + _NLMSGHDR.size
        if mtype == NLMSG_DONE:
            return out, True
        if mtype == NLMSG_ERROR:
            (err,) = struct.unpack_from("=i", data, body)
            if err:
                raise OSError(-err, os.strerror(-err))
        elif mtype == SOCK_DIAG_BY_FAMILY and length >= _NLMSGHDR.size + _MSG.size:
            _fam, stype, _state, _pad, ino, _c0, _c1 = _MSG.unpack_from(data, body)
            peer, name = 0, ""
            a = body + _MSG.size
            while a + _RTA.size <= off + length:
                alen, atype = _RTA.unpack_from(data, a)
                if alen < _RTA.size or a + alen > off + length:
                    break
                payload = data[a + _RTA.size : a + alen]
                if atype == UNIX_DIAG_PEER and len(payload) >= 4:
                    (peer,) = struct.unpack_from("=I", payload)
                elif atype == UNIX_DIAG_NAME:
                    if payload[:1] == b"\0":
                        name = "@" + payload[1:].decode(errors="replace")
                    else:  # a path, with its NUL when the binder counted it
                        name = payload.split(b"\0", 1)[0].decode(errors="replace")
                a += (alen + 3) & ~3
            out.append(UnixSocket(ino, stype, peer, name))
        off += (length + 3) & ~3
    return out, False


def _netlink_in(netns: str | None) -> socket.socket:
    """A sock_diag netlink socket of that network namespace (a /proc/<pid>/
    ns/net path; None: the sensor's own). A socket belongs to the namespace
    it was created in, so it is made in a thread that enters the namespace
    for that (setns(2) moves only the calling thread) and then ends."""
    if netns is None:
        return socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_SOCK_DIAG)
    got: list[socket.socket | OSError] = []

    def make() -> None:
        try:
            fd = os.open(netns, os.O_RDONLY | os.O_CLOEXEC)
            try:
                if _libc.setns(fd, CLONE_NEWNET) != 0:
                    e = ct.get_errno()
                    raise OSError(e, f"setns {netns}: {os.strerror(e)}")
            finally:
                os.close(fd)
            # this thread stays in that namespace until it ends, just below
            got.append(socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_SOCK_DIAG))
        except OSError as e:
            got.append(e)

    t = threading.Thread(target=make, name="sluice-netns", daemon=True)
    t.start()
    t.join()
    r = got[0]
    if isinstance(r, OSError):
        raise r
    return r


def dump(netns: str | None) -> dict[int, UnixSocket]:
    """Every unix socket of a network namespace, by inode."""
    s = _netlink_in(netns)
    try:
        req = _REQ.pack(socket.AF_UNIX, 0, 0, 0xFFFFFFFF, 0, UDIAG_SHOW_NAME | UDIAG_SHOW_PEER, 0xFFFFFFFF, 0xFFFFFFFF)
        hdr = _NLMSGHDR.pack(_NLMSGHDR.size + len(req), SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST | NLM_F_DUMP, 1, 0)
        s.sendto(hdr + req, (0, 0))
        out: dict[int, UnixSocket] = {}
        while True:
            socks, done = parse(s.recv(1 << 16))
            out.update((u.inode, u) for u in socks)
            if done:
                return out
    finally:
        s.close()


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


def _other_netns(netns: str) -> bool:
    """Whether that network namespace is not the sensor's (the host's)."""
    try:
        return os.stat(netns).st_ino != os.stat("/proc/self/ns/net").st_ino
    except OSError:
        return False


def _all_processes(proc: str) -> list[int]:
    """Every process on the node: its threads share its descriptor table,
    so one read each (a walk of every thread read dockerd's table once per
    thread and ran out of its budget under load)."""
    return [int(n) for n in os.listdir(proc) if n.isdigit()]


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
    socks = dump(netns)
    mine = set(tasks)
    holding, _ = _fd_holders(tasks, None, proc)  # every socket the container holds
    names = {i: u.name for i, u in socks.items() if u.name}
    own_ns = not shared and _other_netns(netns)
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
    done: list[Cut] = []
    failed: list[str] = []
    pairs: set[frozenset[int]] = set()
    parked: list[UnixSocket] = []
    retry: list[tuple[UnixSocket, list[str]]] = []  # the container's end could not be caught
    for u in sorted(socks.values(), key=lambda x: x.inode):
        if not u.peer or frozenset((u.inode, u.peer)) in pairs:
            continue
        pairs.add(frozenset((u.inode, u.peer)))
        ends = (u.inode, u.peer)
        held = [e for e in ends if e in inside]
        if not held:
            if not shared and u.type != SOCK_DGRAM and u.peer in socks:
                parked.append(u)
            continue
        if len(held) == 2 and u.peer in socks:
            continue  # both ends the container's: its own IPC
        end = u.inode if u.type == SOCK_DGRAM else held[0]
        if end not in inside:
            continue  # a datagram socket is disconnected only through its own (connected) end
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
    if parked:
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
