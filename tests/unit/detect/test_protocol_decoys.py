"""Decoy connections against the protocol hint, from samples to alerts.

Sockets of one container to one destination share a flow. The protocol hint
was the flow's, set by whichever socket started last: an attacker who has
read the source opens a second connection whose first bytes name another
protocol, and the rules read the exfiltration's bytes under that name (an
HTTP upload of ciphertext as SSH, so SL-EXF-003 looks away; a raw encrypted
stream to 443 as TLS, so SL-EXF-002 does). Each test feeds real samples
through WindowCounters (classifier included) and runs the rules on the
summary it builds.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

from emulation.records import ssh_client_start, tls_client_hello
from sensor.attribution.workload import workload_of
from sensor.detect.view import FlowView
from sensor.outputs.documents import flow_summary
from sensor.telemetry.counters import FlowCounters, FlowSummary, WindowCounters
from tests.support.ecs_schema import validate
from tests.support.views import KIB, T0, WINDOW, container, detector, flow, learn, window
from tests.support.views import config as make_config

RNG = random.Random(5)
WEB = container("web-1", image="acme/web:2")
SINK = "198.51.100.20"
A, B, C = 2001, 2002, 2003  # socket cookies
POST = b"POST /upload HTTP/1.1\r\nHost: sink.example\r\nContent-Type: application/octet-stream\r\n\r\n"
TLS_HELLO = tls_client_hello()
SSH_BANNER = ssh_client_start()  # the identification line and KEXINIT's start
DET = T0 + 3600.0


def rules_of(alerts: list[dict[str, Any]]) -> list[str]:
    return sorted(a["rule"]["id"] for a in alerts)


def key(port: int) -> tuple[int, str, int, int]:
    return (WEB.cgroup_id, SINK, port, 6)


def close(w: WindowCounters, port: int, payload: int) -> FlowSummary:
    packets = max(1, payload // 1400)
    (s,), _e, _h = w.close(
        [FlowCounters(WEB.cgroup_id, SINK, port, 6, payload + 52 * packets, packets, payload, 2, 0, 0, 8)]
    )
    return s


def view(s: FlowSummary) -> FlowView:
    return FlowView(s, WEB, workload_of(WEB), SINK, s.key[2], "tcp", None, None)


def http_ciphertext(w: WindowCounters, port: int, cookie: int) -> None:
    """An upload of ciphertext over plain HTTP: the head, then body packets."""
    w.add_sample(key(port), POST, True, len(POST), True, cookie)
    for i in range(6):
        w.add_sample(key(port), RNG.randbytes(64), False, 1400, i < 3, cookie, span_bytes=64 * KIB)


def raw_ciphertext(w: WindowCounters, port: int, cookie: int) -> None:
    w.add_sample(key(port), RNG.randbytes(64), True, 1400, True, cookie)
    for i in range(6):
        w.add_sample(key(port), RNG.randbytes(64), False, 1400, i < 3, cookie, span_bytes=64 * KIB)


def decoy(w: WindowCounters, port: int, cookie: int, first: bytes) -> None:
    w.add_sample(key(port), first + b"x" * 8, True, len(first) + 8, True, cookie)


def beside_decoy(
    w: WindowCounters, port: int, first: bytes, decoy_first: bool, exfil: Callable[[WindowCounters, int, int], None]
) -> None:
    """The exfiltration (socket A) beside a decoy (socket B) that starts
    before it, or after it (then the decoy is the last socket start)."""
    if decoy_first:
        decoy(w, port, B, first)
    exfil(w, port, A)
    if not decoy_first:
        decoy(w, port, B, first)


def plain_http_baseline() -> Any:
    """web-1 has posted plain-text bodies to the sink on port 80 for hours."""
    return learn(
        window(T0 + i * WINDOW, flows=[flow(WEB, SINK, 80, 40 * KIB, proto="http", entropy=5.1)]) for i in range(5)
    )


# --- SL-EXF-003: an SSH or TLS decoy must not relabel an HTTP upload ------------------


def test_http_upload_of_ciphertext_to_a_known_sink_fires_without_a_decoy(tmp_path: Path) -> None:
    w = WindowCounters()
    http_ciphertext(w, 80, A)
    h = detector(make_config(tmp_path), plain_http_baseline())
    assert rules_of(h.run(window(DET, flows=[view(close(w, 80, 400 * KIB))]))) == ["SL-EXF-003"]


def test_a_decoy_connection_does_not_relabel_an_http_upload_of_ciphertext(tmp_path: Path) -> None:
    for first in (SSH_BANNER, TLS_HELLO, b"\x00\x01binary-hello"):
        for decoy_first in (False, True):
            w = WindowCounters()
            beside_decoy(w, 80, first, decoy_first, http_ciphertext)
            s = close(w, 80, 400 * KIB)
            assert "http" in s.protocols() and s.opaque_of("http") > 300 * KIB, s.by_protocol
            h = detector(make_config(tmp_path), plain_http_baseline())
            alerts = h.run(window(DET, flows=[view(s)]))
            assert "SL-EXF-003" in rules_of(alerts), (first, decoy_first, s.by_protocol)
            a = next(a for a in alerts if a["rule"]["id"] == "SL-EXF-003")
            ev = a["sluice"]["evidence"]
            assert ev["kind"] == "encrypted_http_body" and ev["bytes"] > 300 * KIB
            # the alert shows the flow's sockets spoke two protocols
            assert set(ev["protocols"]) == {
                "http",
                "ssh" if first == SSH_BANNER else "tls" if first == TLS_HELLO else "unknown",
            }
            assert ev["protocols"]["http"]["encrypted_bytes"] > 300 * KIB


def test_plain_http_beside_a_tls_connection_to_the_same_port_is_silent(tmp_path: Path) -> None:
    """The other way round: TLS's ciphertext is not an HTTP body."""
    w = WindowCounters()
    w.add_sample(key(8080), TLS_HELLO + RNG.randbytes(53), True, 517, True, A)
    for _ in range(6):
        w.add_sample(
            key(8080), b"\x17\x03\x03\x40\x00" + RNG.randbytes(59), False, 16 * KIB, False, A, span_bytes=64 * KIB
        )
    w.add_sample(key(8080), POST + b"name=alice&note=" + b"hello world " * 4, True, 200, True, B)
    s = close(w, 8080, 400 * KIB)
    assert s.opaque_of("http") == 0 and s.opaque_of("tls") > 300 * KIB, s.by_protocol
    assert "SL-EXF-003" not in rules_of(detector(make_config(tmp_path)).run(window(DET, flows=[view(s)])))


