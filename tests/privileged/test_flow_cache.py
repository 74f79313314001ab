"""The per-CPU flow-slot cache (bpf/lib/common.bpf.h, sl_flow_cache) in
front of the flow hash: a socket that changes peer with every packet must
still count every packet under its own destination, in its own window.

These tests attack the cache: one unconnected socket sending to hundreds of
destinations in turn (its socket's own cache misses every time), the same
across window flips (an entry of the last window must never send a packet
to a slot of the drained generation), more destinations than the cache has
entries (they evict each other), and a server socket receiving from
hundreds of clients (the ingress half). The real loader in this process,
real sockets on loopback."""

from __future__ import annotations

import socket
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from sensor.config import default_config
from sensor.kernel import hooks as H
from sensor.kernel.loader import BccSource
from sensor.kernel.probe import probe
from sensor.telemetry.counters import FlowCounters

from .harness import udp_port

UDP = 17


@pytest.fixture(scope="module")
def src(base: Path) -> Iterator[BccSource]:
    s = BccSource(default_config().kernel, probe(True, H.UNITS))
    s.start(lambda _raw: None)
    try:
        s.drain_flows()  # a clean window
        yield s
    finally:
        s.close()


def _dests(n: int) -> list[str]:
    """n loopback addresses: 127.0.x.y (the whole of 127/8 is loopback)."""
    return [f"127.0.{2 + i // 250}.{1 + i % 250}" for i in range(n)]


def _send_rounds(dests: list[str], port: int, rounds: int, size: int = 40) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
        for _ in range(rounds):
            for d in dests:
                u.sendto(b"x" * size, (d, port))


def _egress(flows: list[FlowCounters], port: int) -> dict[str, tuple[int, int]]:
    """destination -> (packets, payload bytes) of the UDP flows to port."""
    out: dict[str, tuple[int, int]] = {}
    for f in flows:
        if f.dport == port and f.protocol == UDP and f.packets:
            p, b = out.get(f.daddr, (0, 0))
            out[f.daddr] = (p + f.packets, b + f.payload_bytes)
    return out


def test_a_socket_changing_destination_every_packet_counts_each(src: BccSource) -> None:
    port, dests = udp_port(), _dests(300)
    src.drain_flows()
    _send_rounds(dests, port, 7)
    got = _egress(src.drain_flows(), port)
    assert got == {d: (7, 7 * 40) for d in dests}


def test_no_packet_reaches_the_last_windows_slots(src: BccSource) -> None:
    """Cache entries filled in one window name slots of its generation; the
    next window must count under fresh entries, three flips in a row."""
    port, dests = udp_port(), _dests(200)
    src.drain_flows()
    for rounds in (3, 5, 2):
        _send_rounds(dests, port, rounds)
        got = _egress(src.drain_flows(), port)
        assert got == {d: (rounds, rounds * 40) for d in dests}, rounds


def test_more_destinations_than_entries_still_count_exactly(src: BccSource) -> None:
    """2,000 destinations over 512 entries per CPU: they evict each other,
    every packet still lands in its own flow."""
    port, dests = udp_port(), _dests(2000)
    src.drain_flows()
    _send_rounds(dests, port, 3, size=24)
    got = _egress(src.drain_flows(), port)
    assert len(got) == 2000
    assert Counter(got.values()) == Counter({(3, 72): 2000})


def test_a_server_socket_hearing_hundreds_of_clients_counts_each(src: BccSource) -> None:
    """The ingress half: one receiving socket, 300 client sockets sending in
    turn; each client's flow (remote port = the client's) gets its packets."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
        server.bind(("127.0.0.1", 0))
        server.settimeout(5)
        addr = server.getsockname()
        clients = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(300)]
        try:
            for c in clients:
                c.bind(("127.0.0.1", 0))
            ports = {c.getsockname()[1] for c in clients}
            src.drain_flows()
            for _ in range(4):
                for c in clients:
                    c.sendto(b"y" * 33, addr)
                    server.recv(64)
            flows = src.drain_flows()
        finally:
            for c in clients:
                c.close()
    rx = {f.dport: (f.rx_packets, f.rx_payload_bytes) for f in flows if f.dport in ports and f.protocol == UDP}
    assert rx == {p: (4, 4 * 33) for p in ports}
