"""The ten detection rules, each driven through the real Detector with
synthetic windows: fires on what its description says, stays silent just
below each threshold, stays silent for behaviour the workload's baseline
already has, and is silenced by [[allow]] entries."""

from __future__ import annotations

import base64
import hashlib
import statistics
from pathlib import Path
from typing import Any, TypedDict

import pytest

from sensor.detect.baseline import LogHist
from sensor.detect.catalog import BY_ID
from sensor.detect.view import FlowView, WindowView
from sensor.telemetry.classify import ByteClasses
from tests.support.views import (
    KIB,
    MIB,
    RESOLVER,
    T0,
    WINDOW,
    check_alert,
    config,
    connect,
    container,
    detector,
    exec_,
    flow,
    learn,
    life,
    only,
    resolver_flow,
    window,
)

DET = T0 + 600.0  # detection windows: 14:10 UTC, same hour as learning


class _Image(TypedDict):
    image: str


EVIL: _Image = dict(image="evil/exfil:latest")


def rules_of(alerts: list[dict[str, Any]]) -> list[str]:
    return [a["rule"]["id"] for a in alerts]


def learned(make, n: int = 5, start: float = T0):
    """A Baseline learned through the Learner from n windows make(end)."""
    return learn(make(start + i * WINDOW) for i in range(n))


# --- SL-EXF-001 volume spike ----------------------------------------------------------

API = container("api-1", image="acme/api:1.0")
API_BASE_BYTES = MIB  # encrypted bytes per window while learning


def api_baseline(n: int = 5, per_window: int = API_BASE_BYTES):
    return learned(lambda end: window(end, flows=[flow(API, "203.0.113.10", 443, per_window, proto="tls")]), n)


def exf001_threshold() -> float:
    base = LogHist.upper(LogHist.bin_of(API_BASE_BYTES))  # p99 of a constant series
    return max(1 * MIB, 4.0 * base)


class TestVolumeSpike:
    def test_fires_above_multiplier_times_quantile(self, tmp_path: Path) -> None:
        h = detector(config(tmp_path), api_baseline())
        thr = exf001_threshold()
        big = int(thr) + 1 - 200 * KIB
        alerts = h.run(
            window(
                DET,
                flows=[
                    flow(API, "203.0.113.10", 443, big, proto="tls"),
                    flow(API, "203.0.113.11", 443, 200 * KIB, proto="tls"),
                ],
            )
        )
        assert rules_of(alerts) == ["SL-EXF-001"]
        a = alerts[0]
        check_alert(a, "SL-EXF-001", API, "203.0.113.10")
        ev = a["sluice"]["evidence"]
        assert ev["observed_bytes"] == int(thr) + 1
        assert ev["threshold_bytes"] == round(thr)
        assert ev["baseline_bytes"] == round(LogHist.upper(LogHist.bin_of(API_BASE_BYTES)))
        assert ev["multiplier"] == 4.0 and ev["baseline_quantile"] == 0.99
        assert ev["destinations"] == ["203.0.113.10:443", "203.0.113.11:443"]
        assert ev["window_seconds"] == WINDOW
        assert "api-1" in a["message"] and "acme/api" in a["message"]
        assert "p99" in a["message"]
        assert a["event"]["severity"] == BY_ID["SL-EXF-001"].severity
        assert API.container is not None
        assert a["container"]["id"] == API.container.id

    def test_silent_at_threshold(self, tmp_path: Path) -> None:
        h = detector(config(tmp_path), api_baseline())
        thr = exf001_threshold()
        assert int(thr) <= thr
        alerts = h.run(window(DET, flows=[flow(API, "203.0.113.10", 443, int(thr), proto="tls")]))
        assert only(alerts, "SL-EXF-001") == []

    def test_silent_when_volume_is_the_workloads_normal(self, tmp_path: Path) -> None:
        h = detector(config(tmp_path), api_baseline(per_window=8 * MIB))
        alerts = h.run(window(DET, flows=[flow(API, "203.0.113.10", 443, 8 * MIB, proto="tls")]))
        assert alerts == []

    def test_silent_until_min_baseline_windows(self, tmp_path: Path) -> None:
        cfg = config(tmp_path)  # min_baseline_windows = 3
        h = detector(cfg, api_baseline(n=2))
        v = window(DET, flows=[flow(API, "203.0.113.10", 443, 50 * MIB, proto="tls")])
        assert only(h.run(v), "SL-EXF-001") == []
        h = detector(cfg, api_baseline(n=3))
        assert rules_of(h.run(v)) == ["SL-EXF-001"]

    def test_silent_for_unknown_workload(self, tmp_path: Path) -> None:
        other = container("other", image="acme/other:1")
        h = detector(config(tmp_path), api_baseline())
        alerts = h.run(window(DET, flows=[flow(other, "203.0.113.10", 443, 50 * MIB, proto="tls")]))
        assert only(alerts, "SL-EXF-001") == []

    def test_compressed_bytes_do_not_count(self, tmp_path: Path) -> None:
        h = detector(config(tmp_path), api_baseline())
        alerts = h.run(window(DET, flows=[flow(API, "203.0.113.10", 443, 50 * MIB, entropy=7.99, compression="zstd")]))
        assert alerts == []

    def test_low_entropy_bytes_do_not_count(self, tmp_path: Path) -> None:
        h = detector(config(tmp_path), api_baseline())
        alerts = h.run(window(DET, flows=[flow(API, "203.0.113.10", 443, 50 * MIB, entropy=6.9)]))
        assert alerts == []

    def test_allow_by_workload_glob(self, tmp_path: Path) -> None:
        cfg = config(tmp_path, '[[allow]]\nworkload = "acme/*"\nrules = ["SL-EXF-001"]\n')
        h = detector(cfg, api_baseline())
        alerts = h.run(window(DET, flows=[flow(API, "203.0.113.10", 443, 50 * MIB, proto="tls")]))
        assert alerts == []
        assert h.counts["allowed"] == 1 and h.counts["alerts"] == 0

    def test_thresholds_from_config(self, tmp_path: Path) -> None:
        cfg = config(tmp_path, "[rules.SL-EXF-001]\nmultiplier = 10.0\n")
        h = detector(cfg, api_baseline())
        base = LogHist.upper(LogHist.bin_of(API_BASE_BYTES))
        v = window(DET, flows=[flow(API, "203.0.113.10", 443, int(9 * base), proto="tls")])
        assert h.run(v) == []
        v = window(DET + 10, flows=[flow(API, "203.0.113.10", 443, int(10 * base) + 1, proto="tls")])
        assert rules_of(h.run(v)) == ["SL-EXF-001"]


# --- SL-EXF-002 encrypted channel on a non-standard port -------------------------------

EXFIL = container("exfil", **EVIL)