# --- SL-EXF-002: a TLS connection to 443 must not vouch for a raw stream beside it ----


def test_a_tls_record_header_in_front_of_a_raw_stream_to_443_does_not_make_it_tls(tmp_path: Path) -> None:
    """The socket's first bytes are an application-data record header,
    not a hello: the stream is raw (tests/adversarial/test_protocol_lookalikes.py
    does it with real sockets)."""
    w = WindowCounters()
    w.add_sample(key(443), b"\x17\x03\x03\x40\x00" + RNG.randbytes(59), True, 16 * KIB, True, A)
    for i in range(6):
        w.add_sample(key(443), RNG.randbytes(64), False, 16 * KIB, i < 3, A, span_bytes=64 * KIB)
    s = close(w, 443, 400 * KIB)
    assert s.protocols() == {None} and s.opaque_of(None) > 300 * KIB, s.by_protocol
    alerts = detector(make_config(tmp_path)).run(window(DET, flows=[view(s)]))
    (a,) = [a for a in alerts if a["rule"]["id"] == "SL-EXF-002"]
    assert a["sluice"]["evidence"]["kind"] == "raw_encrypted_stream"


def _banner_then(w: WindowCounters, second: bytes) -> FlowSummary:
    """A socket to port 22 whose first packet is an SSH identification line
    alone; its next packet `second`, then ciphertext."""
    w.add_sample(key(22), b"SSH-2.0-OpenSSH_9.6\r\n", True, 21, True, A)
    w.add_sample(key(22), second, False, 1400, True, A)
    for i in range(6):
        w.add_sample(key(22), RNG.randbytes(64), False, 16 * KIB, i < 2, A, span_bytes=64 * KIB)
    return close(w, 22, 400 * KIB)


