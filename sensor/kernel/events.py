"""Kernel-to-user event layouts and their decoding.

Keep in sync with bpf/sluice_events.h: tests/unit/test_event_layout.py compiles
that header and checks every size and offset against the ctypes mirrors here.

Decoding dispatches on the common header's ``type`` through a registry of
decoders (one per event type), Tetragon-style, rather than an if-chain.
"""

from __future__ import annotations

import ctypes as ct
import ipaddress
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

from sensor.text import safe_cstr, safe_text

COMM_LEN = 16
PATH_LEN = 256
EXEC_ARGV_LEN = 256  # SL_EXEC_ARGV_LEN
SAMPLE_MAX = 256
FIRST_MAX = 2048
DNS_MAX = 512
ARGS_LEN = 512

EV_EXEC = 1
EV_EXIT = 2
EV_CONNECT = 3
EV_SAMPLE = 4
EV_CGROUP = 5
EV_EXEC_ARGS = 6
EV_DNS = 7
EV_LISTEN = 8
EV_ACCEPT = 9
EV_UNIX_CONNECT = 10
EV_SOCKET = 11
EV_QUOTA = 12
EV_UNIX_INTO = 13
EV_TYPE_MAX = 14
UNIX_PATH_LEN = 108

EVENT_NAMES = {
    EV_EXEC: "exec",
    EV_EXIT: "exit",
    EV_CONNECT: "connect",
    EV_SAMPLE: "sample",
    EV_CGROUP: "cgroup",
    EV_EXEC_ARGS: "exec_args",
    EV_DNS: "dns",
    EV_LISTEN: "listen",
    EV_ACCEPT: "accept",
    EV_UNIX_CONNECT: "unix_connect",
    EV_SOCKET: "socket",
    EV_QUOTA: "quota",
    EV_UNIX_INTO: "unix_into",
}

CONNECT_OP_CONNECT = 1
CONNECT_OP_SENDMSG = 2
CGROUP_MKDIR = 1
CGROUP_RMDIR = 2
SAMPLE_F_SOCK_START = 0x1
SAMPLE_F_NO_SOCK = 0x2
SAMPLE_F_FIRST = 0x4
DNS_F_TRUNCATED = 0x1
SOCKET_HOOK_LSM = 1
SOCKET_HOOK_CGROUP = 2
SOCKET_HOOK_SYSCALL = 3
SOCKET_HOOK_SEND = 4
QUOTA_FLOWS = 1
QUOTA_EVENTS = 2
FLOW_F_OVER_QUOTA = 0x1
LISTEN_OP_BIND = 1
LISTEN_OP_LISTEN = 2
EXEC_GPPID_MASK = 0x7FFFFFFF
EXEC_PARENT_EXECD = 0x80000000
UNIX_INTO_CONNECT = 1
UNIX_INTO_SEND = 2
UNIX_OUT_SEND = 3

# enum sl_stat
STAT_SUBMITTED = 0
STAT_DROPPED = EV_TYPE_MAX
STAT_FLOW_MAP_FULL = 2 * EV_TYPE_MAX
STAT_FLOW_BYTES_UNTRACKED = STAT_FLOW_MAP_FULL + 1
STAT_PARENT_MAP_FULL = STAT_FLOW_MAP_FULL + 2
STAT_UDP_SEND_DEDUPED = STAT_FLOW_MAP_FULL + 3
STAT_EGRESS_PACKETS = STAT_FLOW_MAP_FULL + 4
STAT_DNS_TRUNCATED = STAT_FLOW_MAP_FULL + 5
STAT_DNS_CAPPED = STAT_FLOW_MAP_FULL + 6
STAT_EXECD_MAP_FULL = STAT_FLOW_MAP_FULL + 7
STAT_IPV4_FRAGMENTS = STAT_FLOW_MAP_FULL + 8
STAT_CONTAIN_FOLLOWED = STAT_FLOW_MAP_FULL + 9
STAT_CONTAIN_MAP_FULL = STAT_FLOW_MAP_FULL + 10
STAT_SOCKETS_DENIED = STAT_FLOW_MAP_FULL + 11
STAT_SOCKET_DEDUPED = STAT_FLOW_MAP_FULL + 12
STAT_FLOW_QUOTA_REFUSED = STAT_FLOW_MAP_FULL + 13
STAT_EVENT_QUOTA_REFUSED = STAT_FLOW_MAP_FULL + 14
STAT_ACCEPT_DEDUPED = STAT_FLOW_MAP_FULL + 15
STAT_ACCEPT_NO_LISTENER = STAT_FLOW_MAP_FULL + 16
STAT_PACKET_KILLED = STAT_FLOW_MAP_FULL + 17
STAT_SOCK_STATE_REFUSED = STAT_FLOW_MAP_FULL + 18
STAT_UNIX_DENIED = STAT_FLOW_MAP_FULL + 19
STAT_UNIX_INTO_DENIED = STAT_FLOW_MAP_FULL + 20
STAT_MAX = STAT_FLOW_MAP_FULL + 21