class TestNonStandardPort:
    @pytest.mark.parametrize(
        "proto,port,kind,what",
        [
            ("tls", 8444, "tls_on_nonstandard_port", "TLS to port 8444"),
            ("ssh", 2200, "ssh_on_nonstandard_port", "SSH to port 2200"),
            (None, 9999, "raw_encrypted_stream", "raw encrypted-looking TCP stream"),
        ],
    )
    def test_fires(self, tmp_path: Path, proto, port, kind, what) -> None:
        h = detector(config(tmp_path))
        alerts = h.run(window(DET, flows=[flow(EXFIL, "203.0.113.50", port, 64 * KIB, proto=proto)]))
        assert rules_of(alerts) == ["SL-EXF-002"]
        a = alerts[0]
        check_alert(a, "SL-EXF-002", EXFIL, "203.0.113.50")
        ev = a["sluice"]["evidence"]
        assert ev["kind"] == kind
        assert ev["bytes"] == 64 * KIB and ev["threshold_bytes"] == 64 * KIB
        assert ev["entropy"] == 7.9
        assert what in a["message"] and f"203.0.113.50:{port}" in a["message"] and "exfil" in a["message"]
        assert a["destination"]["port"] == port and a["network"]["transport"] == "tcp"

    @pytest.mark.parametrize("proto,port", [("tls", 8444), ("ssh", 2200), (None, 9999)])
    def test_silent_just_below_min_bytes(self, tmp_path: Path, proto, port) -> None:
        h = detector(config(tmp_path))
        assert h.run(window(DET, flows=[flow(EXFIL, "203.0.113.50", port, 64 * KIB - 1, proto=proto)])) == []

    def test_bytes_accumulate_across_windows(self, tmp_path: Path) -> None:
        h = detector(config(tmp_path))
        f = lambda: flow(EXFIL, "203.0.113.50", 8444, 40 * KIB, proto="tls")  # noqa: E731
        assert h.run(window(DET, flows=[f()])) == []
        alerts = h.run(window(DET + 10, flows=[f()]))
        assert rules_of(alerts) == ["SL-EXF-002"]
        assert alerts[0]["sluice"]["evidence"]["bytes"] == 80 * KIB
        assert alerts[0]["sluice"]["evidence"]["window_bytes"] == 40 * KIB

    @pytest.mark.parametrize("proto,port", [("tls", 443), ("tls", 6443), ("ssh", 22), ("ssh", 2222)])
    def test_standard_ports_are_silent(self, tmp_path: Path, proto, port) -> None:
        h = detector(config(tmp_path))
        assert h.run(window(DET, flows=[flow(EXFIL, "203.0.113.50", port, 512 * KIB, proto=proto)])) == []

    def test_compressed_raw_stream_is_silent(self, tmp_path: Path) -> None:
        h = detector(config(tmp_path))
        alerts = h.run(
            window(DET, flows=[flow(EXFIL, "203.0.113.50", 9999, 512 * KIB, entropy=7.99, compression="gzip")])
        )
        assert alerts == []

    def test_raw_encrypted_udp_fires(self, tmp_path: Path) -> None:
        h = detector(config(tmp_path))
        alerts = h.run(window(DET, flows=[flow(EXFIL, "203.0.113.50", 9999, 512 * KIB, transport="udp")]))
        assert rules_of(alerts) == ["SL-EXF-002"]
        assert alerts[0]["sluice"]["evidence"]["kind"] == "raw_encrypted_datagrams"
        assert "UDP datagrams" in alerts[0]["message"]

    @pytest.mark.parametrize(
        ("proto", "port", "fires"),
        [
            ("quic", 443, False),
            ("quic", 7443, True),
            ("wireguard", 51820, False),
            ("wireguard", 4500, True),
            ("dtls", 5684, False),
            ("dtls", 9999, True),
        ],
    )
    def test_datagram_protocols_by_port(self, tmp_path: Path, proto: str, port: int, fires: bool) -> None:
        h = detector(config(tmp_path))
        alerts = h.run(window(DET, flows=[flow(EXFIL, "203.0.113.50", port, 512 * KIB, transport="udp", proto=proto)]))
        assert rules_of(alerts) == (["SL-EXF-002"] if fires else [])
        if fires:
            assert alerts[0]["sluice"]["evidence"]["kind"] == f"{proto}_on_nonstandard_port"

    def test_dns_port_is_left_to_exf003(self, tmp_path: Path) -> None:
        """DNS queries (their names) are SL-EXF-003's; what went to port 53
        and was not a query is raw like on any other port."""
        h = detector(config(tmp_path))
        dns = flow(EXFIL, "203.0.113.50", 53, 512 * KIB, transport="udp", proto="dns")
        assert h.run(window(DET, flows=[dns])) == []
        for transport in ("udp", "tcp"):
            raw = flow(EXFIL, "203.0.113.51", 53, 512 * KIB, transport=transport)
            alerts = detector(config(tmp_path)).run(window(DET, flows=[raw]))
            assert rules_of(alerts) == ["SL-EXF-002"], transport
            kind = "raw_encrypted_datagrams" if transport == "udp" else "raw_encrypted_stream"
            assert alerts[0]["sluice"]["evidence"]["kind"] == kind

    def test_known_destination_is_silent(self, tmp_path: Path) -> None:
        b = learned(lambda end: window(end, flows=[flow(API, "203.0.113.9", 8444, 10 * KIB, proto="tls")]))
        h = detector(config(tmp_path), b)
        # same /24 and port: known; another network: new
        assert h.run(window(DET, flows=[flow(API, "203.0.113.50", 8444, 128 * KIB, proto="tls")])) == []
        alerts = h.run(window(DET + 10, flows=[flow(API, "198.51.100.50", 8444, 128 * KIB, proto="tls")]))
        assert rules_of(alerts) == ["SL-EXF-002"]
        assert "a destination not in its baseline" in alerts[0]["message"]

    def test_allow_by_port(self, tmp_path: Path) -> None:
        h = detector(config(tmp_path, "[[allow]]\nport = 8444\n"))
        assert h.run(window(DET, flows=[flow(EXFIL, "203.0.113.50", 8444, 128 * KIB, proto="tls")])) == []
        assert h.counts["allowed"] == 1
        # the entry is about 8444 only
        assert rules_of(h.run(window(DET + 10, flows=[flow(EXFIL, "203.0.113.50", 8445, 128 * KIB, proto="tls")]))) == [
            "SL-EXF-002"
        ]


# --- SL-EXF-003 encrypted payload inside a cleartext protocol ---------------------------

WEB = container("web-1", image="acme/web:2")


def http_flow(attr, ip="198.51.100.20", port=80, *, body_entropy=7.97, body=2048, **kw) -> FlowView:
    kw.setdefault("entropy", 6.2)  # headers keep the whole stream below 7 bits
    return flow(attr, ip, port, 300 * KIB, proto="http", body_entropy=body_entropy, body_sampled_bytes=body, **kw)


def hexname(i: int, n: int = 32) -> str:
    return hashlib.sha256(str(i).encode()).hexdigest()[:n]


def dns_flow(attr, names, ip="192.0.2.53"):
    return flow(
        attr, ip, 53, 60 * len(names), transport="udp", proto="dns", entropy=4.0, dns_names=[(n, True) for n in names]
    )


