"""Isolation below the sockets (sensor/response/linkdrop.py).

The egress program drops an isolated container's packets by their
socket's cgroup and the packet guard kills a process after its send on a
packet socket; the containment sweep kills the holders of packet sockets
at isolation. A review got frames out anyway: a packet socket opened
before the isolation, its descriptor parked in an SCM_RIGHTS message the
process sent itself (no process holds it, the sweep misses it), then
handed to child after child, each sending before it is killed (5 of 5
frames out, measured on the code before the cut). And the kernel's own
TCP RST for a closed port left the isolated container (its control
socket is the root cgroup's): a scan from outside reads which ports are
open. The host side of the container's veth now drops every frame."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from ..privileged.harness import SLUICE, Docker, SensorProc, SinkNet, action, cid_of, run_container
from .test_raw_sockets import _exec, sniffer

HERE = Path(__file__).parent
TARGET = "198.18.0.77"  # ARP for it: a frame the hidden socket sent
TARGET_AFTER = "198.18.0.78"  # after the release: frames flow again
CHILDREN = 5


def _refused(ns: str, ip: str, port: int) -> str:
    """From the sink netns: 'refused' (a RST came back), 'timeout' or 'connected'."""
    code = (
        "import socket,sys\n"
        "s=socket.socket(); s.settimeout(2)\n"
        f"try: s.connect(({ip!r},{port})); print('connected')\n"
        "except ConnectionRefusedError: print('refused')\n"
        "except OSError: print('timeout')\n"
    )
    r = subprocess.run(["ip", "netns", "exec", ns, "python3", "-c", code], capture_output=True, text=True, timeout=20)
    return r.stdout.strip()


def test_frames_below_the_sockets_do_not_leave_an_isolated_container(base: Path, docker: Docker, net: SinkNet) -> None:
    exe = base / "pkthide"
    subprocess.run(["gcc", "-O2", "-static", "-o", str(exe), str(HERE / "pkthide.c")], check=True)
    s = SensorProc(base, docker.sock, name="linkcut")
    s.start()
    cid = run_container(
        docker,
        net,
        f"/pkthide {TARGET} {CHILDREN} /tmp/go > /tmp/out 2>&1; sleep 300",
        wait=False,
        volumes=(f"{exe}:/pkthide:ro",),
    )
    try:
        deadline = time.monotonic() + 15
        while "ready" not in _exec(docker, cid, "cat /tmp/out").stdout:
            assert time.monotonic() < deadline, _exec(docker, cid, "cat /tmp/out").stdout
            time.sleep(0.1)
        ip = _exec(docker, cid, "ip -4 -o addr show eth0").stdout.split()[3].split("/")[0]
        assert _refused(net.ns, ip, 9) == "refused"  # before: the kernel answers for the closed port
        with sniffer(net, base) as seen:
            r = subprocess.run([SLUICE, "isolate", cid[:12], "-c", str(s.config)], capture_output=True, text=True)
            assert r.returncode == 0, r.stderr
            isolated_at = time.time()
            d = s.wait_for(lambda d: action(d) == "container_isolated" and cid_of(d) == cid, what="isolation")
            assert "dropped at its host-side link" in d["message"], d["message"]
            assert _exec(docker, cid, "touch /tmp/go").returncode == 0
            deadline = time.monotonic() + 30
            while _exec(docker, cid, "cat /tmp/out").stdout.count("child ") < CHILDREN:
                assert time.monotonic() < deadline, _exec(docker, cid, "cat /tmp/out").stdout
                time.sleep(0.2)
            out = _exec(docker, cid, "cat /tmp/out").stdout
            assert out.count("signal 9") == CHILDREN, out  # each sent, and was killed after its send
            time.sleep(1)
            leaked = [t for t in seen.times(TARGET) if t > isolated_at]
            assert leaked == [], f"{len(leaked)} frames of the hidden packet socket left the isolated container"
            # the kernel's RST for a closed port stays inside too
            assert _refused(net.ns, ip, 9) == "timeout"

            # released: the link is whole again (a new packet socket's frames arrive)
            r = subprocess.run([SLUICE, "release", cid[:12], "-c", str(s.config)], capture_output=True, text=True)
            assert r.returncode == 0, r.stderr
            _exec(docker, cid, f"arping -c 2 -I eth0 {TARGET_AFTER}")
            deadline = time.monotonic() + 10
            while not seen.times(TARGET_AFTER):
                assert time.monotonic() < deadline, "frames did not flow after the release"
                time.sleep(0.2)
        assert _refused(net.ns, ip, 9) == "refused"
    finally:
        docker.docker("rm", "-f", cid, check=False)
        assert s.stop() == 0, s.stderr_text()


def test_the_link_is_cut_again_after_a_restart(base: Path, docker: Docker, net: SinkNet) -> None:
    """A restarted isolated container has a new network namespace, whose
    veth comes after its cgroup (and, here, after its first process: the
    harness attaches it): its link is cut at the next window's recheck."""
    s = SensorProc(base, docker.sock, name="linkcut2")
    s.start()
    cid = run_container(docker, net, "sleep 300", wait=False)
    try:
        r = subprocess.run([SLUICE, "isolate", cid[:12], "-c", str(s.config)], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        docker.docker("kill", cid)
        docker.docker("start", cid)
        pid = int(docker.docker("inspect", "-f", "{{.State.Pid}}", cid))
        time.sleep(2)  # windows pass with no veth: nothing to cut yet
        net.attach(pid)
        d = s.wait_for(
            lambda d: (
                action(d) == "containment_followed"
                and cid_of(d) == cid
                and "dropped at its host-side link" in d["message"]
            ),
            what="the new link cut",
            timeout=20,
        )
        ip = _exec(docker, cid, "ip -4 -o addr show eth0").stdout.split()[3].split("/")[0]
        assert _refused(net.ns, ip, 9) == "timeout", d["message"]
    finally:
        docker.docker("rm", "-f", cid, check=False)
        assert s.stop() == 0, s.stderr_text()
