"""Protocol hints from the first payload bytes of a socket."""

from __future__ import annotations

import random
import ssl
import struct

import pytest

from emulation.records import dns_query, ssh_client_start, tls_client_hello
from sensor.telemetry.protocol import (
    DNS,
    HTTP,
    IPPROTO_TCP,
    IPPROTO_UDP,
    SSH,
    SSH_BANNER,
    SSH_BANNER_CUT,
    TLS,
    dns_port,
    protocol_hint,
    ssh_start,
    ssh_transport_packet,
    tls_hello_start,
    transport_name,
)

TCP, UDP = IPPROTO_TCP, IPPROTO_UDP


def test_tls_client_hello() -> None:
    assert protocol_hint(tls_client_hello(), TCP, 443) == TLS
    # the port does not matter: TLS on a raw port is still TLS
    assert protocol_hint(tls_client_hello(), TCP, 9999) == TLS


def server_hello() -> bytes:
    """Start of a ServerHello record: a TLS server socket's first bytes."""
    body = b"\x02" + (70).to_bytes(3, "big") + b"\x03\x03" + bytes(range(32)) + b"\x20" + bytes(32)
    return b"\x16\x03\x03" + (74).to_bytes(2, "big") + body


@pytest.mark.parametrize("version", [b"\x03\x01", b"\x03\x03", b"\x03\x04"])
def test_tls_hellos(version: bytes) -> None:
    hello = tls_client_hello()
    assert protocol_hint(hello[:1] + version + hello[3:], TCP, 443) == TLS
    assert protocol_hint(server_hello(), TCP, 443) == TLS
    # a hello cut short by the sample is still judged by what it shows
    assert protocol_hint(tls_client_hello()[:11], TCP, 443) == TLS
    assert protocol_hint(tls_client_hello()[:43], TCP, 443) == TLS


@pytest.mark.parametrize(
    "head",
    [
        b"\x17\x03\x03\x40\x00",  # application data
        b"\x15\x03\x03\x00\x02",  # alert
        b"\x14\x03\x03\x00\x01",  # change cipher spec
    ],
)
def test_a_tls_record_header_in_front_of_a_raw_stream_is_not_tls(head: bytes) -> None:
    """A socket's first record is always a hello: five bytes of a record
    header in front of a raw encrypted stream do not make it TLS (to 443
    it would pass for expected traffic; SL-EXF-002 judges it raw)."""
    rng = random.Random(3)
    for _ in range(50):
        assert protocol_hint(head + rng.randbytes(59), TCP, 443) is None


def test_a_handshake_header_must_carry_a_hello() -> None:
    hello = tls_client_hello()
    rng = random.Random(4)
    cases = {
        "handshake type Finished": hello[:5] + b"\x14" + hello[6:],
        "record too short for a hello": hello[:3] + (20).to_bytes(2, "big") + hello[5:],
        "record longer than TLS allows": hello[:3] + (0xFFFF).to_bytes(2, "big") + hello[5:],
        "handshake length too short": hello[:6] + (10).to_bytes(3, "big") + hello[9:],
        "legacy version not 3.x": hello[:9] + b"\x7f\x03" + hello[11:],
        "session id longer than 32": hello[:43] + b"\x21" + hello[44:],
    }
    for what, data in cases.items():
        assert protocol_hint(data, TCP, 443) is None, what
    # random bytes behind a handshake header pass for a hello about once
    # in 10^7 (type, version and session id length must all fit)
    fooled = sum(protocol_hint(b"\x16\x03\x03\x02\x00" + rng.randbytes(59), TCP, 443) == TLS for _ in range(5000))
    assert fooled == 0


@pytest.mark.parametrize(
    "head",
    [
        b"\x16\x02\x00\x00\x10",  # SSLv2-ish version byte
        b"\x16\x03\x05\x00\x10",  # minor version out of range
        b"\x18\x03\x03\x00\x10",  # unknown content type
    ],
)
def test_not_tls(head: bytes) -> None:
    assert protocol_hint(head + b"\0" * 20, TCP, 443) is None


def test_tls_only_over_tcp() -> None:
    assert protocol_hint(tls_client_hello(), UDP, 443) is None


