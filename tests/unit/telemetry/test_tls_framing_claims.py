"""TLS handshake records are framing only on a socket named TLS.

Handshake records (and alerts, change-cipher-spec) among a socket's first
packets were counted as framing whatever the socket's first bytes were: a
raw socket that put `16 03 03 ff fb` (a 64 KiB handshake record header) in
front of each of its first eight packets had them counted as header and
unknown, and an intruder opening a new connection every eight packets
moved its ciphertext uncounted (found by review). Now only a socket whose
first payload passed the TLS hello check gets that."""

from __future__ import annotations

import os

from emulation.records import tls_client_hello
from sensor.telemetry.counters import FlowCounters, WindowCounters

KEY = (7, "198.18.0.1", 9443, 6)
FAKE = b"\x16\x03\x03\xff\xfb"


def _window(sockets: list[list[bytes]]) -> tuple[int, int]:
    """Every packet of every socket sampled as the kernel samples a
    socket's first packets: (payload, encrypted bytes)."""
    w = WindowCounters()
    total = n = 0
    for cookie, pkts in enumerate(sockets, start=100):
        for i, p in enumerate(pkts):
            off = 64 + (len(p) - 128) // 2
            w.add_sample(
                KEY,
                p[:64],
                i == 0,
                len(p),
                i < 8,
                cookie,
                len(p),
                p[off : off + 64],
                off,
                first_read=p[:2048] if i == 0 else b"",
                sock_index=i,
            )
            total += len(p)
            n += 1
    (s,), _e, _h = w.close([FlowCounters(*KEY, total + 52 * n, n, total, 1, 0, 0, n)])
    return total, s.encrypted_bytes


def test_handshake_headers_on_a_raw_socket_are_not_framing() -> None:
    sockets = [[FAKE + os.urandom(16_000) for _ in range(8)] for _ in range(10)]
    total, enc = _window(sockets)
    assert enc >= 0.97 * total, (enc, total)


def test_a_tls_socket_keeps_its_handshake_as_framing() -> None:
    """A real hello, then a handshake flight of records (a TLS 1.2 client's
    key exchange and Finished), then application data: the handshake is
    not counted encrypted, the application data is."""
    hs = b"\x16\x03\x03\x00\x46" + b"\x10\x00\x00\x42" + os.urandom(0x42)
    app = [b"\x17\x03\x03\x3f\xfb" + os.urandom(16_000) for _ in range(6)]
    pkts = [tls_client_hello(), hs, *app]
    total, enc = _window([pkts])
    app_bytes = sum(len(p) for p in app)
    assert app_bytes * 0.97 <= enc <= app_bytes, (enc, app_bytes, total)
