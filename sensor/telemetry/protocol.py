"""Protocol hint from the first payload bytes a socket sends.

A hint, not a parser: it names what the bytes look like (a TLS record, an SSH
banner, an HTTP request line, a DNS query) so that high entropy can be read in
context (TLS on 443 is expected; random bytes on a raw TCP port are not).
"""

from __future__ import annotations

import re
import struct

from sensor.text import safe_text

TLS = "tls"
SSH = "ssh"
HTTP = "http"
DNS = "dns"

# Docker's embedded resolver, on every user-defined network: queries to it
# reach the egress hook DNAT'ed to a per-container port (the connect hook
# still sees port 53), so the kernel's flows and samples name that port.
# Reported as port 53: a DNS destination, judged by its names, and the same
# destination after the container is recreated (bpf/egress.bpf.c
# sl_dns_dest samples its queries as DNS).
DOCKER_DNS = "127.0.0.11"


def dns_port(daddr: str, dport: int) -> int:
    """The destination port to report: 53 for Docker's embedded resolver
    (whatever port its DNAT gave), else the port itself."""
    return 53 if daddr == DOCKER_DNS else dport


HTTP_PREFIXES = (
    b"GET ",
    b"POST ",
    b"PUT ",
    b"HEAD ",
    b"DELETE ",
    b"PATCH ",
    b"OPTIONS ",
    b"CONNECT ",
    b"TRACE ",
    b"HTTP/1.",
)

IPPROTO_TCP = 6
IPPROTO_UDP = 17
TRANSPORTS = {IPPROTO_TCP: "tcp", IPPROTO_UDP: "udp", 1: "icmp", 58: "ipv6-icmp"}


def transport_name(proto: int) -> str:
    return TRANSPORTS.get(proto, str(proto))


def _dns_query_header(data: bytes) -> bool:
    """A DNS query header followed by a plausible first label length."""
    if len(data) < 13:
        return False
    _id, flags, qd, an, ns, _ar = struct.unpack("!HHHHHH", data[:12])
    if flags & 0x8000 or (flags >> 11) & 0xF not in (0, 2):  # a query, QUERY/STATUS opcode
        return False
    return 1 <= qd <= 4 and not an and not ns and 1 <= data[12] <= 63


def _looks_dns_query(data: bytes) -> bool:
    if len(data) < 17 or not _dns_query_header(data):
        return False
    # the first label must be followed by printable bytes
    n = data[12]
    return len(data) > 13 + n and all(32 < b < 127 for b in data[13 : 13 + n])


DNS_CUT = -1  # dns_query_end: the read ended inside the message


def _dns_name_end(data: bytes, i: int, printable: bool) -> int | None:
    """Offset after the domain name at `i` (labels, then a zero byte or a
    compression pointer), DNS_CUT when `data` ends inside it, None when it
    is not one. printable: labels of printable ASCII only (a question's
    name; random bytes almost never pass)."""
    total = 0
    while True:
        if i >= len(data):
            return DNS_CUT
        n = data[i]
        if n == 0:
            return i + 1
        if n & 0xC0 == 0xC0:
            return i + 2 if i + 2 <= len(data) else DNS_CUT
        if n > 63:
            return None
        total += n + 1
        if total > 255:
            return None
        label = data[i + 1 : i + 1 + n]
        if printable and not all(32 < b < 127 for b in label):
            return None
        if len(label) < n:
            return DNS_CUT
        i += 1 + n


# EDNS options a query carries (RFC 6891 and its extensions), each at most
# once, with the longest each may be: NSID and EXPIRE (empty in a query),
# DAU/DHU/N3U (algorithm numbers), client subnet (ECS), a cookie (the
# client's 8 bytes, or with the server's: 16..40), keepalive, padding (all
# zeros). Any other option, a longer or repeated one, is no query: option
# bytes are not judged, so they would carry anything.
_EDNS_OPTION_MAX = {3: 0, 5: 16, 6: 16, 7: 16, 8: 20, 9: 0, 10: 40, 11: 2, 12: 512}