class EventHeader(ct.Structure):
    _fields_ = [
        ("type", ct.c_uint32),
        ("pid", ct.c_uint32),
        ("ktime_ns", ct.c_uint64),
        ("cgroup_id", ct.c_uint64),
    ]


class ExecEventC(ct.Structure):
    _fields_ = [
        ("hdr", EventHeader),
        ("ppid", ct.c_uint32),
        ("old_pid", ct.c_uint32),
        ("comm", ct.c_char * COMM_LEN),
        ("filename", ct.c_char * PATH_LEN),
        ("stdin_mode", ct.c_uint16),
        ("argv_len", ct.c_uint16),
        ("gppid", ct.c_uint32),
        ("argv", ct.c_uint8 * EXEC_ARGV_LEN),
    ]


class ExitEventC(ct.Structure):
    _fields_ = [("hdr", EventHeader), ("comm", ct.c_char * COMM_LEN)]


class ExecArgsEventC(ct.Structure):
    _fields_ = [
        ("hdr", EventHeader),
        ("argc", ct.c_uint32),
        ("args_len", ct.c_uint32),
        # uint8, not c_char: ctypes cuts a c_char array at its first NUL
        ("args", ct.c_uint8 * ARGS_LEN),
    ]


class ConnectEventC(ct.Structure):
    _fields_ = [
        ("hdr", EventHeader),
        ("sock_cookie", ct.c_uint64),
        ("daddr", ct.c_uint8 * 16),
        ("dport", ct.c_uint16),
        ("protocol", ct.c_uint8),
        ("op", ct.c_uint8),
        ("family", ct.c_uint32),
        ("comm", ct.c_char * COMM_LEN),
    ]


class SampleEventC(ct.Structure):
    _fields_ = [
        ("hdr", EventHeader),
        ("sock_cookie", ct.c_uint64),
        ("daddr", ct.c_uint8 * 16),
        ("dport", ct.c_uint16),
        ("protocol", ct.c_uint8),
        ("flags", ct.c_uint8),
        ("sock_pkt_index", ct.c_uint32),
        ("payload_len", ct.c_uint32),
        ("sample_len", ct.c_uint32),
        ("span_bytes", ct.c_uint32),
        ("second_off", ct.c_uint32),
        ("second_len", ct.c_uint32),
        ("pad", ct.c_uint32),
        ("data", ct.c_uint8 * SAMPLE_MAX),
    ]


class SampleFirstEventC(ct.Structure):
    _fields_ = [("s", SampleEventC), ("more", ct.c_uint8 * (FIRST_MAX - SAMPLE_MAX))]


class DnsEventC(ct.Structure):
    _fields_ = [
        ("hdr", EventHeader),
        ("saddr", ct.c_uint8 * 16),
        ("sport", ct.c_uint16),
        ("protocol", ct.c_uint8),
        ("flags", ct.c_uint8),
        ("payload_len", ct.c_uint32),
        ("data_len", ct.c_uint32),
        ("pad", ct.c_uint32),
        ("data", ct.c_uint8 * DNS_MAX),
    ]


