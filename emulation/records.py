"""Builders for raw kernel records, made with the ctypes mirrors + encode.

Synthetic kernel input for replay: the unit tests (telemetry, outputs,
kernel) and bench/bench_drain.py build their records here.
"""

from __future__ import annotations

import ctypes as ct
import ipaddress
import struct

from sensor.kernel import events as E

WALL_EPOCH = 1_700_000_000.0  # wall-clock seconds at ktime 0 in the tests
NS = 1_000_000_000


def to_wall(ktime_ns: int) -> float:
    return WALL_EPOCH + ktime_ns / 1e9


def addr16(text: str) -> bytes:
    """16 address bytes as the kernel stores them (IPv4 IPv4-mapped)."""
    ip = ipaddress.ip_address(text)
    if ip.version == 4:
        return b"\0" * 10 + b"\xff\xff" + ip.packed
    return ip.packed


def _fill_hdr(hdr: E.EventHeader, etype: int, pid: int, ktime_ns: int, cgroup_id: int) -> None:
    hdr.type = etype
    hdr.pid = pid
    hdr.ktime_ns = ktime_ns
    hdr.cgroup_id = cgroup_id


def put_bytes(c: ct.Structure, field: str, data: bytes) -> None:
    """Write raw bytes into a char/u8 array field (NULs and all)."""
    desc = getattr(type(c), field)
    assert len(data) <= desc.size
    ct.memmove(ct.addressof(c) + desc.offset, data, len(data))


def exec_rec(
    pid: int,
    cgroup_id: int,
    ktime_ns: int = 0,
    comm: bytes = b"sh",
    filename: bytes = b"/bin/sh",
    ppid: int = 0,
    old_pid: int | None = None,
    gppid: int = 0,
    parent_execd: bool = False,
) -> bytes:
    c = E.ExecEventC()
    _fill_hdr(c.hdr, E.EV_EXEC, pid, ktime_ns, cgroup_id)
    c.ppid = ppid
    c.gppid = gppid | (E.EXEC_PARENT_EXECD if parent_execd else 0)
    c.old_pid = pid if old_pid is None else old_pid
    put_bytes(c, "comm", comm)
    put_bytes(c, "filename", filename)
    return E.encode(c)


def exit_rec(pid: int, cgroup_id: int, ktime_ns: int = 0, comm: bytes = b"sh") -> bytes:
    c = E.ExitEventC()
    _fill_hdr(c.hdr, E.EV_EXIT, pid, ktime_ns, cgroup_id)
    put_bytes(c, "comm", comm)
    return E.encode(c)


def exec_args_rec(
    pid: int, cgroup_id: int, args: list[bytes], ktime_ns: int = 0, argc: int | None = None, args_len: int | None = None
) -> bytes:
    c = E.ExecArgsEventC()
    _fill_hdr(c.hdr, E.EV_EXEC_ARGS, pid, ktime_ns, cgroup_id)
    raw = b"".join(a + b"\0" for a in args)[: E.ARGS_LEN]
    put_bytes(c, "args", raw)
    c.argc = len(args) if argc is None else argc
    c.args_len = len(raw) if args_len is None else args_len
    return E.encode(c)


def connect_rec(
    pid: int,
    cgroup_id: int,
    daddr: str,
    dport: int,
    protocol: int = 6,
    ktime_ns: int = 0,
    comm: bytes = b"curl",
    cookie: int = 1,
    op: int = E.CONNECT_OP_CONNECT,
    family: int = 2,
) -> bytes:
    c = E.ConnectEventC()
    _fill_hdr(c.hdr, E.EV_CONNECT, pid, ktime_ns, cgroup_id)
    c.sock_cookie = cookie
    put_bytes(c, "daddr", addr16(daddr))
    c.dport = dport
    c.protocol = protocol
    c.op = op
    c.family = family
    put_bytes(c, "comm", comm)
    return E.encode(c)


