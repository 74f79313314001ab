"""A DNS tunnel through Docker's embedded resolver (127.0.0.11, every
user-defined network). Its queries reach the egress hook DNAT'ed to a
per-container port (iptables OUTPUT runs before the cgroup egress hook), so
the sensor saw a flow to 127.0.0.11:<some port> and sampled it like any UDP
socket: a tunnel client that keeps one socket (iodine, dnscat2) had its
first 8 queries and every 64th after sampled, 64 bytes each.

The test daemon runs without iptables, so the test builds what dockerd
builds in the container's network namespace: the DNAT rule, and a
forwarder on 127.0.0.11 run by a host process (dockerd's is in its own
cgroup too) that relays to the sink's DNS server. The real sensor, a real
container, real DNAT."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

from emulation.lab import wait_until

from ..privileged.harness import SINK_IP, Docker, SensorProc, SinkNet, action, cid_of, run_container

HERE = Path(__file__).resolve().parent
FWD_PORT = 35353
QUERIES = 200

FORWARDER = f"""
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.11", {FWD_PORT}))
up = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
up.settimeout(1.0)
print("ready", flush=True)
while True:
    q, peer = s.recvfrom(4096)
    up.sendto(q, ("{SINK_IP}", 53))
    try:
        s.sendto(up.recv(4096), peer)
    except OSError:
        pass
"""


def test_a_one_socket_dns_tunnel_through_dockers_resolver_is_sampled_as_dns(
    base: Path, docker: Docker, net: SinkNet
) -> None:
    exe = base / "dnsq"
    subprocess.run(["gcc", "-O2", "-static", "-o", str(exe), str(HERE / "dnsq.c")], check=True)
    s = SensorProc(base, docker.sock, name="docker-dns")
    s.start()
    cid = run_container(docker, net, "sleep 600", wait=False, volumes=(f"{exe}:/dnsq:ro",))
    fwd = None
    try:
        pid = docker.docker("inspect", "-f", "{{.State.Pid}}", cid)
        ns = ["nsenter", "-t", pid, "-n"]
        subprocess.run(
            [*ns, "iptables", "-t", "nat", "-A", "OUTPUT", "-d", "127.0.0.11/32", "-p", "udp", "--dport", "53"]
            + ["-j", "DNAT", "--to-destination", f"127.0.0.11:{FWD_PORT}"],
            check=True,
        )
        fwd = subprocess.Popen([*ns, sys.executable, "-c", FORWARDER], stdout=subprocess.PIPE, text=True)
        assert fwd.stdout is not None and fwd.stdout.readline().strip() == "ready"
        s.wait_for(lambda d: cid_of(d) == cid, what="a document about the container", timeout=20)
        out = docker.docker("exec", cid, "/dnsq", "127.0.0.11", str(QUERIES), "t.exfil-lab.test")
        assert out == "", out

        def flows() -> list[dict[str, Any]]:
            return [
                d
                for d in s.docs()
                if action(d) == "flow_summary" and cid_of(d) == cid and d["destination"]["ip"] == "127.0.0.11"
            ]

        assert wait_until(lambda: sum(f["source"]["packets"] for f in flows()) >= QUERIES, 15, 0.3), (
            flows(),
            s.stderr_text(),
        )
        got = flows()
        # reported as the resolver's port 53, not the DNAT's
        assert {f["destination"]["port"] for f in got} == {53}, got
        # every query sampled (before: 8 and every 64th, ~11 of 200)
        samples = sum(f["sluice"]["payload"]["samples"] for f in got)
        assert samples >= QUERIES, (samples, [f["sluice"]["payload"] for f in got])
        # answers came back (the forwarder relayed them): counted on the same flow
        assert sum(f["destination"].get("bytes", 0) for f in got) > 0, got
    finally:
        if fwd is not None:
            fwd.kill()
            fwd.wait()
        docker.docker("rm", "-f", cid, check=False)
        s.stop()