class CgroupEventC(ct.Structure):
    _fields_ = [
        ("hdr", EventHeader),
        ("op", ct.c_uint32),
        ("level", ct.c_uint32),
        ("path", ct.c_char * PATH_LEN),
    ]


class SocketEventC(ct.Structure):
    _fields_ = [
        ("hdr", EventHeader),
        ("family", ct.c_uint32),
        ("type", ct.c_uint32),
        ("protocol", ct.c_uint32),
        ("denied", ct.c_uint8),
        ("hook", ct.c_uint8),
        ("pad", ct.c_uint16),
        ("comm", ct.c_char * COMM_LEN),
    ]


class UnixIntoEventC(ct.Structure):
    _fields_ = [
        ("hdr", EventHeader),
        ("target_cgroup_id", ct.c_uint64),
        ("op", ct.c_uint32),
        ("pad", ct.c_uint32),
        ("comm", ct.c_char * COMM_LEN),
    ]


class ListenEventC(ct.Structure):
    _fields_ = [
        ("hdr", EventHeader),
        ("sock_cookie", ct.c_uint64),
        ("laddr", ct.c_uint8 * 16),
        ("lport", ct.c_uint16),
        ("protocol", ct.c_uint8),
        ("op", ct.c_uint8),
        ("family", ct.c_uint32),
        ("comm", ct.c_char * COMM_LEN),
    ]


class QuotaEventC(ct.Structure):
    _fields_ = [("hdr", EventHeader), ("kind", ct.c_uint32), ("limit", ct.c_uint32)]


class QuotaC(ct.Structure):
    _fields_ = [
        ("window", ct.c_uint32),
        ("flows", ct.c_uint32),
        ("events", ct.c_uint32),
        ("reported", ct.c_uint32),
        ("flows_over", ct.c_uint64 * 2),
        ("events_over", ct.c_uint64 * 2),
    ]


class AcceptEventC(ct.Structure):
    _fields_ = [
        ("hdr", EventHeader),
        ("netns_cookie", ct.c_uint64),
        ("raddr", ct.c_uint8 * 16),
        ("laddr", ct.c_uint8 * 16),
        ("rport", ct.c_uint16),
        ("lport", ct.c_uint16),
        ("family", ct.c_uint32),
        ("suppressed", ct.c_uint32),
        ("pad", ct.c_uint32),
        ("peer_cgroup_id", ct.c_uint64),
    ]


class UnixConnectEventC(ct.Structure):
    _fields_ = [
        ("hdr", EventHeader),
        ("sock_cookie", ct.c_uint64),
        ("path_len", ct.c_uint32),
        ("denied", ct.c_uint32),
        ("comm", ct.c_char * COMM_LEN),
        # uint8, not c_char: abstract socket names start with a NUL
        ("path", ct.c_uint8 * UNIX_PATH_LEN),
        ("pad2", ct.c_uint32),
    ]


class FlowKeyC(ct.Structure):
    _fields_ = [
        ("cgroup_id", ct.c_uint64),
        ("daddr", ct.c_uint8 * 16),
        ("dport", ct.c_uint16),
        ("protocol", ct.c_uint8),
        ("gen", ct.c_uint8),
        ("flags", ct.c_uint32),
    ]


class FlowValueC(ct.Structure):
    _fields_ = [
        ("bytes", ct.c_uint64),
        ("packets", ct.c_uint64),
        ("payload_bytes", ct.c_uint64),
        ("connects", ct.c_uint64),
        ("last_ns", ct.c_uint64),
        ("samples", ct.c_uint32),
        ("payload_packets", ct.c_uint32),
        ("start_samples", ct.c_uint32),
        ("capped_samples", ct.c_uint32),
        ("line_pad", ct.c_uint64),
        ("first_ns", ct.c_uint64),
        ("rx_bytes", ct.c_uint64),
        ("rx_packets", ct.c_uint64),
        ("rx_payload_bytes", ct.c_uint64),
        ("dns_events", ct.c_uint32),
        ("rx_pad", ct.c_uint32),
    ]


