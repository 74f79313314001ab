"""Raw and packet sockets (issue 10): containers get CAP_NET_RAW, and an
AF_PACKET socket sends below every cgroup egress hook. Raw/packet socket
creation is reported for any container and refused for a contained one.

Which hook does it depends on the kernel: the BPF LSM socket_create hook
(every family) where LSM programs load. Else raw inet sockets are refused
by cgroup sock_create (EPERM), and AF_PACKET sockets are reported at their
first send (sock:sock_send_length) and, while a container is contained,
its processes are killed when they create one (syscalls:sys_enter_socket,
attached only then) or send on one they already had (after that send).
busybox ping opens an AF_INET SOCK_RAW ICMP socket; busybox arping an
AF_PACKET one, whose ARP requests a sniffer in the sink netns counts: the
proof that a frame did or did not leave the container."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from emulation.lab import wait_until
from sensor.config import default_config
from sensor.kernel import events as E
from sensor.kernel import hooks as H
from sensor.kernel.loader import BccSource
from sensor.kernel.probe import probe

from ..privileged.harness import SINK_IP, SLUICE, Docker, SensorProc, SinkNet, action, cid_of, run_container

SNIFFER = str(Path(__file__).with_name("arp_sniff.py"))
GUARD = "syscalls:sys_enter_socket"
# ARP targets nobody answers and the kernel never resolves by itself: a
# request for one of them is a frame an arping in the test sent
TARGET_FREE = "198.18.0.71"  # not contained: must arrive
TARGET_CONTAINED = "198.18.0.72"  # created while contained: must not
TARGET_HELD = "198.18.0.73"  # socket opened before containment
TARGET_INIT = "198.18.0.74"  # held by the container's PID 1


def _exec(docker: Docker, cid: str, cmd: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["docker", "exec", cid, "sh", "-c", cmd], capture_output=True, text=True, timeout=timeout, env=docker.env
    )


def _raw(d: dict[str, Any], act: str, cid: str, family: str) -> bool:
    return action(d) == act and cid_of(d) == cid and d["sluice"]["socket"]["family"] == family


def _hooks(s: SensorProc) -> dict[str, str]:
    return dict(json.loads(s.status("--json").stdout)["hooks"])


class Sniffer:
    """ARP requests that reach the sink netns, by target address."""

    def __init__(self, out: Path) -> None:
        self.out = out

    def times(self, target: str) -> list[float]:
        lines = self.out.read_text().splitlines() if self.out.exists() else []
        return [float(t) for t, _, ip in (ln.partition(" ") for ln in lines[1:]) if ip == target]


@contextmanager
def sniffer(net: SinkNet, base: Path) -> Iterator[Sniffer]:
    out = base / "arp-seen.txt"
    out.unlink(missing_ok=True)
    p = subprocess.Popen(["ip", "netns", "exec", net.ns, sys.executable, SNIFFER, str(out)])
    try:
        deadline = time.monotonic() + 10
        while not (out.exists() and out.read_text().startswith("ready")):
            assert p.poll() is None and time.monotonic() < deadline, "the ARP sniffer did not start"
            time.sleep(0.05)
        yield Sniffer(out)
    finally:
        p.send_signal(signal.SIGTERM)
        p.wait(10)


def test_raw_and_packet_sockets_reported_and_refused_when_contained(base: Path, docker: Docker, net: SinkNet) -> None:
    s = SensorProc(base, docker.sock, name="rawsock")
    s.start()
    cid = run_container(docker, net, "sleep 300", wait=False)
    try:
        with sniffer(net, base) as seen:
            hooks = _hooks(s)
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

            r = _exec(docker, cid, f"arping -c 1 -w 1 -I eth0 {TARGET_FREE}")
            assert r.returncode != 137, r  # nobody answers (exit 1), nobody kills it
            d = s.wait_for(lambda d: _raw(d, "raw_socket_created", cid, "AF_PACKET"), what="packet socket report")
            assert d["sluice"]["socket"]["denied"] is False and d["process"]["pid"] > 0
            assert "arping" in (d["process"]["name"], (d["process"].get("args") or [""])[0]), d["process"]
            # the sniffer writes what it saw as it sees it
            assert wait_until(lambda: seen.times(TARGET_FREE), 10), "the sniffer saw no ARP request from arping"
            # the default ("auto"): the tp_btf program on a kernel with BTF
            assert hooks["sock:sock_send_length"] == EXPECTED_SEND_HOOK["auto"], hooks
            if not lsm:  # nothing contained: the syscall tracepoint is off
                assert hooks[GUARD].startswith("detached"), hooks

            # contained: raw inet refused with EPERM, reported as denied
            r = subprocess.run([SLUICE, "isolate", cid[:12], "-c", str(s.config)], capture_output=True, text=True)
            assert r.returncode == 0, r.stderr
            if not lsm:
                assert _hooks(s)[GUARD].startswith("attached"), _hooks(s)
            r = _exec(docker, cid, f"ping -c 1 -W 2 {SINK_IP}")
            assert r.returncode != 0 and "ermission denied" in r.stderr, r.stdout + r.stderr
            d = s.wait_for(lambda d: _raw(d, "raw_socket_denied", cid, "AF_INET"), what="refused raw socket")
            assert d["event"]["type"] == ["denied"] and "contained" in d["message"]

            # AF_PACKET: refused (LSM) or the process killed at creation
            r = _exec(docker, cid, f"arping -c 3 -w 3 -I eth0 {TARGET_CONTAINED}")
            assert r.returncode != 0, r.stdout
            if not lsm:
                assert r.returncode == 128 + signal.SIGKILL, r
            d = s.wait_for(lambda d: _raw(d, "raw_socket_denied", cid, "AF_PACKET"), what="refused packet socket")
            assert d["event"]["type"] == ["denied"] and d["process"]["pid"] > 0
            if not lsm:
                assert d["sluice"]["socket"]["hook"] == "sys_enter_socket", d
            time.sleep(1)
            assert seen.times(TARGET_CONTAINED) == [], "a frame from the contained container reached the sink"
            stats = json.loads(s.status("--json").stdout)["counters"]
            assert stats["raw_sockets_denied"] >= 2
            if not lsm:
                assert stats["packet_socket_processes_killed"] >= 1

            # released: the syscall tracepoint goes away with the last containment
            r = subprocess.run([SLUICE, "release", cid[:12], "-c", str(s.config)], capture_output=True, text=True)
            assert r.returncode == 0, r.stderr
            if not lsm:
                assert _hooks(s)[GUARD].startswith("detached"), _hooks(s)
    finally:
        docker.docker("rm", "-f", cid, check=False)
        assert s.stop() == 0


def test_packet_socket_opened_before_containment(base: Path, docker: Docker, net: SinkNet) -> None:
    """A packet socket that already exists when the container is contained
    (no creation to catch): its holder is killed when containment starts
    (the sweep), so no frame leaves after it; the container's PID 1 too."""
    s = SensorProc(base, docker.sock, name="rawheld")
    s.start()
    # PID 1 of this container is arping itself (sh execs it), one request a second
    init = run_container(docker, net, f"exec arping -c 120 -I eth0 {TARGET_INIT}", wait=False)
    cid = run_container(docker, net, "sleep 300", wait=False)
    held = None
    try:
        with sniffer(net, base) as seen:
            held = subprocess.Popen(
                ["docker", "exec", cid, "arping", "-c", "120", "-I", "eth0", TARGET_HELD], env=docker.env
            )
            deadline = time.monotonic() + 10
            while not (seen.times(TARGET_HELD) and seen.times(TARGET_INIT)):
                assert time.monotonic() < deadline, "the arpings' requests did not reach the sink"
                time.sleep(0.2)

            contained_at = {}
            for c in (cid, init):
                r = subprocess.run([SLUICE, "isolate", c[:12], "-c", str(s.config)], capture_output=True, text=True)
                assert r.returncode == 0, r.stderr
                contained_at[c] = time.time()

            assert held.wait(10) == 128 + signal.SIGKILL
            d = s.wait_for(lambda d: _raw(d, "raw_socket_denied", cid, "AF_PACKET"), what="killed packet holder")
            assert d["sluice"]["socket"]["hook"] == "containment_sweep" and "killed" in d["message"], d
            assert d["process"]["name"] == "arping", d  # from /proc/<pid>/comm
            # the container's PID 1 holder: killed from the host (the container exits)
            out = docker.docker("wait", init, check=False, timeout=15)
            assert out.strip() == str(128 + signal.SIGKILL), out
            s.wait_for(lambda d: _raw(d, "raw_socket_denied", init, "AF_PACKET"), what="killed PID 1 holder")
            time.sleep(1.5)  # arping sends one a second
            for c, target in ((cid, TARGET_HELD), (init, TARGET_INIT)):
                leaked = [t for t in seen.times(target) if t > contained_at[c]]
                assert leaked == [], f"{len(leaked)} frames to {target} left after containment"
    finally:
        if held is not None and held.poll() is None:
            held.kill()
        for c in (cid, init):
            docker.docker("rm", "-f", c, check=False)
        assert s.stop() == 0


