"""The sensor's own kernel cost: run count and run time of each BPF program.

The kernel times every BPF program run while `kernel.bpf_stats_enabled` is 1
(or while some process holds a BPF_ENABLE_STATS file descriptor, which
`kernel.bpf_stats = true` makes the sensor do). The figures are read from
/proc/self/fdinfo/<program fd> (prog_id, run_time_ns, run_cnt): no ctypes
mirror of struct bpf_prog_info to keep in sync. Tetragon exposes the same
figures as its "overhead" metrics; operators see what the sensor costs on
their nodes.

Stats cost two clock reads per program run, which is why they stay off
unless asked for.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

STATS_SYSCTL = Path("/proc/sys/kernel/bpf_stats_enabled")
_FIELDS = ("prog_id", "run_time_ns", "run_cnt", "verified_insns")


@dataclass(frozen=True, slots=True)
class ProgramCost:
    program: str  # function name in bpf/
    hook: str  # where it is attached: "egress", "sched:sched_process_exec", ...
    prog_id: int
    runs: int
    run_time_ns: int

    @property
    def ns_per_run(self) -> float | None:
        return self.run_time_ns / self.runs if self.runs else None

    def as_dict(self) -> dict[str, object]:
        ns = self.ns_per_run
        return {
            "hook": self.hook,
            "prog_id": self.prog_id,
            "runs": self.runs,
            "run_time_ns": self.run_time_ns,
            "ns_per_run": None if ns is None else round(ns, 1),
        }


def parse_fdinfo(text: str) -> dict[str, int]:
    """The numeric fields of a BPF program's /proc/<pid>/fdinfo/<fd>."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() in _FIELDS:
            try:
                out[key.strip()] = int(value.strip())
            except ValueError:
                continue
    return out


def stats_enabled(sysctl: Path = STATS_SYSCTL) -> bool:
    """True when the sysctl says the kernel is timing programs. (A process
    holding a BPF_ENABLE_STATS fd also enables it; the sysctl then still
    reads 0, so callers also treat a non-zero run time as "on".)"""
    try:
        return sysctl.read_text().strip() not in ("", "0")
    except OSError:
        return False


def read_costs(programs: dict[str, tuple[str, int]], fdinfo_dir: Path = Path("/proc/self/fdinfo")) -> list[ProgramCost]:
    """Costs of the programs {function name: (hook, fd)} this process holds;
    a program whose fdinfo cannot be read is left out."""
    out = []
    for name, (hook, fd) in sorted(programs.items()):
        try:
            info = parse_fdinfo((fdinfo_dir / str(fd)).read_text())
        except OSError:
            continue
        if "prog_id" not in info:
            continue
        out.append(ProgramCost(name, hook, info["prog_id"], info.get("run_cnt", 0), info.get("run_time_ns", 0)))
    return out


def tracepoint_hook(function: str) -> str:
    """bcc's name for an auto-attached tracepoint program, as "category:event"
    ("tracepoint__sched__sched_process_exec" -> "sched:sched_process_exec")."""
    if function.startswith("tracepoint__"):
        category, _, event = function[len("tracepoint__") :].partition("__")
        if event:
            return f"{category}:{event}"
    return function


def status_section(costs: list[ProgramCost], enabled: bool) -> dict[str, object]:
    """The `bpf_programs` part of the status object. Counts are only
    meaningful while stats are on; they are reported as they are either way
    (a kernel that counted earlier keeps its totals)."""
    on = enabled or any(c.run_time_ns for c in costs)
    return {
        "stats_enabled": on,
        "programs": {c.program: c.as_dict() for c in costs},
        **({} if on else {"hint": "sysctl -w kernel.bpf_stats_enabled=1 (or kernel.bpf_stats = true) to measure"}),
    }


def format_lines(section: dict[str, object]) -> list[str]:
    """Human-readable lines for `sluice status`: one per program that ran."""
    progs = section.get("programs") or {}
    assert isinstance(progs, dict)
    if not section.get("stats_enabled"):
        return [f"bpf programs: {len(progs)} loaded; run times not measured ({section.get('hint', '')})"]
    lines = ["bpf programs (kernel bpf_stats):", f"  {'PROGRAM':<40} {'RUNS':>14} {'NS/RUN':>8} {'CPU S':>9}"]
    for name, p in progs.items():
        runs, ns, per = p.get("runs", 0), p.get("run_time_ns", 0), p.get("ns_per_run")
        if not runs:
            continue
        lines.append(f"  {name:<40} {runs:>14,} {per if per is not None else '-':>8} {ns / 1e9:>9.3f}")
    return lines