# Mirrored structs by C name, for the layout test.
C_MIRRORS: dict[str, type[ct.Structure]] = {
    "sl_event_header": EventHeader,
    "sl_exec_event": ExecEventC,
    "sl_exit_event": ExitEventC,
    "sl_exec_args_event": ExecArgsEventC,
    "sl_connect_event": ConnectEventC,
    "sl_sample_event": SampleEventC,
    "sl_sample_first_event": SampleFirstEventC,
    "sl_dns_event": DnsEventC,
    "sl_cgroup_event": CgroupEventC,
    "sl_socket_event": SocketEventC,
    "sl_quota_event": QuotaEventC,
    "sl_quota": QuotaC,
    "sl_listen_event": ListenEventC,
    "sl_accept_event": AcceptEventC,
    "sl_unix_connect_event": UnixConnectEventC,
    "sl_unix_into_event": UnixIntoEventC,
    "sl_flow_key": FlowKeyC,
    "sl_flow_value": FlowValueC,
}


# --- decoded, typed events --------------------------------------------------


@dataclass(frozen=True, slots=True)
class Header:
    type: int
    pid: int
    ktime_ns: int
    cgroup_id: int


@dataclass(frozen=True, slots=True)
class ExecEvent:
    hdr: Header
    ppid: int
    old_pid: int
    comm: str
    filename: str
    stdin_mode: int = 0  # fd 0's inode mode as the kernel saw it at exec (0: unknown)
    argv: bytes = b""  # argv as laid out for the new program, NUL-separated, maybe cut (b"": not read)
    gppid: int = 0  # the parent's parent recorded at its fork (0: unknown)
    parent_execd: bool = False  # the parent exec'd while the sensor ran (with a gppid: else a mere fork)


@dataclass(frozen=True, slots=True)
class ExitEvent:
    hdr: Header
    comm: str


@dataclass(frozen=True, slots=True)
class ExecArgsEvent:
    hdr: Header
    args: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ConnectEvent:
    hdr: Header
    sock_cookie: int
    daddr: str
    dport: int
    protocol: int
    op: int
    family: int
    comm: str


@dataclass(frozen=True, slots=True)
class SampleEvent:
    hdr: Header
    sock_cookie: int
    daddr: str
    dport: int
    protocol: int
    flags: int
    sock_pkt_index: int
    payload_len: int
    data: bytes  # the packet's payload from its start
    # payload bytes the sample stands for (0: unknown, see sl_sample_event)
    span_bytes: int = 0
    # a second read from inside a large packet, at payload offset second_off
    second_off: int = 0
    second: bytes = b""


@dataclass(frozen=True, slots=True)
class DnsEvent:
    """A DNS response delivered to a socket of hdr.cgroup_id."""

    hdr: Header
    saddr: str  # the resolver that answered
    sport: int
    protocol: int
    flags: int
    payload_len: int
    data: bytes  # UDP: the DNS message; TCP: with its 2-byte length prefix


@dataclass(frozen=True, slots=True)
class CgroupEvent:
    hdr: Header
    op: int
    level: int
    path: str


@dataclass(frozen=True, slots=True)
class SocketEvent:
    hdr: Header
    family: int
    type: int
    protocol: int
    denied: bool
    hook: int
    comm: str


@dataclass(frozen=True, slots=True)
class UnixIntoEvent:
    """A unix connect or datagram into an isolated container from outside
    it, or a datagram out of one, refused (bpf/socket.bpf.c). hdr: the
    caller (the sender)."""

    hdr: Header
    target_cgroup_id: int  # the receiving socket's cgroup
    op: int  # UNIX_INTO_CONNECT, UNIX_INTO_SEND, UNIX_OUT_SEND
    comm: str


@dataclass(frozen=True, slots=True)
class ListenEvent:
    hdr: Header
    sock_cookie: int
    laddr: str
    lport: int
    protocol: int
    op: int
    family: int
    comm: str


