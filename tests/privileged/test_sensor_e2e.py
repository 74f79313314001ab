"""The sensor on a real kernel, real containers, real sockets.

Each test starts real containers under a private dockerd, sends real bytes
to a sink host in a test netns (198.18.0.1), and asserts on the JSON lines
that the real `sluice run --events` wrote.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, cast

import pytest

from .harness import (
    IMAGE,
    SINK_IP,
    SLUICE,
    Docker,
    SensorProc,
    SinkNet,
    action,
    cid_of,
    run_container,
)


def _flows(sensor: SensorProc, cid: str, port: int) -> list[dict[str, Any]]:
    return [
        d
        for d in sensor.docs()
        if action(d) == "flow_summary"
        and cid_of(d) == cid
        and d["destination"]["ip"] == SINK_IP
        and d["destination"]["port"] == port
    ]


def test_exec_in_container_yields_process_event(sensor: SensorProc, docker: Docker) -> None:
    # the sleep outlives any lag of the sensor's: its arguments are read from
    # /proc when the sensor handles the exec, so a process that is gone by
    # then has none (a 0.3 s sleep made this test depend on the load)
    cid = run_container(docker, None, "openssl rand -hex 8 >/dev/null; sleep 30", wait=False)
    try:
        _exec_events(sensor, docker, cid)
    finally:
        docker.docker("rm", "-f", cid)


def _exec_events(sensor: SensorProc, docker: Docker, cid: str) -> None:
    d = sensor.wait_for(
        lambda d: action(d) == "exec" and cid_of(d) == cid and d["process"]["executable"] == "/usr/bin/openssl",
        what="openssl exec",
    )
    assert d["container"]["image"]["name"] == IMAGE
    assert d["container"]["runtime"] == "docker"
    assert d["container"]["name"] == docker.docker("inspect", "-f", "{{.Name}}", cid).lstrip("/")
    assert d["process"]["name"] == "openssl"
    assert d["process"]["parent"]["pid"] > 0
    assert d["event"]["kind"] == "event" and d["event"]["category"] == ["process"]
    assert d["@timestamp"].endswith("Z")
    # a longer-lived process has its arguments from /proc
    s = sensor.wait_for(
        lambda d: action(d) == "exec" and cid_of(d) == cid and d["process"].get("args") == ["sleep", "30"],
        what="sleep exec with args",
    )
    assert s["sluice"]["process"]["args_source"] == "procfs"


def test_connect_yields_network_event(sensor: SensorProc, docker: Docker, net: SinkNet) -> None:
    cid = run_container(docker, net, f"echo hello | nc {SINK_IP} 9004")
    d = sensor.wait_for(lambda d: action(d) == "connection_attempted" and cid_of(d) == cid, what="connect event")
    assert d["destination"] == {"ip": SINK_IP, "port": 9004, "address": SINK_IP}
    assert d["network"]["transport"] == "tcp"
    assert d["process"]["name"] in ("nc", "exe")  # busybox applets exec via /proc/self/exe
    assert d["process"]["pid"] > 0
    assert d["container"]["image"]["name"] == IMAGE


def test_random_bytes_are_counted_exactly_with_high_entropy(sensor: SensorProc, docker: Docker, net: SinkNet) -> None:
    n = 400_000
    cid = run_container(docker, net, f"head -c {n} /dev/urandom | nc {SINK_IP} 9000")
    assert any(r["port"] == 9000 and r["bytes"] == n for r in net.received()), "sink did not get the bytes"
    sensor.settle()
    flows = _flows(sensor, cid, 9000)
    assert flows, [
        (cid_of(d), d["destination"], d["source"])
        for d in sensor.docs()
        if action(d) == "flow_summary" and d["destination"]["port"] == 9000
    ]
    payload = sum(f["sluice"]["payload"]["bytes"] for f in flows)
    sent = sum(f["source"]["bytes"] for f in flows)
    # every byte sent, counted once; TCP retransmissions (a loaded machine)
    # are bytes on the wire too, so they may add a little
    assert n <= payload <= n * 1.01, payload
    # IP and TCP headers on top of the payload: well under 10 %
    assert n < sent < n * 1.1
    assert sum(f["source"]["packets"] for f in flows) >= n // 65536
    ent = [f["sluice"]["payload"]["entropy"] for f in flows if "entropy" in f["sluice"]["payload"]]
    assert ent and min(ent) > 7.0, ent
    assert all(f["network"]["transport"] == "tcp" for f in flows)


def test_text_bytes_stay_low_entropy(sensor: SensorProc, docker: Docker, net: SinkNet) -> None:
    script = f"for i in 1 2 3 4 5 6; do cat /data/text.txt; done | nc {SINK_IP} 9001"
    cid = run_container(docker, net, script)
    size = int(docker.docker("run", "--rm", "--network", "none", IMAGE, "sh", "-c", "wc -c < /data/text.txt"))
    n = 6 * size
    assert any(r["port"] == 9001 and r["bytes"] == n for r in net.received())
    sensor.settle()
    flows = _flows(sensor, cid, 9001)
    assert n <= sum(f["sluice"]["payload"]["bytes"] for f in flows) <= n * 1.01  # retransmissions
    ent = [f["sluice"]["payload"]["entropy"] for f in flows if "entropy" in f["sluice"]["payload"]]
    assert ent and max(ent) < 5.5, ent


def test_udp_dns_is_visible(sensor: SensorProc, docker: Docker, net: SinkNet) -> None:
    cid = run_container(docker, net, f"timeout 2 nslookup exfil.example.test {SINK_IP}; true")
    # busybox nslookup connect()s its UDP socket: a connect event, transport udp
    d = sensor.wait_for(
        lambda d: (
            action(d) in ("udp_send", "connection_attempted") and cid_of(d) == cid and d["destination"]["port"] == 53
        ),
        what="DNS connect event",
    )
    assert d["destination"]["ip"] == SINK_IP
    assert d["network"]["transport"] == "udp"
    sensor.settle()
    flows = _flows(sensor, cid, 53)
    assert flows and flows[0]["network"]["transport"] == "udp"
    assert any(f.get("network", {}).get("protocol") == "dns" for f in flows), flows


def test_unconnected_udp_sendto_is_visible(sensor: SensorProc) -> None:
    """sendto() without connect() (how most resolvers and DNS tunnels send)."""
    import os
    import socket

    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    # below the ephemeral ports: the session's sensor has seen every test's
    # traffic, and other tests send to ephemeral ports (udp_port(), a DNS
    # server answering a client's random source port), this process included
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    port = low // 2 + os.getpid() % (low // 4)
    for _ in range(20):  # deduplicated in the kernel: one event, 20 packets counted
        u.sendto(b"q" * 40, ("127.0.0.1", port))
    u.close()
    d = sensor.wait_for(
        lambda d: action(d) == "udp_send" and d["destination"]["port"] == port and d["process"]["pid"] == os.getpid(),
        what="udp_send event",
    )
    assert d["sluice"]["attribution"] == "host" and "container" not in d
    assert d["network"]["transport"] == "udp"
    f = sensor.wait_for(
        lambda d: (
            action(d) == "flow_summary" and d["destination"]["port"] == port and d["destination"]["ip"] == "127.0.0.1"
        ),
        what="udp flow summary",
    )
    assert f["source"]["packets"] == 20 and f["sluice"]["payload"]["bytes"] == 20 * 40
    sent = [
        d
        for d in sensor.docs()
        if action(d) == "udp_send" and d["destination"]["port"] == port and d["process"]["pid"] == os.getpid()
    ]
    assert len(sent) == 1


def _ipv6_stream(n: int, option: tuple[int, bytes] | None = None) -> int:
    """n random bytes over TCP on ::1 from this process (with a sticky IPv6
    socket option when given); returns the server port."""
    import socket

    srv = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    srv.bind(("::1", 0))
    srv.listen(1)
    port: int = srv.getsockname()[1]
    c = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    if option is not None:
        c.setsockopt(socket.IPPROTO_IPV6, *option)
    c.connect(("::1", port))
    conn, _ = srv.accept()
    c.sendall(os.urandom(n))
    got = 0
    while got < n:
        got += len(conn.recv(65536))
    for s in (c, conn, srv):
        s.close()
    return port


def _ipv6_flows(sensor: SensorProc, port: int) -> list[dict[str, Any]]:
    sensor.settle()
    return [
        f
        for f in sensor.docs()
        if action(f) == "flow_summary" and f["destination"]["port"] == port and f["destination"]["ip"] == "::1"
    ]


def test_ipv6_connect_and_bytes_are_visible(sensor: SensorProc) -> None:
    """connect6 and the IPv6 egress parser, on loopback ::1 from the host."""
    n = 50_000
    port = _ipv6_stream(n)
    d = sensor.wait_for(
        lambda d: action(d) == "connection_attempted" and d["destination"]["port"] == port, what="IPv6 connect event"
    )
    assert d["destination"]["ip"] == "::1" and d["network"]["type"] == "ipv6"
    assert d["process"]["pid"] == os.getpid()
    flows = _ipv6_flows(sensor, port)
    assert n <= sum(f["sluice"]["payload"]["bytes"] for f in flows) <= n * 1.01
    assert all(f["network"]["type"] == "ipv6" for f in flows)


@pytest.mark.parametrize("option", ["IPV6_DSTOPTS", "IPV6_HOPOPTS"])
def test_ipv6_extension_headers_are_walked(sensor: SensorProc, option: str) -> None:
    """A TCP stream whose every packet carries an IPv6 extension header
    (destination options / hop-by-hop, set as sticky socket options) is
    counted under its real transport and port, payload included."""
    import socket

    opt = getattr(socket, option, {"IPV6_DSTOPTS": 59, "IPV6_HOPOPTS": 54}[option])
    # an 8-byte options header: next header and length (filled by the kernel), PadN of 4
    n = 50_000
    port = _ipv6_stream(n, (opt, bytes([0, 0, 1, 4, 0, 0, 0, 0])))
    flows = _ipv6_flows(sensor, port)
    assert flows, "the stream was not counted under its port (extension header not walked?)"
    assert all(f["network"]["transport"] == "tcp" for f in flows)
    assert n <= sum(f["sluice"]["payload"]["bytes"] for f in flows) <= n * 1.01
    assert max(f["sluice"]["payload"].get("entropy", 0) for f in flows) > 7.5


def test_container_start_and_stop_are_seen(sensor: SensorProc, docker: Docker) -> None:
    cid = run_container(docker, None, "sleep 0.5", rm=True)
    start = sensor.wait_for(lambda d: action(d) == "container_start" and cid_of(d) == cid, what="container start")
    stop = sensor.wait_for(lambda d: action(d) == "container_stop" and cid_of(d) == cid, what="container stop")
    assert start["container"]["image"]["name"] == IMAGE
    assert start["event"]["type"] == ["start"] and stop["event"]["type"] == ["end"]
    life = stop["sluice"]["container"]["lifetime_seconds"]
    assert 0.4 < life < 10, life


def test_status_against_running_sensor(sensor: SensorProc, docker: Docker) -> None:
    cid = run_container(docker, None, "true", rm=True)
    sensor.wait_for(lambda d: action(d) == "container_start" and cid_of(d) == cid, what="container start")
    r = sensor.status()
    assert "ready" in r.stdout
    s = json.loads(sensor.status("--json").stdout)
    assert s["ready"] is True
    for hook in (
        "egress",
        "connect4",
        "connect6",
        "sendmsg4",
        "sendmsg6",
        "sched:sched_process_exec",
        "cgroup:cgroup_mkdir",
    ):
        assert s["hooks"][hook] == "attached", (hook, s["hooks"])
    assert s["drops"]["total"] == 0, s["drops"]
    assert s["kernel"]["ring_buffer"] is True
    # metadata lookups are reported (containers of another engine on this
    # machine, if any, are not found in ours: known by id only, and counted);
    # the runtime status holds also when no container is tracked any more
    assert "runtime: docker ok" in r.stdout
    rt = s["runtime"]
    assert rt["status"] == "ok" and rt["lookups"] >= 1, rt
    assert 0 <= rt["lookup_failures"] <= rt["lookups"] and rt["containers_without_metadata"] >= 0, rt


def test_top_shows_a_busy_container(sensor: SensorProc, docker: Docker, net: SinkNet) -> None:
    # busy for ~8 s: every completed window while `top` is asked has its egress
    cid = run_container(
        docker,
        net,
        f"i=0; while [ $i -lt 16 ]; do head -c 60000 /dev/urandom | nc {SINK_IP} 9002; i=$((i+1)); usleep 500000; done",
        wait=False,
    )
    sensor.wait_for(lambda d: action(d) == "flow_summary" and cid_of(d) == cid, what="flow")
    out = ""
    for _ in range(10):
        r = subprocess.run(
            [SLUICE, "top", "--once", "-c", str(sensor.config)], capture_output=True, text=True, timeout=15
        )
        assert r.returncode == 0, r.stderr
        out = r.stdout
        if cid[:12] in out:
            break
        time.sleep(0.5)
    docker.docker("wait", cid)
    # the STATE column (open alert, containment) comes before the container id
    row = next((line for line in out.splitlines() if cid[:12] in line.split()), None)
    assert row is not None, out
    assert IMAGE[:22] in row and f"{SINK_IP}:9002" in row, row


def test_survives_churn_of_50_containers(sensor: SensorProc, docker: Docker) -> None:
    with ThreadPoolExecutor(5) as pool:
        ids = list(pool.map(lambda _: run_container(docker, None, "true", rm=True), range(50)))
    for cid in ids:
        sensor.wait_for(
            # cast: mypy cannot infer a lambda with a default argument (binding the loop variable) against a one-argument Callable
            cast(Callable[[dict[str, Any]], bool], lambda d, c=cid: action(d) == "container_stop" and cid_of(d) == c),
            timeout=30,
            what=f"stop of {cid[:12]}",
        )
    starts = {cid_of(d) for d in sensor.docs() if action(d) == "container_start"}
    assert set(ids) <= starts
    assert sensor.proc and sensor.proc.poll() is None
    s = json.loads(sensor.status("--json").stdout)
    assert s["drops"]["total"] == 0
    # and it still attributes new work afterwards
    test_exec_in_container_yields_process_event(sensor, docker)
