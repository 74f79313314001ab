"""The many-destinations path of the flow counters: a socket that changes
peer with every packet misses its own socket's cache every time, so each
packet goes through the flow hash (bpf/lib/common.bpf.h). Every packet must
still count under its own destination, in its own window, and under its
own cgroup.

One unconnected socket sends to hundreds of destinations in turn, across
window flips, to destinations that differ only in port or address family;
a server socket hears hundreds of clients (the ingress side); and this
process and a child in a cgroup of its own send to the same destinations
on one CPU. The real loader in this process, real sockets on loopback.
(A per-CPU cache in front of the hash was measured against these tests
and not kept: bench/RESULTS.md.)"""

from __future__ import annotations

import os
import socket
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from sensor.attribution.cgroups import find_cgroup2_mount
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


@contextmanager
def _one_cpu() -> Iterator[None]:
    """Pinned: every send (and a forked child's) runs on the CPU the ones
    before it ran on, where per-CPU state would meet them."""
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(before)})
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def _free_ports(n: int) -> list[int]:
    """n distinct UDP ports nothing listens on (all bound at once, then released)."""
    socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


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
    """Slots are per window generation: after each flip the same
    destinations must count under fresh entries, three flips in a row."""
    port, dests = udp_port(), _dests(200)
    src.drain_flows()
    for rounds in (3, 5, 2):
        _send_rounds(dests, port, rounds)
        got = _egress(src.drain_flows(), port)
        assert got == {d: (rounds, rounds * 40) for d in dests}, rounds


def test_more_destinations_than_entries_still_count_exactly(src: BccSource) -> None:
    """2,000 destinations in turn from one socket: every packet lands in
    its own flow."""
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


def test_destinations_differing_in_port_or_address_family_count_apart(src: BccSource) -> None:
    """Keys that differ only in the port, or in the address family (IPv4
    and IPv6 loopback on the same ports): each its own flow."""
    ports = _free_ports(300)
    ports4, ports6 = ports[:150], ports[150:]  # distinct, so each (address, port) is one flow
    src.drain_flows()
    with (
        _one_cpu(),
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u4,
        socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as u6,
    ):
        for _ in range(4):
            for p4, p6 in zip(ports4, ports6, strict=True):
                u4.sendto(b"4" * 20, ("127.0.0.1", p4))
                u6.sendto(b"6" * 30, ("::1", p6))
                u6.sendto(b"6" * 30, ("::1", p4))  # the IPv4 port, over IPv6
    flows = src.drain_flows()
    got = Counter(
        (f.daddr, f.dport, f.packets, f.payload_bytes)
        for f in flows
        if f.protocol == UDP and f.dport in {*ports4, *ports6}
    )
    want = Counter(
        [("127.0.0.1", p, 4, 80) for p in ports4]
        + [("::1", p, 4, 120) for p in ports6]
        + [("::1", p, 4, 120) for p in ports4]
    )
    assert got == want


def test_two_cgroups_sending_to_the_same_destinations_count_apart(src: BccSource) -> None:
    """The security property: a container's packets never land in another
    container's flow. This process and a child moved into a cgroup of its
    own send to the same 300 destinations in turn, the child between two
    of the parent's rounds, on one CPU: its flow keys differ from the
    parent's only in the cgroup id."""
    port, dests = udp_port(), _dests(300)
    cg = Path(find_cgroup2_mount()) / f"sluice-test-fc-{uuid.uuid4().hex[:8]}"
    cg.mkdir()
    try:
        with _one_cpu():
            src.drain_flows()
            _send_rounds(dests, port, 1)
            child = os.fork()
            if child == 0:  # pragma: no cover - the child
                try:
                    (cg / "cgroup.procs").write_text(str(os.getpid()))
                    _send_rounds(dests, port, 3)
                finally:
                    os._exit(0)
            _pid, status = os.waitpid(child, 0)
            assert status == 0
            _send_rounds(dests, port, 1)
        flows = [f for f in src.drain_flows() if f.dport == port and f.protocol == UDP]
        child_cg = cg.stat().st_ino
        mine = _egress([f for f in flows if f.cgroup_id != child_cg], port)
        theirs = _egress([f for f in flows if f.cgroup_id == child_cg], port)
        assert mine == {d: (2, 80) for d in dests}
        assert theirs == {d: (3, 120) for d in dests}
    finally:
        cg.rmdir()
