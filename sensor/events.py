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
from dataclasses import dataclass
from typing import Callable, Union

COMM_LEN = 16
PATH_LEN = 256
SAMPLE_MAX = 256
ARGS_LEN = 512

EV_EXEC = 1
EV_EXIT = 2
EV_CONNECT = 3
EV_SAMPLE = 4
EV_CGROUP = 5
EV_EXEC_ARGS = 6
EV_TYPE_MAX = 7

EVENT_NAMES = {
    EV_EXEC: "exec",
    EV_EXIT: "exit",
    EV_CONNECT: "connect",
    EV_SAMPLE: "sample",
    EV_CGROUP: "cgroup",
    EV_EXEC_ARGS: "exec_args",
}

CONNECT_OP_CONNECT = 1
CONNECT_OP_SENDMSG = 2
CGROUP_MKDIR = 1
CGROUP_RMDIR = 2
SAMPLE_F_SOCK_START = 0x1
SAMPLE_F_NO_SOCK = 0x2

# enum sl_stat
STAT_SUBMITTED = 0
STAT_DROPPED = EV_TYPE_MAX
STAT_FLOW_MAP_FULL = 2 * EV_TYPE_MAX
STAT_FLOW_BYTES_UNTRACKED = STAT_FLOW_MAP_FULL + 1
STAT_PARENT_MAP_FULL = STAT_FLOW_MAP_FULL + 2
STAT_UDP_SEND_DEDUPED = STAT_FLOW_MAP_FULL + 3
STAT_EGRESS_PACKETS = STAT_FLOW_MAP_FULL + 4
STAT_MAX = STAT_FLOW_MAP_FULL + 5


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
        ("data", ct.c_uint8 * SAMPLE_MAX),
    ]


class CgroupEventC(ct.Structure):
    _fields_ = [
        ("hdr", EventHeader),
        ("op", ct.c_uint32),
        ("level", ct.c_uint32),
        ("path", ct.c_char * PATH_LEN),
    ]


class FlowKeyC(ct.Structure):
    _fields_ = [
        ("cgroup_id", ct.c_uint64),
        ("daddr", ct.c_uint8 * 16),
        ("dport", ct.c_uint16),
        ("protocol", ct.c_uint8),
        ("gen", ct.c_uint8),
        ("pad", ct.c_uint32),
    ]


class FlowValueC(ct.Structure):
    _fields_ = [
        ("bytes", ct.c_uint64),
        ("packets", ct.c_uint64),
        ("payload_bytes", ct.c_uint64),
        ("connects", ct.c_uint64),
        ("first_ns", ct.c_uint64),
        ("last_ns", ct.c_uint64),
        ("samples", ct.c_uint32),
        ("payload_packets", ct.c_uint32),
    ]


# Mirrored structs by C name, for the layout test.
C_MIRRORS: dict[str, type[ct.Structure]] = {
    "sl_event_header": EventHeader,
    "sl_exec_event": ExecEventC,
    "sl_exit_event": ExitEventC,
    "sl_exec_args_event": ExecArgsEventC,
    "sl_connect_event": ConnectEventC,
    "sl_sample_event": SampleEventC,
    "sl_cgroup_event": CgroupEventC,
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
    data: bytes


@dataclass(frozen=True, slots=True)
class CgroupEvent:
    hdr: Header
    op: int
    level: int
    path: str


Event = Union[ExecEvent, ExitEvent, ExecArgsEvent, ConnectEvent, SampleEvent, CgroupEvent]


class DecodeError(ValueError):
    """A record that cannot be decoded (counted, never silently dropped)."""


def _cstr(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("utf-8", "replace")


def format_addr(raw: bytes) -> str:
    """16 address bytes (IPv4 stored IPv4-mapped) to their text form."""
    if raw[:10] == b"\0" * 10 and raw[10:12] == b"\xff\xff":
        return socket.inet_ntop(socket.AF_INET, raw[12:16])
    return str(ipaddress.IPv6Address(raw))


def _hdr(c: EventHeader) -> Header:
    return Header(c.type, c.pid, c.ktime_ns, c.cgroup_id)


def _dec_exec(buf: bytes) -> ExecEvent:
    c = ExecEventC.from_buffer_copy(buf)
    return ExecEvent(_hdr(c.hdr), c.ppid, c.old_pid, _cstr(c.comm), _cstr(c.filename))


def _dec_exit(buf: bytes) -> ExitEvent:
    c = ExitEventC.from_buffer_copy(buf)
    return ExitEvent(_hdr(c.hdr), _cstr(c.comm))


def _dec_exec_args(buf: bytes) -> ExecArgsEvent:
    c = ExecArgsEventC.from_buffer_copy(buf)
    raw = bytes(c.args)[: min(c.args_len, ARGS_LEN)]
    parts = raw.split(b"\0")
    args = tuple(p.decode("utf-8", "replace") for p in parts[: c.argc])
    return ExecArgsEvent(_hdr(c.hdr), args)


def _dec_connect(buf: bytes) -> ConnectEvent:
    c = ConnectEventC.from_buffer_copy(buf)
    return ConnectEvent(
        _hdr(c.hdr), c.sock_cookie, format_addr(bytes(c.daddr)), c.dport,
        c.protocol, c.op, c.family, _cstr(c.comm),
    )


def _dec_sample(buf: bytes) -> SampleEvent:
    c = SampleEventC.from_buffer_copy(buf)
    n = min(c.sample_len, SAMPLE_MAX)
    return SampleEvent(
        _hdr(c.hdr), c.sock_cookie, format_addr(bytes(c.daddr)), c.dport, c.protocol,
        c.flags, c.sock_pkt_index, c.payload_len, bytes(c.data)[:n],
    )


def _dec_cgroup(buf: bytes) -> CgroupEvent:
    c = CgroupEventC.from_buffer_copy(buf)
    return CgroupEvent(_hdr(c.hdr), c.op, c.level, _cstr(c.path))


# type -> (C struct, decoder)
DECODERS: dict[int, tuple[type[ct.Structure], Callable[[bytes], Event]]] = {
    EV_EXEC: (ExecEventC, _dec_exec),
    EV_EXIT: (ExitEventC, _dec_exit),
    EV_EXEC_ARGS: (ExecArgsEventC, _dec_exec_args),
    EV_CONNECT: (ConnectEventC, _dec_connect),
    EV_SAMPLE: (SampleEventC, _dec_sample),
    EV_CGROUP: (CgroupEventC, _dec_cgroup),
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
        raise DecodeError(
            f"{EVENT_NAMES[etype]} record of {len(buf)} bytes, expected {ct.sizeof(struct)}"
        )
    return fn(buf)


def encode(c: ct.Structure) -> bytes:
    """Raw bytes of a C mirror (used by replay sources and tests)."""
    return ct.string_at(ct.addressof(c), ct.sizeof(c))