class TestCleartextCarrier:
    def test_http_encrypted_body_fires(self, tmp_path: Path) -> None:
        h = detector(config(tmp_path))
        alerts = h.run(window(DET, flows=[http_flow(EXFIL)]))
        assert rules_of(alerts) == ["SL-EXF-003"]
        a = alerts[0]
        check_alert(a, "SL-EXF-003", EXFIL, "198.51.100.20")
        ev = a["sluice"]["evidence"]
        assert ev["kind"] == "encrypted_http_body"
        assert ev["body_entropy"] == 7.97 and ev["body_sampled_bytes"] == 2048
        assert ev["bytes"] == 300 * KIB and ev["threshold_bits"] == 7.0
        assert "7.97" in a["message"] and "198.51.100.20:80" in a["message"] and "exfil" in a["message"]
        assert a["network"]["protocol"] == "http"

    def test_http_body_entropy_just_below_is_silent(self, tmp_path: Path) -> None:
        h = detector(config(tmp_path))
        assert h.run(window(DET, flows=[http_flow(EXFIL, body_entropy=6.99)])) == []

    def test_http_body_sample_too_small_is_silent(self, tmp_path: Path) -> None:
        h = detector(config(tmp_path))
        assert h.run(window(DET, flows=[http_flow(EXFIL, body=255)])) == []
        assert rules_of(h.run(window(DET + 10, flows=[http_flow(EXFIL, body=256)]))) == ["SL-EXF-003"]

    def test_http_compressed_body_is_silent(self, tmp_path: Path) -> None:
        h = detector(config(tmp_path))
        assert h.run(window(DET, flows=[http_flow(EXFIL, compression="gzip")])) == []

    def test_http_known_encrypted_destination_is_silent(self, tmp_path: Path) -> None:
        b = learned(lambda end: window(end, flows=[http_flow(WEB, entropy=7.6)]))
        h = detector(config(tmp_path), b)
        assert h.run(window(DET, flows=[http_flow(WEB)])) == []

    def test_http_learned_encoded_uploads_are_silent(self, tmp_path: Path) -> None:
        """A web application that uploads base64 images learns that its
        destination carries encoded (encrypted-class) bytes; the same
        uploads are then silent, the same bytes to a new host are not."""

        def encoded(n: int) -> ByteClasses:
            return ByteClasses({"header": 300.0, "encoded": float(n - 300)}, encoding="base64")

        b = learned(
            lambda end: window(
                end, flows=[http_flow(WEB, body_entropy=6.0, entropy=6.0, byte_classes=encoded(300 * KIB))]
            )
        )
        h = detector(config(tmp_path), b)
        same = http_flow(WEB, body_entropy=6.0, entropy=6.0, byte_classes=encoded(300 * KIB))
        assert h.run(window(DET, flows=[same])) == []
        other = http_flow(WEB, "203.0.113.80", body_entropy=6.0, entropy=6.0, byte_classes=encoded(300 * KIB))
        alerts = h.run(window(DET + 10, flows=[other]))
        assert "SL-EXF-003" in rules_of(alerts)
        ev = next(a for a in alerts if a["rule"]["id"] == "SL-EXF-003")["sluice"]["evidence"]
        assert ev["encoding"] == "base64" and ev["byte_classes"]["encoded"] == 300 * KIB - 300

    def test_http_learned_encoded_uploads_by_name_are_silent(self, tmp_path: Path) -> None:
        """Named uploads are learned under the registered domain: the same
        uploads to the name on another address are silent too, when a DNS
        answer the container received gave that address the name; a Host
        header alone is the client's claim and vouches for no address."""

        def named(ip: str, vouched: bool = True) -> FlowView:
            c = ByteClasses({"header": 300.0, "encoded": float(300 * KIB - 300)}, encoding="base64")
            f = http_flow(WEB, ip, body_entropy=6.0, entropy=6.0, byte_classes=c)
            f.summary.domain, f.summary.domain_source = "img.uploads.example.com", "http_host"
            f.summary.name_resolver = RESOLVER if vouched else ""
            return f

        b = learned(lambda end: window(end, flows=[named("198.51.100.20"), resolver_flow(WEB)]))
        h = detector(config(tmp_path), b)
        assert h.run(window(DET, flows=[named("203.0.113.80")])) == []
        alerts = h.run(window(DET + 10, flows=[named("203.0.113.81", vouched=False)]))
        assert "SL-EXF-003" in rules_of(alerts), rules_of(alerts)

    def test_http_known_destination_without_encrypted_history_fires(self, tmp_path: Path) -> None:
        b = learned(lambda end: window(end, flows=[http_flow(WEB, body_entropy=4.5, entropy=4.8)]))
        h = detector(config(tmp_path), b)
        assert rules_of(h.run(window(DET, flows=[http_flow(WEB)]))) == ["SL-EXF-003"]

    def test_dns_names_cut_inside_their_first_label_are_judged(self, tmp_path: Path) -> None:
        """Off port 53 a 64-byte sample ends inside a long first label: the
        label is judged without its domain."""
        h = detector(config(tmp_path))
        cut = [(hexname(i, 51), False) for i in range(3)]
        flow_ = flow(EXFIL, "192.0.2.53", 5353, 300, transport="udp", proto="dns", entropy=4.0, dns_names=cut)
        alerts = h.run(window(DET, flows=[flow_]))
        assert rules_of(alerts) == ["SL-EXF-003"]
        assert alerts[0]["sluice"]["evidence"]["encoding"] == "hex"
        plain = [("wwwexamplecom", False), ("mail", False)]
        flow_ = flow(EXFIL, "192.0.2.54", 5353, 300, transport="udp", proto="dns", entropy=4.0, dns_names=plain)
        assert h.run(window(DET + 10, flows=[flow_])) == []

    def test_dns_encoded_names_fire(self, tmp_path: Path) -> None:
        h = detector(config(tmp_path))
        names = [f"{hexname(i)}.exfil-dns.net" for i in range(2)]
        alerts = h.run(window(DET, flows=[dns_flow(EXFIL, names)]))
        assert rules_of(alerts) == ["SL-EXF-003"]
        a = alerts[0]
        check_alert(a, "SL-EXF-003", EXFIL, "192.0.2.53")
        ev = a["sluice"]["evidence"]
        assert ev["kind"] == "dns_tunnel" and ev["domain"] == "exfil-dns.net"
        assert ev["encoded_names"] == 2 and ev["encoding"] == "hex"
        assert ev["queries_in_window"] == 2 and ev["unique_subdomains"] == 2
        assert ev["examples"] == names
        assert "exfil-dns.net" in a["message"] and "hex-encoded" in a["message"] and "exfil" in a["message"]
        assert a["network"]["protocol"] == "dns" and a["network"]["transport"] == "udp"

    def test_dns_one_encoded_name_is_silent(self, tmp_path: Path) -> None:
        h = detector(config(tmp_path))
        assert h.run(window(DET, flows=[dns_flow(EXFIL, [f"{hexname(1)}.exfil-dns.net", "www.exfil-dns.net"])])) == []

    def test_dns_encoded_length_just_below_is_silent(self, tmp_path: Path) -> None:
        h = detector(config(tmp_path))
        names = [f"{hexname(i, 23)}.exfil-dns.net" for i in range(5)]
        assert h.run(window(DET, flows=[dns_flow(EXFIL, names)])) == []

    def test_dns_long_high_entropy_label(self, tmp_path: Path) -> None:
        label = base64.b32encode(hashlib.sha256(b"k").digest()).decode().lower().rstrip("=")
        h = detector(config(tmp_path))
        assert h.run(window(DET, flows=[dns_flow(EXFIL, [label[:39] + ".exfil-dns.net"])])) == []
        alerts = h.run(window(DET + 10, flows=[dns_flow(EXFIL, [label[:40] + ".other-dns.net"])]))
        assert rules_of(alerts) == ["SL-EXF-003"]
        ev = alerts[0]["sluice"]["evidence"]
        assert ev["max_label_length"] == 40 and ev["max_label_entropy_bits"] >= 3.8
        assert "labels up to 40 characters" in alerts[0]["message"]

    def test_dns_many_unique_subdomains_across_windows(self, tmp_path: Path) -> None:
        h = detector(config(tmp_path))
        first = [f"h{i}.cdn-example.org" for i in range(10)]
        second = [f"h{i}.cdn-example.org" for i in range(10, 19)]
        assert (
            h.run(window(DET, flows=[dns_flow(EXFIL, first)]), window(DET + 10, flows=[dns_flow(EXFIL, second)])) == []
        )
        alerts = h.run(window(DET + 20, flows=[dns_flow(EXFIL, ["h19.cdn-example.org"])]))
        assert rules_of(alerts) == ["SL-EXF-003"]
        assert alerts[0]["sluice"]["evidence"]["unique_subdomains"] == 20
        assert "20 unique subdomains of cdn-example.org" in alerts[0]["message"]

    def test_dns_silent_for_unknown_workload_when_configured(self, tmp_path: Path) -> None:
        h = detector(config(tmp_path, detection="alert_on_unknown_workload = false\n"))
        names = [f"{hexname(i)}.exfil-dns.net" for i in range(3)]
        assert h.run(window(DET, flows=[dns_flow(EXFIL, names)])) == []

    def test_allow_by_destination_cidr(self, tmp_path: Path) -> None:
        h = detector(config(tmp_path, '[[allow]]\ndestination = "198.51.100.0/24"\n'))
        assert h.run(window(DET, flows=[http_flow(EXFIL)])) == []
        assert h.counts["allowed"] == 1
        assert rules_of(h.run(window(DET + 10, flows=[http_flow(EXFIL, ip="192.0.2.80")]))) == ["SL-EXF-003"]


# --- SL-EXF-004 large encrypted transfer to a new destination ----------------------------


