"""IPv4 non-first fragments carry no transport header (issue 10): the
egress program must not read their payload as ports. A container sends
crafted non-first UDP fragments whose payload starts with 'AAAA' through
a raw socket (CAP_NET_RAW, as Docker grants): read as a UDP header that
would be port 16705; they must be counted as fragments (protocol 44, no
port), bytes kept."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from ..privileged.harness import SINK_IP, Docker, SensorProc, SinkNet, action, cid_of, run_container

HERE = Path(__file__).parent
COUNT = 20
FAKE_PORT = 0x4141  # 'AA'


def test_ipv4_non_first_fragments_have_no_ports(base: Path, docker: Docker, net: SinkNet) -> None:
    frag = base / "frag"
    subprocess.run(["gcc", "-O2", "-static", "-o", str(frag), str(HERE / "frag.c")], check=True)
    s = SensorProc(base, docker.sock, name="frag")
    s.start()
    try:
        cid = run_container(docker, net, f"/frag {SINK_IP} {COUNT} > /tmp/sent", volumes=(f"{frag}:/frag:ro",))
        s.settle()
        flows = [d for d in s.docs() if action(d) == "flow_summary" and cid_of(d) == cid]
        to_sink = [d for d in flows if d["destination"]["ip"] == SINK_IP]
        assert not [d for d in to_sink if d["destination"]["port"] == FAKE_PORT], "payload bytes read as ports"
        frags = [d for d in to_sink if d["destination"]["port"] == 0 and d["source"]["packets"] > 0]
        assert sum(d["source"]["packets"] for d in frags) == COUNT, to_sink
        assert sum(d["source"]["bytes"] for d in frags) == COUNT * 84
        st = json.loads(s.status("--json").stdout)
        assert st["counters"]["ipv4_fragments"] >= COUNT
    finally:
        assert s.stop() == 0
