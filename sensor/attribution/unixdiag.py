"""The unix sockets of a network namespace, from the kernel's sock_diag
(the dump `ss -x` reads): each socket's inode, type, bound name and its
peer's inode. Both ends of a stream connection live in the connecting
socket's namespace, and a daemon's accepted end carries its listener's
path as its name, so one dump of a client's namespace says which daemon
socket each of its connections leads to.

Read by the containment sweep (sensor/response/unixpeers.py: which
connections of an isolated container to cut) and by the pipeline at a
container's start (which running containers hold a connection open to
the runtime's socket: SL-C2-009's link).

Why sock_diag by hand rather than pyroute2: its DiagSocket calls its own
get_sock_stats a work in progress whose signature will change, and has no
way to open the socket in another network namespace; the one request and
reply used here are four fixed structs.
"""

from __future__ import annotations

import ctypes as ct
import os
import socket
import struct
import threading
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
UNIX_DIAG_SHUTDOWN = 6  # (sent with every socket)
SHUTDOWN_MASK = 3  # RCV_SHUTDOWN | SEND_SHUTDOWN
CLONE_NEWNET = 0x40000000

_NLMSGHDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid
_REQ = struct.Struct("=BBHIII2I")  # unix_diag_req
_MSG = struct.Struct("=BBBBI2I")  # unix_diag_msg
_RTA = struct.Struct("=HH")

_libc = ct.CDLL(None, use_errno=True)


@dataclass(frozen=True)
class UnixSocket:
    inode: int
    type: int  # SOCK_STREAM 1, SOCK_DGRAM 2, SOCK_SEQPACKET 5
    peer: int  # the peer's inode, 0 when not connected
    name: str  # its bound name ("@name" when abstract), "" when none
    shutdown: int = 0  # its sk_shutdown: SHUTDOWN_MASK when both directions are shut (a cut connection)


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
            peer, name, shut = 0, "", 0
            a = body + _MSG.size
            while a + _RTA.size <= off + length:
                alen, atype = _RTA.unpack_from(data, a)
                if alen < _RTA.size or a + alen > off + length:
                    break
                payload = data[a + _RTA.size : a + alen]
                if atype == UNIX_DIAG_PEER and len(payload) >= 4:
                    (peer,) = struct.unpack_from("=I", payload)
                elif atype == UNIX_DIAG_SHUTDOWN and len(payload) >= 1:
                    shut = payload[0]
                elif atype == UNIX_DIAG_NAME:
                    if payload[:1] == b"\0":
                        name = "@" + payload[1:].decode(errors="replace")
                    else:  # a path, with its NUL when the binder counted it
                        name = payload.split(b"\0", 1)[0].decode(errors="replace")
                a += (alen + 3) & ~3
            out.append(UnixSocket(ino, stype, peer, name, shut))
        off += (length + 3) & ~3
    return out, False


def _netlink_in(netns: str | None) -> socket.socket:
    """A sock_diag netlink socket of that network namespace (a /proc/<pid>/
    ns/net path; None: the sensor's own). A socket belongs to the namespace
    it was created in, so it is made in a thread that enters the namespace
    for that (setns(2) moves only the calling thread) and then ends."""
    if netns is None or same_netns(netns):
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


def same_netns(netns: str) -> bool:
    """The sensor's own namespace: no thread to enter it (nor the
    privilege setns(2) asks for)."""
    try:
        return os.stat(netns).st_ino == os.stat("/proc/self/ns/net").st_ino
    except OSError:
        return False


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


def connected_peers(tasks: list[int], proc: str = "/proc") -> list[tuple[int, str]]:
    """(task, its peer's bound name) for each connected unix socket these
    tasks hold whose peer has a name: a connection to a daemon (its
    accepted end carries the listener's path, as the daemon bound it,
    whatever the client called it). One dump per network namespace; a
    task gone or a namespace unreadable is skipped."""
    out: list[tuple[int, str]] = []
    by_ns: dict[int, dict[int, UnixSocket] | None] = {}
    for t in tasks:
        try:
            ns = os.stat(f"{proc}/{t}/ns/net").st_ino
        except OSError:
            continue
        if ns not in by_ns:
            try:
                by_ns[ns] = dump(f"{proc}/{t}/ns/net")
            except OSError:
                by_ns[ns] = None
        socks = by_ns[ns]
        if not socks:
            continue
        for _fd, ino in socket_fds(t, proc) or ():
            u = socks.get(ino)
            peer = socks.get(u.peer) if u is not None and u.peer else None
            if peer is not None and peer.name and not peer.name.startswith("@"):
                out.append((t, peer.name))
    return out
