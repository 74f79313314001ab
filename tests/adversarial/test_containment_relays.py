"""An isolated container that asks someone else to send for it, over
loopback: the exemption that lets an isolated container talk to itself
must not reach a process outside the container.

- A shared network namespace (a pod, `--network container:`, the host
  network): another container's process listens on the same 127.0.0.1 and
  relays (a mesh sidecar, a proxy). Before the fix, the isolated
  container's bytes reached the sink through it.
- Its own network namespace: 127.0.0.1 stays open, but the rest of
  127.0.0.0/8 is where relays outside the container listen (Docker's
  embedded DNS server at 127.0.0.11 forwards queries from dockerd's own
  socket): dropped.

The real sensor, real containers, the sink's real TCP server."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from ..privileged.harness import (
    IMAGE,
    SINK_IP,
    Docker,
    SensorProc,
    SinkNet,
    action,
    cid_of,
    only_containment_entry,
    run_container,
    sluice_cli,
)

RELAY_PORT, SINK_PORT = 7000, 9002


def _exec(docker: Docker, cid: str, script: str) -> int:
    r = subprocess.run(
        ["docker", "exec", cid, "sh", "-c", script], capture_output=True, text=True, timeout=30, env=docker.env
    )
    return r.returncode


def _relayed(net: SinkNet) -> list[int]:
    return [int(r["bytes"]) for r in net.received() if r.get("proto") == "tcp" and r.get("port") == SINK_PORT]


def test_a_relay_in_a_shared_network_namespace_is_cut_off(base: Path, docker: Docker, net: SinkNet) -> None:
    s = SensorProc(base, docker.sock, name="relay")
    s.start()
    # the relay: whatever reaches 127.0.0.1:7000 is sent on to the sink
    relay = (
        f"while true; do nc -l -p {RELAY_PORT} > /tmp/got; "
        f"[ -s /tmp/got ] && nc -w 2 {SINK_IP} {SINK_PORT} < /tmp/got; done"
    )
    holder = run_container(docker, net, relay, wait=False)
    target = docker.docker("run", "-d", "--network", f"container:{holder}", IMAGE, "sleep", "600")
    try:
        # the relay works: before the isolation, 16 bytes get through it
        deadline = time.monotonic() + 20
        while not _relayed(net):
            assert time.monotonic() < deadline, "the relay never forwarded"
            _exec(docker, target, f"echo before-isolation | nc -w 2 127.0.0.1 {RELAY_PORT}")
            time.sleep(0.5)
        relayed_before = len(_relayed(net))
        s.wait_for(lambda d: cid_of(d) == target, what="a document about the target", timeout=10)
        out = sluice_cli(s, "isolate", target[:12], "--reason", "relay test")
        assert "loopback too" in out and "outside the container, is in its network namespace" in out, out
        assert only_containment_entry(s)["loopback_dropped"] is True
        for _ in range(3):
            assert _exec(docker, target, f"echo SECRET-VIA-RELAY | nc -w 2 127.0.0.1 {RELAY_PORT}") != 0
        time.sleep(3)
        assert len(_relayed(net)) == relayed_before, f"the relay carried bytes out: {_relayed(net)}"
        assert only_containment_entry(s)["dropped"] > 0
        doc = s.wait_for(lambda d: action(d) == "container_isolated" and cid_of(d) == target, what="isolation")
        assert "loopback too" in doc["message"]
        # the holder itself is not isolated: its own egress still leaves
        assert _exec(docker, holder, f"echo holder | nc -w 2 {SINK_IP} 9001") == 0
    finally:
        docker.docker("rm", "-f", target, holder, check=False)
        s.stop()


def test_own_loopback_stays_open_and_the_rest_of_127_is_dropped(base: Path, docker: Docker, net: SinkNet) -> None:
    s = SensorProc(base, docker.sock, name="own-lo")
    s.start()
    cid = run_container(docker, net, f"while true; do nc -l -p {RELAY_PORT} > /tmp/got; done", wait=False)
    try:
        s.wait_for(lambda d: cid_of(d) == cid, what="a document about the container", timeout=20)
        out = sluice_cli(s, "isolate", cid[:12], "--reason", "own loopback test")
        assert "but its own loopback (127.0.0.1, ::1) is dropped" in out, out
        assert only_containment_entry(s)["loopback_dropped"] is False
        # the container talks to itself
        assert _exec(docker, cid, f"echo to-myself | nc -w 2 127.0.0.1 {RELAY_PORT}") == 0
        assert _exec(docker, cid, "cat /tmp/got") == 0
        # 127.0.0.11 (Docker's embedded DNS address; here the container's own
        # listener answers on it too, so before the fix this connected)
        before = only_containment_entry(s)["dropped"]
        assert _exec(docker, cid, f"echo to-127.0.0.11 | nc -w 2 127.0.0.11 {RELAY_PORT}") != 0
        assert only_containment_entry(s)["dropped"] > before
    finally:
        docker.docker("rm", "-f", cid, check=False)
        s.stop()


def test_a_relay_that_joins_the_namespace_after_the_isolation_is_cut_off(
    base: Path, docker: Docker, net: SinkNet
) -> None:
    """The namespace was the container's own when it was isolated (its
    loopback kept); then a container joins it (`--network container:`) and
    relays. The sensor finds the namespace shared at the next window and
    drops the isolated container's loopback too."""
    s = SensorProc(base, docker.sock, name="relay-late")
    s.start()
    target = run_container(docker, net, "sleep 600", wait=False)
    relay = None
    try:
        s.wait_for(lambda d: cid_of(d) == target, what="a document about the target", timeout=20)
        out = sluice_cli(s, "isolate", target[:12], "--reason", "late relay test")
        assert "but its own loopback" in out, out
        script = (
            f"while true; do nc -l -p {RELAY_PORT} > /tmp/got; "
            f"[ -s /tmp/got ] && nc -w 2 {SINK_IP} {SINK_PORT} < /tmp/got; done"
        )
        relay = docker.docker("run", "-d", "--network", f"container:{target}", IMAGE, "sh", "-c", script)
        doc = s.wait_for(
            lambda d: action(d) == "container_isolated" and cid_of(d) == target and "from now on" in d["message"],
            what="the loopback flag turned on",
            timeout=20,
        )
        assert "outside the container, is in its network namespace" in doc["message"], doc["message"]
        assert only_containment_entry(s)["loopback_dropped"] is True
        relayed_before = len(_relayed(net))
        for _ in range(3):
            assert _exec(docker, target, f"echo SECRET-VIA-LATE-RELAY | nc -w 2 127.0.0.1 {RELAY_PORT}") != 0
        time.sleep(3)
        assert len(_relayed(net)) == relayed_before, _relayed(net)
    finally:
        docker.docker("rm", "-f", *([relay] if relay else []), target, check=False)
        s.stop()


