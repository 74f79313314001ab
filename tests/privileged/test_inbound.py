"""Listeners, inbound connections and the container runtime driven from
inside a container, on a real kernel with real containers and the real
sensor (SL-C2-005..009).

The session sensor has no baseline: every workload is unknown, so the rules
speak (detection.alert_on_unknown_workload). Inbound traffic comes from the
sink netns (198.18.0.0/16), the lab's "outside".
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from emulation.lab import Lab, wait_until

from .harness import IMAGE, SINK_IP, Docker, SensorProc, SinkNet, action, cid_of, run_container

DOCKER_CLI = os.path.realpath(shutil.which("docker") or "/usr/bin/docker")


def _alerts(sensor: SensorProc, rule: str, cid: str) -> list[dict[str, Any]]:
    return [d for d in sensor.docs() if d["event"]["kind"] == "alert" and d["rule"]["id"] == rule and cid_of(d) == cid]


def test_listener_and_inbound_connection_from_outside(sensor: SensorProc, docker: Docker, net: SinkNet) -> None:
    lab = Lab(docker.cli, net, "tests")
    cid, ip = lab.start(IMAGE, "nc -l -p 4444 > /tmp/got; sleep 1")
    assert ip is not None
    listen = sensor.wait_for(
        lambda d: action(d) == "listening" and cid_of(d) == cid and d["destination"]["port"] == 4444,
        what="listening event",
    )
    assert listen["network"]["direction"] == "ingress" and listen["network"]["transport"] == "tcp"
    assert listen["process"]["pid"] > 0
    subprocess.run(
        ["ip", "netns", "exec", net.ns, "busybox", "nc", "-w", "2", ip, "4444"],
        input=b"hello from outside\n",
        timeout=10,
        check=False,
    )
    lab.wait(cid, 30)
    acc = sensor.wait_for(
        lambda d: action(d) == "connection_accepted" and cid_of(d) == cid, what="connection_accepted event"
    )
    assert acc["destination"]["port"] == 4444 and acc["destination"]["ip"] == ip
    assert acc["source"]["ip"].startswith("198.18.0.") and acc["source"]["port"] > 0
    assert acc["network"]["direction"] == "ingress"
    assert acc["sluice"]["inbound"]["listener_known"] is True
    new_listener = sensor.wait_for(
        lambda d: bool(_alerts(sensor, "SL-C2-005", cid)), what="SL-C2-005 alert", timeout=10
    )
    a5 = _alerts(sensor, "SL-C2-005", cid)[0]
    assert a5["destination"]["port"] == 4444 and a5["network"]["direction"] == "ingress"
    assert a5["sluice"]["evidence"]["listen"]["operation"] == "listen"
    assert new_listener
    sensor.wait_for(lambda d: bool(_alerts(sensor, "SL-C2-006", cid)), what="SL-C2-006 alert", timeout=10)
    a6 = _alerts(sensor, "SL-C2-006", cid)[0]
    assert a6["source"]["ip"] == acc["source"]["ip"]
    assert a6["network"]["direction"] == "ingress" and a6["event"]["category"] == ["intrusion_detection", "network"]
    assert a6["sluice"]["evidence"]["inbound"]["port"] == 4444


def test_a_short_lived_client_container_is_not_outside(sensor: SensorProc, docker: Docker, net: SinkNet) -> None:
    """The inter-container pivot's db: a client container connects, sends a
    line and exits, usually before the sensor reads the accept, when its
    address can no longer be read from /proc. The kernel names the client's
    cgroup from its connect, so the peer is a container on this node, never
    "outside" (SL-C2-006 fired on the emulation's pivot every time)."""
    lab = Lab(docker.cli, net, "tests")
    srv, ip = lab.start(IMAGE, "nc -ll -p 7000 -e sh -c 'cat > /dev/null'")
    try:
        for _ in range(3):
            run_container(
                docker,
                net,
                f"i=0; until echo pivot | nc {ip} 7000; do i=$((i+1)); [ $i -ge 50 ] && exit 1; usleep 200000; done",
            )

        def accepted_so_far() -> list[dict[str, Any]]:
            return sensor.matching(lambda d: action(d) == "connection_accepted" and cid_of(d) == srv)

        assert wait_until(lambda: len(accepted_so_far()) >= 3, 20), f"{len(accepted_so_far())} accepted in 20 s"
        sensor.settle()  # and no fourth
        accepted = accepted_so_far()
        assert len(accepted) == 3, accepted
        assert not _alerts(sensor, "SL-C2-006", srv), _alerts(sensor, "SL-C2-006", srv)[0]["message"]
    finally:
        docker.docker("rm", "-f", srv, check=False)


def test_loopback_listener_inside_container_is_not_an_alert(sensor: SensorProc, docker: Docker) -> None:
    cid = run_container(
        docker,
        None,
        "timeout 3 openssl s_server -quiet -nocert -accept 127.0.0.1:7070 -naccept 1 >/dev/null 2>&1 & "
        "sleep 1; echo x | nc -w 1 127.0.0.1 7070; wait",
    )
    sensor.wait_for(
        lambda d: action(d) == "listening" and cid_of(d) == cid and d["destination"]["port"] == 7070,
        what="loopback listening event",
    )
    sensor.settle()
    assert not _alerts(sensor, "SL-C2-005", cid)
    # the loopback peer is this node: never "outside"
    assert not _alerts(sensor, "SL-C2-006", cid)


def _spawn_alert(sensor: SensorProc, caller: str, timeout: float) -> dict[str, Any]:
    """The SL-C2-009 alert naming `caller` as the new container's creator."""
    return sensor.wait_for(
        lambda d: (
            d["event"]["kind"] == "alert"
            and d["rule"]["id"] == "SL-C2-009"
            and d["sluice"]["evidence"]["created_by"]["container_id"] == caller
        ),
        what="SL-C2-009 alert",
        timeout=timeout,
    )


def test_runtime_socket_use_and_the_container_it_creates(sensor: SensorProc, docker: Docker) -> None:
    inner = f"docker -H unix:///var/run/docker.sock run -d --network none {IMAGE} sh -c 'sleep 2'"
    caller = run_container(
        docker,
        None,
        inner + " > /tmp/child; sleep 1",
        volumes=(f"{docker.sock}:/var/run/docker.sock", f"{DOCKER_CLI}:/usr/bin/docker:ro"),
    )
    u = sensor.wait_for(
        lambda d: action(d) == "unix_socket_connect" and cid_of(d) == caller, what="unix_socket_connect event"
    )
    assert u["sluice"]["unix"]["path"] == "/var/run/docker.sock"
    assert u["destination"]["address"] == "/var/run/docker.sock"
    sensor.wait_for(lambda d: bool(_alerts(sensor, "SL-C2-007", caller)), what="SL-C2-007 alert", timeout=10)
    a7 = _alerts(sensor, "SL-C2-007", caller)[0]
    assert a7["sluice"]["evidence"]["socket"]["path"] == "/var/run/docker.sock"
    assert a7["threat"]["technique"]["id"] == ["T1610"]
    spawned = _spawn_alert(sensor, caller, 15)
    child = cid_of(spawned)
    assert child and child != caller
    # the child is the container the caller's docker run created
    names = docker.docker("ps", "-a", "--no-trunc", "-q").split()
    assert child in names
    assert spawned["sluice"]["evidence"]["created_by"]["socket"] == "/var/run/docker.sock"
    assert spawned["sluice"]["evidence"]["created_by"]["seconds_before_start"] >= 0


def test_runtime_socket_under_another_name(sensor: SensorProc, docker: Docker) -> None:
    """The runtime socket mounted as /run/rt/engine and reached through a
    symlink /tmp/x: the path names nothing, the socket is the runtime's
    (sensor/attribution/runtimesock.py; review: no alert before)."""
    inner = f"docker -H unix:///tmp/x run -d --network none {IMAGE} sh -c 'sleep 2'"
    caller = run_container(
        docker,
        None,
        "ln -s /run/rt/engine /tmp/x && " + inner + " > /tmp/child; sleep 1",
        volumes=(f"{docker.sock}:/run/rt/engine", f"{DOCKER_CLI}:/usr/bin/docker:ro"),
    )
    sensor.wait_for(lambda d: bool(_alerts(sensor, "SL-C2-007", caller)), what="SL-C2-007 alert", timeout=10)
    a7 = _alerts(sensor, "SL-C2-007", caller)[0]
    assert a7["sluice"]["evidence"]["socket"]["path"] == "/tmp/x"
    assert a7["sluice"]["evidence"]["socket"]["name"] == "docker.sock"


def test_engine_and_kubelet_apis_over_tcp(sensor: SensorProc, docker: Docker, net: SinkNet) -> None:
    """A container with no runtime socket reaches for the Docker Engine API
    (2375) and a kubelet (10250) over the network: the connect attempts
    alone are the signal (nothing needs to answer)."""
    cid = run_container(docker, net, f"nc -w 1 {SINK_IP} 2375 </dev/null; nc -w 1 {SINK_IP} 10250 </dev/null; true")
    sensor.wait_for(lambda d: bool(_alerts(sensor, "SL-C2-007", cid)), what="SL-C2-007 (engine API)", timeout=10)
    a7 = _alerts(sensor, "SL-C2-007", cid)[0]
    assert a7["sluice"]["evidence"]["engine_api"] == f"{SINK_IP}:2375"
    assert a7["destination"]["port"] == 2375
    sensor.wait_for(lambda d: bool(_alerts(sensor, "SL-C2-008", cid)), what="SL-C2-008 (kubelet)", timeout=10)
    a8 = _alerts(sensor, "SL-C2-008", cid)[0]
    assert a8["sluice"]["evidence"]["kubelet"] == f"{SINK_IP}:10250"
    assert a8["threat"]["technique"]["id"] == ["T1609"]


def test_a_creator_that_kept_its_connection_open_is_linked(sensor: SensorProc, docker: Docker) -> None:
    """Review: connect to docker.sock, wait, then create and start a
    container over that same connection (HTTP keep-alive). No connect came
    within 5 s of the start, so the new container was linked to nothing;
    the pipeline now looks, at each start, for containers holding a
    connection to a runtime socket open (sock_diag of their namespaces)."""
    script = Path(__file__).parent / "keepalive_create.pl"
    caller = run_container(
        docker,
        None,
        f"perl /k.pl /var/run/docker.sock {IMAGE} 8 > /tmp/out 2>&1; cat /tmp/out; sleep 20",
        volumes=(f"{docker.sock}:/var/run/docker.sock", f"{script}:/k.pl:ro"),
        wait=False,
    )
    try:
        spawned = _spawn_alert(sensor, caller, 40)
    except AssertionError:
        print("caller said:", docker.docker("logs", caller, check=False))
        print("its documents:", [d for d in sensor.docs() if cid_of(d) == caller][-5:])
        print("starts:", [(cid_of(d), d["@timestamp"]) for d in sensor.docs() if action(d) == "container_start"][-5:])
        print("C2-009:", [d["message"] for d in sensor.docs() if d.get("rule", {}).get("id") == "SL-C2-009"])
        raise
    cb = spawned["sluice"]["evidence"]["created_by"]
    assert cb["linked_by"] == "open_connection", cb
    assert cb["seconds_before_start"] >= 8, cb
    assert "a connection it still held open" in spawned["message"]
    child = cid_of(spawned)
    assert child and child != caller and child in docker.docker("ps", "-a", "--no-trunc", "-q").split()
    docker.docker("rm", "-f", caller, child, check=False)