@dataclass(frozen=True, slots=True)
class QuotaEvent:
    hdr: Header
    kind: int
    limit: int


@dataclass(frozen=True, slots=True)
class AcceptEvent:
    hdr: Header  # pid 0; cgroup_id of the listener, 0 when unknown
    netns_cookie: int
    raddr: str
    laddr: str
    rport: int
    lport: int
    family: int
    suppressed: int
    peer_cgroup_id: int = 0  # the cgroup of a client on this node that connected from (raddr, rport)


@dataclass(frozen=True, slots=True)
class UnixConnectEvent:
    hdr: Header
    sock_cookie: int
    path: str  # "@name" for an abstract socket
    comm: str
    denied: bool = False  # refused: the caller's container is isolated


Event = (
    ExecEvent
    | ExitEvent
    | ExecArgsEvent
    | ConnectEvent
    | SampleEvent
    | CgroupEvent
    | DnsEvent
    | SocketEvent
    | QuotaEvent
    | ListenEvent
    | AcceptEvent
    | UnixConnectEvent
    | UnixIntoEvent
)


class DecodeError(ValueError):
    """A record that cannot be decoded (counted, never silently dropped)."""


def _cstr(raw: bytes) -> str:
    return safe_cstr(raw)


@lru_cache(maxsize=65536)
def parse_addr(text: str) -> bytes:
    """An address in text form to the 16 bytes the kernel side uses (IPv4
    as IPv4-mapped); ValueError if it is not an IP address."""
    a = ipaddress.ip_address(text)
    if a.version == 4:
        return b"\0" * 10 + b"\xff\xff" + a.packed
    return a.packed


def format_addr(raw: bytes) -> str:
    """16 address bytes (IPv4 stored IPv4-mapped) to their text form."""
    if raw[:10] == b"\0" * 10 and raw[10:12] == b"\xff\xff":
        return socket.inet_ntop(socket.AF_INET, raw[12:16])
    return str(ipaddress.IPv6Address(raw))


# Hot-path decoding with precompiled struct formats (several times faster
# than ctypes copies). Each format's size is checked against its ctypes
# mirror at import, so the two cannot drift apart silently.
_S_HDR = struct.Struct("=IIQQ")
_S_EXEC = struct.Struct(f"=IIQQII{COMM_LEN}s{PATH_LEN}sHHI{EXEC_ARGV_LEN}s")
_S_EXIT = struct.Struct(f"=IIQQ{COMM_LEN}s")
_S_CONNECT = struct.Struct(f"=IIQQQ16sHBBI{COMM_LEN}s")
_S_SAMPLE = struct.Struct("=IIQQQ16sHBBIIIIIII")
_S_CGROUP = struct.Struct(f"=IIQQII{PATH_LEN}s")
_S_DNS = struct.Struct("=IIQQ16sHBBIII")
_S_SOCKET = struct.Struct(f"=IIQQIIIBBH{COMM_LEN}s")
_S_QUOTA = struct.Struct("=IIQQII")
_S_LISTEN = struct.Struct(f"=IIQQQ16sHBBI{COMM_LEN}s")
_S_ACCEPT = struct.Struct("=IIQQQ16s16sHHIIIQ")
_S_UNIX = struct.Struct(f"=IIQQQII{COMM_LEN}s{UNIX_PATH_LEN}sI")
_S_UNIX_INTO = struct.Struct(f"=IIQQQII{COMM_LEN}s")
for _fmt, _mirror in (
    (_S_HDR, EventHeader),
    (_S_EXEC, ExecEventC),
    (_S_EXIT, ExitEventC),
    (_S_CONNECT, ConnectEventC),
    (_S_CGROUP, CgroupEventC),
    (_S_SOCKET, SocketEventC),
    (_S_QUOTA, QuotaEventC),
    (_S_UNIX_INTO, UnixIntoEventC),
    (_S_LISTEN, ListenEventC),
    (_S_ACCEPT, AcceptEventC),
    (_S_UNIX, UnixConnectEventC),
):
    assert _fmt.size == ct.sizeof(_mirror), (_mirror.__name__, _fmt.size, ct.sizeof(_mirror))