class TestNewDestination:
    def test_fires_for_unknown_workload(self, tmp_path: Path) -> None:
        h = detector(config(tmp_path))
        alerts = h.run(window(DET, flows=[flow(EXFIL, "203.0.113.77", 443, MIB, proto="tls")]))
        assert rules_of(alerts) == ["SL-EXF-004"]
        a = alerts[0]
        check_alert(a, "SL-EXF-004", EXFIL, "203.0.113.77")
        ev = a["sluice"]["evidence"]
        assert ev["bytes"] == MIB and ev["threshold_bytes"] == MIB
        assert ev["workload_in_baseline"] is False and ev["entropy"] == 7.9
        assert ev["protocol_hint"] == "tls"
        assert "203.0.113.77:443" in a["message"] and "exfil" in a["message"]
        assert "not in the baseline at all" in a["message"]
        assert a["process"]["pid"] == 4242 and a["process"]["name"] == "curl"

    def test_fires_for_new_destination_of_known_workload(self, tmp_path: Path) -> None:
        h = detector(config(tmp_path), api_baseline())
        alerts = h.run(window(DET, flows=[flow(API, "198.51.100.77", 443, MIB, proto="tls")]))
        assert rules_of(alerts) == ["SL-EXF-004"]
        assert "a destination its baseline has never seen" in alerts[0]["message"]
        assert alerts[0]["sluice"]["evidence"]["workload_in_baseline"] is True
        assert alerts[0]["sluice"]["evidence"]["baseline"] == {"known_workload": True, "windows": 5}

    def test_silent_just_below(self, tmp_path: Path) -> None:
        h = detector(config(tmp_path))
        assert h.run(window(DET, flows=[flow(EXFIL, "203.0.113.77", 443, MIB - 1, proto="tls")])) == []

    def test_cumulative_and_once(self, tmp_path: Path) -> None:
        h = detector(config(tmp_path))
        f = lambda: flow(EXFIL, "203.0.113.77", 443, 600 * KIB, proto="tls")  # noqa: E731
        assert h.run(window(DET, flows=[f()])) == []
        alerts = h.run(window(DET + 10, flows=[f()]))
        assert rules_of(alerts) == ["SL-EXF-004"]
        assert alerts[0]["sluice"]["evidence"]["bytes"] == 1200 * KIB
        assert alerts[0]["sluice"]["evidence"]["since"] == DET - WINDOW
        assert h.run(window(DET + 20, flows=[f()])) == []

    def test_slow_transfer_still_accumulates_after_an_hour(self, tmp_path: Path) -> None:
        """100 KiB every 10 minutes, without pause: state kept "without
        activity" for STATE_TTL_S must not be dropped while the transfer is
        still going, so the 11th window crosses 1 MiB."""
        h = detector(config(tmp_path))
        alerts = []
        for k in range(12):
            alerts += h.run(window(DET + 600 * k, flows=[flow(EXFIL, "203.0.113.77", 443, 100 * KIB, proto="tls")]))
        assert rules_of(alerts) == ["SL-EXF-004"]
        assert alerts[0]["sluice"]["evidence"]["bytes"] >= MIB

    def test_drip_with_hours_between_sends_accumulates(self, tmp_path: Path) -> None:
        """100 KiB every 3 hours: the count survives quiet_seconds (a day by
        default); with quiet_seconds = 2 h it starts over each time."""
        h = detector(config(tmp_path))
        alerts = []
        for k in range(12):
            alerts += h.run(
                window(DET + 3 * 3600 * k, flows=[flow(EXFIL, "203.0.113.77", 443, 100 * KIB, proto="tls")])
            )
        assert rules_of(alerts) == ["SL-EXF-004"]
        h = detector(config(tmp_path, "[rules.SL-EXF-004]\nquiet_seconds = 7200.0\n"))
        alerts = []
        for k in range(12):
            alerts += h.run(
                window(DET + 3 * 3600 * k, flows=[flow(EXFIL, "203.0.113.77", 443, 100 * KIB, proto="tls")])
            )
        assert alerts == []

    def test_known_destination_with_prefix_generalisation(self, tmp_path: Path) -> None:
        b = learned(lambda end: window(end, flows=[flow(API, "203.0.113.5", 443, 10 * KIB, proto="tls")]))
        h = detector(config(tmp_path), b)
        # (4 MiB is also a volume spike for this workload: only SL-EXF-004 is looked at)
        assert (
            only(h.run(window(DET, flows=[flow(API, "203.0.113.77", 443, 4 * MIB, proto="tls")])), "SL-EXF-004") == []
        )
        # same network, other port: new
        alerts = h.run(window(DET + 10, flows=[flow(API, "203.0.113.77", 8443, 4 * MIB, proto="tls")]))
        assert len(only(alerts, "SL-EXF-004")) == 1

    def test_exact_prefixes_do_not_generalise(self, tmp_path: Path) -> None:
        b = learned(lambda end: window(end, flows=[flow(API, "203.0.113.5", 443, 10 * KIB, proto="tls")]))
        cfg = config(tmp_path, detection="destination_prefix_v4 = 32\n")
        h = detector(cfg, b)
        alerts = h.run(window(DET, flows=[flow(API, "203.0.113.77", 443, 4 * MIB, proto="tls")]))
        assert len(only(alerts, "SL-EXF-004")) == 1

    def test_trusted_network_is_never_new(self, tmp_path: Path) -> None:
        h = detector(config(tmp_path, detection='trusted_networks = ["203.0.113.0/24", "2001:db8::/32"]\n'))
        assert (
            h.run(
                window(
                    DET,
                    flows=[
                        flow(EXFIL, "203.0.113.77", 443, 8 * MIB, proto="tls"),
                        flow(EXFIL, "2001:db8::7", 443, 8 * MIB, proto="tls"),
                    ],
                )
            )
            == []
        )
        alerts = h.run(window(DET + 10, flows=[flow(EXFIL, "2001:db9::7", 443, 8 * MIB, proto="tls")]))
        assert rules_of(alerts) == ["SL-EXF-004"]
        assert alerts[0]["network"]["type"] == "ipv6"
        assert "[2001:db9::7]:443" in alerts[0]["message"]
        assert any(c.startswith("ip6tables") for c in alerts[0]["sluice"]["response"]["block"])

    def test_compressed_is_silent(self, tmp_path: Path) -> None:
        h = detector(config(tmp_path))
        assert (
            h.run(window(DET, flows=[flow(EXFIL, "203.0.113.77", 443, 8 * MIB, entropy=7.99, compression="zip")])) == []
        )

    def test_unknown_workload_silent_when_configured(self, tmp_path: Path) -> None:
        h = detector(config(tmp_path, detection="alert_on_unknown_workload = false\n"), api_baseline())
        assert h.run(window(DET, flows=[flow(EXFIL, "203.0.113.77", 443, 8 * MIB, proto="tls")])) == []
        # a known workload still alerts on a new destination
        alerts = h.run(window(DET + 10, flows=[flow(API, "198.51.100.77", 443, MIB, proto="tls")]))
        assert rules_of(alerts) == ["SL-EXF-004"]

    def test_allow_by_destination_cidr(self, tmp_path: Path) -> None:
        h = detector(config(tmp_path, '[[allow]]\ndestination = "203.0.113.64/26"\nrules = ["SL-EXF-004"]\n'))
        assert h.run(window(DET, flows=[flow(EXFIL, "203.0.113.77", 443, 8 * MIB, proto="tls")])) == []
        assert h.counts["allowed"] == 1
        alerts = h.run(window(DET + 10, flows=[flow(EXFIL, "203.0.113.10", 443, 8 * MIB, proto="tls")]))
        assert rules_of(alerts) == ["SL-EXF-004"]


# --- SL-EXF-005 short-lived container --------------------------------------------------

JOB = container("job-1", image="evil/burst:1")


def short_life(attr, end, lifetime, payload=100 * KIB, ip="203.0.113.88", **kw):
    return window(
        end, flows=[flow(attr, ip, 443, payload, proto="tls", **kw)], lifecycle=[life(attr, end - 1, "stop", lifetime)]
    )


BATCH_RUNS = [container(f"batch-{i}", image="acme/batch:7") for i in range(5)]


def batch_baseline(lifetime: float, ip: str = "203.0.113.88"):
    views = []
    for i, c in enumerate(BATCH_RUNS):
        end = T0 + i * WINDOW
        views.append(
            window(
                end,
                flows=[flow(c, ip, 443, 200 * KIB, proto="tls")],
                lifecycle=[life(c, end - 8, "start"), life(c, end - 1, "stop", lifetime)],
            )
        )
    return learn(views)