def test_an_ssh_banner_alone_in_front_of_a_raw_stream_to_22_does_not_make_it_ssh(tmp_path: Path) -> None:
    """The banner in a packet of its own, then no key exchange: the socket
    is raw from its next packet on."""
    s = _banner_then(WindowCounters(), RNG.randbytes(64))
    assert s.opaque_of(None) > 300 * KIB and s.opaque_of("ssh") == 0, s.by_protocol
    alerts = detector(make_config(tmp_path)).run(window(DET, flows=[view(s)]))
    (a,) = [a for a in alerts if a["rule"]["id"] == "SL-EXF-002"]
    assert a["sluice"]["evidence"]["kind"] == "raw_encrypted_stream"


def test_an_ssh_banner_then_its_key_exchange_stays_ssh(tmp_path: Path) -> None:
    kexinit = ssh_client_start()[len(b"SSH-2.0-OpenSSH_9.6\r\n") :]
    s = _banner_then(WindowCounters(), kexinit + RNG.randbytes(8))
    assert s.protocols() == {"ssh"} and s.opaque_of("ssh") > 300 * KIB, s.by_protocol
    alerts = detector(make_config(tmp_path)).run(window(DET, flows=[view(s)]))
    assert "SL-EXF-002" not in rules_of(alerts)


def test_raw_stream_to_443_fires_beside_a_tls_decoy(tmp_path: Path) -> None:
    for decoy_first in (False, True):
        w = WindowCounters()
        beside_decoy(w, 443, TLS_HELLO, decoy_first, raw_ciphertext)
        s = close(w, 443, 400 * KIB)
        assert s.opaque_of(None) > 300 * KIB, s.by_protocol
        alerts = detector(make_config(tmp_path)).run(window(DET, flows=[view(s)]))
        ours = [a for a in alerts if a["rule"]["id"] == "SL-EXF-002"]
        assert len(ours) == 1, (decoy_first, rules_of(alerts), s.by_protocol)
        ev = ours[0]["sluice"]["evidence"]
        assert ev["kind"] == "raw_encrypted_stream" and ev["bytes"] > 300 * KIB
        assert "raw encrypted-looking TCP stream" in ours[0]["message"]