assert _S_SAMPLE.size == SampleEventC.data.offset
assert _S_DNS.size == DnsEventC.data.offset


def _dec_exec(buf: bytes) -> ExecEvent:
    t, pid, kt, cg, ppid, old_pid, comm, fname, mode, alen, gp, argv = _S_EXEC.unpack_from(buf)
    return ExecEvent(
        Header(t, pid, kt, cg),
        ppid,
        old_pid,
        _cstr(comm),
        _cstr(fname),
        mode,
        argv[: min(alen, len(argv))],
        gp & EXEC_GPPID_MASK,
        bool(gp & EXEC_PARENT_EXECD),
    )


def _dec_exit(buf: bytes) -> ExitEvent:
    t, pid, kt, cg, comm = _S_EXIT.unpack_from(buf)
    return ExitEvent(Header(t, pid, kt, cg), _cstr(comm))


def _dec_exec_args(buf: bytes) -> ExecArgsEvent:
    c = ExecArgsEventC.from_buffer_copy(buf)
    raw = bytes(c.args)[: min(c.args_len, ARGS_LEN)]
    parts = raw.split(b"\0")
    args = tuple(safe_text(p) for p in parts[: c.argc])
    return ExecArgsEvent(Header(c.hdr.type, c.hdr.pid, c.hdr.ktime_ns, c.hdr.cgroup_id), args)


def _dec_connect(buf: bytes) -> ConnectEvent:
    t, pid, kt, cg, cookie, daddr, dport, proto, op, fam, comm = _S_CONNECT.unpack_from(buf)
    return ConnectEvent(Header(t, pid, kt, cg), cookie, format_addr(daddr), dport, proto, op, fam, _cstr(comm))


_SAMPLE_DATA = SampleEventC.data.offset


def _dec_sample(buf: bytes) -> SampleEvent:
    t, pid, kt, cg, cookie, daddr, dport, proto, flags, idx, plen, slen, span, off2, n2, _pad = _S_SAMPLE.unpack_from(
        buf
    )
    # a socket's first payload (SAMPLE_F_FIRST) comes in a longer record
    n = min(slen, FIRST_MAX, len(buf) - _SAMPLE_DATA)
    data = bytes(buf[_SAMPLE_DATA : _SAMPLE_DATA + n])
    # the second read, from inside a large packet: the last n2 bytes
    n2 = min(n2, n) if off2 else 0
    second = data[n - n2 :] if n2 else b""
    return SampleEvent(
        Header(t, pid, kt, cg),
        cookie,
        format_addr(daddr),
        dport,
        proto,
        flags,
        idx,
        plen,
        data[: n - n2] if n2 else data,
        span,
        off2 if n2 else 0,
        second,
    )


_DNS_DATA = DnsEventC.data.offset


def _dec_dns(buf: bytes) -> DnsEvent:
    t, pid, kt, cg, saddr, sport, proto, flags, plen, dlen, _pad = _S_DNS.unpack_from(buf)
    n = min(dlen, DNS_MAX)
    return DnsEvent(
        Header(t, pid, kt, cg), format_addr(saddr), sport, proto, flags, plen, bytes(buf[_DNS_DATA : _DNS_DATA + n])
    )


def _dec_cgroup(buf: bytes) -> CgroupEvent:
    t, pid, kt, cg, op, level, path = _S_CGROUP.unpack_from(buf)
    return CgroupEvent(Header(t, pid, kt, cg), op, level, _cstr(path))


def _dec_socket(buf: bytes) -> SocketEvent:
    t, pid, kt, cg, fam, typ, proto, denied, hook, _pad, comm = _S_SOCKET.unpack_from(buf)
    return SocketEvent(Header(t, pid, kt, cg), fam, typ, proto, bool(denied), hook, _cstr(comm))


