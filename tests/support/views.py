"""Builders for synthetic detection input: attributions, flow summaries,
WindowViews, configs written to disk, baselines learned through the real
Learner, and a Detector whose alerts land in a list under a settable clock.

Imported by the detection and output unit tests (tests.support.views).
"""

from __future__ import annotations

import calendar
import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sensor.attribution.containers import Attribution, ContainerInfo
from sensor.attribution.workload import workload_of
from sensor.config import Config, load_config
from sensor.detect.baseline import Baseline
from sensor.detect.catalog import BY_ID
from sensor.detect.engine import Detector
from sensor.detect.learn import Learner
from sensor.detect.rules import all_rules
from sensor.detect.view import (
    AcceptView,
    ConnectView,
    ExecView,
    FlowView,
    LifecycleView,
    ListenView,
    OverflowView,
    ProcessRef,
    UnixConnectView,
    WindowView,
)
from sensor.telemetry.classify import ByteClasses
from sensor.telemetry.counters import FlowSummary, QuotaOverflow

KIB = 1024
MIB = 1024 * 1024
PROTO = {"tcp": 6, "udp": 17}

# 2024-01-09 (a Tuesday) 14:00:00 UTC: every synthetic window lives on this day
# unless a test says otherwise.
T0 = float(calendar.timegm((2024, 1, 9, 14, 0, 0)))
WINDOW = 10.0
HOST_NAME = "node-7"
ISO_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def utc(y: int, mo: int, d: int, h: int, mi: int = 0, s: int = 0) -> float:
    return float(calendar.timegm((y, mo, d, h, mi, s)))


def cid_of(name: str) -> str:
    """A stable 64-hex container id derived from a name."""
    return hashlib.sha256(name.encode()).hexdigest()


_CG: dict[str, int] = {}


def container(
    name: str, image: str | None = "acme/app:1.0", labels: dict[str, str] | None = None, cid: str | None = None
) -> Attribution:
    cid = cid or cid_of(name)
    cg = _CG.setdefault(cid, 10_000 + len(_CG))
    info = ContainerInfo(
        cid,
        "docker",
        name=name,
        image_name=image,
        image_id="sha256:" + "e" * 64,
        labels=dict(labels or {}),
        metadata=True,
    )
    return Attribution(cg, f"/system.slice/docker-{cid}.scope", info)


def host() -> Attribution:
    return Attribution(1, "/system.slice/cron.service", None)