class TestShortLivedContainer:
    def test_fires(self, tmp_path: Path) -> None:
        h = detector(config(tmp_path))
        alerts = h.run(short_life(JOB, DET, 12.0))
        assert rules_of(alerts) == ["SL-EXF-005"]
        a = alerts[0]
        check_alert(a, "SL-EXF-005", JOB, "203.0.113.88")
        ev = a["sluice"]["evidence"]
        assert ev["lifetime_seconds"] == 12.0 and ev["encrypted_bytes"] == 100 * KIB
        assert ev["max_lifetime_seconds"] == 300.0 and ev["threshold_bytes"] == 64 * KIB
        assert ev["destinations"] == ["203.0.113.88:443"]
        assert ev["baseline_lifetime_p50_seconds"] is None
        assert "job-1" in a["message"] and "12.0 s" in a["message"] and "203.0.113.88:443" in a["message"]
        assert a["@timestamp"].startswith("2024-01-09T14:09:59")

    def test_bytes_from_earlier_windows_count(self, tmp_path: Path) -> None:
        h = detector(config(tmp_path))
        w1 = window(
            DET, flows=[flow(JOB, "203.0.113.88", 443, 40 * KIB, proto="tls")], lifecycle=[life(JOB, DET - 5, "start")]
        )
        w2 = short_life(JOB, DET + 10, 12.0, payload=40 * KIB)
        alerts = h.run(w1, w2)
        assert rules_of(alerts) == ["SL-EXF-005"]
        assert alerts[0]["sluice"]["evidence"]["encrypted_bytes"] == 80 * KIB

    def test_lifetime_just_above_max_is_silent(self, tmp_path: Path) -> None:
        h = detector(config(tmp_path))
        assert h.run(short_life(JOB, DET, 300.5)) == []

    def test_unknown_lifetime_is_silent(self, tmp_path: Path) -> None:
        h = detector(config(tmp_path))
        assert h.run(short_life(JOB, DET, None)) == []

    def test_bytes_just_below_is_silent(self, tmp_path: Path) -> None:
        h = detector(config(tmp_path))
        assert h.run(short_life(JOB, DET, 12.0, payload=64 * KIB - 1)) == []

    def test_compressed_is_silent(self, tmp_path: Path) -> None:
        h = detector(config(tmp_path))
        assert h.run(short_life(JOB, DET, 12.0, payload=10 * MIB, entropy=7.99, compression="gzip")) == []

    def test_batch_workload_to_known_destination_is_silent(self, tmp_path: Path) -> None:
        h = detector(config(tmp_path), batch_baseline(30.0))
        run = container("batch-new", image="acme/batch:8")
        assert h.run(short_life(run, DET, 25.0)) == []

    def test_batch_workload_to_new_destination_fires(self, tmp_path: Path) -> None:
        h = detector(config(tmp_path), batch_baseline(30.0))
        run = container("batch-new", image="acme/batch:8")
        alerts = h.run(short_life(run, DET, 25.0, ip="198.51.100.88"))
        assert rules_of(alerts) == ["SL-EXF-005"]
        assert alerts[0]["sluice"]["evidence"]["baseline_lifetime_p50_seconds"] == round(
            LogHist.upper(LogHist.bin_of(30.0)), 1
        )

    def test_batch_workload_named_by_a_claim_only_is_judged_by_address(self, tmp_path: Path) -> None:
        """A batch job learned sending to results.batch-sink.example: a run
        that claims that name in its SNI for a new address is not the batch
        doing its job; the same name vouched by its DNS answer is."""

        def run_to(ip: str, vouched: bool) -> Any:
            v = short_life(container("batch-new", image="acme/batch:8"), DET, 25.0, ip=ip)
            s = v.flows[0].summary
            s.domain, s.domain_source = "results.batch-sink.example", "sni"
            s.name_resolver = RESOLVER if vouched else ""
            return v

        views = []
        for i, c in enumerate(BATCH_RUNS):
            end = T0 + i * WINDOW
            f = flow(c, "203.0.113.88", 443, 200 * KIB, proto="tls")
            f.summary.domain, f.summary.domain_source = "results.batch-sink.example", "dns"
            f.summary.name_resolver = RESOLVER
            views.append(window(end, flows=[f, resolver_flow(c)], lifecycle=[life(c, end - 1, "stop", 30.0)]))
        b = learn(views)
        assert detector(config(tmp_path), b).run(run_to("198.51.100.90", True)) == []
        (a,) = detector(config(tmp_path), b).run(run_to("198.51.100.91", False))
        assert a["rule"]["id"] == "SL-EXF-005" and a["destination"]["domain"] == "results.batch-sink.example"
        assert (
            a["sluice"]["name_vouched"] is False and a["tls"]["client"]["server_name"] == "results.batch-sink.example"
        )

    def test_long_running_workload_dying_young_fires(self, tmp_path: Path) -> None:
        h = detector(config(tmp_path), batch_baseline(3600.0))
        run = container("batch-new", image="acme/batch:8")
        assert rules_of(h.run(short_life(run, DET, 25.0))) == ["SL-EXF-005"]

    def test_allow_by_rules_and_workload(self, tmp_path: Path) -> None:
        h = detector(config(tmp_path, '[[allow]]\nworkload = "evil/*"\nrules = ["SL-EXF-005"]\n'))
        assert h.run(short_life(JOB, DET, 12.0)) == []
        assert h.counts["allowed"] == 1

    def test_allow_for_other_rules_does_not_silence(self, tmp_path: Path) -> None:
        h = detector(config(tmp_path, '[[allow]]\nworkload = "evil/*"\nrules = ["SL-EXF-004"]\n'))
        assert rules_of(h.run(short_life(JOB, DET, 12.0))) == ["SL-EXF-005"]
        assert h.counts["allowed"] == 0


# --- SL-EXF-006 encryption tool, then egress ---------------------------------------------

CRYPT = container("crypt", **EVIL)
OPENSSL_ENC = ["openssl", "enc", "-aes-256-cbc", "-pbkdf2", "-in", "/data/db.sql", "-out", "/tmp/x"]
BACKUP = container("backup-1", image="acme/backup:3")


def enc_window(attr, end, exec_ts, payload=8 * KIB, args=OPENSSL_ENC, ip="203.0.113.99", exe="/usr/bin/openssl"):
    execs = [exec_(attr, exec_ts, exe, args, pid=77)] if exec_ts is not None else []
    flows = [flow(attr, ip, 443, payload, proto="tls", entropy=None)] if payload else []
    return window(end, flows=flows, execs=execs)