def test_ssh_start_with_its_key_exchange() -> None:
    start = ssh_client_start()
    assert ssh_start(start) == SSH and protocol_hint(start, TCP, 22) == SSH
    assert ssh_start(start[:64]) == SSH  # the sample cuts the name-list: checked as far as it goes
    # the line alone: SSH until the socket's next packet says otherwise
    line = b"SSH-2.0-Go\r\n"
    assert ssh_start(line, len(line)) == SSH_BANNER and protocol_hint(line, TCP, 22, len(line)) == SSH
    # what follows the line was not seen (a long line, the sample cut it):
    # the next packet may be any message of the key exchange
    assert ssh_start(b"SSH-2.0-" + b"x" * 56, 1500) == SSH_BANNER_CUT
    assert ssh_start(line, 1500) == SSH_BANNER_CUT
    assert ssh_start(line + b"ab", len(line) + 2) == ""  # two bytes after the line, and the packet ends


def test_an_ssh_banner_in_front_of_a_raw_stream_is_not_ssh() -> None:
    """The identification line, then bytes that are no SSH binary packet:
    a banner put in front of a raw stream (to port 22 it would pass for
    expected traffic; SL-EXF-002 judges it raw)."""
    rng = random.Random(6)
    banner = b"SSH-2.0-OpenSSH_9.6\r\n"
    for _ in range(200):
        assert protocol_hint(banner + rng.randbytes(40), TCP, 22) is None
    kex = ssh_client_start()[len(banner) :]
    cases = {
        "packet length over 35000": (40000).to_bytes(4, "big") + kex[4:],
        "padding under 4": kex[:4] + b"\x02" + kex[5:],
        "a user-auth message first": kex[:5] + b"\x32" + kex[6:],
        "an empty kex_algorithms": kex[:22] + bytes(4) + kex[26:],
        "control bytes in kex_algorithms": kex[:26] + b"\x01\x02" + kex[28:],
    }
    for what, rest in cases.items():
        assert protocol_hint(banner + rest, TCP, 22) is None, what
    assert ssh_start(b"SSH-2.0-bad\x1b]0;x\r\n" + kex) == ""
    assert ssh_start(b"SSH-3.0-future\r\n" + kex) == ""
    assert ssh_start(b"SSH-2.0-" + b"x" * 300) == ""  # longer than the 255 bytes allowed


def test_ssh_transport_packet() -> None:
    kex = ssh_client_start()[len(b"SSH-2.0-OpenSSH_9.6\r\n") :]
    assert ssh_transport_packet(kex) and ssh_transport_packet(kex[:6])
    ecdh_init = (44).to_bytes(4, "big") + b"\x06\x1e" + bytes(42)  # KEX_ECDH_INIT (30)
    assert ssh_transport_packet(ecdh_init, kexinit=False) and not ssh_transport_packet(ecdh_init)
    # a whole packet must be a multiple of 8 bytes long before any cipher
    assert not ssh_transport_packet((45).to_bytes(4, "big") + b"\x06\x1e" + bytes(43), kexinit=False)
    assert not ssh_transport_packet(kex[:5]) and not ssh_transport_packet(b"")


def test_ssh_banner() -> None:
    assert protocol_hint(b"SSH-2.0-OpenSSH_9.6p1 Debian-4\r\n", TCP, 22) == SSH
    assert protocol_hint(b"SSH-2.0-Go\r\n", TCP, 2222) == SSH


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "HEAD", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE"])
def test_http_methods(method: str) -> None:
    req = f"{method} /upload HTTP/1.1\r\nHost: example.com\r\n\r\n".encode()
    assert protocol_hint(req, TCP, 8080) == HTTP


@pytest.mark.parametrize("line", [b"HTTP/1.1 200 OK\r\n", b"HTTP/1.0 404 Not Found\r\n"])
def test_http_responses(line: bytes) -> None:
    assert protocol_hint(line + b"Content-Length: 0\r\n\r\n", TCP, 80) == HTTP


def test_http_needs_the_space_after_the_method() -> None:
    assert protocol_hint(b"GETAWAY /x", TCP, 80) is None
    assert protocol_hint(b"get / HTTP/1.1\r\n", TCP, 80) is None


def test_dns_query_over_udp() -> None:
    q = dns_query("example.com", qtype=1)
    assert protocol_hint(q, UDP, 53) == DNS
    # DNS over UDP is recognised by content, on any port
    assert protocol_hint(dns_query("exfil.attacker.net", qtype=16), UDP, 5353) == DNS