def _ecs_ok(body: bytes) -> bool:
    """A client subnet as a query sends it: family 1 or 2, a source prefix
    of at most /24 or /56 in as many bytes as it needs, scope 0, no bits
    set past the prefix."""
    if len(body) < 4:
        return False
    family, source, scope = struct.unpack_from("!HBB", body)
    addr = body[4:]
    if family not in (1, 2) or scope or source > (24 if family == 1 else 56) or len(addr) != (source + 7) // 8:
        return False
    return not addr or source % 8 == 0 or addr[-1] & (0xFF >> (source % 8)) == 0


def _edns_options_ok(rdata: bytes) -> bool:
    i = 0
    seen: set[int] = set()
    while i + 4 <= len(rdata):
        code, n = struct.unpack_from("!HH", rdata, i)
        body = rdata[i + 4 : i + 4 + n]
        if code in seen or len(body) < n or n > _EDNS_OPTION_MAX.get(code, -1):
            return False
        seen.add(code)
        if code == 12 and body.count(0) != n:
            return False
        if code == 10 and not (n == 8 or 16 <= n <= 40):
            return False
        if code == 8 and not _ecs_ok(body):
            return False
        i += 4 + n
    return i == len(rdata)


def dns_query_end(data: bytes) -> int | None:
    """Length of the DNS query message `data` starts with (header, one
    question with a printable name, at most one additional record: EDNS's
    OPT with known options; no answer or authority records), DNS_CUT when
    `data` ends inside it, None when it does not start one. Nothing in a
    query goes unjudged but a name (SL-EXF-003 reads it) and those options."""
    if len(data) < 12:
        return DNS_CUT if data else None
    _id, flags, qd, an, ns, ar = struct.unpack_from("!HHHHHH", data)
    if flags & 0x8000 or (flags >> 11) & 0xF not in (0, 2) or qd != 1 or an or ns or ar > 1:
        return None
    end = _dns_name_end(data, 12, True)
    if end is None or end == DNS_CUT:
        return end
    i = end + 4  # type, class
    if i > len(data):
        return DNS_CUT
    if ar:
        # OPT: the root name, type 41, the UDP size, extended flags, options
        if i + 11 > len(data):
            return DNS_CUT
        if data[i] != 0 or struct.unpack_from("!H", data, i + 1)[0] != 41:
            return None
        n = struct.unpack_from("!H", data, i + 9)[0]
        rdata = data[i + 11 : i + 11 + n]
        if len(rdata) < n:
            return DNS_CUT
        if not _edns_options_ok(rdata):
            return None
        i += 11 + n
    return i


def dns_query(data: bytes, transport: int, payload_len: int | None = None) -> bool:
    """Does the packet carry DNS queries and nothing else, as far as `data`
    (its payload's first bytes; payload_len: all of them) shows? Over UDP one
    query; over TCP queries each behind its 2-byte length, or one without
    it (a client that writes the length in a packet of its own). What goes
    to port 53 and is not that is judged like any other payload: the port
    names nothing (a raw stream to an intruder's own port 53, or queries
    with other bytes behind them). Every query must end within `data`: the
    kernel reads up to 256 bytes of a packet to port 53, and a query longer
    than that (a name padded past the read) would vouch for bytes no one
    saw; such a packet is judged by its bytes (its names still go to
    SL-EXF-003)."""
    plen = len(data) if payload_len is None else max(payload_len, len(data))
    if dns_query_end(data) == plen:
        return True  # one query (over TCP: its length went in a packet of its own)
    if transport != IPPROTO_TCP:
        return False
    i = 0
    while i + 2 <= len(data) and i < plen:
        n = int.from_bytes(data[i : i + 2], "big")
        if dns_query_end(data[i + 2 : i + 2 + n]) != n:
            return False
        i += 2 + n
    return i == plen