class TestEncryptThenEgress:
    def test_fires_in_the_same_window(self, tmp_path: Path) -> None:
        h = detector(config(tmp_path))
        alerts = h.run(enc_window(CRYPT, DET, DET - 5))
        assert rules_of(alerts) == ["SL-EXF-006"]
        a = alerts[0]
        check_alert(a, "SL-EXF-006", CRYPT, "203.0.113.99")
        ev = a["sluice"]["evidence"]
        assert ev["tool"] == "openssl enc" and ev["arguments_known"] is True
        assert ev["bytes"] == 8 * KIB and ev["threshold_bytes"] == 4 * KIB
        assert ev["seconds_to_egress"] == 5.0 and ev["within_seconds"] == 120.0
        assert ev["exec_time"] == DET - 5
        assert ev["destinations"] == ["203.0.113.99:443"]
        assert "crypt" in a["message"] and "openssl enc" in a["message"] and "203.0.113.99:443" in a["message"]
        assert a["process"]["executable"] == "/usr/bin/openssl"
        assert a["process"]["command_line"] == " ".join(OPENSSL_ENC)
        assert a["event"]["severity"] == 66

    def test_fires_in_a_later_window(self, tmp_path: Path) -> None:
        h = detector(config(tmp_path))
        assert h.run(enc_window(CRYPT, DET, DET - 5, payload=0)) == []
        alerts = h.run(enc_window(CRYPT, DET + 100, None))
        assert rules_of(alerts) == ["SL-EXF-006"]
        assert alerts[0]["sluice"]["evidence"]["seconds_to_egress"] == 105.0

    def test_egress_after_within_seconds_is_silent(self, tmp_path: Path) -> None:
        h = detector(config(tmp_path))
        assert h.run(enc_window(CRYPT, DET, DET - 5, payload=0)) == []
        assert h.run(enc_window(CRYPT, DET + 116, None)) == []  # 121 s after the exec

    def test_bytes_just_below_is_silent(self, tmp_path: Path) -> None:
        h = detector(config(tmp_path))
        assert h.run(enc_window(CRYPT, DET, DET - 5, payload=4 * KIB - 1)) == []

    def test_not_an_encryption_tool_is_silent(self, tmp_path: Path) -> None:
        h = detector(config(tmp_path))
        assert h.run(enc_window(CRYPT, DET, DET - 5, args=["openssl", "s_client", "-connect", "x:443"])) == []

    def test_unknown_arguments_lower_severity(self, tmp_path: Path) -> None:
        h = detector(config(tmp_path))
        alerts = h.run(enc_window(CRYPT, DET, DET - 5, args=None))
        assert rules_of(alerts) == ["SL-EXF-006"]
        assert alerts[0]["event"]["severity"] == 66 - 15
        assert "(arguments unknown)" in alerts[0]["message"]
        assert alerts[0]["sluice"]["evidence"]["arguments_known"] is False

    def test_routine_backup_is_silent(self, tmp_path: Path) -> None:
        b = learned(lambda end: enc_window(BACKUP, end, end - 3, payload=200 * KIB))
        h = detector(config(tmp_path), b)
        other = container("backup-2", image="acme/backup:3")
        assert h.run(enc_window(other, DET, DET - 3, payload=300 * KIB)) == []

    def test_known_tool_to_new_destination_fires(self, tmp_path: Path) -> None:
        b = learned(lambda end: enc_window(BACKUP, end, end - 3, payload=200 * KIB))
        h = detector(config(tmp_path), b)
        alerts = h.run(enc_window(BACKUP, DET, DET - 3, payload=300 * KIB, ip="198.51.100.99"))
        assert rules_of(alerts) == ["SL-EXF-006"]

    def test_new_tool_to_known_destination_fires(self, tmp_path: Path) -> None:
        b = learned(lambda end: enc_window(BACKUP, end, end - 3, payload=200 * KIB))
        h = detector(config(tmp_path), b)
        alerts = h.run(
            enc_window(BACKUP, DET, DET - 3, payload=300 * KIB, exe="/usr/local/bin/gpg", args=["gpg", "-c", "f"])
        )
        assert rules_of(alerts) == ["SL-EXF-006"]
        assert alerts[0]["sluice"]["evidence"]["tool"] == "gpg"

    def test_allow_by_executable_glob(self, tmp_path: Path) -> None:
        h = detector(config(tmp_path, '[[allow]]\nexecutable = "*/openssl"\n'))
        assert h.run(enc_window(CRYPT, DET, DET - 5)) == []
        assert h.counts["allowed"] == 1
        # another tool is not covered by the entry
        alerts = h.run(enc_window(CRYPT, DET + 20, DET + 15, exe="/usr/bin/gpg", args=["gpg", "-c", "f"]))
        assert rules_of(alerts) == ["SL-EXF-006"] and h.counts["allowed"] == 1


# --- SL-C2-001 multi-stage chain ----------------------------------------------------------

DROP = container("dropper", **EVIL)


def chain(attr, t, *, exe="/tmp/stage2", second=("203.0.113.66", 4444), gap=2.0, first=("198.51.100.5", 80)):
    return window(
        t + gap + 1,
        seconds=gap + 11,
        connects=[
            connect(attr, t - 1, *first, executable="/usr/bin/wget", pid=10),
            connect(attr, t + gap, *second, executable=exe, pid=11),
        ],
        execs=[exec_(attr, t, exe, [exe.rsplit("/", 1)[-1], "-d"], pid=11)],
    )


class TestMultiStageChain:
    def test_fires(self, tmp_path: Path) -> None:
        h = detector(config(tmp_path))
        alerts = h.run(chain(DROP, DET))
        assert rules_of(alerts) == ["SL-C2-001"]
        a = alerts[0]
        check_alert(a, "SL-C2-001", DROP, "203.0.113.66")
        ev = a["sluice"]["evidence"]
        assert [s["step"] for s in ev["chain"]] == ["connect", "exec", "connect"]
        assert ev["chain"][0]["destination"] == "198.51.100.5:80"
        assert ev["chain"][1]["executable"] == "/tmp/stage2"
        assert ev["chain"][2]["destination"] == "203.0.113.66:4444"
        assert ev["seconds"] == 3.0
        for s in ("dropper", "/tmp/stage2", "198.51.100.5:80", "203.0.113.66:4444", "3.0 s"):
            assert s in a["message"]
        assert a["process"]["executable"] == "/tmp/stage2"
        assert a["@timestamp"] == "2024-01-09T14:10:02.000Z"
        assert a["event"]["severity"] == 85

    def test_stages_span_windows(self, tmp_path: Path) -> None:
        h = detector(config(tmp_path))
        w1 = window(
            DET,
            connects=[connect(DROP, DET - 8, "198.51.100.5", 80)],
            execs=[exec_(DROP, DET - 2, "/dev/shm/x", ["x"])],
        )
        w2 = window(DET + 10, connects=[connect(DROP, DET + 5, "203.0.113.66", 4444, executable="/dev/shm/x")])
        alerts = h.run(w1, w2)
        assert rules_of(alerts) == ["SL-C2-001"]
        assert alerts[0]["sluice"]["evidence"]["seconds"] == 13.0

    def test_second_connect_after_horizon_is_silent(self, tmp_path: Path) -> None:
        h = detector(config(tmp_path))
        w1 = window(
            DET,
            connects=[connect(DROP, DET - 8, "198.51.100.5", 80)],
            execs=[exec_(DROP, DET - 2, "/tmp/stage2", ["stage2"])],
        )
        w2 = window(DET + 299, connects=[connect(DROP, DET + 299, "203.0.113.66", 4444)])
        assert h.run(w1, w2) == []

    def test_second_connect_at_horizon_fires(self, tmp_path: Path) -> None:
        h = detector(config(tmp_path))
        w1 = window(
            DET,
            connects=[connect(DROP, DET - 8, "198.51.100.5", 80)],
            execs=[exec_(DROP, DET - 2, "/tmp/stage2", ["stage2"])],
        )
        w2 = window(DET + 298, connects=[connect(DROP, DET + 298, "203.0.113.66", 4444)])
        assert rules_of(h.run(w1, w2)) == ["SL-C2-001"]

    def test_executable_outside_writable_paths_is_silent(self, tmp_path: Path) -> None:
        h = detector(config(tmp_path))
        assert h.run(chain(DROP, DET, exe="/usr/local/bin/agent")) == []

    def test_no_prior_connect_is_silent(self, tmp_path: Path) -> None:
        h = detector(config(tmp_path))
        v = window(
            DET,
            execs=[exec_(DROP, DET - 5, "/tmp/stage2", ["stage2"])],
            connects=[connect(DROP, DET - 3, "203.0.113.66", 4444)],
        )
        assert h.run(v) == []

    def test_same_destination_twice_is_silent(self, tmp_path: Path) -> None:
        h = detector(config(tmp_path))
        assert h.run(chain(DROP, DET, second=("198.51.100.5", 80))) == []

    def test_second_destination_named_by_a_rogue_resolver_is_not_known(self, tmp_path: Path) -> None:
        """The second stage's channel carries a learned name: known only when
        the workload's own resolver gave it (stage two asking the
        attacker's resolver for the learned name proves nothing)."""
        worker = container("worker-2", image="acme/worker:2")

        def views(end: float) -> WindowView:
            c = connect(worker, end - 1, "198.51.100.80", 443)
            f = flow(worker, "198.51.100.80", 443, 20 * KIB, proto="tls")
            f.summary.domain, f.summary.domain_source, f.summary.name_resolver = "api.partner.example", "dns", RESOLVER
            return window(end, connects=[c], flows=[f, resolver_flow(worker)])

        b = learned(views)

        def run(resolver: str) -> list[str]:
            v = chain(worker, DET, second=("203.0.113.66", 443))
            v.connects[1].domain, v.connects[1].name_resolver = "api.partner.example", resolver
            return rules_of(detector(config(tmp_path), b).run(v))

        assert run(RESOLVER) == []
        assert run("203.0.113.53") == ["SL-C2-001"]

    def test_known_executable_is_silent(self, tmp_path: Path) -> None:
        worker = container("worker-1", image="acme/worker:1")
        b = learned(lambda end: window(end, execs=[exec_(worker, end - 1, "/tmp/stage2", ["stage2"])]))
        h = detector(config(tmp_path), b)
        assert h.run(chain(worker, DET)) == []

    def test_known_second_destination_is_silent(self, tmp_path: Path) -> None:
        worker = container("worker-1", image="acme/worker:1")
        b = learned(lambda end: window(end, flows=[flow(worker, "203.0.113.66", 4444, 100, entropy=None)]))
        h = detector(config(tmp_path), b)
        assert h.run(chain(worker, DET)) == []
        assert rules_of(h.run(chain(worker, DET + 60, second=("192.0.2.66", 4444)))) == ["SL-C2-001"]

    def test_trusted_second_destination_is_silent(self, tmp_path: Path) -> None:
        h = detector(config(tmp_path, detection='trusted_networks = ["203.0.113.0/24"]\n'))
        assert h.run(chain(DROP, DET)) == []

    def test_unknown_workload_silent_when_configured(self, tmp_path: Path) -> None:
        h = detector(config(tmp_path, detection="alert_on_unknown_workload = false\n"))
        assert h.run(chain(DROP, DET)) == []

    def test_allow_by_executable_glob(self, tmp_path: Path) -> None:
        h = detector(config(tmp_path, '[[allow]]\nexecutable = "/tmp/*"\nrules = ["SL-C2-001"]\n'))
        assert h.run(chain(DROP, DET)) == []
        assert h.counts["allowed"] == 1
        assert rules_of(h.run(chain(DROP, DET + 60, exe="/dev/shm/x"))) == ["SL-C2-001"]


