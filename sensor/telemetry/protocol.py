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


# A TLS hello's fixed start: handshake header (4), legacy_version (2),
# random (32), session id length (1).
_HELLO_FIXED = 4 + 2 + 32 + 1
_MAX_RECORD = 2**14 + 2048  # TLSCiphertext bound; plaintext records are <= 2^14


def tls_hello_start(data: bytes) -> bool:
    """Does `data` start the way every TLS connection starts, with a
    handshake record carrying a ClientHello (a client's first bytes) or a
    ServerHello (a server's)? Checked as far as `data` goes: the record
    header, the handshake type, a length that holds a hello, the legacy
    version, and the session id's length (at most 32).

    A socket's first record is never anything else: application data,
    alerts and change_cipher_spec come after the hellos. So five bytes of
    a TLS record header put in front of a raw encrypted stream do not make
    it TLS (to port 443 it would pass for expected traffic). A sender that
    forges a whole hello does; this is framing, not a handshake's proof."""
    if len(data) < 11 or data[0] != 0x16 or data[1] != 0x03 or data[2] > 0x04:
        return False
    rlen = int.from_bytes(data[3:5], "big")
    if not 4 + _HELLO_FIXED <= rlen <= _MAX_RECORD or data[5] not in (0x01, 0x02):
        return False
    if int.from_bytes(data[6:9], "big") < _HELLO_FIXED or data[9] != 0x03 or data[10] > 0x04:
        return False
    sid = 5 + _HELLO_FIXED - 1  # the session id length's offset
    return len(data) <= sid or data[sid] <= 32


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


def ssh_transport_packet(data: bytes) -> bool:
    """Does `data` start a cleartext SSH binary packet of the key exchange:
    sane packet and padding lengths, a transport-layer message (20-49) and,
    for KEXINIT, a non-empty first name-list of printable names (checked
    as far as `data` goes)? Fewer than 6 bytes: no."""
    if len(data) < 6:
        return False
    plen = int.from_bytes(data[:4], "big")
    pad = data[4]
    if not 12 <= plen <= _SSH_MAX_PACKET or not 4 <= pad < plen or not 20 <= data[5] <= 49:
        return False
    if data[5] != SSH_KEXINIT or len(data) < 26:
        return True
    n = int.from_bytes(data[22:26], "big")  # after the message number and the 16-byte cookie
    return 0 < n < plen and all(0x21 <= b <= 0x7E for b in data[26 : 26 + n])


def ssh_start(data: bytes) -> str:
    """A TCP socket's first payload as SSH: "ssh" (the identification line,
    then the start of KEXINIT), "banner" (the line alone: the socket's next
    packet must be the key exchange's, see WindowCounters), or "" (not SSH:
    a banner followed by anything else is a banner put in front of a raw
    stream, which to port 22 would pass for expected traffic)."""
    rest = ssh_banner_rest(data)
    if rest is None:
        return ""
    if len(rest) < 6:  # the line ends the packet, or the sample (a line of 58 bytes or more)
        return "banner"
    return SSH if ssh_transport_packet(rest) else ""


def protocol_hint(data: bytes, transport: int, dport: int) -> str | None:
    """Name of the protocol a socket's first payload starts, or None if
    unknown (for UDP, of a datagram)."""
    if not data:
        return None
    if transport == IPPROTO_TCP:
        if tls_hello_start(data):
            return TLS
        if ssh_start(data):
            return SSH  # "banner": confirmed or not by the socket's next packet (WindowCounters)
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
