"""Keeping a DNS distrust alive against a container that tries to shed it
(sensor/telemetry/pipeline.py recheck_distrust): its forging socket held
by a process whose main thread has exited, so that reading processes
would find nothing. The real sensor, a real container, the sink's real
DNS server."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from emulation.lab import SECOND_IP, wait_until
from tests.privileged.harness import (
    SINK_IP,
    Docker,
    SensorProc,
    SinkNet,
    action,
    cid_of,
    forgers_at_start,
    run_container,
)
from tests.privileged.test_names import SVC, named_flow

HERE = Path(__file__).resolve().parent


def _zleader(base: Path) -> Path:
    exe = base / "zleader"
    if not exe.exists():
        subprocess.run(["gcc", "-O2", "-static", "-pthread", "-o", str(exe), str(HERE / "zleader.c")], check=True)
    return exe


def test_a_raw_socket_behind_an_exited_main_thread_keeps_the_distrust(base: Path, docker: Docker, net: SinkNet) -> None:
    exe = _zleader(base)
    net.set_names({SVC: [SECOND_IP]})
    s = SensorProc(base, docker.sock, name="zleader")
    s.start()
    try:
        # the container's only process: the raw socket is made, the main
        # thread exits, and several windows pass (rescans) before the other
        # thread resolves the service and uploads to it
        script = f"exec /zleader 6 {SINK_IP} {SVC} 443"
        cid = run_container(docker, net, script, wait=False, volumes=(f"{exe}:/zleader:ro",))
        try:
            s.wait_for(named_flow(cid), timeout=60, what="the named upload")
            flows = [
                x
                for x in s.docs()
                if action(x) == "flow_summary" and cid_of(x) == cid and x["destination"].get("domain") == SVC
            ]
            assert flows and not any(x["sluice"]["flow"]["name_vouched"] for x in flows), flows
        finally:
            docker.docker("rm", "-f", cid, check=False)
    finally:
        s.stop()


def test_a_raw_socket_behind_an_exited_main_thread_is_found_at_start(base: Path, docker: Docker, net: SinkNet) -> None:
    """The same container running before the sensor starts (a restart of
    the sensor, or one the attacker caused): the scan at start reads every
    thread. It read the first pid of cgroup.procs, the zombie leader, whose
    namespace cannot be read: the container was not distrusted."""
    exe = _zleader(base)

    before = forgers_at_start(base, docker.sock, "zleader-start-before")
    script = f"exec /zleader 600 {SINK_IP} {SVC} 443"
    cid = run_container(docker, net, script, wait=False, volumes=(f"{exe}:/zleader:ro",))
    try:
        pid = docker.docker("inspect", "-f", "{{.State.Pid}}", cid)
        # the main thread has exited (a zombie leader), the other holds the socket
        state = Path(f"/proc/{pid}/stat")
        assert wait_until(lambda: state.read_text().rsplit(")", 1)[-1].split()[0] == "Z", 10, 0.1), (
            "the main thread never exited"
        )
        assert len(os.listdir(f"/proc/{pid}/task")) == 2
        assert forgers_at_start(base, docker.sock, "zleader-start-after") == before + 1
    finally:
        docker.docker("rm", "-f", cid, check=False)