# --- SL-C2-002 beaconing ---------------------------------------------------------------

BEACON = container("beacon", **EVIL)


def beacons(attr, times, ip="203.0.113.44", port=8080, seconds=None):
    end = max(times) + 1
    return window(
        end,
        seconds=seconds or (end - min(times) + 1),
        connects=[connect(attr, t, ip, port, executable="/usr/bin/curl") for t in times],
    )


def jitter(times: list[float]) -> float:
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    return statistics.pstdev(gaps) / statistics.fmean(gaps)


class TestBeaconing:
    def test_fires(self, tmp_path: Path) -> None:
        times = [DET + 5.0 * i + (0.1 if i % 2 else 0.0) for i in range(6)]
        h = detector(config(tmp_path))
        alerts = h.run(beacons(BEACON, times))
        assert rules_of(alerts) == ["SL-C2-002"]
        a = alerts[0]
        check_alert(a, "SL-C2-002", BEACON, "203.0.113.44")
        ev = a["sluice"]["evidence"]
        assert ev["connections"] == 6 and ev["min_connections"] == 6
        gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
        assert ev["mean_interval_seconds"] == round(statistics.fmean(gaps), 3) == 5.02
        assert ev["jitter"] == round(jitter(times), 3) and ev["jitter"] <= 0.2
        assert "every 5.0 s" in a["message"] and "6 connections" in a["message"]
        assert "203.0.113.44:8080" in a["message"] and "beacon" in a["message"]
        assert a["process"]["executable"] == "/usr/bin/curl"

    def test_one_connection_short_is_silent(self, tmp_path: Path) -> None:
        h = detector(config(tmp_path))
        assert h.run(beacons(BEACON, [DET + 5.0 * i for i in range(5)])) == []

    def test_counts_across_windows(self, tmp_path: Path) -> None:
        h = detector(config(tmp_path))
        assert h.run(beacons(BEACON, [DET + 5.0 * i for i in range(3)])) == []
        alerts = h.run(beacons(BEACON, [DET + 5.0 * i for i in range(3, 6)]))
        assert rules_of(alerts) == ["SL-C2-002"]
        # after firing, a fresh series is needed
        assert h.run(beacons(BEACON, [DET + 5.0 * i for i in range(6, 8)])) == []

    def test_jitter_just_above_max_is_silent(self, tmp_path: Path) -> None:
        times = [DET]
        for g in (4, 6, 4, 6, 4):
            times.append(times[-1] + g)
        assert 0.2 < jitter(times) < 0.21
        h = detector(config(tmp_path))
        assert h.run(beacons(BEACON, times)) == []

    def test_too_fast_is_silent(self, tmp_path: Path) -> None:
        h = detector(config(tmp_path))
        assert h.run(beacons(BEACON, [DET + 0.4 * i for i in range(10)])) == []

    def test_outside_horizon_does_not_count(self, tmp_path: Path) -> None:
        cfg = config(tmp_path, "[rules.SL-C2-002]\nhorizon_seconds = 22.0\n")
        h = detector(cfg)
        assert h.run(beacons(BEACON, [DET + 5.0 * i for i in range(6)])) == []

    def test_known_destination_is_silent(self, tmp_path: Path) -> None:
        agent = container("agent", image="acme/agent:1")
        b = learned(lambda end: window(end, flows=[flow(agent, "203.0.113.40", 8080, 300, entropy=None)]))
        h = detector(config(tmp_path), b)
        assert h.run(beacons(agent, [DET + 5.0 * i for i in range(8)])) == []

    def test_trusted_destination_is_silent(self, tmp_path: Path) -> None:
        h = detector(config(tmp_path, detection='trusted_networks = ["203.0.113.44/32"]\n'))
        assert h.run(beacons(BEACON, [DET + 5.0 * i for i in range(8)])) == []

    def test_unknown_workload_silent_when_configured(self, tmp_path: Path) -> None:
        h = detector(config(tmp_path, detection="alert_on_unknown_workload = false\n"))
        assert h.run(beacons(BEACON, [DET + 5.0 * i for i in range(8)])) == []

    def test_allow_by_executable_glob(self, tmp_path: Path) -> None:
        h = detector(config(tmp_path, '[[allow]]\nexecutable = "/usr/*/curl"\n'))
        assert h.run(beacons(BEACON, [DET + 5.0 * i for i in range(8)])) == []
        assert h.counts["allowed"] == 1


# --- SL-C2-003 atypical inter-container communication -----------------------------------

DB = container("db", image="acme/db:5")
CACHE = container("cache", image="acme/cache:1")


def peer_flow(src, dst=DB, payload=500, port=5432, connects=1, ip="172.17.0.3"):
    return flow(src, ip, port, payload, entropy=None, peer=dst, connects=connects)


class TestInterContainer:
    def test_fires(self, tmp_path: Path) -> None:
        h = detector(config(tmp_path))
        alerts = h.run(window(DET, flows=[peer_flow(WEB)]))
        assert rules_of(alerts) == ["SL-C2-003"]
        a = alerts[0]
        check_alert(a, "SL-C2-003", WEB, "172.17.0.3")
        ev = a["sluice"]["evidence"]
        assert DB.container is not None
        assert ev["peer_container_id"] == DB.container.id and ev["peer_container_name"] == "db"
        assert ev["peer_workload"] == "acme/db" and ev["bytes"] == 500
        assert ev["baseline_peers"] == []
        assert "web-1" in a["message"] and "db (acme/db)" in a["message"] and "172.17.0.3:5432" in a["message"]

    def test_known_peer_is_silent(self, tmp_path: Path) -> None:
        b = learned(lambda end: window(end, flows=[peer_flow(WEB, payload=2000)]))
        h = detector(config(tmp_path), b)
        assert h.run(window(DET, flows=[peer_flow(WEB)])) == []
        alerts = h.run(window(DET + 10, flows=[peer_flow(WEB, CACHE, port=6379, ip="172.17.0.4")]))
        assert rules_of(alerts) == ["SL-C2-003"]
        assert alerts[0]["sluice"]["evidence"]["baseline_peers"] == ["acme/db"]

    def test_bytes_just_below_is_silent(self, tmp_path: Path) -> None:
        h = detector(config(tmp_path, "[rules.SL-C2-003]\nmin_bytes = 100\n"))
        assert h.run(window(DET, flows=[peer_flow(WEB, payload=99)])) == []
        assert rules_of(h.run(window(DET + 10, flows=[peer_flow(WEB, payload=100)]))) == ["SL-C2-003"]

    def test_no_payload_is_silent(self, tmp_path: Path) -> None:
        h = detector(config(tmp_path))
        assert h.run(window(DET, flows=[peer_flow(WEB, payload=0)])) == []

    def test_reply_direction_is_silent(self, tmp_path: Path) -> None:
        h = detector(config(tmp_path))
        assert h.run(window(DET, flows=[peer_flow(DB, WEB, port=41234, connects=0, ip="172.17.0.2")])) == []

    def test_same_container_is_silent(self, tmp_path: Path) -> None:
        h = detector(config(tmp_path))
        assert h.run(window(DET, flows=[peer_flow(WEB, WEB, ip="172.17.0.2")])) == []

    def test_one_alert_per_pair_and_window(self, tmp_path: Path) -> None:
        h = detector(config(tmp_path))
        alerts = h.run(window(DET, flows=[peer_flow(WEB), peer_flow(WEB, port=5433)]))
        assert rules_of(alerts) == ["SL-C2-003"]

    def test_unknown_workload_silent_when_configured(self, tmp_path: Path) -> None:
        h = detector(config(tmp_path, detection="alert_on_unknown_workload = false\n"))
        assert h.run(window(DET, flows=[peer_flow(WEB)])) == []

    def test_allow_by_workload(self, tmp_path: Path) -> None:
        h = detector(config(tmp_path, '[[allow]]\nworkload = "acme/web"\nport = 5432\n'))
        assert h.run(window(DET, flows=[peer_flow(WEB)])) == []
        assert h.counts["allowed"] == 1


