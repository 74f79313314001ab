"""The sensor shows its own kernel cost (issue 13): with `kernel.bpf_stats =
true` the kernel times every program run, and `sluice status` and the
Prometheus metrics report each program's runs and run time, growing with
the traffic the test sends over loopback."""

from __future__ import annotations

import json
import re
import socket
import urllib.request
from pathlib import Path
from typing import Any

from .harness import SensorProc


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _programs(s: SensorProc) -> dict[str, Any]:
    st = json.loads(s.status("--json").stdout)
    bp = st["bpf_programs"]
    assert bp["stats_enabled"] is True, bp
    return dict(bp["programs"])


def _send_traffic(udp_packets: int) -> None:
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for _ in range(udp_packets):
        tx.sendto(b"x" * 64, rx.getsockname())
    tx.close()
    rx.close()
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    c = socket.create_connection(srv.getsockname())
    a, _ = srv.accept()
    c.sendall(b"hello")
    a.recv(5)
    for x in (a, c, srv):
        x.close()


def test_status_and_metrics_report_each_programs_runs_and_time(base: Path) -> None:
    port = _free_port()
    s = SensorProc(
        base,
        str(base / "no-docker.sock"),
        name="bpfstats",
        extra_config=f'[kernel]\nbpf_stats = true\n[output]\nmetrics = "127.0.0.1:{port}"\n',
    )
    s.start()
    try:
        before = _programs(s)
        # every program the sensor loaded, with its hook
        assert before["sl_egress"]["hook"] == "egress"
        assert before["sl_connect4"]["hook"] == "connect4"
        assert before["tracepoint__sched__sched_process_exec"]["hook"] == "sched:sched_process_exec"
        assert all(p["prog_id"] > 0 for p in before.values())

        _send_traffic(2000)
        after = _programs(s)
        eg0, eg1 = before["sl_egress"], after["sl_egress"]
        assert eg1["runs"] - eg0["runs"] >= 2000, (eg0, eg1)
        assert eg1["run_time_ns"] > eg0["run_time_ns"]
        assert eg1["ns_per_run"] and 0 < eg1["ns_per_run"] < 1_000_000
        assert after["sl_connect4"]["runs"] > before["sl_connect4"]["runs"]

        text = s.status().stdout
        assert "bpf programs (kernel bpf_stats)" in text
        line = next(ln for ln in text.splitlines() if ln.strip().startswith("sl_egress"))
        assert int(line.split()[1].replace(",", "")) >= eg1["runs"]

        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
        m = re.search(r'^sluice_bpf_program_runs_total\{hook="egress",program="sl_egress"\} (\S+)$', body, re.M)
        assert m and float(m.group(1)) >= eg1["runs"], body[:2000]
        m = re.search(r'^sluice_bpf_program_run_seconds_total\{hook="egress",program="sl_egress"\} (\S+)$', body, re.M)
        assert m and float(m.group(1)) > 0
    finally:
        s.stop()
