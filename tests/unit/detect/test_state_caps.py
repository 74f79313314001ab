"""Bounded memory whatever containers do (issue 10, finding 2): rule state
keyed by destination or DNS name is capped per container and in total,
evictions are counted, and one container's churn does not evict another's
state; the window views handed to the rules are capped per cgroup."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

from emulation.records import connect_rec, to_wall
from sensor.attribution.cgroups import CgroupResolver
from sensor.attribution.containers import Attributor
from sensor.detect.rules._common import PER_CONTAINER_KEYS, CappedTable, state_evictions
from sensor.detect.rules.c2002_beaconing import Beaconing
from sensor.detect.rules.exf003_cleartext_carrier import MAX_SUBDOMAINS, CleartextCarrier
from sensor.detect.view import WindowView
from sensor.telemetry.pipeline import MAX_VIEWS_PER_CGROUP, Pipeline
from tests.support.views import T0, config, connect, container, detector, flow, window

CHURN = container("churner", image="evil/churn:1")
BEACON = container("beacon", image="evil/beacon:1")


def _ips(n: int, base: str = "198.51.0.0") -> list[str]:
    b = int(ipaddress.ip_address(base))
    return [str(ipaddress.ip_address(b + i)) for i in range(n)]


def test_capped_table_evicts_the_same_containers_oldest_and_counts() -> None:
    t = CappedTable(per_container=3, total=5, factory=int)
    for i in range(4):
        t[("a", i)] += 1
    assert list(t) == [("a", 1), ("a", 2), ("a", 3)] and t.evictions == 1
    t[("b", 0)] = 1
    t[("b", 1)] = 1
    t[("c", 0)] = 1  # total full: the oldest overall goes
    assert len(t) == 5 and ("a", 1) not in t and t.evictions == 2
    del t[("c", 0)]
    t.pop(("b", 0))
    t.setdefault(("b", 9), 7)
    assert t[("b", 9)] == 7 and len(t) == 4


def test_a_container_churning_destinations_keeps_its_state_bounded_and_others_beacon(tmp_path: Path) -> None:
    h = detector(config(tmp_path))
    beacon = next(r for r in h.detector.rules if isinstance(r, Beaconing))
    alerts = []
    for w in range(8):  # 8 windows of 10 s
        end = T0 + 10 * (w + 1)
        conns = [connect(CHURN, end - 5, ip, 443) for ip in _ips(3000, f"198.51.{w * 16}.0")]
        conns.append(connect(BEACON, end - 5, "203.0.113.66", 8443))  # every 10 s, to the same place
        alerts += h.run(window(end, connects=conns))
    assert len(beacon._times) <= PER_CONTAINER_KEYS + 10
    assert state_evictions(beacon) > 0 and h.detector.state_evictions() > 0
    assert any(a["rule"]["id"] == "SL-C2-002" and a["destination"]["ip"] == "203.0.113.66" for a in alerts)


def test_dns_subdomain_sets_are_capped(tmp_path: Path) -> None:
    h = detector(config(tmp_path))
    rule = next(r for r in h.detector.rules if isinstance(r, CleartextCarrier))
    for w in range(4):
        names = [(f"q{w}x{i}.t.exfil.test", True) for i in range(2000)]
        h.run(window(T0 + 10 * (w + 1), flows=[flow(CHURN, "198.18.0.53", 53, 4000, transport="udp", dns_names=names)]))
    assert all(len(s) <= MAX_SUBDOMAINS for s in rule._subs.values())
    assert state_evictions(rule) > 0
    # many domains: at most 256 tracked per container
    names = [(f"a.d{i}.test", True) for i in range(2000)]
    h.run(window(T0 + 100, flows=[flow(CHURN, "198.18.0.53", 53, 4000, transport="udp", dns_names=names)]))
    assert len(rule._subs) <= 256


def test_views_handed_to_the_rules_are_capped_per_cgroup(tmp_path: Path) -> None:
    root = tmp_path / "cg"
    d = root / "docker" / ("c" * 64)
    d.mkdir(parents=True)
    cg = os.stat(d).st_ino
    resolver = CgroupResolver(str(root), rescan_interval=3600)
    resolver.scan()
    seen: list[WindowView] = []

    class Obs:
        def on_window(self, view: WindowView) -> None:
            seen.append(view)

    pipe = Pipeline(Attributor(resolver, None), lambda d: None, "h", False, to_wall, observers=[Obs()])
    for i, ip in enumerate(_ips(MAX_VIEWS_PER_CGROUP + 3000)):
        pipe.handle_raw(connect_rec(1000 + i % 50, cg, ip, 443, ktime_ns=10**9))
    pipe.close_window([], to_wall(0), to_wall(10**10))
    assert len(seen[0].connects) == MAX_VIEWS_PER_CGROUP
    assert pipe.counts["view_events_capped"] == 3000
    assert len(pipe._view_counts) == 0  # reset every window