# --- SL-C2-004 lifecycle burst with new egress ------------------------------------------

WORKERS = [container(f"worker-{i}", image="acme/worker:3") for i in range(12)]


def burst(end, n_events, *, flow_ip="203.0.113.120", containers=WORKERS, payload=2000):
    lc = []
    for i in range(n_events):
        c = containers[i // 2]
        lc.append(life(c, end - 9 + i * 0.1, "start" if i % 2 == 0 else "stop", None if i % 2 == 0 else 0.1))
    flows = [flow(containers[0], flow_ip, 443, payload, entropy=None)] if flow_ip else []
    return window(end, flows=flows, lifecycle=lc)


class TestLifecycleBurst:
    def test_fires(self, tmp_path: Path) -> None:
        h = detector(config(tmp_path))
        alerts = h.run(burst(DET, 10))
        assert rules_of(alerts) == ["SL-C2-004"]
        a = alerts[0]
        check_alert(a, "SL-C2-004", WORKERS[0], "203.0.113.120")
        ev = a["sluice"]["evidence"]
        assert ev["lifecycle_events"] == 10 and ev["containers"] == 5
        assert ev["threshold_events"] == 10 and ev["horizon_seconds"] == 60.0
        assert ev["new_destinations"] == ["203.0.113.120:443"]
        assert "10 container starts/stops of acme/worker" in a["message"]
        assert "203.0.113.120:443" in a["message"] and "worker-0" in a["message"]

    def test_one_event_short_is_silent(self, tmp_path: Path) -> None:
        h = detector(config(tmp_path))
        assert h.run(burst(DET, 9)) == []

    def test_events_older_than_horizon_do_not_count(self, tmp_path: Path) -> None:
        h = detector(config(tmp_path))
        assert h.run(burst(DET, 6, flow_ip=None)) == []
        later = burst(DET + 65, 4, containers=WORKERS[6:])
        assert h.run(later) == []

    def test_quiet_after_firing(self, tmp_path: Path) -> None:
        h = detector(config(tmp_path))
        assert len(h.run(burst(DET, 10))) == 1
        assert h.run(burst(DET + 10, 10, containers=WORKERS[5:], flow_ip="198.51.100.1")) == []

    def test_known_destination_is_silent(self, tmp_path: Path) -> None:
        b = learned(lambda end: window(end, flows=[flow(WORKERS[11], "203.0.113.121", 443, 100, entropy=None)]))
        h = detector(config(tmp_path), b)
        assert h.run(burst(DET, 12)) == []

    def test_per_workload_lifecycle_rate(self, tmp_path: Path) -> None:
        # acme/worker starts ten containers in every 10 s window: bursts are its normal
        def busy(end):
            return window(end, lifecycle=[life(WORKERS[i], end - 5, "start") for i in range(10)])

        b = learned(busy, n=5)
        need = 2 * LogHist.upper(LogHist.bin_of(10)) * 60.0 / WINDOW
        h = detector(config(tmp_path), b)
        assert h.run(burst(DET, 20)) == []
        # a workload without that history alerts on the same burst
        others = [container(f"other-{i}", image="acme/other:1") for i in range(12)]
        alerts = h.run(burst(DET, 20, containers=others))
        assert rules_of(alerts) == ["SL-C2-004"]
        assert need > 20

    def test_unknown_workload_silent_when_configured(self, tmp_path: Path) -> None:
        h = detector(config(tmp_path, detection="alert_on_unknown_workload = false\n"))
        assert h.run(burst(DET, 12)) == []

    def test_allow_by_port_and_rules(self, tmp_path: Path) -> None:
        h = detector(config(tmp_path, '[[allow]]\nport = 443\nrules = ["SL-C2-004"]\n'))
        assert h.run(burst(DET, 10)) == []
        assert h.counts["allowed"] == 1


# --- SL-EVA-001: sensor flood ----------------------------------------------------


def test_sensor_flood_names_the_container_with_its_counts(tmp_path: Path) -> None:
    from tests.support.views import overflow

    flooder, quiet = container("flooder"), container("quiet")
    h = detector(config(tmp_path))
    (d,) = only(
        h.run(window(T0, overflows=[overflow(flooder, 150_000, 40_000, 9 * MIB), overflow(quiet, 0, 0)])), "SL-EVA-001"
    )
    check_alert(d, "SL-EVA-001", flooder, None)
    ev = d["sluice"]["evidence"]
    assert (ev["flows_refused"], ev["events_refused"], ev["over_quota_bytes"]) == (150_000, 40_000, 9 * MIB)
    assert "150000 new destinations past its flow-table share of 2048" in d["message"]


def test_sockets_without_sensor_state_are_a_sensor_flood(tmp_path: Path) -> None:
    """A container whose sockets the kernel sampled without the sensor's
    per-socket state (it filled their option memory)."""
    from tests.support.views import overflow

    filler = container("filler")
    h = detector(config(tmp_path))
    (d,) = only(h.run(window(T0, overflows=[overflow(filler, 0, 0, stateless=7)])), "SL-EVA-001")
    check_alert(d, "SL-EVA-001", filler, None)
    assert d["sluice"]["evidence"]["stateless_samples"] == 7
    assert "7 payload samples of sockets the kernel could not give the sensor's per-socket state" in d["message"]
    assert "flow-table share" not in d["message"]


def test_events_past_the_view_share_are_a_sensor_flood(tmp_path: Path) -> None:
    """Decoy unix paths (or listeners, destinations) sent ahead of the one
    that matters: past the cgroup's share of the window's views."""
    from tests.support.views import overflow

    decoys = container("decoys")
    h = detector(config(tmp_path))
    (d,) = only(h.run(window(T0, overflows=[overflow(decoys, 0, 0, views_refused=45)])), "SL-EVA-001")
    check_alert(d, "SL-EVA-001", decoys, None)
    assert d["sluice"]["evidence"]["views_refused"] == 45
    assert "45 events past its share of what the rules look at" in d["message"]


def test_a_second_flood_of_another_table_is_its_own_alert(tmp_path: Path) -> None:
    """Review: the first flood's alert (flow table) kept a second, of the
    view share, quiet for suppress_seconds; the tables flooded are part of
    the suppression key, and a flood 10x the alerted one escalates."""
    from tests.support.views import overflow

    flooder = container("flooder")
    h = detector(config(tmp_path))
    assert len(only(h.run(window(T0, overflows=[overflow(flooder, 500, 0)])), "SL-EVA-001")) == 1
    assert h.run(window(T0 + 1, overflows=[overflow(flooder, 600, 0)])) == []  # the same flood going on
    (d,) = only(h.run(window(T0 + 2, overflows=[overflow(flooder, 0, 0, views_refused=45)])), "SL-EVA-001")
    assert d["sluice"]["evidence"]["views_refused"] == 45
    (big,) = only(h.run(window(T0 + 3, overflows=[overflow(flooder, 5000, 0)])), "SL-EVA-001")
    assert big["sluice"]["evidence"]["escalated"]["previous_magnitude"] == 500