def sample_rec(
    cgroup_id: int,
    daddr: str,
    dport: int,
    data: bytes,
    protocol: int = 6,
    flags: int = 0,
    sock_pkt_index: int = 5,
    ktime_ns: int = 0,
    cookie: int = 1,
    payload_len: int | None = None,
    sample_len: int | None = None,
    span_bytes: int = 0,
    second: bytes = b"",
    second_off: int = 0,
) -> bytes:
    """An SL_EV_SAMPLE record; `second`: the kernel's read from inside a
    large packet at payload offset `second_off` (appended to the data)."""
    c = E.SampleEventC()
    _fill_hdr(c.hdr, E.EV_SAMPLE, 0, ktime_ns, cgroup_id)
    c.sock_cookie = cookie
    put_bytes(c, "daddr", addr16(daddr))
    c.dport = dport
    c.protocol = protocol
    c.flags = flags
    c.sock_pkt_index = sock_pkt_index
    c.payload_len = len(data) if payload_len is None else payload_len
    c.span_bytes = span_bytes
    if second:
        data = data[: E.SAMPLE_MAX - len(second)] + second
        c.second_off, c.second_len = second_off, len(second)
    put_bytes(c, "data", data[: E.SAMPLE_MAX])
    c.sample_len = min(len(data), E.SAMPLE_MAX) if sample_len is None else sample_len
    return E.encode(c)


def cgroup_rec(op: int, cgroup_id: int, path: bytes, ktime_ns: int = 0, level: int = 2) -> bytes:
    c = E.CgroupEventC()
    _fill_hdr(c.hdr, E.EV_CGROUP, 0, ktime_ns, cgroup_id)
    c.op = op
    c.level = level
    put_bytes(c, "path", path)
    return E.encode(c)


def socket_rec(
    pid: int,
    cgroup_id: int,
    family: int = 17,
    sock_type: int = 3,
    protocol: int = 0,
    denied: bool = False,
    ktime_ns: int = 0,
    comm: bytes = b"sh",
    hook: int = E.SOCKET_HOOK_LSM,
) -> bytes:
    c = E.SocketEventC()
    _fill_hdr(c.hdr, E.EV_SOCKET, pid, ktime_ns, cgroup_id)
    c.family, c.type, c.protocol, c.denied, c.hook = family, sock_type, protocol, int(denied), hook
    c.comm = comm
    return E.encode(c)


def quota_rec(cgroup_id: int, kind: int = E.QUOTA_FLOWS, limit: int = 2048, ktime_ns: int = 0) -> bytes:
    c = E.QuotaEventC()
    _fill_hdr(c.hdr, E.EV_QUOTA, 0, ktime_ns, cgroup_id)
    c.kind, c.limit = kind, limit
    return E.encode(c)


# --- payloads ---------------------------------------------------------------


def tls_client_hello() -> bytes:
    """A whole, well-formed TLS 1.2/1.3 ClientHello record (204 bytes of
    handshake): two cipher suites, null compression, a padding extension."""
    body = (
        b"\x03\x03"  # client version TLS 1.2
        + bytes(range(32))  # random
        + b"\x20"
        + bytes(range(32, 64))  # session id
        + b"\x00\x04\x13\x01\x13\x02"  # cipher suites
        + b"\x01\x00"  # compression: null
        + (123).to_bytes(2, "big")  # extensions
        + b"\x00\x15"
        + (119).to_bytes(2, "big")
        + bytes(119)  # padding (RFC 7685)
    )
    hs = b"\x01" + len(body).to_bytes(3, "big") + body
    return b"\x16\x03\x01" + len(hs).to_bytes(2, "big") + hs


def ssh_client_start(banner: bytes = b"SSH-2.0-OpenSSH_9.6\r\n") -> bytes:
    """A client's identification line and its whole KEXINIT packet (RFC
    4253: ten name-lists, first_kex_packet_follows, reserved, padding to a
    multiple of 8 bytes)."""
    lists = [
        b"curve25519-sha256,ext-info-c",
        b"ssh-ed25519,rsa-sha2-512",
        *[b"chacha20-poly1305@openssh.com,aes128-ctr"] * 2,
        *[b"hmac-sha2-256-etm@openssh.com"] * 2,
        *[b"none,zlib@openssh.com"] * 2,
        b"",
        b"",
    ]
    payload = bytes([20]) + bytes(range(16)) + b"".join(len(x).to_bytes(4, "big") + x for x in lists) + bytes(5)
    pad = 8 - (len(payload) + 5) % 8
    pad += 8 if pad < 4 else 0
    return banner + (len(payload) + pad + 1).to_bytes(4, "big") + bytes([pad]) + payload + bytes(pad)