# A TLS hello's body (after the 4-byte handshake header): legacy_version
# (2), random (32), the session id (1 + at most 32); then a ClientHello's
# cipher suites (2 + 2n, n >= 1), compression methods (1 + m, m >= 1, null
# among them) and extensions (2 + their lengths, optional); a ServerHello's
# cipher suite (2), compression method (1, null) and extensions. The
# shortest body is a ServerHello's without extensions: 38 bytes.
_HELLO_MIN_BODY = 38
# 256 cipher suites: more than any client offers (OpenSSL's default list has
# ~60). Bounded, every length a ClientHello has before its extensions is in
# the kernel's 2 KiB first read, and the extensions' total must add up.
_MAX_CIPHER_SUITES_LEN = 512
_MAX_RECORD = 2**14 + 2048  # TLSCiphertext bound; plaintext records are <= 2^14
# A hello split over TCP packets (a path without segmentation offload, a
# hello longer than the MSS) is split by full-sized segments: the smallest
# MSS an IPv4 host must accept is 536 bytes.
_MIN_SPLIT_SEGMENT = 536


def tls_handshake(data: bytes) -> tuple[bytes, bool]:
    """Concatenated payloads of the leading TLS handshake records (a hello
    may span records), and whether `data` ran out inside them (the last
    record cut short: what follows was not seen). False: the records end
    within `data`, before bytes that are not a handshake record."""
    out = bytearray()
    i = 0
    while i + 5 <= len(data) and data[i] == 0x16 and data[i + 1] == 0x03:
        n = int.from_bytes(data[i + 3 : i + 5], "big")
        out += data[i + 5 : i + 5 + n]
        i += 5 + n
    return bytes(out), i + 5 > len(data)


# What may follow a ServerHello in the server's first handshake records
# (TLS 1.2): certificate, server_key_exchange, certificate_request,
# server_hello_done, certificate_status. A ClientHello comes alone.
_AFTER_SERVER_HELLO = frozenset((11, 12, 13, 14, 22))


class _Cut(Exception):
    """The bytes seen end before the field: checked as far as they go."""


def _hello_body_fits(h: bytes, client: bool, ran_out: bool) -> bool:
    """The hello's variable part (h: handshake bytes from the header on;
    ran_out: `data` ended inside them), checked as far as h goes: every
    field within the message (a message too short for its fields is not a
    hello), the cipher suites and compression methods well formed, the
    extensions adding up to the message's end; a message longer than its
    records only when the records were cut; after it, nothing (a
    ClientHello) or the server's next handshake messages."""
    end = 4 + int.from_bytes(h[1:4], "big")  # the message's end in h
    if end > len(h) and not ran_out:
        return False  # longer than its records, and something else follows them
    p = 4 + 2 + 32

    def field(k: int) -> bytes:
        """The k bytes at p: past the message's end, not a hello (ValueError);
        past what was seen, _Cut."""
        if p + k > end:
            raise ValueError
        if p + k > len(h):
            raise _Cut
        return h[p : p + k]

    try:
        p += 1 + field(1)[0]  # session id
        if client:
            n = int.from_bytes(field(2), "big")
            if n < 2 or n % 2 or n > _MAX_CIPHER_SUITES_LEN:
                return False
            p += 2 + n
            m = field(1)[0]
            if m < 1:
                return False
            p += 1
            if 0 not in field(m):  # compression methods: null among them
                return False
            p += m
        else:
            field(2)  # the cipher suite
            p += 2
            if field(1)[0] != 0:  # compression: null
                return False
            p += 1
        if p < end:
            if p + 2 + int.from_bytes(field(2), "big") != end:  # the extensions' total
                return False
            p += 2
            while p < end:
                p += 4 + int.from_bytes(field(4)[2:4], "big")
            if p != end:
                return False
        elif p > end:
            return False
    except ValueError:
        return False
    except _Cut:
        return True
    if end >= len(h):
        return True  # nothing after the message, or the message not seen to its end
    if client:
        return False  # more handshake bytes after the ClientHello
    p = end
    while p + 4 <= len(h):
        if h[p] not in _AFTER_SERVER_HELLO:
            return False
        p += 4 + int.from_bytes(h[p + 1 : p + 4], "big")
    return p == len(h) or ran_out