# sock:sock_send_length's status per kernel.packet_send_hook on this kernel
EXPECTED_SEND_HOOK = {
    "auto": "attached (tp_btf)"
    if Path("/sys/kernel/btf/vmlinux").exists()
    else "attached (tracepoint; not tp_btf: no kernel BTF at /sys/kernel/btf/vmlinux (No such file or directory))",
    "tracepoint": "attached (tracepoint; not tp_btf: kernel.packet_send_hook = tracepoint)",
}

TARGET_SEND = "198.18.0.75"  # held, contained by the kernel half alone
TARGET_SEND_INIT = "198.18.0.76"  # the same, held by the container's PID 1


def _cgroup_of(pid: int, mount: str) -> tuple[int, int]:
    """(cgroup v2 id, level) of a process."""
    line = next(ln for ln in Path(f"/proc/{pid}/cgroup").read_text().splitlines() if ln.startswith("0::"))
    path = line[3:]
    return os.stat(mount.rstrip("/") + path).st_ino, len(path.strip("/").split("/"))


@pytest.mark.parametrize("send_hook", ["auto", "tracepoint"])
def test_kernel_kills_a_contained_sender_after_its_send(
    base: Path, docker: Docker, net: SinkNet, send_hook: str
) -> None:
    """The kernel half alone (the loader in this process, no sensor, so no
    containment sweep): a process that held a packet socket before its
    container was contained is killed by sock:sock_send_length at its next
    send, after that frame; the frame is the most that leaves. The same for
    a container's PID 1 (bpf_send_signal's SIGKILL is kernel-private: a
    namespace init does not ignore it). Both ways the send report attaches
    (kernel.packet_send_hook): the tp_btf program, and the classic tracepoint
    it falls back to."""
    cid = run_container(docker, net, "sleep 300", wait=False)
    init = run_container(docker, net, f"exec arping -c 120 -I eth0 {TARGET_SEND_INIT}", wait=False)
    report = probe(True, H.UNITS)
    assert report.cgroup2_mount
    src = BccSource(dataclasses.replace(default_config().kernel, packet_send_hook=send_hook), report)
    raw: list[bytes] = []
    src.start(raw.append)
    held = None
    try:
        with sniffer(net, base) as seen:
            held = subprocess.Popen(
                ["docker", "exec", cid, "arping", "-c", "120", "-I", "eth0", TARGET_SEND], env=docker.env
            )
            deadline = time.monotonic() + 10
            while not (seen.times(TARGET_SEND) and seen.times(TARGET_SEND_INIT)):
                assert time.monotonic() < deadline, "the arpings' requests did not reach the sink"
                time.sleep(0.1)
            cgroups, contained_at = {}, {}
            for c in (cid, init):
                cg, level = _cgroup_of(int(docker.docker("inspect", "-f", "{{.State.Pid}}", c)), report.cgroup2_mount)
                src.set_contained_cgroup(cg, cg, level, True)
                src.set_isolated(cg, True)
                cgroups[c], contained_at[c] = cg, time.time()
            assert held.wait(30) == 128 + signal.SIGKILL  # quick when it works; time only on failure
            r = docker.docker("wait", init, check=False, timeout=30)
            assert r.strip() == str(128 + signal.SIGKILL), r
            time.sleep(0.5)
            for c, target in ((cid, TARGET_SEND), (init, TARGET_SEND_INIT)):
                leaked = [t for t in seen.times(target) if t > contained_at[c]]
                assert len(leaked) <= 1, f"{len(leaked)} frames to {target} left after containment"
        assert src.status["sock:sock_send_length"] == EXPECTED_SEND_HOOK[send_hook], src.status
        src.poll(100)
        socks = [e for e in map(E.decode, raw) if isinstance(e, E.SocketEvent)]
        for c in (cid, init):
            killed = [e for e in socks if e.denied and e.hook == E.SOCKET_HOOK_SEND and e.hdr.cgroup_id == cgroups[c]]
            assert killed and killed[0].family == 17 and killed[0].comm == "arping", socks
        assert src.kernel_stats()["packet_socket_processes_killed"] >= 2
    finally:
        if held is not None and held.poll() is None:
            held.kill()
        src.close()
        for c in (cid, init):
            docker.docker("rm", "-f", c, check=False)