def test_ssh_off_its_port_fires_beside_an_http_decoy(tmp_path: Path) -> None:
    w = WindowCounters()
    w.add_sample(key(8080), SSH_BANNER, True, len(SSH_BANNER), True, A)
    for _ in range(6):
        w.add_sample(key(8080), RNG.randbytes(64), False, 1400, False, A, span_bytes=64 * KIB)
    decoy(w, 8080, B, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    s = close(w, 8080, 400 * KIB)
    alerts = detector(make_config(tmp_path)).run(window(DET, flows=[view(s)]))
    kinds = [a["sluice"]["evidence"]["kind"] for a in alerts if a["rule"]["id"] == "SL-EXF-002"]
    assert kinds == ["ssh_on_nonstandard_port"], (rules_of(alerts), s.by_protocol)


def test_real_tls_beside_a_plain_connection_is_silent(tmp_path: Path) -> None:
    """No false positive the other way: the TLS session's ciphertext is the
    TLS socket's, not the plain-text socket's (no hint, nothing opaque)."""
    w = WindowCounters()
    w.add_sample(key(443), TLS_HELLO + RNG.randbytes(53), True, 517, True, A)
    for _ in range(6):
        w.add_sample(
            key(443), b"\x17\x03\x03\x40\x00" + RNG.randbytes(59), False, 16 * KIB, False, A, span_bytes=64 * KIB
        )
    w.add_sample(key(443), b"PING keepalive " * 4, True, 60, True, B)
    s = close(w, 443, 400 * KIB)
    assert s.opaque_of(None) == 0, s.by_protocol
    assert "SL-EXF-002" not in rules_of(detector(make_config(tmp_path)).run(window(DET, flows=[view(s)])))


def tls_records(w: WindowCounters, port: int, cookie: int, n: int = 6) -> None:
    for _ in range(n):
        data = b"\x17\x03\x03\x40\x00" + RNG.randbytes(59)
        w.add_sample(key(port), data, False, 16 * KIB, False, cookie, span_bytes=64 * KIB)


def test_a_socket_whose_start_was_not_seen_takes_the_protocol_every_start_named(tmp_path: Path) -> None:
    """A TLS connection open before the sensor started has no first bytes to
    name it: it takes the protocol the flow's socket starts named, also for
    its samples before the first start of the window (no raw-stream alert
    after a sensor restart)."""
    w = WindowCounters()
    tls_records(w, 443, C)  # the old connection: no socket start
    w.add_sample(key(443), TLS_HELLO + RNG.randbytes(53), True, 517, True, A)  # a new one
    tls_records(w, 443, C)
    s = close(w, 443, 800 * KIB)
    assert s.protocols() == {"tls"} and s.opaque_of("tls") > 700 * KIB, s.by_protocol
    assert "SL-EXF-002" not in rules_of(detector(make_config(tmp_path)).run(window(DET, flows=[view(s)])))
    # with no start seen at all it is unnamed, as before per-socket hints
    w2 = WindowCounters()
    tls_records(w2, 8443, C)
    assert close(w2, 8443, 400 * KIB).protocols() == {None}


def test_dns_lookups_do_not_push_a_tls_connections_protocol_out(tmp_path: Path) -> None:
    """A resolver opens a socket per lookup: thousands of them must not make
    the sensor forget the long-lived TLS connection beside them (which would
    then read as a raw stream)."""
    w = WindowCounters(per_cgroup=64)
    w.add_sample(key(443), TLS_HELLO + RNG.randbytes(53), True, 517, True, A)
    dns = (WEB.cgroup_id, "192.0.2.53", 53, 17)
    for i in range(5000):
        q = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x03api\x07example\x03com\x00\x00\x01\x00\x01"
        w.add_sample(dns, q, True, len(q), True, 50_000 + i)
    assert len(w.sock_protocols) == 1 and w.sock_protocols.evictions == 0
    w.close([])
    tls_records(w, 443, A)
    s = close(w, 443, 400 * KIB)
    assert s.protocols() == {"tls"}, s.by_protocol
    assert rules_of(detector(make_config(tmp_path)).run(window(DET, flows=[view(s)]))) == []


def test_forgotten_tls_connection_keeps_its_name_when_every_start_agreed(tmp_path: Path) -> None:
    """A container churning more than its share of sockets pushes out an idle
    connection's protocol: it is named again by the flow's starts."""
    w = WindowCounters(per_cgroup=64)
    w.add_sample(key(443), TLS_HELLO + RNG.randbytes(53), True, 517, True, A)
    for i in range(1, 200):
        w.add_sample(key(9000), b"hello", True, 5, True, 10_000 + i)
    assert (*key(443), A) not in w.sock_protocols
    w.close([])
    w.add_sample(key(443), TLS_HELLO + RNG.randbytes(53), True, 517, True, B)  # the pool's next one
    tls_records(w, 443, A)
    s = close(w, 443, 400 * KIB)
    assert s.protocols() == {"tls"}, s.by_protocol
    assert "SL-EXF-002" not in rules_of(detector(make_config(tmp_path)).run(window(DET, flows=[view(s)])))


def test_a_window_without_samples_keeps_the_last_split() -> None:
    w = WindowCounters()
    raw_ciphertext(w, 443, A)
    decoy(w, 443, B, TLS_HELLO)
    first = close(w, 443, 400 * KIB)
    carried = close(w, 443, 400 * KIB)  # the raw stream goes on, unsampled this window
    assert carried.byte_classes is not None and carried.byte_classes.carried
    assert set(carried.by_protocol) == set(first.by_protocol) == {"", "tls"}
    assert carried.opaque_of(None) == first.opaque_of(None) > 300 * KIB


def test_per_socket_protocol_memory_is_bounded_and_counted() -> None:
    w = WindowCounters(per_cgroup=64)
    for cookie in range(1, 1000):
        decoy(w, 443, cookie, TLS_HELLO)
    assert len(w.sock_protocols) == 64 and w.sock_protocols.evictions == 1000 - 1 - 64
    before = w.state_evictions()
    decoy(w, 443, 5000, TLS_HELLO)
    assert w.state_evictions() == before + 1  # the socket table's evictions reach health
    w.forget_cgroups({WEB.cgroup_id})
    assert not w.sock_protocols and not w.flow_protocols


def test_the_flow_document_shows_each_protocols_share() -> None:
    w = WindowCounters()
    http_ciphertext(w, 80, A)
    decoy(w, 80, B, SSH_BANNER)
    s = close(w, 80, 400 * KIB)
    d = flow_summary("node-1", s, WEB, None, DET - WINDOW, DET)
    split = d["sluice"]["payload"]["protocols"]
    assert set(split) == {"http", "ssh"} and split["ssh"]["encrypted_bytes"] == 0
    assert split["http"]["bytes"] + split["ssh"]["bytes"] == 400 * KIB
    assert d["network"]["protocol"] == "http"  # the one that sent the most
    validate(d)
    w2 = WindowCounters()
    http_ciphertext(w2, 80, A)
    assert (
        "protocols"
        not in flow_summary("node-1", close(w2, 80, 400 * KIB), WEB, None, DET - WINDOW, DET)["sluice"]["payload"]
    )


def test_a_socket_in_use_keeps_its_protocol_through_a_flood_of_sockets() -> None:
    """Forgetting a socket's protocol takes churning the container's whole
    per-container memory between two of its samples: each sample renews it."""
    w = WindowCounters(per_cgroup=64)
    http_ciphertext(w, 80, A)
    for i in range(1, 2000):
        w.add_sample(key(9000), b"hello", True, 5, True, 10_000 + i)
        if i % 32 == 0:  # the upload goes on
            w.add_sample(key(80), RNG.randbytes(64), False, 1400, False, A, span_bytes=64 * KIB)
    assert w.sock_protocols.get((*key(80), A)) == "http"
    decoy(w, 80, B, SSH_BANNER)
    w.add_sample(key(80), RNG.randbytes(64), False, 1400, False, A, span_bytes=64 * KIB)
    flows = [FlowCounters(WEB.cgroup_id, SINK, 80, 6, 500 * KIB, 400, 480 * KIB, 2, 0, 0, 60)]
    (s,) = [s for s in w.close(flows)[0] if s.key == key(80)]
    assert s.opaque_of("http") > 300 * KIB and s.opaque_of("ssh") == 0, s.by_protocol


def test_a_forgotten_socket_is_read_under_no_name_not_the_decoys(tmp_path: Path) -> None:
    """The flood the cap invites: start the raw stream, start enough other
    sockets to push its protocol out of the container's memory, open a TLS
    decoy to the same destination, stream on. The flow's starts disagree
    (none, then TLS): the forgotten socket's bytes are read under no name
    (a raw stream), never under the decoy's."""
    w = WindowCounters(per_cgroup=64)
    raw_ciphertext(w, 443, A)
    for i in range(1, 200):
        w.add_sample(key(9000), b"hello", True, 5, True, 10_000 + i)
    assert (*key(443), A) not in w.sock_protocols and w.sock_protocols.evictions > 0
    w.close([])
    decoy(w, 443, B, TLS_HELLO)
    for _ in range(6):
        w.add_sample(key(443), RNG.randbytes(64), False, 1400, False, A, span_bytes=64 * KIB)
    s = close(w, 443, 400 * KIB)
    assert w.flow_protocols.get(key(443)) == ("", "tls")
    assert s.opaque_of(None) > 300 * KIB and s.opaque_of("tls") == 0, s.by_protocol
    alerts = detector(make_config(tmp_path)).run(window(DET, flows=[view(s)]))
    assert [a["sluice"]["evidence"]["kind"] for a in alerts if a["rule"]["id"] == "SL-EXF-002"] == [
        "raw_encrypted_stream"
    ]


def test_an_off_port_decoy_does_not_hide_a_raw_stream(tmp_path: Path) -> None:
    """SSH (off its port) on a decoy socket, the raw stream on another: the
    rule counts both parts, not only the first protocol it looks at."""
    h = detector(make_config(tmp_path))
    fired: list[dict[str, Any]] = []
    for n in range(5):
        w = WindowCounters()
        raw_ciphertext(w, 443, A + 10 * n)
        decoy(w, 443, B + 10 * n, SSH_BANNER)
        s = close(w, 443, 400 * KIB)
        assert s.opaque_of(None) > 300 * KIB
        fired += [a for a in h.run(window(DET + n * WINDOW, flows=[view(s)])) if a["rule"]["id"] == "SL-EXF-002"]
    assert len(fired) >= 1, "SL-EXF-002 never fired"
    ev = fired[0]["sluice"]["evidence"]
    assert ev["kind"] == "raw_encrypted_stream" and ev["bytes"] > 300 * KIB, ev
    assert set(ev["protocols"]) == {"ssh", "unknown"}


def test_a_udp_socket_first_heard_elsewhere_is_named_by_its_datagrams(tmp_path: Path) -> None:
    """One unconnected UDP socket: its first datagram goes to another host,
    then ciphertext to the target, beside a decoy socket whose first
    datagram is a QUIC Initial to the same target. The datagrams name
    themselves; the decoy's QUIC does not cover them."""
    # long header, version 1, an 8-byte destination and source connection id
    quic_initial = b"\xc3\x00\x00\x00\x01\x08" + RNG.randbytes(8) + b"\x08" + RNG.randbytes(49)
    target = (WEB.cgroup_id, SINK, 443, 17)
    elsewhere = (WEB.cgroup_id, "198.51.100.99", 5000, 17)
    w = WindowCounters()
    w.add_sample(elsewhere, b"hello there", True, 11, True, A)
    w.add_sample(target, quic_initial, True, 1200, True, B)
    for _ in range(8):
        w.add_sample(target, RNG.randbytes(64), False, 1200, False, A, span_bytes=64 * 1200)
    (s,) = [
        x
        for x in w.close([FlowCounters(WEB.cgroup_id, SINK, 443, 17, 500 * KIB, 420, 480 * KIB, 0, 0, 0, 9)])[0]
        if x.key == target
    ]
    assert s.opaque_of(None) > 400 * KIB and "quic" in s.protocols(), s.by_protocol
    v = FlowView(s, WEB, workload_of(WEB), SINK, 443, "udp", None, None)
    alerts = detector(make_config(tmp_path)).run(window(DET, flows=[v]))
    assert [a["sluice"]["evidence"]["kind"] for a in alerts if a["rule"]["id"] == "SL-EXF-002"] == [
        "raw_encrypted_datagrams"
    ]


def test_flows_of_one_protocol_share_one_remembered_split() -> None:
    w = WindowCounters()
    for i in range(50):
        w.add_sample((WEB.cgroup_id, f"198.51.100.{i}", 443, 6), TLS_HELLO + RNG.randbytes(53), True, 517, True, i)
    w.close([])
    assert len({id(w.last_protocols[k]) for k in w.last_protocols}) == 1


# --- SSH named by the packet after the line, by index (review of the first version) ----

LINE = b"SSH-2.0-OpenSSH_9.6\r\n"
KEXINIT = SSH_BANNER[len(LINE) :]


def _ssh_socket(w: WindowCounters, packets: list[tuple[int, bytes]], cookie: int = A, first: int = 8) -> None:
    """Samples of one socket to port 22: (packet index, bytes); indexes
    below `first` are among the socket's first packets."""
    for idx, data in packets:
        n = len(data) if data.startswith(b"SSH-") or data == KEXINIT else 16 * KIB  # the line, KEXINIT: whole
        w.add_sample(key(22), data, idx == 0, n, idx < first, cookie, span_bytes=n, sock_index=idx)


def _exf2(s: FlowSummary, tmp_path: Path) -> list[str]:
    alerts = detector(make_config(tmp_path)).run(window(DET, flows=[view(s)]))
    return [a["sluice"]["evidence"]["kind"] for a in alerts if a["rule"]["id"] == "SL-EXF-002"]


def test_a_retransmitted_line_or_reordered_samples_do_not_make_ssh_raw(tmp_path: Path) -> None:
    cipher = [(i, RNG.randbytes(64)) for i in range(3, 30)]
    for packets in (
        [(0, LINE), (1, LINE), (2, KEXINIT)] + cipher,  # the line sent again (a retransmission)
        [(0, LINE), (3, RNG.randbytes(64)), (2, RNG.randbytes(64)), (1, KEXINIT)] + cipher[1:],  # per-CPU buffers
    ):
        w = WindowCounters()
        _ssh_socket(w, packets)
        s = close(w, 22, 400 * KIB)
        assert s.protocols() == {"ssh"}, s.by_protocol
        assert _exf2(s, tmp_path) == [] and w.ssh_unverified == 0


def test_a_socket_whose_deciding_packet_was_not_seen_is_raw_and_counted(tmp_path: Path) -> None:
    """The packet after the line lost (an event quota, a full buffer): the
    socket is not vouched for; only where the kernel never samples that
    packet (kernel.sample_first_packets < 2) does it stay SSH."""
    packets = [(0, LINE)] + [(i, RNG.randbytes(64)) for i in range(2, 30)]  # index 1 lost
    w = WindowCounters()
    _ssh_socket(w, packets)
    s = close(w, 22, 400 * KIB)
    assert s.opaque_of(None) > 300 * KIB and w.ssh_unverified == 1, s.by_protocol
    w = WindowCounters(first_packets=1)
    _ssh_socket(w, [(0, LINE)] + [(i, RNG.randbytes(64)) for i in range(1, 30)], first=1)
    s = close(w, 22, 400 * KIB)
    assert s.protocols() == {"ssh"} and w.ssh_unverified == 1, s.by_protocol


def test_a_sender_repeating_the_line_does_not_stay_undecided(tmp_path: Path) -> None:
    """The line sent again and again, or a packet that only starts like it,
    to keep the socket undecided until its first packets are past: at most
    two retransmissions of the same line are waited out."""
    for packets in (
        [(i, LINE) for i in range(8)],
        [(0, LINE)] + [(i, b"SSH-" + RNG.randbytes(60)) for i in range(1, 8)],
    ):
        w = WindowCounters()
        _ssh_socket(w, packets + [(i, RNG.randbytes(64)) for i in range(8, 40)])
        s = close(w, 22, 400 * KIB)
        assert s.opaque_of("ssh") < 100 * KIB and _exf2(s, tmp_path) == ["raw_encrypted_stream"], s.by_protocol


def test_a_line_sent_again_with_kexinit_behind_it_decides() -> None:
    w = WindowCounters()
    _ssh_socket(w, [(0, LINE), (1, LINE + KEXINIT), (2, RNG.randbytes(64))])
    # the ECDH_INIT after it is not asked to be KEXINIT
    assert w.sock_protocols.get((*key(22), A)) == "ssh"


def test_an_openssh_start_lends_ssh_to_a_socket_whose_start_was_not_seen(tmp_path: Path) -> None:
    """Once decided, a line alone is a start like any other: an SSH session
    open before the sensor started is SSH when every start agreed."""
    w = WindowCounters()
    _ssh_socket(w, [(0, LINE), (1, KEXINIT)] + [(i, RNG.randbytes(64)) for i in range(2, 10)])
    for _ in range(20):  # socket B: open before the sensor, no start seen
        w.add_sample(key(22), RNG.randbytes(64), False, 16 * KIB, False, B, span_bytes=16 * KIB, sock_index=500)
    s = close(w, 22, 400 * KIB)
    assert s.protocols() == {"ssh"} and _exf2(s, tmp_path) == [], s.by_protocol


def test_a_six_byte_header_after_the_line_does_not_make_a_raw_stream_ssh(tmp_path: Path) -> None:
    w = WindowCounters()
    fake = b"\x00\x00\x00\x0c\x04\x1e" + RNG.randbytes(58)  # KEX_ECDH_INIT's header, then ciphertext
    _ssh_socket(w, [(0, LINE), (1, fake)] + [(i, RNG.randbytes(64)) for i in range(2, 30)])
    s = close(w, 22, 400 * KIB)
    assert s.opaque_of(None) > 300 * KIB and _exf2(s, tmp_path) == ["raw_encrypted_stream"], s.by_protocol


def test_decoy_lines_that_push_the_socket_out_do_not_lend_it_ssh(tmp_path: Path) -> None:
    """The exfiltration socket sends the line alone; then more sockets than
    the per-container table holds send lines alone to the same destination,
    so the exfiltration socket is forgotten and its later samples are named
    by the flow's socket starts: unconfirmed lines vouch for nothing."""
    w = WindowCounters(per_cgroup=64)
    _ssh_socket(w, [(0, LINE)])
    for n in range(200):
        _ssh_socket(w, [(0, LINE)], cookie=10_000 + n)
    for _ in range(30):
        w.add_sample(key(22), RNG.randbytes(64), False, 16 * KIB, False, A, span_bytes=16 * KIB, sock_index=100)
    s = close(w, 22, 400 * KIB)
    assert s.opaque_of("ssh") == 0 and _exf2(s, tmp_path) == ["raw_encrypted_stream"], s.by_protocol
