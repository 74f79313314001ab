"""Port 53 names nothing: only DNS queries sent there are DNS.

Everything sent to port 53 was counted as DNS framing (header bytes, never
opaque) without a look at it, so ciphertext streamed over TCP or UDP to an
intruder's own port 53 counted 0 encrypted bytes, and SL-EXF-002 skipped
UDP 53 by port. Now a sample there is DNS only when it is queries and
nothing else (protocol.dns_query); anything else is judged by its bytes
and named by no protocol (raw)."""

from __future__ import annotations

import os
import struct

import pytest

from emulation.records import dns_query as make_query
from sensor.telemetry.counters import FlowCounters, WindowCounters
from sensor.telemetry.protocol import DNS_CUT, dns_query, dns_query_end

UDP, TCP = 17, 6


def _edns(q: bytes, extra: bytes = b"") -> bytes:
    """`q` with an OPT record (a client cookie, and `extra` options)."""
    hdr = bytearray(q[:12])
    hdr[10:12] = struct.pack("!H", 1)
    opts = struct.pack("!HH", 10, 8) + os.urandom(8) + extra
    return bytes(hdr) + q[12:] + b"\0" + struct.pack("!HHIH", 41, 1232, 0, len(opts)) + opts


def _tcp(*msgs: bytes) -> bytes:
    return b"".join(struct.pack("!H", len(m)) + m for m in msgs)


Q = make_query("www.example.com")
QE = _edns(make_query("api.example.org", qtype=28))
LONG = make_query(".".join(["a" * 60] * 4))  # 257 bytes of name: longer than the 256-byte read


def test_real_queries_are_dns() -> None:
    assert dns_query_end(Q) == len(Q) and dns_query_end(QE) == len(QE)
    assert dns_query(Q, UDP) and dns_query(QE, UDP, len(QE))
    assert dns_query(_tcp(Q), TCP) and dns_query(_tcp(QE, Q), TCP)  # pipelined over one connection
    assert dns_query(QE, TCP)  # the length in a packet of its own, then the message
    root = Q[:12] + b"\0" + struct.pack("!HH", 2, 1)  # NS of the root: a resolver's priming query
    assert dns_query(root, UDP)
    assert dns_query(LONG, UDP) and dns_query(_tcp(LONG), TCP)  # whole: a query


@pytest.mark.parametrize("transport", [UDP, TCP])
def test_random_bytes_are_never_dns(transport: int) -> None:
    for _ in range(20_000):
        data = os.urandom(256)
        assert not dns_query(data, transport, 1400)
        assert not dns_query(data[:64], transport, 64)


def test_a_query_with_other_bytes_is_not_dns() -> None:
    ct = os.urandom(1200)
    assert not dns_query(Q + ct[:100], UDP)  # bytes behind the query, within the read
    assert not dns_query(Q, UDP, len(Q) + 1200)  # ... or past it
    assert not dns_query(Q[:17] + ct[:200], UDP)  # a header and a label, then ciphertext
    assert not dns_query(_tcp(Q) + ct[:100], TCP)
    assert not dns_query(_tcp(Q, Q), TCP, 2 * (len(Q) + 2) + 1200)
    # a query running past the read vouches for nothing unseen, however
    # short the packet (a name padded past the 256-byte read, then ciphertext)
    assert dns_query_end(LONG[:256]) == DNS_CUT
    assert not dns_query(LONG[:256], UDP, len(LONG))
    assert not dns_query(LONG[:256], UDP, 512)
    assert not dns_query(_tcp(LONG)[:256], TCP, len(LONG) + 2)
    # answers and updates are not queries (egress to port 53 is a client's)
    answer = bytearray(Q)
    answer[2] |= 0x80
    assert not dns_query(bytes(answer), UDP)
    update = bytearray(Q)
    update[2] = 5 << 3
    assert not dns_query(bytes(update), UDP)


