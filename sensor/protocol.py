"""Protocol hint from the first payload bytes a socket sends.

A hint, not a parser: it names what the bytes look like (a TLS record, an SSH
banner, an HTTP request line, a DNS query) so that high entropy can be read in
context (TLS on 443 is expected; random bytes on a raw TCP port are not).
"""

from __future__ import annotations

import struct

TLS = "tls"
SSH = "ssh"
HTTP = "http"
DNS = "dns"

_HTTP_PREFIXES = (
    b"GET ", b"POST ", b"PUT ", b"HEAD ", b"DELETE ", b"PATCH ", b"OPTIONS ",
    b"CONNECT ", b"TRACE ", b"HTTP/1.",
)

IPPROTO_TCP = 6
IPPROTO_UDP = 17
TRANSPORTS = {IPPROTO_TCP: "tcp", IPPROTO_UDP: "udp", 1: "icmp", 58: "ipv6-icmp"}


def transport_name(proto: int) -> str:
    return TRANSPORTS.get(proto, str(proto))


def _looks_dns_query(data: bytes) -> bool:
    if len(data) < 17:
        return False
    _id, flags, qd, an, ns, _ar = struct.unpack("!HHHHHH", data[:12])
    if flags & 0x8000 or (flags >> 11) & 0xF not in (0, 2):  # a query, QUERY/STATUS opcode
        return False
    if not 1 <= qd <= 4 or an or ns:
        return False
    # first label length must be sane and followed by printable bytes
    n = data[12]
    return 1 <= n <= 63 and len(data) > 13 + n and all(32 < b < 127 for b in data[13:13 + n])


def protocol_hint(data: bytes, transport: int, dport: int) -> str | None:
    """Name of the protocol the payload starts with, or None if unknown."""
    if not data:
        return None
    if transport == IPPROTO_TCP:
        if len(data) >= 3 and data[0] in (0x16, 0x17, 0x14, 0x15) and data[1] == 0x03 and data[2] <= 0x04:
            return TLS
        if data.startswith(b"SSH-"):
            return SSH
        if data.startswith(_HTTP_PREFIXES):
            return HTTP
        if dport == 53 and len(data) > 2 and _looks_dns_query(data[2:]):
            return DNS
    elif transport == IPPROTO_UDP:
        if _looks_dns_query(data):
            return DNS
    return None
