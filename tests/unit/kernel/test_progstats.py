"""The sensor's own BPF cost: fdinfo parsing, status section, status lines
and Prometheus metrics (issue 13). Pure logic; the privileged test
test_bpf_cost.py checks the numbers from a real kernel."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import generate_latest
from prometheus_client.core import CollectorRegistry

from control.commands.status import _fmt_status
from sensor.kernel.progstats import (
    ProgramCost,
    format_lines,
    parse_fdinfo,
    read_costs,
    stats_enabled,
    status_section,
    tracepoint_hook,
)
from sensor.outputs.metrics import SensorCollector

# the shape of /proc/<pid>/fdinfo/<fd> for a BPF program on Linux 6.x
FDINFO = """pos:\t0
flags:\t02000002
mnt_id:\t16
ino:\t2086
prog_type:\t8
prog_jited:\t1
prog_tag:\t0d9bd4dbd9f8e7a6
memlock:\t20480
prog_id:\t215
run_time_ns:\t123456789
run_cnt:\t1000000
recursion_misses:\t0
verified_insns:\t8985
"""


def test_parse_fdinfo_reads_the_program_counters() -> None:
    d = parse_fdinfo(FDINFO)
    assert d == {"prog_id": 215, "run_time_ns": 123456789, "run_cnt": 1000000, "verified_insns": 8985}


def test_parse_fdinfo_of_a_kernel_without_stats_fields() -> None:
    # before 5.1 there is no run_time_ns/run_cnt: the program still counts as present
    assert parse_fdinfo("prog_type:\t8\nprog_id:\t7\n") == {"prog_id": 7}
    assert parse_fdinfo("garbage\nrun_cnt: x\n") == {}


def test_read_costs_from_fdinfo_files(tmp_path: Path) -> None:
    (tmp_path / "5").write_text(FDINFO)
    (tmp_path / "6").write_text("pos:\t0\n")  # not a BPF program: left out
    costs = read_costs({"sl_egress": ("egress", 5), "other": ("x", 6), "gone": ("y", 99)}, tmp_path)
    assert costs == [ProgramCost("sl_egress", "egress", 215, 1000000, 123456789)]
    assert costs[0].ns_per_run == 123.456789
    assert ProgramCost("p", "h", 1, 0, 0).ns_per_run is None


def test_stats_enabled_reads_the_sysctl(tmp_path: Path) -> None:
    f = tmp_path / "bpf_stats_enabled"
    f.write_text("1\n")
    assert stats_enabled(f)
    f.write_text("0\n")
    assert not stats_enabled(f)
    assert not stats_enabled(tmp_path / "missing")


def test_tracepoint_hook_names() -> None:
    assert tracepoint_hook("tracepoint__sched__sched_process_exec") == "sched:sched_process_exec"
    assert tracepoint_hook("tracepoint__cgroup__cgroup_mkdir") == "cgroup:cgroup_mkdir"
    assert tracepoint_hook("sl_egress") == "sl_egress"


def _section(enabled: bool) -> dict[str, object]:
    costs = [
        ProgramCost("sl_connect4", "connect4", 11, 0, 0),
        ProgramCost("sl_egress", "egress", 12, 2_000_000, 150_000_000),
    ]
    if not enabled:
        costs = [ProgramCost(c.program, c.hook, c.prog_id, 0, 0) for c in costs]
    return status_section(costs, enabled)


def test_status_section_with_stats_on() -> None:
    s = _section(True)
    assert s["stats_enabled"] is True and "hint" not in s
    progs = s["programs"]
    assert isinstance(progs, dict)
    assert progs["sl_egress"] == {
        "hook": "egress",
        "prog_id": 12,
        "runs": 2_000_000,
        "run_time_ns": 150_000_000,
        "ns_per_run": 75.0,
    }
    assert progs["sl_connect4"]["ns_per_run"] is None


def test_status_section_counts_as_on_when_a_stats_fd_is_held() -> None:
    # BPF_ENABLE_STATS (kernel.bpf_stats = true) leaves the sysctl at 0
    s = status_section([ProgramCost("sl_egress", "egress", 12, 10, 500)], False)
    assert s["stats_enabled"] is True


def test_status_section_with_stats_off_says_how_to_turn_them_on() -> None:
    s = _section(False)
    assert s["stats_enabled"] is False
    assert "bpf_stats_enabled" in str(s["hint"])


def test_status_lines_list_programs_that_ran() -> None:
    lines = format_lines(_section(True))
    assert lines[0].startswith("bpf programs (kernel bpf_stats)")
    body = "\n".join(lines[2:])
    assert "sl_egress" in body and "2,000,000" in body and "75.0" in body and "0.150" in body
    assert "sl_connect4" not in body  # never ran: no line
    off = format_lines(_section(False))
    assert len(off) == 1 and "2 loaded" in off[0] and "not measured" in off[0]


def test_sluice_status_text_includes_the_program_costs() -> None:
    text = _fmt_status({"ready": True, "hooks": {}, "bpf_programs": _section(True)})
    assert "bpf programs (kernel bpf_stats)" in text and "sl_egress" in text
    assert "bpf programs" not in _fmt_status({"ready": True, "hooks": {}})


def _scrape(snapshot: dict[str, object]) -> str:
    reg = CollectorRegistry()
    reg.register(SensorCollector(lambda: snapshot, {}))
    return generate_latest(reg).decode()


def test_metrics_expose_runs_and_run_seconds_per_program() -> None:
    text = _scrape({"ready": True, "bpf_programs": _section(True)})
    assert 'sluice_bpf_program_runs_total{hook="egress",program="sl_egress"} 2e+06' in text
    assert 'sluice_bpf_program_run_seconds_total{hook="egress",program="sl_egress"} 0.15' in text
    assert 'sluice_bpf_program_runs_total{hook="connect4",program="sl_connect4"} 0.0' in text


def test_metrics_leave_program_costs_out_while_stats_are_off() -> None:
    text = _scrape({"ready": True, "bpf_programs": _section(False)})
    assert "sluice_bpf_program_runs" not in text
    assert "sluice_bpf_program_runs" not in _scrape({"ready": True})