def summary(
    attr: Attribution,
    ip: str,
    port: int,
    payload: int,
    *,
    transport: str = "tcp",
    entropy: float | None = 7.9,
    proto: str | None = None,
    compression: str | None = None,
    pid: int | None = 4242,
    comm: str | None = "curl",
    connects: int = 1,
    body_entropy: float | None = None,
    body_sampled_bytes: int = 0,
    dns_names: Iterable[tuple[str, bool]] = (),
    byte_classes: ByteClasses | None = None,
) -> FlowSummary:
    return FlowSummary(
        key=(attr.cgroup_id, ip, port, PROTO[transport]),
        bytes=payload + 40 * max(1, payload // 1400),
        packets=max(1, payload // 1400),
        payload_bytes=payload,
        connects=connects,
        samples=8,
        sampled_bytes=512,
        entropy=entropy,
        protocol_hint=proto,
        pid=pid,
        comm=comm,
        compression=compression,
        body_entropy=body_entropy,
        body_sampled_bytes=body_sampled_bytes,
        dns_names=list(dns_names),
        byte_classes=byte_classes,
    )


def flow(
    attr: Attribution,
    ip: str,
    port: int,
    payload: int,
    *,
    transport: str = "tcp",
    peer: Attribution | None = None,
    **kw: Any,
) -> FlowView:
    s = summary(attr, ip, port, payload, transport=transport, **kw)
    return FlowView(
        s, attr, workload_of(attr), ip, port, transport, peer, workload_of(peer) if peer is not None else None
    )


# The resolver the test workloads ask: a DNS answer vouches for a name only
# from a resolver the workload learned (Context.resolver_known), so a
# baseline that should accept vouched names learns resolver_flow too.
RESOLVER = "198.18.0.53"


def resolver_flow(attr: Attribution) -> FlowView:
    return flow(attr, RESOLVER, 53, 300, transport="udp", proto="dns")


def proc(executable: str | None, args: list[str] | None = None, pid: int = 4242, name: str | None = None) -> ProcessRef:
    nm = name or (executable.rsplit("/", 1)[-1] if executable else "sh")
    return ProcessRef(pid, nm, executable, args, 1)


def exec_(
    attr: Attribution,
    ts: float,
    executable: str | None,
    args: list[str] | None = None,
    pid: int = 4242,
    name: str | None = None,
) -> ExecView:
    return ExecView(ts, attr, workload_of(attr), proc(executable, args, pid, name))


def connect(
    attr: Attribution,
    ts: float,
    ip: str,
    port: int,
    *,
    transport: str = "tcp",
    executable: str = "/usr/bin/curl",
    pid: int = 4242,
) -> ConnectView:
    return ConnectView(
        ts, attr, workload_of(attr), ip, port, transport, proc(executable, [executable.rsplit("/", 1)[-1]], pid)
    )


def life(attr: Attribution, ts: float, kind: str, lifetime: float | None = None) -> LifecycleView:
    return LifecycleView(ts, attr, workload_of(attr), kind, lifetime)


def listen(
    attr: Attribution,
    ts: float,
    port: int,
    *,
    ip: str = "0.0.0.0",
    transport: str = "tcp",
    op: str = "listen",
    executable: str = "/bin/nc",
) -> ListenView:
    return ListenView(ts, attr, workload_of(attr), ip, port, transport, op, proc(executable, ["nc", "-l"]))


def accept(
    attr: Attribution,
    ts: float,
    peer_ip: str,
    port: int,
    *,
    count: int = 1,
    peer: Attribution | None = None,
    node: bool = False,
) -> AcceptView:
    return AcceptView(
        ts,
        attr,
        workload_of(attr),
        peer_ip,
        40000,
        "172.17.0.2",
        port,
        count,
        peer,
        workload_of(peer) if peer is not None else None,
        node,
    )


def unix(
    attr: Attribution, ts: float, path: str = "/var/run/docker.sock", executable: str = "/usr/bin/docker"
) -> UnixConnectView:
    return UnixConnectView(ts, attr, workload_of(attr), path, proc(executable, ["docker", "run"]))


def window(
    end: float,
    *,
    flows: Iterable[FlowView] = (),
    execs: Iterable[ExecView] = (),
    connects: Iterable[ConnectView] = (),
    lifecycle: Iterable[LifecycleView] = (),
    overflows: Iterable[OverflowView] = (),
    listens: Iterable[ListenView] = (),
    accepts: Iterable[AcceptView] = (),
    unix_connects: Iterable[UnixConnectView] = (),
    seconds: float = WINDOW,
) -> WindowView:
    return WindowView(
        end - seconds,
        end,
        list(flows),
        list(execs),
        list(connects),
        list(lifecycle),
        overflows=list(overflows),
        listens=list(listens),
        accepts=list(accepts),
        unix_connects=list(unix_connects),
    )


def overflow(
    attr: Attribution,
    flows_refused: int,
    events_refused: int = 0,
    nbytes: int = 0,
    stateless: int = 0,
    views_refused: int = 0,
) -> OverflowView:
    """A cgroup over its fair share in a window (stateless: samples of its
    sockets taken without socket state; views_refused: events past its share
    of the window's views)."""
    o = QuotaOverflow(
        attr.cgroup_id,
        flows_refused,
        events_refused,
        nbytes,
        nbytes // 100,
        flows_refused,
        2048,
        8192,
        stateless,
        views_refused,
    )
    return OverflowView(o, attr, workload_of(attr))


# --- config, baseline, detector -------------------------------------------------

BASE_TOML = """\
[detection]
timezone = "UTC"
min_baseline_windows = 3
"""


def config(tmp_path: Path, extra: str = "", detection: str = "", name: str = "sluice.toml") -> Config:
    """A real Config loaded from a file: UTC, min_baseline_windows = 3, plus
    extra [detection] keys and any further sections."""
    p = tmp_path / name
    p.write_text(BASE_TOML + detection + "\n" + extra)
    return load_config(p)


def learn(views: Iterable[WindowView], baseline: Baseline | None = None, tz: str = "UTC") -> Baseline:
    b = baseline if baseline is not None else Baseline()
    learner = Learner(b, tz)
    for v in views:
        learner.on_window(v)
    return b


def learn_flows(make: Any, n: int = 5, start: float = T0 - 3600.0) -> Baseline:
    """n windows ending at start + i*WINDOW, each built by make(end) -> WindowView."""
    return learn(make(start + i * WINDOW) for i in range(n))


@dataclass
class Harness:
    detector: Detector
    alerts: list[dict[str, Any]] = field(default_factory=list)
    now: list[float] = field(default_factory=lambda: [T0])

    def run(self, *views: WindowView) -> list[dict[str, Any]]:
        """Feed windows; the clock follows each window's end. Returns the
        alerts these windows produced."""
        before = len(self.alerts)
        for v in views:
            self.now[0] = max(self.now[0], v.end)
            self.detector.on_window(v)
        return self.alerts[before:]

    @property
    def counts(self) -> dict[str, int]:
        return self.detector.counts


def detector(cfg: Config, baseline: Baseline | None = None, learner: Learner | None = None) -> Harness:
    alerts: list[dict[str, Any]] = []
    now = [T0]
    det = Detector(cfg, baseline, all_rules(), alerts.append, HOST_NAME, learner, clock=lambda: now[0])
    return Harness(det, alerts, now)


def only(alerts: list[dict[str, Any]], rule_id: str) -> list[dict[str, Any]]:
    return [a for a in alerts if a["rule"]["id"] == rule_id]


def check_alert(doc: dict[str, Any], rule_id: str, attr: Attribution, dest_ip: str | None) -> None:
    """The invariants of every alert document."""
    info = BY_ID[rule_id]
    json.dumps(doc)
    assert doc["event"]["kind"] == "alert"
    assert doc["event"]["module"] == "sluice" and doc["event"]["dataset"] == "sluice.alert"
    assert doc["event"]["action"] == info.slug
    assert doc["event"]["severity"] == doc["event"]["risk_score"]
    assert ISO_Z.match(doc["@timestamp"]) and doc["@timestamp"].endswith("Z")
    assert ISO_Z.match(doc["event"]["created"])
    assert doc["host"]["name"] == HOST_NAME
    assert doc["rule"]["id"] == rule_id
    assert doc["rule"]["name"] == info.name
    assert doc["rule"]["description"] == info.description
    assert doc["rule"]["ruleset"] == "sluice"
    t = doc["threat"]
    assert t["framework"] == "MITRE ATT&CK"
    if rule_id.startswith("SL-EXF"):
        assert t["technique"]["id"] == ["T1048"]
        assert t["technique"]["subtechnique"]["id"] == ["T1048.001"]
        assert t["tactic"]["id"] == ["TA0010"]
        assert doc["rule"]["category"] == "Exfiltration"
    elif rule_id.startswith("SL-EVA"):
        assert t["technique"]["id"] == ["T1562"]
        assert "subtechnique" not in t["technique"]
        assert t["tactic"]["id"] == ["TA0005"]
        assert doc["rule"]["category"] == "Defense Evasion"
    else:
        assert t["technique"]["id"] == ["T1104"]
        assert "subtechnique" not in t["technique"]
        assert t["tactic"]["id"] == ["TA0011"]
        assert doc["rule"]["category"] == "Command and Control"
    assert doc["event"]["reference"] == t["technique"]["reference"][0]
    c = attr.container
    assert c is not None
    assert doc["container"]["id"] == c.id
    assert doc["sluice"]["workload"] == workload_of(attr)
    resp = doc["sluice"]["response"]
    assert any(c.id[:12] in cmd for cmd in resp["isolate"])
    assert any(c.id[:12] in cmd for cmd in resp["investigate"])
    assert "suppressed_since_last" in doc["sluice"]["alert"]
    ev = doc["sluice"]["evidence"]
    assert "time" in ev and "baseline" in ev
    if dest_ip is not None:
        assert doc["destination"]["ip"] == dest_ip
        assert any(dest_ip in cmd for cmd in resp["block"])
        assert doc["network"]["direction"] == "egress"


# --- one firing scenario per rule (for tests that sweep all ten) -----------------------

OPENSSL_ENC = ["openssl", "enc", "-aes-256-cbc", "-pbkdf2", "-in", "/data/db.sql", "-out", "/tmp/x"]


def siblings(attr: Attribution, n: int) -> list[Attribution]:
    """n containers of the same workload as attr (attr first)."""
    c = attr.container
    assert c is not None
    return [attr] + [container(f"{c.name}-{i}", image=c.image_name, labels=c.labels) for i in range(1, n)]


def scenario(rule_id: str, attr: Attribution, end: float) -> tuple[list[WindowView], str]:
    """Windows (ending at `end`) on which `rule_id` fires for attr's workload
    when nothing in the baseline or config explains them; and the
    destination ip the alert is about."""
    if rule_id == "SL-EXF-001":
        return [window(end, flows=[flow(attr, "203.0.113.10", 443, 64 * MIB, proto="tls")])], "203.0.113.10"
    if rule_id == "SL-EXF-002":
        return [window(end, flows=[flow(attr, "203.0.113.50", 8444, 128 * KIB, proto="tls")])], "203.0.113.50"
    if rule_id == "SL-EXF-003":
        return [
            window(
                end,
                flows=[
                    flow(
                        attr,
                        "198.51.100.20",
                        80,
                        300 * KIB,
                        proto="http",
                        entropy=6.2,
                        body_entropy=7.97,
                        body_sampled_bytes=2048,
                    )
                ],
            )
        ], "198.51.100.20"
    if rule_id == "SL-EXF-004":
        return [window(end, flows=[flow(attr, "203.0.113.77", 443, 2 * MIB, proto="tls")])], "203.0.113.77"
    if rule_id == "SL-EXF-005":
        return [
            window(
                end,
                flows=[flow(attr, "203.0.113.88", 443, 100 * KIB, proto="tls", entropy=7.9)],
                lifecycle=[life(attr, end - 1, "stop", 12.0)],
            )
        ], "203.0.113.88"
    if rule_id == "SL-EXF-006":
        return [
            window(
                end,
                execs=[exec_(attr, end - 5, "/usr/bin/openssl", OPENSSL_ENC, pid=77)],
                flows=[flow(attr, "203.0.113.99", 443, 8 * KIB, proto="tls", entropy=None)],
            )
        ], "203.0.113.99"
    if rule_id == "SL-C2-001":
        return [
            window(
                end,
                connects=[
                    connect(attr, end - 8, "198.51.100.5", 80, executable="/usr/bin/wget"),
                    connect(attr, end - 4, "203.0.113.66", 4444, executable="/tmp/stage2"),
                ],
                execs=[exec_(attr, end - 6, "/tmp/stage2", ["stage2"])],
            )
        ], "203.0.113.66"
    if rule_id == "SL-C2-002":
        return [
            window(
                end, seconds=60.0, connects=[connect(attr, end - 50 + 5.0 * i, "203.0.113.44", 8080) for i in range(8)]
            )
        ], "203.0.113.44"
    if rule_id == "SL-C2-003":
        db = container("db-peer", image="acme/db:5")
        return [window(end, flows=[flow(attr, "172.17.0.3", 5432, 500, entropy=None, peer=db)])], "172.17.0.3"
    if rule_id == "SL-C2-004":
        group = siblings(attr, 6)
        lc = []
        for i, c in enumerate(group):
            lc += [life(c, end - 9 + i, "start"), life(c, end - 8.5 + i, "stop", 0.5)]
        return [
            window(end, lifecycle=lc, flows=[flow(attr, "203.0.113.120", 443, 2000, entropy=None)])
        ], "203.0.113.120"
    raise KeyError(rule_id)


# the ten network rules this suite covers (the catalog may hold more)
ALL_RULES = [
    "SL-EXF-001",
    "SL-EXF-002",
    "SL-EXF-003",
    "SL-EXF-004",
    "SL-EXF-005",
    "SL-EXF-006",
    "SL-C2-001",
    "SL-C2-002",
    "SL-C2-003",
    "SL-C2-004",
]
