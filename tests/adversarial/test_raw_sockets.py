"""Raw and packet sockets (issue 10): containers get CAP_NET_RAW, and an
AF_PACKET socket sends below every cgroup egress hook. Raw/packet socket
creation is reported for any container and refused for a contained one.

Which hook does it depends on the kernel: the BPF LSM socket_create hook
(every family) where LSM programs load, else cgroup sock_create (inet raw
sockets only; the sensor's status says that AF_PACKET is then not
covered). busybox ping opens an AF_INET SOCK_RAW ICMP socket; busybox
arping an AF_PACKET one."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from ..privileged.harness import SINK_IP, SLUICE, Docker, SensorProc, SinkNet, action, cid_of, run_container


def _exec(docker: Docker, cid: str, cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["docker", "exec", cid, "sh", "-c", cmd], capture_output=True, text=True, timeout=30, env=docker.env
    )


def _raw(d: dict[str, Any], act: str, cid: str, family: str) -> bool:
    return action(d) == act and cid_of(d) == cid and d["sluice"]["socket"]["family"] == family


def test_raw_and_packet_sockets_reported_and_refused_when_contained(base: Path, docker: Docker, net: SinkNet) -> None:
    s = SensorProc(base, docker.sock, name="rawsock")
    s.start()
    cid = run_container(docker, net, "sleep 300", wait=False)
    try:
        hooks = json.loads(s.status("--json").stdout)["hooks"]
        lsm = hooks["socket_lsm"] == "attached"
        if not lsm:
            assert hooks["socket_lsm"].startswith("unavailable: ") and "AF_PACKET" in hooks["socket_lsm"], hooks
            assert hooks["sock_create"].startswith("attached"), hooks

        # not contained: allowed, reported with the process
        r = _exec(docker, cid, f"ping -c 1 -W 2 {SINK_IP}")
        assert r.returncode == 0, r.stdout + r.stderr
        d = s.wait_for(lambda d: _raw(d, "raw_socket_created", cid, "AF_INET"), what="raw socket report")
        assert d["sluice"]["socket"]["type"] == "SOCK_RAW" and d["sluice"]["socket"]["denied"] is False
        assert d["process"]["pid"] > 0 and d["event"]["kind"] == "event"

        # contained: refused with EPERM, reported as denied
        r = subprocess.run([SLUICE, "isolate", cid[:12], "-c", str(s.config)], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        r = _exec(docker, cid, f"ping -c 1 -W 2 {SINK_IP}")
        assert r.returncode != 0 and "ermission denied" in r.stderr, r.stdout + r.stderr
        d = s.wait_for(lambda d: _raw(d, "raw_socket_denied", cid, "AF_INET"), what="refused raw socket")
        assert d["event"]["type"] == ["denied"] and "contained" in d["message"]

        r = _exec(docker, cid, f"arping -c 1 -w 2 -I eth0 {SINK_IP}")
        if lsm:
            assert r.returncode != 0, r.stdout
            s.wait_for(lambda d: _raw(d, "raw_socket_denied", cid, "AF_PACKET"), what="refused packet socket")
        stats = json.loads(s.status("--json").stdout)["counters"]
        assert stats["raw_sockets_denied"] >= 1
    finally:
        docker.docker("rm", "-f", cid, check=False)
        assert s.stop() == 0