def dns_query(name: str = "example.com", qtype: int = 1, txid: int = 0x1234, flags: int = 0x0100) -> bytes:
    """A standard DNS query (RD set) for `name`."""
    hdr = struct.pack("!HHHHHH", txid, flags, 1, 0, 0, 0)
    q = b"".join(bytes([len(label)]) + label.encode() for label in name.split(".")) + b"\0"
    return hdr + q + struct.pack("!HH", qtype, 1)


def dns_rec(cgroup_id: int, saddr: str, data: bytes, protocol: int = 17, ktime_ns: int = 0, sport: int = 53) -> bytes:
    """An SL_EV_DNS record: a DNS response the cgroup's socket received."""
    c = E.DnsEventC()
    _fill_hdr(c.hdr, E.EV_DNS, 0, ktime_ns, cgroup_id)
    put_bytes(c, "saddr", addr16(saddr))
    c.sport = sport
    c.protocol = protocol
    c.payload_len = len(data)
    n = min(len(data), E.DNS_MAX)
    put_bytes(c, "data", data[:n])
    c.data_len = n
    c.flags = E.DNS_F_TRUNCATED if len(data) > E.DNS_MAX else 0
    return E.encode(c)


def sample_first_rec(cgroup_id: int, daddr: str, dport: int, data: bytes, ktime_ns: int = 0, cookie: int = 1) -> bytes:
    """A socket's first payload in the longer record (SAMPLE_F_FIRST)."""
    c = E.SampleFirstEventC()
    _fill_hdr(c.s.hdr, E.EV_SAMPLE, 0, ktime_ns, cgroup_id)
    s = c.s
    s.sock_cookie = cookie
    put_bytes(s, "daddr", addr16(daddr))
    s.dport = dport
    s.protocol = 6
    s.flags = E.SAMPLE_F_SOCK_START | E.SAMPLE_F_FIRST
    s.sock_pkt_index = 0
    s.payload_len = len(data)
    n = min(len(data), E.FIRST_MAX)
    ct.memmove(ct.addressof(c) + E.SampleEventC.data.offset, data[:n], n)
    s.sample_len = n
    return E.encode(c)


def listen_rec(
    pid: int,
    cgroup_id: int,
    laddr: str,
    lport: int,
    op: int = E.LISTEN_OP_LISTEN,
    protocol: int = 6,
    ktime_ns: int = 0,
    comm: bytes = b"nc",
    family: int = 2,
) -> bytes:
    c = E.ListenEventC()
    _fill_hdr(c.hdr, E.EV_LISTEN, pid, ktime_ns, cgroup_id)
    put_bytes(c, "laddr", addr16(laddr))
    c.lport, c.protocol, c.op, c.family = lport, protocol, op, family
    put_bytes(c, "comm", comm)
    return E.encode(c)


def accept_rec(
    cgroup_id: int,
    raddr: str,
    rport: int,
    laddr: str,
    lport: int,
    ktime_ns: int = 0,
    suppressed: int = 0,
    peer_cgroup_id: int = 0,
) -> bytes:
    c = E.AcceptEventC()
    _fill_hdr(c.hdr, E.EV_ACCEPT, 0, ktime_ns, cgroup_id)
    put_bytes(c, "raddr", addr16(raddr))
    put_bytes(c, "laddr", addr16(laddr))
    c.rport, c.lport, c.suppressed, c.peer_cgroup_id = rport, lport, suppressed, peer_cgroup_id
    c.family = 10 if ":" in raddr else 2
    return E.encode(c)


def unix_rec(pid: int, cgroup_id: int, path: bytes, ktime_ns: int = 0, comm: bytes = b"docker") -> bytes:
    c = E.UnixConnectEventC()
    _fill_hdr(c.hdr, E.EV_UNIX_CONNECT, pid, ktime_ns, cgroup_id)
    put_bytes(c, "path", path)
    c.path_len = len(path) + 1
    put_bytes(c, "comm", comm)
    return E.encode(c)


def unix_into_rec(
    pid: int,
    cgroup_id: int,
    target_cgroup_id: int,
    ktime_ns: int = 0,
    comm: bytes = b"nc",
    op: int = E.UNIX_INTO_CONNECT,
) -> bytes:
    c = E.UnixIntoEventC()
    _fill_hdr(c.hdr, E.EV_UNIX_INTO, pid, ktime_ns, cgroup_id)
    c.target_cgroup_id, c.op = target_cgroup_id, op
    put_bytes(c, "comm", comm)
    return E.encode(c)
