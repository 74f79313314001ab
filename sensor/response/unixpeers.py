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
from dataclasses import dataclass

from sensor.attribution.netmap import thread_group

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


def _holders(inodes: set[int], proc: str) -> dict[int, list[tuple[int, int]]]:
    """socket inode -> (pid, fd) of every process on the node holding it,
    for these inodes (one walk of every process's descriptors)."""
    out: dict[int, list[tuple[int, int]]] = {}
    for name in os.listdir(proc):
        if not name.isdigit():
            continue
        d = f"{proc}/{name}/fd"
        try:
            fds = os.listdir(d)
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(f"{d}/{fd}")
            except OSError:
                continue
            if target.startswith("socket:[") and target.endswith("]"):
                ino = int(target[8:-1])
                if ino in inodes:
                    out.setdefault(ino, []).append((int(name), int(fd)))
    return out


def _sever(pid: int, fd: int, stype: int) -> None:
    """Cut the connection of process pid's descriptor fd through a
    duplicate of it (pidfd_getfd: same open file, same socket)."""
    pidfd = os.pidfd_open(pid)
    try:
        dup = int(_libc.syscall(SYS_PIDFD_GETFD, pidfd, fd, 0))
        if dup < 0:
            e = ct.get_errno()
            raise OSError(e, f"pidfd_getfd {pid}/{fd}: {os.strerror(e)}")
    finally:
        os.close(pidfd)
    if stype == SOCK_DGRAM:
        try:
            unspec = struct.pack("=H14x", socket.AF_UNSPEC)
            if _libc.connect(dup, unspec, len(unspec)) != 0:
                e = ct.get_errno()
                raise OSError(e, f"disconnect {pid}/{fd}: {os.strerror(e)}")
        finally:
            os.close(dup)
        return
    s = socket.socket(fileno=dup)
    try:
        s.shutdown(socket.SHUT_RDWR)
    except OSError as e:
        if e.errno != errno.ENOTCONN:  # the peer already went away
            raise
    finally:
        s.close()


def cut(pids: list[int], netns: str, shared: bool, proc: str = "/proc") -> tuple[list[Cut], list[str]]:
    """End the unix connections of a container (its threads `pids`, its
    network namespace `netns` as /proc/<pid>/ns/net, `shared` when other
    processes are in it) with a peer outside it. Returns what was cut and
    what could not be (one line each).

    Both ends of a stream connection live in the connecting socket's
    namespace (the kernel makes the accepted socket there), so the
    namespace alone does not say who is outside: a connection is the
    container's when one of its processes holds an end (or, in a namespace
    of its own, when an end is held by no process: parked in flight), and
    it leads outside when a process outside the container holds an end, or
    its peer is a socket of another namespace (a daemon's bound datagram
    socket)."""
    socks = dump(netns)
    inside = {thread_group(t, proc) for t in pids}
    peers = {u.peer for u in socks.values() if u.peer}
    holders = _holders(set(socks) | peers, proc)
    names = {i: u.name for i, u in socks.items() if u.name}
    if any(p not in socks for p in peers):
        try:  # a peer in another namespace (the sensor's: the host's): its name
            names.update((i, u.name) for i, u in dump(None).items() if u.name)
        except OSError:
            pass
    done: list[Cut] = []
    failed: list[str] = []
    pairs: set[frozenset[int]] = set()
    for u in sorted(socks.values(), key=lambda x: x.inode):
        if not u.peer or frozenset((u.inode, u.peer)) in pairs:
            continue
        pairs.add(frozenset((u.inode, u.peer)))
        mine = [h for h in holders.get(u.inode, []) if h[0] in inside]
        ends = (u.inode, u.peer)
        held_in = [(e, h) for e in ends for h in holders.get(e, []) if h[0] in inside]
        outside = u.peer not in socks or any(h[0] not in inside for e in ends for h in holders.get(e, []))
        parked = not shared and any(e in socks and not holders.get(e) for e in ends)
        if not outside or not (held_in or parked):
            continue
        stype = u.type
        if stype == SOCK_DGRAM:
            # only the connected end (this one) can be disconnected
            where = mine[0] if mine else None
        elif held_in:
            where = held_in[0][1]
        else:
            # the container's end is parked: the other end, shut down, ends it too
            where = next((h for e in ends for h in holders.get(e, [])), None)
        # the named end: a daemon's accepted socket carries its listener's path
        peer_name = names.get(u.peer) or names.get(u.inode, "")
        what = f"socket {u.inode} (peer {peer_name or u.peer})"
        if where is None:
            failed.append(f"{what}: no process holds an end it can be cut through")
            continue
        try:
            _sever(where[0], where[1], stype)
        except OSError as e:
            failed.append(f"{what}: {e.strerror or e}")
            continue
        done.append(Cut(u.inode, u.peer, peer_name, where[0], where[0] in inside))
    return done, failed
