"""Unconnected UDP sends (cgroup sendmsg4/6): one connect record per
(cgroup, pid, destination) per kernel.udp_send_dedup_ms, the rest counted.

The kernel keeps this cheap per packet (bpf/connect.bpf.c): the socket's own
storage remembers the destination it last reported and for which process,
and time comes from sl_clock, which the loader rewrites at every poll, not
from a clock helper. These tests attack the shortcut: a socket that
alternates destinations, a socket shared by two processes, sends from both
IP versions, and the dedup interval's end with the sensor polling and with
it stalled. The real loader in this process, real sockets on loopback."""

from __future__ import annotations

import dataclasses
import os
import socket
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from sensor.config import default_config
from sensor.kernel import events as E
from sensor.kernel import hooks as H
from sensor.kernel.loader import BccSource
from sensor.kernel.probe import probe

from .harness import udp_port

DEDUP_MS = 300


class Kernel:
    def __init__(self, src: BccSource, raw: list[bytes]) -> None:
        self.src, self.raw = src, raw

    def sends(self, port: int) -> list[E.ConnectEvent]:
        """The sendmsg connect records to this port drained so far."""
        self.src.poll(50)
        return [
            e
            for e in map(E.decode, self.raw)
            if isinstance(e, E.ConnectEvent) and e.op == E.CONNECT_OP_SENDMSG and e.dport == port
        ]

    def deduped(self) -> int:
        return self.src.kernel_stats()["udp_sends_deduplicated"]


@pytest.fixture(scope="module")
def kernel(base: Path) -> Iterator[Kernel]:
    report = probe(True, H.UNITS)
    src = BccSource(dataclasses.replace(default_config().kernel, udp_send_dedup_ms=DEDUP_MS), report)
    raw: list[bytes] = []
    src.start(raw.append)
    try:
        yield Kernel(src, raw)
    finally:
        src.close()


def test_repeated_sends_to_one_destination_report_once(kernel: Kernel) -> None:
    port = udp_port()
    before = kernel.deduped()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
        for _ in range(50):
            u.sendto(b"q" * 32, ("127.0.0.1", port))
    sent = kernel.sends(port)
    assert len(sent) == 1 and sent[0].hdr.pid == os.getpid(), sent
    assert kernel.deduped() - before >= 49


def test_a_socket_alternating_destinations_reports_each_once(kernel: Kernel) -> None:
    """The socket's cache holds one destination: alternating two thrashes it,
    and sl_udp_seen still answers (no report per send)."""
    a, b = udp_port(), udp_port()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
        for _ in range(40):
            u.sendto(b"x", ("127.0.0.1", a))
            u.sendto(b"y", ("127.0.0.1", b))
    assert len(kernel.sends(a)) == 1
    assert len(kernel.sends(b)) == 1


def test_a_shared_socket_reports_each_process(kernel: Kernel) -> None:
    """A child that inherits the socket and sends to the destination its
    parent just reported is a new (pid, destination): reported, not hidden
    behind the parent's entry in the socket's cache."""
    port = udp_port()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
        u.sendto(b"p", ("127.0.0.1", port))
        child = os.fork()
        if child == 0:  # pragma: no cover - the child
            try:
                for _ in range(5):
                    u.sendto(b"c", ("127.0.0.1", port))
            finally:
                os._exit(0)
        os.waitpid(child, 0)
        u.sendto(b"p", ("127.0.0.1", port))
    pids = sorted(e.hdr.pid for e in kernel.sends(port))
    assert pids == sorted([os.getpid(), child]), pids


def test_ipv6_sends_are_deduplicated_the_same_way(kernel: Kernel) -> None:
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
        s.bind(("::1", 0))
        port = s.getsockname()[1]
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as u:
        for _ in range(20):
            u.sendto(b"6", ("::1", port))
    sent = kernel.sends(port)
    assert len(sent) == 1 and sent[0].daddr == "::1", sent


def test_the_interval_ends_while_the_sensor_polls_and_not_while_it_is_stalled(kernel: Kernel) -> None:
    """Time is sl_clock, rewritten at each poll: with polls, a send after
    the interval is reported again; while nobody polls, the clock stands
    still and repeats stay deduplicated (fewer reports, never more), until
    the next poll moves it."""
    port = udp_port()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
        u.sendto(b"1", ("127.0.0.1", port))
        assert len(kernel.sends(port)) == 1
        time.sleep(DEDUP_MS / 1000 + 0.2)  # no poll: the clock stands still
        u.sendto(b"2", ("127.0.0.1", port))
        assert len(kernel.sends(port)) == 1  # this poll moves the clock, after the send
        u.sendto(b"3", ("127.0.0.1", port))
        assert len(kernel.sends(port)) == 2
        deadline = time.monotonic() + DEDUP_MS / 1000 + 0.3
        while time.monotonic() < deadline:  # polled all along
            kernel.sends(port)
        u.sendto(b"4", ("127.0.0.1", port))
        assert len(kernel.sends(port)) == 3


def test_a_socket_changing_destination_every_send_reports_each_once_per_interval(kernel: Kernel) -> None:
    """A DNS server's pattern: one socket, a new destination per send (its
    own cache never hits). The per-CPU cache in front of sl_udp_seen
    (bpf/connect.bpf.c) must answer as the LRU would: each destination once
    per interval, again after it, and 600 destinations over its 512
    entries per CPU evict each other without losing a report."""
    port = udp_port()
    dests = [f"127.0.{2 + i // 250}.{1 + i % 250}" for i in range(600)]

    def reported() -> Counter[str]:
        return Counter(e.daddr for e in kernel.sends(port))

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
        kernel.sends(port)  # the clock moves now, not in the middle of a round
        t0 = time.monotonic()
        for _ in range(3):
            for d in dests:
                u.sendto(b"q", (d, port))
        assert time.monotonic() - t0 < DEDUP_MS / 1000, "the rounds took longer than the interval"
        assert reported() == Counter(dests)
        deadline = time.monotonic() + DEDUP_MS / 1000 + 0.3
        while time.monotonic() < deadline:  # polled: the clock moves past the interval
            kernel.sends(port)
        for d in dests:
            u.sendto(b"q", (d, port))
    assert reported() == Counter({d: 2 for d in dests})