def test_dns_query_with_edns_additional_record() -> None:
    q = bytearray(dns_query("example.org", qtype=28))
    q[10:12] = struct.pack("!H", 1)  # ARCOUNT = 1
    q += b"\x00" + struct.pack("!HHIH", 41, 1232, 0, 0)  # OPT RR
    assert protocol_hint(bytes(q), UDP, 53) == DNS


def test_dns_response_is_not_a_query() -> None:
    resp = bytearray(dns_query("example.com"))
    resp[2:4] = struct.pack("!H", 0x8180)  # QR set
    assert protocol_hint(bytes(resp), UDP, 53) is None


def test_dns_with_answers_is_not_a_query() -> None:
    q = bytearray(dns_query("example.com"))
    q[6:8] = struct.pack("!H", 1)  # ANCOUNT = 1
    assert protocol_hint(bytes(q), UDP, 53) is None


def test_dns_too_short() -> None:
    assert protocol_hint(dns_query("a.b")[:16], UDP, 53) is None


def test_dns_over_tcp_with_length_prefix_on_port_53() -> None:
    q = dns_query("example.com")
    framed = struct.pack("!H", len(q)) + q
    assert protocol_hint(framed, TCP, 53) == DNS
    # the same bytes on another TCP port are not guessed as DNS
    assert protocol_hint(framed, TCP, 8053) is None
    # without the length prefix, TCP port 53 does not match
    assert protocol_hint(q, TCP, 53) is None


def test_random_bytes_have_no_hint() -> None:
    rng = random.Random(20240601)
    for _ in range(500):
        data = rng.randbytes(64)
        for transport, port in ((TCP, 443), (TCP, 53), (UDP, 53), (TCP, 4444)):
            assert protocol_hint(data, transport, port) is None, data.hex()


def test_empty_and_other_transports() -> None:
    assert protocol_hint(b"", TCP, 443) is None
    assert protocol_hint(b"GET / HTTP/1.1\r\n", 1, 0) is None


def test_transport_names() -> None:
    assert transport_name(6) == "tcp"
    assert transport_name(17) == "udp"
    assert transport_name(1) == "icmp"
    assert transport_name(58) == "ipv6-icmp"
    assert transport_name(132) == "132"


def test_dockers_resolver_is_reported_on_port_53() -> None:
    """Queries to 127.0.0.11 reach the egress hook DNAT'ed to a per-container
    port: flows and samples there are the resolver's port 53, and merge
    with what the resolver sent back (counted by ingress on port 53)."""
    from sensor.telemetry.counters import FlowCounters, WindowCounters

    assert dns_port("127.0.0.11", 53782) == 53
    assert dns_port("127.0.0.12", 53782) == 53782
    assert dns_port("198.51.100.7", 9000) == 9000
    sent = FlowCounters(7, "127.0.0.11", 53782, 17, 500, 5, 360, 0, 1, 2, 5)
    answers = FlowCounters(7, "127.0.0.11", 53, 17, 0, 0, 0, 0, 1, 2, 0, 900, 5, 760)
    assert sent.key == answers.key == (7, "127.0.0.11", 53, 17)
    (s,), _execs, _hists = WindowCounters().close([sent, answers])
    assert (s.key, s.bytes, s.rx_bytes) == ((7, "127.0.0.11", 53, 17), 500, 900)


# --- the hello and the key exchange, checked whole (review of the first version) -----


def real_client_hello(version: ssl.TLSVersion) -> bytes:
    """The bytes Python's ssl module (OpenSSL) sends first."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ctx.maximum_version = version
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname="api.example.com")
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    return outgoing.read()


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_real_client_hellos_whole_and_cut(version: ssl.TLSVersion) -> None:
    hello = real_client_hello(version)
    for n in (11, 44, 64, 100, 2048, len(hello)):
        assert tls_hello_start(hello[:n], len(hello)), n


def test_the_shortest_server_hello() -> None:
    """No session id, no extensions: a 38-byte body in a 42-byte record."""
    body = b"\x03\x03" + bytes(32) + b"\x00" + b"\x13\x01" + b"\x00"
    hello = b"\x16\x03\x03" + (42).to_bytes(2, "big") + b"\x02" + (38).to_bytes(3, "big") + body
    assert tls_hello_start(hello, len(hello))
    assert not tls_hello_start(hello[:-1] + b"\x01", len(hello))  # compression must be null


def test_a_hellos_first_bytes_then_anything_is_not_tls() -> None:
    """What a first version let through: the first 11 bytes of a hello as a
    packet of their own, or followed by random bytes where the kernel's
    2 KiB first read shows the hello's lengths do not add up."""
    head = b"\x16\x03\x01\x40\x00\x01\x00\x3f\xfc\x03\x03"
    assert not tls_hello_start(head, len(head))
    rng = random.Random(7)
    fooled = 0
    for _ in range(2000):
        tail = rng.randbytes(32) + bytes([rng.randrange(33)]) + rng.randbytes(1900)
        fooled += tls_hello_start(head + tail, len(head) + len(tail))
    assert fooled == 0, fooled  # the extensions' total must match the message: ~1 in 65,536


