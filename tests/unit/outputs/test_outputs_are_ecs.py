"""Every kind of document Sluice writes is valid ECS 9.4.0.

The real Pipeline (raw kernel records from a ReplaySource, attributed through
a fake Docker Engine), the real Detector with the real rules (one firing
scenario per rule in the catalog, plus the same rules behind the pipeline),
and the real Sensor (its health documents, read back from the output file it
wrote) produce documents; tests/support/ecs_schema.py validates each one against the
ECS definitions in tests/data/ecs/.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from emulation.records import (
    NS,
    accept_rec,
    cgroup_rec,
    connect_rec,
    dns_query,
    exec_args_rec,
    exec_rec,
    exit_rec,
    listen_rec,
    quota_rec,
    sample_rec,
    socket_rec,
    tls_client_hello,
    to_wall,
    unix_into_rec,
    unix_rec,
)
from sensor.attribution.cgroups import CgroupResolver
from sensor.attribution.containers import Attribution, Attributor, ContainerInfo
from sensor.attribution.docker_api import DockerClient
from sensor.attribution.workload import workload_of
from sensor.config import load_config
from sensor.daemon.runner import Sensor
from sensor.detect.catalog import BY_ID
from sensor.detect.engine import Detector
from sensor.detect.rules import all_rules
from sensor.detect.view import ProcessRef
from sensor.kernel import events as E
from sensor.kernel.probe import ProbeReport
from sensor.kernel.source import ReplaySource
from sensor.telemetry.counters import FlowCounters
from sensor.telemetry.pipeline import Pipeline
from tests.support.ecs_schema import explain, validate
from tests.support.views import (
    KIB,
    MIB,
    T0,
    accept,
    config,
    connect,
    container,
    detector,
    exec_,
    flow,
    learn_flows,
    life,
    listen,
    overflow,
    unix,
    window,
)

A = "a0" * 32  # docker (cgroupfs driver), Kubernetes pod labels
B = "b1" * 32  # docker (systemd driver), started and stopped while watched
K = "c2" * 32  # containerd under kubepods: no metadata, pod uid from the path
POD_UID = "12345678-90ab-cdef-1234-567890abcdef"
PID, PID2, PID3, PID4, GONE = 5_000_123, 5_000_456, 5_000_789, 5_000_999, 5_001_111
RNG = random.Random(7)
TELEMETRY = {
    "raw_socket_created",
    "raw_socket_denied",
    "exec",
    "exit",
    "connection_attempted",
    "udp_send",
    "flow_summary",
    "container_summary",
    "container_start",
    "container_stop",
    "listening",
    "socket_bound",
    "connection_accepted",
    "unix_socket_connect",
    "unix_socket_connect_into",
    "unix_socket_send_into",
    "unix_socket_send_out",
}
HEALTH = {"sensor_start", "sensor_health", "runtime_status", "sensor_stop"}


def action(d: dict[str, Any]) -> str:
    a: str = d["event"]["action"]
    return a


def assert_ecs(docs: list[dict[str, Any]]) -> None:
    """Every document valid; all problems of all documents in one failure."""
    assert docs, "no documents"
    bad = [(d, p) for d in docs if (p := validate(d))]
    assert not bad, f"{len(bad)} of {len(docs)} documents are not valid ECS:\n\n" + "\n\n".join(
        explain(d, p) for d, p in bad
    )


# --- the pipeline: every telemetry document kind ------------------------------------


def _pipeline_world(
    tmp_path: Path, docker_sock: str, observers: list[Any] | None = None, docs: list[dict[str, Any]] | None = None
) -> tuple[Pipeline, list[dict[str, Any]], dict[str, int]]:
    root = tmp_path / "cg"
    dirs = {
        "a": root / "docker" / A,
        "a_sub": root / "docker" / A / "app",
        "k": root / "kubepods" / "besteffort" / f"pod{POD_UID}" / K,
        "host": root / "system.slice" / "cron.service",
    }
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)
    resolver = CgroupResolver(str(root), rescan_interval=3600)
    resolver.scan()
    cg = {k: os.stat(d).st_ino for k, d in dirs.items()}
    out: list[dict[str, Any]] = docs if docs is not None else []
    pipe = Pipeline(
        Attributor(resolver, DockerClient(docker_sock, 2.0)),
        out.append,
        "test-host",
        True,
        to_wall,
        observers=observers,
    )
    return pipe, out, cg


def _telemetry_records(cg: dict[str, int]) -> list[bytes]:
    me = os.getpid()
    scope = f"/system.slice/docker-{B}.scope".encode()
    recs = [
        # exec with argv from the tracepoint, from procfs, and unavailable
        exec_args_rec(PID, cg["a"], [b"curl", b"-sk", b"https://198.51.100.7/"]),
        exec_rec(PID, cg["a"], ktime_ns=1 * NS, comm=b"curl", filename=b"/usr/bin/curl", ppid=4_999_999),
        exec_rec(me, cg["a_sub"], ktime_ns=1 * NS + 1, comm=b"python3", filename=b"/usr/bin/python3"),
        exec_rec(PID2, cg["k"], ktime_ns=1 * NS + 2, comm=b"nc", filename=b"/bin/nc"),
        exec_rec(PID3, cg["host"], ktime_ns=1 * NS + 3, comm=b"cron", filename=b"/usr/sbin/cron", ppid=1),
        # TCP connect (IPv4), unconnected UDP sends (IPv6, IPv4), a process never seen exec'ing
        connect_rec(PID, cg["a"], "198.51.100.7", 443, ktime_ns=2 * NS, comm=b"curl", cookie=11),
        connect_rec(
            PID2,
            cg["k"],
            "2001:db8::53",
            53,
            protocol=17,
            ktime_ns=2 * NS + 1,
            comm=b"nc",
            cookie=12,
            op=E.CONNECT_OP_SENDMSG,
            family=10,
        ),
        connect_rec(
            PID3,
            cg["host"],
            "192.0.2.123",
            123,
            protocol=17,
            ktime_ns=2 * NS + 2,
            comm=b"ntpd",
            cookie=13,
            op=E.CONNECT_OP_SENDMSG,
        ),
        connect_rec(GONE, cg["a"], "203.0.113.9", 4444, ktime_ns=2 * NS + 3, comm=b"sh", cookie=14),
        # payload samples: TLS, HTTP, DNS over IPv6, random bytes
        sample_rec(
            cg["a"], "198.51.100.7", 443, tls_client_hello(), flags=E.SAMPLE_F_SOCK_START, sock_pkt_index=0, cookie=11
        ),
        *[
            sample_rec(cg["a"], "198.51.100.7", 443, RNG.randbytes(128), sock_pkt_index=64 * i, cookie=11)
            for i in range(1, 9)
        ],
        sample_rec(
            cg["a_sub"],
            "192.0.2.80",
            80,
            b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n",
            flags=E.SAMPLE_F_SOCK_START,
            sock_pkt_index=0,
        ),
        sample_rec(cg["k"], "2001:db8::53", 53, dns_query("www.example.org"), protocol=17),
        *[sample_rec(cg["a"], "203.0.113.9", 4444, RNG.randbytes(128), sock_pkt_index=i) for i in range(4)],
        # a container started and stopped while watched; exits of a known and an unknown process
        cgroup_rec(E.CGROUP_MKDIR, 9_100_001, scope, ktime_ns=3 * NS),
        cgroup_rec(E.CGROUP_MKDIR, 9_100_002, scope + b"/init.scope", ktime_ns=3 * NS + 5),
        exit_rec(PID, cg["a"], ktime_ns=4 * NS, comm=b"curl"),
        exit_rec(GONE, cg["a"], ktime_ns=4 * NS + 1, comm=b"sh"),
        cgroup_rec(E.CGROUP_RMDIR, 9_100_002, scope + b"/init.scope", ktime_ns=5 * NS),
        cgroup_rec(E.CGROUP_RMDIR, 9_100_001, scope, ktime_ns=5 * NS + 500_000_000),
        # raw/packet sockets: created, refused (contained), on the host; a quota report
        socket_rec(PID, cg["a"], family=2, sock_type=3, protocol=1, ktime_ns=6 * NS, comm=b"ping"),
        socket_rec(PID2, cg["k"], family=17, sock_type=2, protocol=0x0608, denied=True, ktime_ns=6 * NS + 1),
        socket_rec(PID3, cg["host"], family=17, sock_type=3, ktime_ns=6 * NS + 2, comm=b"dhclient"),
        quota_rec(cg["a"], ktime_ns=6 * NS + 3),
        # a listener (listen and a UDP bind), inbound connections (IPv4, IPv6, listener unknown),
        # unix connects from a container and from the host
        listen_rec(PID2, cg["k"], "0.0.0.0", 4444, ktime_ns=6 * NS),
        listen_rec(PID2, cg["k"], "::", 5353, op=E.LISTEN_OP_BIND, protocol=17, family=10, ktime_ns=6 * NS + 1),
        accept_rec(cg["k"], "203.0.113.5", 51000, "172.17.0.9", 4444, ktime_ns=6 * NS + 2, suppressed=4),
        accept_rec(cg["k"], "2001:db8::5", 51001, "2001:db8::9", 4444, ktime_ns=6 * NS + 3),
        accept_rec(0, "198.51.100.1", 51002, "192.0.2.1", 22, ktime_ns=6 * NS + 4),
        unix_rec(PID, cg["a"], b"/var/run/docker.sock", ktime_ns=6 * NS + 5),
        unix_rec(PID3, cg["host"], b"/run/systemd/journal/stdout", ktime_ns=6 * NS + 6),
        # connects into an isolated container's listener, from the host and from a container
        unix_into_rec(PID3, cg["host"], cg["a"], ktime_ns=6 * NS + 7),
        unix_into_rec(PID2, cg["k"], cg["a"], ktime_ns=6 * NS + 8, op=E.UNIX_INTO_SEND),
        unix_into_rec(PID, cg["a"], cg["host"], ktime_ns=6 * NS + 9, op=E.UNIX_OUT_SEND),
    ]
    return recs


def _flows(cg: dict[str, int]) -> list[FlowCounters]:
    def fc(
        cgid: int,
        ip: str,
        port: int,
        proto: int,
        nbytes: int,
        payload: int,
        packets: int = 10,
        connects: int = 1,
        samples: int = 0,
    ) -> FlowCounters:
        return FlowCounters(cgid, ip, port, proto, nbytes, packets, payload, connects, 1, 2, samples)

    return [
        fc(cg["a"], "198.51.100.7", 443, 6, 1_234_567, 1_200_000, 900, samples=9),
        fc(cg["a_sub"], "192.0.2.80", 80, 6, 20_000, 15_000, 20, connects=2),
        fc(cg["k"], "2001:db8::53", 53, 17, 100, 72, 1, connects=1),
        fc(cg["host"], "192.0.2.123", 123, 17, 900, 480, 10, connects=0),
        fc(9_100_001, "203.0.113.66", 443, 6, 4096, 3000, 5),  # the stopped container's last bytes
    ]


@pytest.fixture
def engine(fake_docker: Any) -> Any:
    fake_docker.add(
        A,
        "exfil-test",
        "alpine:3.20",
        "sha256:" + "a" * 64,
        {"io.kubernetes.pod.name": "db-0", "io.kubernetes.pod.namespace": "data", "com.example.team": "storage"},
    )
    fake_docker.add(B, "late-starter", "busybox:1.36", "sha256:" + "b" * 64)
    return fake_docker


def test_pipeline_telemetry_documents_are_ecs(tmp_path: Path, engine: Any) -> None:
    pipe, docs, cg = _pipeline_world(tmp_path, engine.socket_path)
    pipe.registry.note_existing()
    src = ReplaySource(_telemetry_records(cg), [_flows(cg)])
    src.start(pipe.handle_raw)
    src.poll(0)
    pipe.close_window(src.drain_flows(), to_wall(0), to_wall(10 * NS))
    # a container that predates the sensor stops: no lifetime
    src.records = [
        cgroup_rec(E.CGROUP_RMDIR, cg["k"], f"/kubepods/besteffort/pod{POD_UID}/{K}".encode(), ktime_ns=11 * NS)
    ]
    src.poll(0)
    pipe.close_window([], to_wall(10 * NS), to_wall(20 * NS))

    assert TELEMETRY <= {action(d) for d in docs}, sorted({action(d) for d in docs})
    # the shapes that matter are all here
    assert any(d.get("orchestrator") for d in docs)  # pod labels
    assert any(d.get("container", {}).get("runtime") == "containerd" for d in docs)  # no metadata
    assert any(d["sluice"]["attribution"] == "host" for d in docs)
    assert any(d.get("network", {}).get("type") == "ipv6" for d in docs)
    assert {d["sluice"]["process"]["args_source"] for d in docs if action(d) == "exec"} == {
        "tracepoint",
        "procfs",
        "unavailable",
    }
    assert any("duration" in d["event"] for d in docs if action(d) == "container_stop")
    assert any("duration" not in d["event"] for d in docs if action(d) == "container_stop")
    assert_ecs(docs)
    # and as written: through JSON
    assert_ecs([json.loads(json.dumps(d)) for d in docs])


def test_pipeline_with_detector_alerts_are_ecs(tmp_path: Path, engine: Any) -> None:
    """The rules behind the real pipeline: windows built from raw records."""
    docs: list[dict[str, Any]] = []
    det = Detector(config(tmp_path), None, all_rules(), docs.append, "test-host")
    pipe, _docs, cg = _pipeline_world(tmp_path, engine.socket_path, observers=[det], docs=docs)
    enc = [b"openssl", b"enc", b"-aes-256-cbc", b"-pbkdf2", b"-in", b"/data/db.sql", b"-out", b"/tmp/x"]
    recs = [
        # SL-C2-001: connect, a new executable from /tmp, a connection somewhere new
        exec_rec(PID, cg["a"], ktime_ns=1 * NS, comm=b"wget", filename=b"/usr/bin/wget"),
        connect_rec(PID, cg["a"], "198.51.100.5", 80, ktime_ns=1 * NS + 10, comm=b"wget", cookie=1),
        exec_args_rec(PID2, cg["a"], [b"/tmp/stage2", b"--quiet"]),
        exec_rec(PID2, cg["a"], ktime_ns=2 * NS, comm=b"stage2", filename=b"/tmp/stage2", ppid=PID),
        connect_rec(PID2, cg["a"], "203.0.113.66", 4444, ktime_ns=3 * NS, comm=b"stage2", cookie=2),
        # SL-EXF-006: openssl enc, then data out; SL-EXF-002: TLS to port 8444
        exec_args_rec(PID3, cg["a"], enc),
        exec_rec(PID3, cg["a"], ktime_ns=4 * NS, comm=b"openssl", filename=b"/usr/bin/openssl"),
        connect_rec(PID4, cg["a"], "203.0.113.50", 8444, ktime_ns=5 * NS, comm=b"curl", cookie=3),
        sample_rec(
            cg["a"], "203.0.113.50", 8444, tls_client_hello(), flags=E.SAMPLE_F_SOCK_START, sock_pkt_index=0, cookie=3
        ),
        *[
            sample_rec(cg["a"], "203.0.113.50", 8444, RNG.randbytes(128), sock_pkt_index=64 * i, cookie=3)
            for i in range(1, 9)
        ],
    ]
    src = ReplaySource(
        recs,
        [
            [
                FlowCounters(cg["a"], "203.0.113.50", 8444, 6, 300 * KIB, 250, 256 * KIB, 1, 1, 2, 9),
                FlowCounters(cg["a"], "203.0.113.66", 4444, 6, 9000, 12, 8000, 1, 1, 2, 0),
            ]
        ],
    )
    src.start(pipe.handle_raw)
    src.poll(0)
    pipe.close_window(src.drain_flows(), to_wall(0), to_wall(10 * NS))
    fired = {d["rule"]["id"] for d in docs if d["event"]["kind"] == "alert"}
    assert {"SL-C2-001", "SL-EXF-002", "SL-EXF-006"} <= fired, fired
    assert_ecs(docs)


# --- the detector: one alert (at least) per rule in the catalog ------------------------------

PEER = container("db-peer", image="acme/db:5")
Alerts = list[dict[str, Any]]


def _hexname(i: int) -> str:
    return hashlib.sha1(str(i).encode()).hexdigest()


def _windows(make: Callable[[Attribution], list[Any]]) -> Callable[[Path, Attribution], Alerts]:
    """A window-driven rule: a fresh detector (no baseline) over make(attr)."""
    return lambda tmp_path, attr: detector(config(tmp_path)).run(*make(attr))


def _volume_spike(tmp_path: Path, attr: Attribution) -> Alerts:
    base = learn_flows(lambda end: window(end, flows=[flow(attr, "198.51.100.1", 443, 10 * KIB, proto="tls")]))
    return detector(config(tmp_path), base).run(
        window(T0, flows=[flow(attr, "2001:db8::10", 443, 64 * MIB, proto="tls")])
    )


def _burst(attr: Attribution) -> list[Any]:
    c = attr.container
    assert c is not None
    if c.metadata:  # siblings of the same workload
        group = [attr] + [container(f"burst-{i}", image=c.image_name, labels=c.labels) for i in range(1, 6)]
    else:  # a workload known only by its id: the same container restarting
        group = [attr] * 6
    lc = []
    for i, g in enumerate(group):
        lc += [life(g, T0 - 9 + i, "start"), life(g, T0 - 8.5 + i, "stop", 0.5)]
    return [window(T0, lifecycle=lc, flows=[flow(attr, "203.0.113.120", 443, 2000, entropy=None)])]


def _fim(tmp_path: Path, attr: Attribution) -> Alerts:
    """The event-driven rule: file integrity of orchestration config."""
    h = detector(config(tmp_path))
    h.detector.on_fim(
        "/etc/docker/daemon.json",
        ["creation", "change", "rename_to"],
        T0,
        attr,
        workload_of(attr),
        ProcessRef(4242, "vi", "/usr/bin/vi", ["vi", "/etc/docker/daemon.json"], 1),
    )
    h.detector.on_fim("/etc/kubernetes/manifests/evil.yaml", ["deletion"], T0 + 1, attr, workload_of(attr), None)
    return h.alerts


SCENARIOS: dict[str, Callable[[Path, Attribution], Alerts]] = {
    "SL-EXF-001": _volume_spike,
    "SL-EXF-002": _windows(lambda a: [window(T0, flows=[flow(a, "203.0.113.50", 8444, 128 * KIB, proto="tls")])]),
    "SL-EXF-003": _windows(
        lambda a: [
            window(
                T0,
                flows=[
                    flow(
                        a,
                        "198.51.100.20",
                        80,
                        300 * KIB,
                        proto="http",
                        entropy=6.2,
                        body_entropy=7.97,
                        body_sampled_bytes=2048,
                    ),
                    flow(
                        a,
                        "10.0.0.53",
                        53,
                        4 * KIB,
                        transport="udp",
                        proto="dns",
                        entropy=5.1,
                        connects=0,
                        dns_names=[(f"{_hexname(i)}.t.exfil.example.com", True) for i in range(25)],
                    ),
                ],
            )
        ]
    ),
    "SL-EXF-004": _windows(lambda a: [window(T0, flows=[flow(a, "203.0.113.77", 443, 2 * MIB, proto="tls")])]),
    "SL-EXF-005": _windows(
        lambda a: [
            window(
                T0,
                flows=[flow(a, "203.0.113.88", 443, 100 * KIB, proto="tls")],
                lifecycle=[life(a, T0 - 1, "stop", 12.0)],
            )
        ]
    ),
    "SL-EXF-006": _windows(
        lambda a: [
            window(
                T0,
                execs=[exec_(a, T0 - 5, "/usr/bin/openssl", ["openssl", "enc", "-aes-256-cbc", "-in", "/d"])],
                flows=[flow(a, "203.0.113.99", 443, 8 * KIB, proto="tls", entropy=None)],
            )
        ]
    ),
    "SL-C2-001": _windows(
        lambda a: [
            window(
                T0,
                connects=[
                    connect(a, T0 - 8, "198.51.100.5", 80, executable="/usr/bin/wget"),
                    connect(a, T0 - 4, "2001:db8::66", 4444, executable="/tmp/stage2"),
                ],
                execs=[exec_(a, T0 - 6, "/tmp/stage2", ["/tmp/stage2"])],
            )
        ]
    ),
    "SL-C2-002": _windows(
        lambda a: [
            window(T0, seconds=60.0, connects=[connect(a, T0 - 50 + 5.0 * i, "203.0.113.44", 8080) for i in range(8)])
        ]
    ),
    "SL-C2-003": _windows(lambda a: [window(T0, flows=[flow(a, "172.17.0.3", 5432, 500, entropy=None, peer=PEER)])]),
    "SL-C2-004": _windows(_burst),
    "SL-EVA-001": _windows(lambda a: [window(T0, overflows=[overflow(a, 150_000, 40_000, 9 * MIB)])]),
    "SL-C2-005": _windows(lambda a: [window(T0, listens=[listen(a, T0 - 3, 4444)])]),
    "SL-C2-006": _windows(
        lambda a: [
            window(
                T0, accepts=[accept(a, T0 - 3, "203.0.113.5", 4444, count=3), accept(a, T0 - 2, "2001:db8::7", 4444)]
            )
        ]
    ),
    "SL-C2-007": _windows(lambda a: [window(T0, unix_connects=[unix(a, T0 - 3)])]),
    "SL-C2-008": lambda tmp_path, a: detector(
        config(tmp_path, extra='[rules.SL-C2-008]\napi_servers = ["10.96.0.1:443"]\n')
    ).run(window(T0, connects=[connect(a, T0 - 3, "10.96.0.1", 443, executable="/usr/bin/kubectl")])),
    "SL-C2-009": _windows(
        lambda a: [
            window(
                T0,
                unix_connects=[unix(a, T0 - 5)],
                lifecycle=[life(container("sibling-1", image="alpine:3"), T0 - 4, "start")],
            )
        ]
    ),
    "SL-FIM-001": _fim,
}

SUBJECTS: dict[str, Callable[[], Attribution]] = {
    "docker": lambda: container("web-1", image="acme/web:2.1"),
    "k8s-pod": lambda: container(
        "k8s_app_api-7d9f-x2x_prod_0",
        image="registry.example/api:3",
        labels={"io.kubernetes.pod.name": "api-7d9f-x2x", "io.kubernetes.pod.namespace": "prod"},
    ),
    "no-metadata": lambda: Attribution(
        20_001,
        f"/kubepods/besteffort/pod{POD_UID}/{'d3' * 32}",
        ContainerInfo("d3" * 32, "containerd", pod_uid=POD_UID),
    ),
}


def test_every_catalog_rule_has_a_scenario() -> None:
    assert set(SCENARIOS) == set(BY_ID), "add a scenario for each new rule: its alerts must be checked too"


@pytest.mark.parametrize("subject", sorted(SUBJECTS))
@pytest.mark.parametrize("rule_id", sorted(BY_ID))
def test_alert_documents_are_ecs(tmp_path: Path, rule_id: str, subject: str) -> None:
    if rule_id not in SCENARIOS:
        pytest.fail(f"no scenario for {rule_id}: add one to SCENARIOS")
    alerts = SCENARIOS[rule_id](tmp_path, SUBJECTS[subject]())
    assert rule_id in {a["rule"]["id"] for a in alerts}, [a["rule"]["id"] for a in alerts]
    assert_ecs(alerts)
    assert_ecs([json.loads(json.dumps(a)) for a in alerts])


def test_host_process_alerts_are_ecs(tmp_path: Path) -> None:
    """Beaconing and a config change from host processes: no container fields."""
    host = Attribution(1, "/system.slice/cron.service", None)
    h = detector(config(tmp_path))
    alerts = h.run(
        window(T0, seconds=60.0, connects=[connect(host, T0 - 50 + 5.0 * i, "203.0.113.45", 8080) for i in range(8)])
    )
    if "SL-FIM-001" in BY_ID:
        h.detector.on_fim("/etc/containerd/config.toml", ["change"], T0, host, "host", ProcessRef(0, ""))
        alerts = h.alerts
    assert {a["rule"]["id"] for a in alerts} >= {"SL-C2-002"}
    assert all("container" not in a for a in alerts)
    assert_ecs(alerts)


def test_repeated_alert_with_suppressed_count_is_ecs(tmp_path: Path) -> None:
    attr = container("web-2", image="acme/web:2.1")
    h = detector(config(tmp_path, detection="suppress_seconds = 30\n"))
    alerts = []
    for i in range(4):
        alerts += h.run(window(T0 + 20 * i, flows=[flow(attr, "203.0.113.50", 8444, 128 * KIB, proto="tls")]))
    assert any(a["sluice"]["alert"]["suppressed_since_last"] for a in alerts)
    assert_ecs(alerts)


# --- the sensor: health documents, as written to its output file ---------------------------


def _probe_report(cgroot: Path) -> ProbeReport:
    return ProbeReport(
        kernel_release="6.1.0-test",
        btf=True,
        build_tree="/usr/src/linux-headers-6.1.0",
        tracefs="/sys/kernel/tracing",
        tracefs_mounted_by_sluice=False,
        cgroup2_mount=str(cgroot),
        cgroup_mode="unified",
        ringbuf=True,
        tracepoints={"sched:sched_process_exec": True, "sched:sched_process_exit": False},
    )


class _StatsSource(ReplaySource):
    """A replay with kernel counters, some of them drops."""

    def kernel_stats(self) -> dict[str, int]:
        return {
            "submitted_exec": 12,
            "submitted_connect": 7,
            "dropped_exec": 0,
            "dropped_sample": 3,
            "flow_map_full": 0,
            "flow_bytes_untracked": 0,
            "parent_map_full": 0,
            "egress_packets": 4242,
            "udp_sends_deduplicated": 5,
        }

    def lost_records(self) -> int:
        return 2


@pytest.mark.parametrize("mode", ["detect", "learn"])
def test_health_documents_are_ecs(tmp_path: Path, engine: Any, mode: str) -> None:
    cgroot = tmp_path / "cg"
    (cgroot / "docker" / A).mkdir(parents=True)
    (cgroot / "system.slice" / "cron.service").mkdir(parents=True)
    out = tmp_path / "out.jsonl"
    cfg_path = tmp_path / "sluice.toml"
    cfg_path.write_text(
        f'[sensor]\nhost_name = "node-7"\ncontrol_socket = "{tmp_path}/ctl.sock"\n'
        f'[runtime]\ndocker_socket = "{engine.socket_path}"\ntimeout_seconds = 1.0\n'
        f'[output]\npath = "{out}"\nevents = true\n'
    )
    cfg = load_config(cfg_path)
    cg_a = os.stat(cgroot / "docker" / A).st_ino
    records = [exec_rec(PID, cg_a, ktime_ns=1 * NS, comm=b"sh", filename=b"/bin/sh")]
    kw: dict[str, Any] = {}
    if mode == "learn":
        kw = {"baseline_path": str(tmp_path / "baseline.slb"), "learn_seconds": 60.0}
    s = Sensor(cfg, source_factory=lambda _c, _r: _StatsSource(records, [[]]), report=_probe_report(cgroot), **kw)
    try:
        s.setup()  # sensor_start; runtime "ok" on the first lookup
        assert s.source is not None and s.pipeline is not None and s.attributor is not None
        s.source.poll(0)
        s.pipeline.close_window(s.source.drain_flows(), to_wall(0), to_wall(10 * NS))
        s.emit(s._health_doc("sensor_health"))
        # the engine goes away: a container seen now cannot be looked up
        s.attributor.docker = DockerClient(str(tmp_path / "gone.sock"), 0.5)
        scope = f"/system.slice/docker-{B}.scope".encode()
        s.pipeline.handle_raw(cgroup_rec(E.CGROUP_MKDIR, 9_300_001, scope, ktime_ns=2 * NS))
        s.emit(s._health_doc("sensor_health"))
    finally:
        s.shutdown()  # sensor_stop
    docs = [json.loads(line) for line in out.read_text().splitlines()]
    acts = [action(d) for d in docs]
    assert HEALTH <= set(acts), acts
    assert {d["sluice"]["health"]["runtime"]["status"] for d in docs if action(d) == "sensor_health"} >= {"unreachable"}
    assert any(d["sluice"]["health"].get("runtime_detail") for d in docs if action(d) == "runtime_status")
    assert_ecs(docs)


def test_containment_documents_are_ecs_and_bad_state_is_moved_aside(tmp_path: Path, engine: Any) -> None:
    cgroot = tmp_path / "cg"
    (cgroot / "docker" / A).mkdir(parents=True)
    engine.add(A, "web-1", "nginx:1.27", "sha256:" + "1" * 64)
    out, state = tmp_path / "out.jsonl", tmp_path / "containment.json"
    state.write_text("{half a file")
    cfg_path = tmp_path / "sluice.toml"
    cfg_path.write_text(
        f'[sensor]\ncontrol_socket = "{tmp_path}/ctl.sock"\ncontainment_state = "{state}"\n'
        f'[runtime]\ndocker_socket = "{engine.socket_path}"\n[output]\npath = "{out}"\n'
    )
    s = Sensor(
        load_config(cfg_path), source_factory=lambda _c, _r: _StatsSource([], [[]]), report=_probe_report(cgroot)
    )
    try:
        s.setup()
        problem = s._health()["containment"]["problem"]
        assert "cannot be read" in problem and "moved aside" in problem
        assert not state.exists() and list(tmp_path.glob("containment.json.unreadable-*"))
        assert s.containment is not None
        assert isinstance(s.source, _StatsSource)
        assert "isolated container web-1" in s.containment.isolate("web-1", "SL-EXF-002")["message"]
        assert s.source.isolated == {os.stat(cgroot / "docker" / A).st_ino: 0}
        assert "blocked egress to 198.18.64.1" in s.containment.block("198.18.64.1", A[:8], "")["message"]
        assert "released" in s.containment.release(A[:12], None)["message"]
        assert s.source.isolated == {} and s.source.blocked == {}
        assert json.loads(state.read_text())["entries"] == []
    finally:
        s.shutdown()
    docs = [json.loads(line) for line in out.read_text().splitlines()]
    acts = [action(d) for d in docs]
    assert {"container_isolated", "destination_blocked", "containment_released"} <= set(acts), acts
    iso = next(d for d in docs if action(d) == "container_isolated")
    assert iso["container"]["id"] == A and iso["event"]["type"] == ["denied"]
    assert_ecs(docs)