# a routable IPv6 address whose bytes 10-15 read like ::ffff:127.0.0.1: the
# loopback test once looked at those bytes alone and let it out
LOOKALIKE = "2001:db8:1:2:0:ffff:7f00:1"


def test_an_ipv6_address_that_looks_v4_mapped_is_not_loopback(base: Path, docker: Docker, net: SinkNet) -> None:
    s = SensorProc(base, docker.sock, name="v6-lookalike")
    s.start()
    cid = run_container(docker, net, "sleep 600", wait=False)
    try:
        pid = docker.docker("inspect", "-f", "{{.State.Pid}}", cid)
        ns = ["nsenter", "-t", pid, "-n"]
        subprocess.run([*ns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=0"], check=True)
        subprocess.run([*ns, "sysctl", "-qw", "net.ipv6.conf.eth0.disable_ipv6=0"], check=True)
        subprocess.run([*ns, "ip", "-6", "addr", "add", "2001:db8:1:2::2/64", "dev", "eth0", "nodad"], check=True)
        s.wait_for(lambda d: cid_of(d) == cid, what="a document about the container", timeout=20)
        sluice_cli(s, "isolate", cid[:12], "--reason", "v6 lookalike test")
        before = only_containment_entry(s)["dropped"]
        _exec(docker, cid, f"echo x | nc -w 2 {LOOKALIKE} 9001")
        assert only_containment_entry(s)["dropped"] > before, (
            "a packet to a global IPv6 address left an isolated container"
        )
    finally:
        docker.docker("rm", "-f", cid, check=False)
        s.stop()