def test_an_ssh_line_then_a_six_byte_packet_header_is_not_ssh() -> None:
    """A first version accepted any key-exchange message after the line
    with only six bytes checked; the first packet is KEXINIT, whole and a
    multiple of 8 bytes long."""
    line = b"SSH-2.0-x\r\n"
    rng = random.Random(8)
    for head in (b"\x00\x00\x00\x0c\x04\x1e", b"\x00\x00\x00\x0c\x04\x14", b"\x00\x00\x05\xdc\x06\x14"):
        data = line + head + rng.randbytes(40)
        assert ssh_start(data, 1400) == "", head


def test_a_short_record_then_anything_is_not_a_hello() -> None:
    """Second review: a 42-byte record (a ServerHello's size) whose hello
    claims a 32-byte session id, then ciphertext in the same packet; a
    ClientHello claiming 16 MiB in a 42-byte record. Their fields run past
    the message or the message past its records: not hellos."""
    rng = random.Random(9)
    for head in (bytes.fromhex("160303002a020000260303"), bytes.fromhex("160301002a01ffffff0303")):
        for _ in range(2000):
            d = head + rng.randbytes(32) + bytes([rng.randrange(33)]) + rng.randbytes(rng.choice([4, 400, 70000]))
            assert not tls_hello_start(d[:2048], len(d)), d[:48].hex()
    # the first bytes of a hello as a small packet of their own: only a
    # full-sized segment cuts a hello short
    hello = tls_client_hello()
    assert not tls_hello_start(hello[:100], 100) and tls_hello_start(hello[:100], 1448)


def test_hellos_as_servers_and_splitters_send_them() -> None:
    server_hello = b"\x02" + (38).to_bytes(3, "big") + b"\x03\x03" + bytes(32) + b"\x00\x13\x01\x00"
    certificate = b"\x0b" + (300).to_bytes(3, "big") + bytes(300)
    done = b"\x0e\x00\x00\x00"
    flight = server_hello + certificate + done  # TLS 1.2: one record, three messages
    rec = b"\x16\x03\x03" + len(flight).to_bytes(2, "big") + flight
    assert tls_hello_start(rec, len(rec))
    assert not tls_hello_start(rec.replace(b"\x0e\x00\x00\x00", b"\x17\x00\x00\x00"), len(rec))
    # a ClientHello split over two records, and over two TCP packets
    hs = tls_client_hello()[5:]
    two = b"\x16\x03\x01\x00\x64" + hs[:100] + b"\x16\x03\x01" + (len(hs) - 100).to_bytes(2, "big") + hs[100:]
    assert tls_hello_start(two, len(two)) and tls_hello_start(two[:60], 60 + 1448)
    # nothing may follow a ClientHello in its records
    extra = tls_client_hello()[:3] + (len(hs) + 4).to_bytes(2, "big") + hs + b"\x0b\x00\x00\x00"
    assert not tls_hello_start(extra, len(extra))


def test_an_ssh_line_then_a_short_whole_packet_is_not_ssh() -> None:
    """Second review: the line and a 6-byte packet header as the whole
    first packet, and as the whole packet after a line alone."""
    d = b"SSH-2.0-x\r\n" + b"\x00\x00\x00\x0c\x04\x14"
    assert ssh_start(d, len(d)) == ""
    kex = ssh_client_start()[len(b"SSH-2.0-OpenSSH_9.6\r\n") :]
    assert ssh_transport_packet(kex, payload_len=len(kex))
    assert not ssh_transport_packet(kex[:40], payload_len=40)  # cut short by a small packet
    assert ssh_transport_packet(kex[:40], payload_len=len(kex))  # cut short by the sample