def tls_hello_start(data: bytes, payload_len: int | None = None) -> bool:
    """Does `data` start the way every TLS connection starts, with a
    handshake record carrying a ClientHello (a client's first bytes) or a
    ServerHello (a server's)? Checked as far as `data` goes (the kernel
    reads a first payload that starts with a handshake record up to 2 KiB,
    a whole hello as a rule): the record header, the handshake type, the
    legacy version, the session id, the cipher suites and compression
    methods, and extensions that add up to the message's length.
    payload_len: the packet's payload bytes; when `data` is all of it, a
    packet shorter than the shortest hello is not one.

    A socket's first record is never anything else: application data,
    alerts and change_cipher_spec come after the hellos. So a TLS record
    header put in front of a raw encrypted stream does not make it TLS (to
    port 443 it would pass for expected traffic), nor does a hello's first
    bytes followed by anything. A sender that forges a well-formed hello
    does: this is the form of a handshake, not its proof."""
    if len(data) < 11 or data[0] != 0x16 or data[1] != 0x03 or data[2] > 0x04:
        return False
    whole = payload_len is not None and payload_len <= len(data)
    if whole and len(data) < 9 + _HELLO_MIN_BODY:
        return False
    rlen = int.from_bytes(data[3:5], "big")
    if not 4 + _HELLO_MIN_BODY <= rlen <= _MAX_RECORD or data[5] not in (0x01, 0x02):
        return False
    body = int.from_bytes(data[6:9], "big")
    if body < _HELLO_MIN_BODY or data[9] != 0x03 or data[10] > 0x04:
        return False
    if len(data) > 43 and data[43] > 32:  # the session id's length
        return False
    h, ran_out = tls_handshake(data)
    if whole and 4 + body > len(h) and len(data) < _MIN_SPLIT_SEGMENT:
        return False  # a hello the packet cuts short: only a full-sized TCP segment does that
    return _hello_body_fits(h, data[5] == 0x01, ran_out)


# SSH (RFC 4253): an identification line, then binary packets, the first
# of which is KEXINIT, in cleartext: packet_length (4), padding_length (1),
# the message number, then (KEXINIT) a 16-byte cookie and name-lists of
# printable US-ASCII, kex_algorithms first.
_SSH_BANNERS = (b"SSH-2.0-", b"SSH-1.99-")
_SSH_MAX_PACKET = 35000  # what every implementation must accept; larger is not a first packet
SSH_KEXINIT = 20


def ssh_banner_rest(data: bytes) -> bytes | None:
    """What follows a socket's SSH identification line in `data` (b"" when
    the line ends the sample or runs past it), or None when `data` does not
    start with one (a version other than 2.0 / 1.99, a line longer than the
    255 bytes the protocol allows, or control bytes in it)."""
    if not data.startswith(_SSH_BANNERS):
        return None
    end = data.find(b"\n", 0, 256)
    line = data[: end if end >= 0 else min(len(data), 256)].rstrip(b"\r")
    if end < 0 and len(data) >= 256:
        return None
    if any(b < 0x20 or b > 0x7E for b in line):
        return None
    return data[end + 1 :] if end >= 0 else b""


def ssh_transport_packet(data: bytes, kexinit: bool = True, payload_len: int | None = None) -> bool:
    """Does `data` start a cleartext SSH binary packet: packet and padding
    lengths that fit, a whole packet a multiple of 8 bytes long (RFC 4253
    section 6, before any cipher), and KEXINIT (kexinit: the first packet
    after the identification line; else any transport-layer message,
    20-49) with a non-empty first name-list of printable names, checked as
    far as `data` goes? payload_len: the TCP packet's payload bytes from
    `data`'s start on, when known: a packet seen whole must hold the
    name-list, and the SSH packet unless the TCP packet is full-sized."""
    if len(data) < 6:
        return False
    plen = int.from_bytes(data[:4], "big")
    pad = data[4]
    if not 12 <= plen <= _SSH_MAX_PACKET or (plen + 4) % 8 or not 4 <= pad < plen:
        return False
    whole = payload_len is not None and payload_len <= len(data)
    if whole and len(data) < 4 + plen and len(data) < _MIN_SPLIT_SEGMENT:
        return False  # an SSH packet the TCP packet cuts short: only a full-sized segment does that
    if data[5] != SSH_KEXINIT:
        return not kexinit and 20 < data[5] <= 49
    if len(data) < 26:
        return not whole
    n = int.from_bytes(data[22:26], "big")  # after the message number and the 16-byte cookie
    if whole and len(data) < 26 + n:
        return False
    return 0 < n < plen and all(0x21 <= b <= 0x7E for b in data[26 : 26 + n])


