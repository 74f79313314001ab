"""kernel.count_received = false: the ingress program reads DNS answers
only, and every other received packet leaves after its header parse
(bpf/ingress.bpf.c). What it must keep and what it must stop, with the
default next to it so the difference is the setting's. The real loader in
this process, real UDP sockets on loopback."""

from __future__ import annotations

import dataclasses
import socket
from pathlib import Path

import pytest

from sensor.config import default_config
from sensor.kernel import events as E
from sensor.kernel import hooks as H
from sensor.kernel.loader import BccSource
from sensor.kernel.probe import probe
from sensor.telemetry.counters import FlowCounters

# (family, resolver address, client address): port 53 on 127.0.0.2 and ::1 is free here
FAMILIES = [(socket.AF_INET, "127.0.0.2", "127.0.0.1"), (socket.AF_INET6, "::1", "::1")]
# a DNS response: id, flags (QR, RD, RA), one question, no answer
ANSWER = b"\x12\x34\x81\x80\x00\x01\x00\x00\x00\x00\x00\x00\x07example\x03com\x00\x00\x01\x00\x01"


def _received(flows: list[FlowCounters], resolver: str, port: int) -> int:
    return sum(f.rx_packets for f in flows if f.daddr == resolver and f.dport == port and f.protocol == 17)


@pytest.mark.parametrize("family, resolver, client_ip", FAMILIES, ids=["ipv4", "ipv6"])
@pytest.mark.parametrize("count_received", [True, False])
def test_dns_answers_stay_and_other_received_counts_go(
    base: Path, count_received: bool, family: int, resolver: str, client_ip: str
) -> None:
    src = BccSource(dataclasses.replace(default_config().kernel, count_received=count_received), probe(True, H.UNITS))
    raw: list[bytes] = []
    src.start(raw.append)
    try:
        assert src.counts_received() is count_received
        assert src.status["ingress"].endswith("kernel.count_received = false)") is not count_received
        src.drain_flows()  # a clean window
        with (
            socket.socket(family, socket.SOCK_DGRAM) as client,
            socket.socket(family, socket.SOCK_DGRAM) as dns,
            socket.socket(family, socket.SOCK_DGRAM) as other,
        ):
            client.bind((client_ip, 0))
            client.settimeout(2)
            dns.bind((resolver, 53))
            other.bind((resolver, 0))
            other_port = other.getsockname()[1]
            for _ in range(5):
                dns.sendto(ANSWER, client.getsockname())
                other.sendto(b"\x00" * 100, client.getsockname())
            for _ in range(10):
                client.recv(2048)
        src.poll(100)
        flows = src.drain_flows()
        answers = [e for e in map(E.decode, raw) if isinstance(e, E.DnsEvent) and e.saddr == resolver]
        assert len(answers) == 5 and answers[0].data == ANSWER, answers
        assert _received(flows, resolver, 53) == 5  # the DNS flow is counted either way
        assert _received(flows, resolver, other_port) == (5 if count_received else 0)
    finally:
        src.close()