def _dec_quota(buf: bytes) -> QuotaEvent:
    t, pid, kt, cg, kind, limit = _S_QUOTA.unpack_from(buf)
    return QuotaEvent(Header(t, pid, kt, cg), kind, limit)


def _dec_unix_into(buf: bytes) -> UnixIntoEvent:
    t, pid, kt, cg, target, op, _pad, comm = _S_UNIX_INTO.unpack_from(buf)
    return UnixIntoEvent(Header(t, pid, kt, cg), target, op, _cstr(comm))


def _dec_listen(buf: bytes) -> ListenEvent:
    t, pid, kt, cg, cookie, laddr, lport, proto, op, fam, comm = _S_LISTEN.unpack_from(buf)
    return ListenEvent(Header(t, pid, kt, cg), cookie, format_addr(laddr), lport, proto, op, fam, _cstr(comm))


def _dec_accept(buf: bytes) -> AcceptEvent:
    t, pid, kt, cg, netns, raddr, laddr, rport, lport, fam, supp, _pad, peer_cg = _S_ACCEPT.unpack_from(buf)
    return AcceptEvent(
        Header(t, pid, kt, cg), netns, format_addr(raddr), format_addr(laddr), rport, lport, fam, supp, peer_cg
    )


def unix_path(raw: bytes, length: int) -> str:
    """sun_path as the caller gave it: a path up to its NUL, or an abstract
    name (leading NUL, may hold NULs) shown as "@name"."""
    raw = raw[: max(0, min(length, UNIX_PATH_LEN))]
    if raw[:1] == b"\0":
        return "@" + safe_text(raw[1:].rstrip(b"\0").replace(b"\0", b"@"))
    return _cstr(raw)


def _dec_unix(buf: bytes) -> UnixConnectEvent:
    t, pid, kt, cg, cookie, plen, denied, comm, path, _pad2 = _S_UNIX.unpack_from(buf)
    return UnixConnectEvent(Header(t, pid, kt, cg), cookie, unix_path(path, plen), _cstr(comm), bool(denied))


# type -> (C struct, decoder)
DECODERS: dict[int, tuple[type[ct.Structure], Callable[[bytes], Event]]] = {
    EV_EXEC: (ExecEventC, _dec_exec),
    EV_EXIT: (ExitEventC, _dec_exit),
    EV_EXEC_ARGS: (ExecArgsEventC, _dec_exec_args),
    EV_CONNECT: (ConnectEventC, _dec_connect),
    EV_SAMPLE: (SampleEventC, _dec_sample),
    EV_CGROUP: (CgroupEventC, _dec_cgroup),
    EV_DNS: (DnsEventC, _dec_dns),
    EV_LISTEN: (ListenEventC, _dec_listen),
    EV_ACCEPT: (AcceptEventC, _dec_accept),
    EV_UNIX_CONNECT: (UnixConnectEventC, _dec_unix),
    EV_SOCKET: (SocketEventC, _dec_socket),
    EV_QUOTA: (QuotaEventC, _dec_quota),
    EV_UNIX_INTO: (UnixIntoEventC, _dec_unix_into),
}

_HDR_SIZE = ct.sizeof(EventHeader)


def decode(buf: bytes) -> Event:
    """Decode one raw record; raise DecodeError when it cannot be."""
    if len(buf) < _HDR_SIZE:
        raise DecodeError(f"record of {len(buf)} bytes is shorter than the header")
    etype = int.from_bytes(buf[:4], "little")
    entry = DECODERS.get(etype)
    if entry is None:
        raise DecodeError(f"unknown event type {etype}")
    struct, fn = entry
    if len(buf) < ct.sizeof(struct):
        raise DecodeError(f"{EVENT_NAMES[etype]} record of {len(buf)} bytes, expected {ct.sizeof(struct)}")
    return fn(buf)


def encode(c: ct.Structure) -> bytes:
    """Raw bytes of a C mirror (used by replay sources and tests)."""
    return ct.string_at(ct.addressof(c), ct.sizeof(c))