# ssh_start's answers besides SSH and "": the identification line alone (the
# socket's next packet must be KEXINIT), or with bytes the sample did not
# show after it (KEXINIT may have been among them: the next packet may be
# any message of the key exchange).
SSH_BANNER = "banner"
SSH_BANNER_CUT = "banner-cut"


def ssh_start(data: bytes, payload_len: int | None = None) -> str:
    """A TCP socket's first payload as SSH: SSH (the identification line,
    then the start of KEXINIT), SSH_BANNER / SSH_BANNER_CUT (the line; what
    follows it is the socket's next packet, or was not seen: WindowCounters
    decides by that packet), or "" (not SSH: a line followed by anything
    else is a banner put in front of a raw stream, which to port 22 would
    pass for expected traffic). payload_len: the packet's payload bytes,
    when known (`data` may be a prefix)."""
    rest = ssh_banner_rest(data)
    if rest is None:
        return ""
    cut = payload_len is None or payload_len > len(data)
    if len(rest) >= 6:
        rest_len = None if payload_len is None else payload_len - (len(data) - len(rest))
        return SSH if ssh_transport_packet(rest, payload_len=rest_len) else ""
    if rest and not cut:
        return ""  # a few bytes after the line, then the packet ends
    return SSH_BANNER_CUT if cut else SSH_BANNER


def protocol_hint(data: bytes, transport: int, dport: int, payload_len: int | None = None) -> str | None:
    """Name of the protocol a socket's first payload starts, or None if
    unknown (for UDP, of a datagram); payload_len: the packet's payload
    bytes, when known (`data` may be a prefix)."""
    if not data:
        return None
    if transport == IPPROTO_TCP:
        if tls_hello_start(data, payload_len):
            return TLS
        if ssh_start(data, payload_len):
            return SSH  # or a line alone: confirmed or not by the socket's next packet (WindowCounters)
        if data.startswith(HTTP_PREFIXES):
            return HTTP
        if dport == 53 and len(data) > 2 and _looks_dns_query(data[2:]):
            return DNS
    elif transport == IPPROTO_UDP:
        if _looks_dns_query(data):
            return DNS
    return None


# Stream-start magic numbers of compressed (not encrypted) formats. Entropy
# alone cannot tell compressed from encrypted data; a known container format
# at the start of a stream or body is the cheap tell.
_COMPRESSION_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\x1f\x8b", "gzip"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"BZh", "bzip2"),
    (b"PK\x03\x04", "zip"),
    (b"7z\xbc\xaf\x27\x1c", "7z"),
    (b"\x04\x22\x4d\x18", "lz4"),
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"\xff\xd8\xff", "jpeg"),
    (b"GIF8", "gif"),
    (b"RIFF", "riff"),
    (b"%PDF", "pdf"),
)
_CONTENT_ENCODING = re.compile(rb"(?im)^content-encoding:\s*(gzip|br|deflate|zstd|compress)")


def compression_magic(data: bytes) -> str | None:
    """Name of the compressed format `data` starts with, if any."""
    for magic, name in _COMPRESSION_MAGIC:
        if data.startswith(magic):
            return name
    return None


def split_http(data: bytes) -> tuple[bytes, bytes, str | None]:
    """(headers, body start, content encoding) of an HTTP message start."""
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        return data, b"", None
    m = _CONTENT_ENCODING.search(head)
    return head, body, (m.group(1).decode().lower() if m else None)


def dns_qname(data: bytes, transport: int) -> tuple[str, bool] | None:
    """(query name, complete?) of a DNS query packet; None if not one.

    `complete` is False when the sample ended inside the name.
    """
    if transport == IPPROTO_TCP:
        data = data[2:]
    if not _dns_query_header(data):
        return None
    labels: list[str] = []
    i = 12
    while i < len(data):
        n = data[i]
        if n == 0:
            return ".".join(labels), True
        if n > 63:  # compression pointers do not occur in a question's first name
            return None
        label = data[i + 1 : i + 1 + n]
        labels.append(safe_text(label))
        if len(label) < n:
            return ".".join(labels), False
        i += 1 + n
    return ".".join(labels), False