def test_nothing_in_a_query_goes_unjudged_but_its_name_and_known_options() -> None:
    """Review: bytes in an OPT record's unknown option, or a second
    question, passed as DNS (210 bytes of ciphertext per query, 0 counted)."""
    assert dns_query(_edns(make_query("a.example"), struct.pack("!HH", 12, 16) + bytes(16)), UDP)  # padding
    ecs = struct.pack("!HBB", 2, 56, 0) + bytes(7)
    assert dns_query(_edns(make_query("a.example"), struct.pack("!HH", 8, len(ecs)) + ecs), UDP)  # client subnet
    hidden = os.urandom(210)
    assert not dns_query(_edns(make_query("a.example"), struct.pack("!HH", 65001, len(hidden)) + hidden), UDP)
    assert not dns_query(_edns(make_query("a.example"), struct.pack("!HH", 12, 16) + os.urandom(16)), UDP)
    assert not dns_query(_edns(make_query("a.example"), struct.pack("!HH", 8, 64) + os.urandom(64)), UDP)
    two = bytearray(make_query("a.example") + make_query("b64-" + "A" * 40 + ".x")[12:])
    two[4:6] = struct.pack("!H", 2)
    assert not dns_query(bytes(two), UDP)
    # a cookie: the client's 8 bytes, with the server's up to 40 in all
    cookie = bytes(_edns(make_query("a.example")))
    assert dns_query(cookie, UDP)

    def opt(opts: bytes) -> bytes:
        q = bytearray(make_query("a.example"))
        q[10:12] = struct.pack("!H", 1)
        return bytes(q) + b"\0" + struct.pack("!HHIH", 41, 1232, 0, len(opts)) + opts

    assert dns_query(opt(struct.pack("!HH", 10, 40) + os.urandom(40)), UDP)
    assert not dns_query(opt(struct.pack("!HH", 10, 41) + os.urandom(41)), UDP)
    assert not dns_query(opt(struct.pack("!HH", 10, 4) + os.urandom(4)), UDP)
    assert dns_query(opt(b""), UDP)  # EDNS without options (glibc, Go)
    # dig +nsid, +expire; DAU (algorithm numbers); a subnet of /24
    assert dns_query(opt(struct.pack("!HH", 3, 0) + struct.pack("!HH", 9, 0)), UDP)
    assert dns_query(opt(struct.pack("!HH", 5, 3) + bytes([8, 13, 15])), UDP)
    assert dns_query(opt(struct.pack("!HH", 8, 7) + struct.pack("!HBB", 1, 24, 0) + bytes([198, 51, 100])), UDP)
    # review: options repeated, or a subnet carrying bytes past its prefix
    assert not dns_query(opt((struct.pack("!HH", 10, 40) + os.urandom(40)) * 2), UDP)
    assert not dns_query(opt(struct.pack("!HH", 8, 20) + struct.pack("!HBB", 2, 56, 0) + os.urandom(16)), UDP)
    assert not dns_query(opt(struct.pack("!HH", 8, 7) + struct.pack("!HBB", 1, 20, 0) + bytes([198, 51, 101])), UDP)
    assert not dns_query(opt(struct.pack("!HH", 10, 12) + os.urandom(12)), UDP)  # a cookie of 12


def _window(key: tuple[int, str, int, int], packets: list[bytes]) -> tuple[int, int, set[str | None]]:
    """Each packet sampled as the kernel samples a port-53 destination
    (every packet, up to 256 bytes, standing for itself): (payload,
    encrypted bytes, the flow's protocols)."""
    w = WindowCounters()
    total = 0
    for i, p in enumerate(packets):
        w.add_sample(
            key, p[:256], i == 0, len(p), i < 8, 11, len(p), sock_index=i, first_read=p[:2048] if i == 0 else b""
        )
        total += len(p)
    n = len(packets)
    (s,), _e, _h = w.close([FlowCounters(*key, total + 40 * n, n, total, 1, 0, 0, n)])
    return total, s.encrypted_bytes, s.protocols()


@pytest.mark.parametrize("transport", [UDP, TCP])
def test_ciphertext_to_port_53_is_counted(transport: int) -> None:
    total, enc, protos = _window((7, "198.18.0.9", 53, transport), [os.urandom(1400) for _ in range(200)])
    assert enc >= 0.9 * total, (enc, total)
    assert protos == {None}  # raw: SL-EXF-002 judges it


def test_ciphertext_behind_dns_headers_is_counted() -> None:
    """Each datagram a DNS header and a label, then ciphertext."""
    pkts = [Q[:17] + os.urandom(1200) for _ in range(200)]
    total, enc, protos = _window((7, "198.18.0.9", 53, UDP), pkts)
    assert enc >= 0.85 * total and protos == {None}


@pytest.mark.parametrize("transport", [UDP, TCP])
def test_real_queries_stay_dns(transport: int) -> None:
    names = [f"host{i}.svc.example.com" for i in range(50)]
    qs = [_edns(make_query(n, txid=i)) for i, n in enumerate(names)]
    pkts = qs if transport == UDP else [_tcp(q) for q in qs]
    _total, enc, protos = _window((7, "198.18.0.9", 53, transport), pkts)
    assert enc == 0 and protos == {"dns"}
