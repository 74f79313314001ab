#!/usr/bin/env python3
"""Wall-clock cost per 64-byte UDP datagram of each BPF hook, and of the sensor.

bench_bpf_cost.py times each program with bpf_stats (run_time_ns / run_cnt).
That leaves out the hook's own dispatch: the cgroup_skb run path, the perf
tracepoint machinery, the calls and returns around the program, which on a
CPU with an expensive return (this machine: `spec_rstack_overflow: Safe RET`)
can cost more than the program itself. This bench measures what a datagram
really pays, wall clock, with no bpf_stats:

- bench/udpblocks.c, pinned to CPU 0, sends 64-byte UDP datagrams over
  loopback to a bound socket that is never read (egress, loopback delivery,
  ingress, drop) without pause, and prints the ns per datagram of each block
  of --block datagrams with the block's CLOCK_MONOTONIC start and end;
- meanwhile this driver (on the other CPUs) attaches and detaches one part at
  a time. The parts are loaded once, before the sender starts; each is then
  attached for --period s, with a --period s "none" interval (nothing
  attached) before and after it. Blocks are labelled by the interval they
  fall in; a block that straddles an interval boundary is dropped.

Parts (all EMPTY programs, i.e. the floor of each hook):
  egress   cgroup_skb egress (`return 1`) at the cgroup v2 root (bpf_link)
  ingress  cgroup_skb ingress (`return 1`) at the cgroup v2 root
  both     the two together
  tp       classic tracepoint program on sock:sock_send_length (perf event)
  tp_btf   tp_btf (BTF-typed raw tracepoint) program on sock_send_length
  sensor   THE FULL DEFAULT SENSOR (`sluice run`, default config). It takes
           seconds to start, so it gets --sensor-period s on (from after it
           reports ready + --settle s) and --sensor-period s off, alternating.

Estimate per part: for each on-interval, its median block time minus the mean
of the medians of the "none" intervals just before and just after it (paired
differences: the VM's drift over seconds is larger than an empty program).
Reported: the median of those differences, their p25/p75, a bootstrap 95 %
interval of that median, n pairs, the none median, and the implied packet-rate ratio none / (none + cost). As
cross-checks: the same paired estimate on each interval's p25 block time
instead of its median (interruptions only add time, so a low quantile is
less noisy), and the pooled p10/p25/median of each state's blocks minus
those of all "none" blocks.

The driver runs on the CPUs other than the sender's, and so by default does
the sensor, so the figures are the per-datagram kernel cost on the sending
CPU: the sensor's user-space drain is not charged to the sender.
`--sensor-cpus all` lets `sluice run` use every CPU, the sender's too (as on
a busy node, where its drain loop competes with the workload).

Usage (root): .venv/bin/python bench/bench_hook_cost.py
    [--parts egress,ingress,both,tp,tp_btf,sensor] [--reps 30] [--period 0.3]
    [--sensor-reps 8] [--sensor-period 3] [--sensor-cpus others|all] [--block 5000] [--dump FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench_bpf_cost import cgroup2_mount
from common import HERE, Sensor, build_c

from sensor.kernel import bpfsys, btf
from sensor.kernel.probe import find_tracefs, mount_tracefs

SENDER_CPU = 0
FAST_PARTS = ("egress", "ingress", "both", "tp", "tp_btf")
ALL_PARTS = (*FAST_PARTS, "sensor")
TRACEPOINT = "sock_send_length"  # sock:sock_send_length, the hook the sensor's send report uses

# --- the parts ---------------------------------------------------------------


class Part(Protocol):
    def on(self) -> None: ...
    def off(self) -> None: ...


class CgroupSkb:
    """An empty cgroup_skb program (`return 1`: let the packet through) at the
    cgroup v2 root, attached through a bpf_link (detached when it closes)."""

    def __init__(self, attach_type: int, cgroup_fd: int) -> None:
        from bcc import BPF  # Debian python3-bpfcc

        name = "hb_egress" if attach_type == bpfsys.CGROUP_INET_EGRESS else "hb_ingress"
        self.b = BPF(text=f"int {name}(struct __sk_buff *skb) {{ return 1; }}".encode())
        self.fn = self.b.load_func(name.encode(), BPF.CGROUP_SKB, None, attach_type)
        self.attach_type, self.cgroup_fd = attach_type, cgroup_fd
        self.link: int | None = None

    def on(self) -> None:
        self.link = bpfsys.link_create(self.fn.fd, self.cgroup_fd, self.attach_type)

    def off(self) -> None:
        if self.link is not None:
            os.close(self.link)
            self.link = None


class Both:
    def __init__(self, *parts: Part) -> None:
        self.parts = parts

    def on(self) -> None:
        for p in self.parts:
            p.on()

    def off(self) -> None:
        for p in self.parts:
            p.off()


class ClassicTracepoint:
    """An empty classic tracepoint program on sock:sock_send_length (bcc
    attaches it through perf_event_open on the tracepoint's tracefs id; the
    sensor's send report uses this kind of program)."""

    def __init__(self) -> None:
        from bcc import BPF

        self.b = BPF(text=f"TRACEPOINT_PROBE(sock, {TRACEPOINT}) {{ return 0; }}".encode())
        self.tp = f"sock:{TRACEPOINT}".encode()
        self.fn = f"tracepoint__sock__{TRACEPOINT}".encode()
        self.b.detach_tracepoint(self.tp)  # bcc attaches TRACEPOINT_PROBEs when it loads them

    def on(self) -> None:
        self.b.attach_tracepoint(tp=self.tp, fn_name=self.fn)

    def off(self) -> None:
        self.b.detach_tracepoint(self.tp)


# tp_btf through bpf(2) (sensor/kernel/bpfsys.py, btf.py): bcc 0.26 (Debian)
# cannot attach BPF_PROG_TYPE_TRACING programs by BTF id.
def _insn(code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    return struct.pack("<BBhi", code, (src << 4) | dst, off, imm)


class TpBtf:
    """An empty tp_btf program on sock_send_length: `r0 = 0; exit`."""

    CODE = _insn(0xB7, 0, 0, 0, 0) + _insn(0x95)  # mov r0, 0; exit

    def __init__(self) -> None:
        want = (btf.KIND_TYPEDEF, f"btf_trace_{TRACEPOINT}")
        found = btf.find({want})
        if want not in found:
            raise RuntimeError(f"no BTF typedef {want[1]}: this kernel has no tp_btf {TRACEPOINT}")
        try:
            self.fd = bpfsys.prog_load(
                bpfsys.BPF_PROG_TYPE_TRACING, self.CODE, "hb_tp_btf", bpfsys.TRACE_RAW_TP, found[want].type_id
            )
        except bpfsys.BpfError as e:
            raise RuntimeError(f"tp_btf load failed: {e} ({e.log})") from e
        self.link: int | None = None

    def on(self) -> None:
        self.link = bpfsys.raw_tracepoint_open(self.fd)

    def off(self) -> None:
        if self.link is not None:
            os.close(self.link)
            self.link = None


# --- the sender and the schedule --------------------------------------------


@dataclass
class Interval:
    label: str  # "none" or a part name
    start_ns: int
    end_ns: int
    blocks: list[float] = field(default_factory=list)


class Sender:
    """udpblocks on SENDER_CPU, its block lines written to a file (a pipe would
    fill during the long sensor phase)."""

    def __init__(self, exe: str, block: int, out: Path) -> None:
        self.out = out
        self.fh = out.open("w")
        self.proc = subprocess.Popen(
            [exe, str(block)],
            stdout=self.fh,
            preexec_fn=lambda: os.sched_setaffinity(0, {SENDER_CPU}),
        )

    def stop(self) -> list[tuple[int, int, float, int]]:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(10)
        self.fh.close()
        rows = []
        for line in self.out.read_text().splitlines():
            f = line.split()
            if len(f) == 4:  # the last line may be cut by the SIGTERM
                rows.append((int(f[0]), int(f[1]), float(f[2]), int(f[3])))
        return rows


def run_interval(label: str, seconds: float, intervals: list[Interval]) -> None:
    t0 = time.monotonic_ns()
    time.sleep(seconds)
    intervals.append(Interval(label, t0, time.monotonic_ns()))


def assign(rows: list[tuple[int, int, float, int]], intervals: list[Interval]) -> None:
    """Put each block in the interval that wholly contains it (others dropped)."""
    j = 0
    for start, end, ns, _failed in rows:
        while j < len(intervals) and intervals[j].end_ns < end:
            j += 1
        if j < len(intervals) and intervals[j].start_ns <= start:
            intervals[j].blocks.append(ns)


# --- statistics --------------------------------------------------------------


def quantile(v: list[float], q: float) -> float:
    s = sorted(v)
    pos = q * (len(s) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def paired_diffs(
    intervals: list[Interval], min_blocks: int, stat: Callable[[list[float]], float] = statistics.median
) -> dict[str, list[float]]:
    """Per on-interval: stat(its blocks) minus the mean of stat(blocks) of the
    adjacent "none" intervals (both neighbours when both exist)."""
    per = [stat(i.blocks) if len(i.blocks) >= min_blocks else None for i in intervals]
    out: dict[str, list[float]] = {}
    for k, iv in enumerate(intervals):
        mk = per[k]
        if iv.label == "none" or mk is None:
            continue
        nb = [
            m
            for j in (k - 1, k + 1)
            if 0 <= j < len(intervals) and intervals[j].label == "none" and (m := per[j]) is not None
        ]
        if nb:
            out.setdefault(iv.label, []).append(mk - statistics.fmean(nb))
    return out


def median_ci95(v: list[float], seed: int = 13, resamples: int = 2000) -> tuple[float, float]:
    """Bootstrap 95 % interval of the median of v (the pairs are independent
    draws of the noise; the median's spread is what a rerun would show)."""
    rng = random.Random(seed)
    meds = sorted(statistics.median(rng.choices(v, k=len(v))) for _ in range(resamples))
    return meds[int(0.025 * resamples)], meds[int(0.975 * resamples) - 1]


def summarise(intervals: list[Interval], min_blocks: int) -> dict[str, Any]:
    diffs = paired_diffs(intervals, min_blocks)
    low = paired_diffs(intervals, min_blocks, lambda v: quantile(v, 0.25))
    pooled: dict[str, list[float]] = {}
    for iv in intervals:
        pooled.setdefault(iv.label, []).extend(iv.blocks)
    none = pooled.get("none", [])
    out: dict[str, Any] = {}
    if not none:
        return {"error": "no blocks in the none intervals"}
    none_med = statistics.median(none)
    out["none"] = {
        "blocks": len(none),
        "ns_per_datagram_p10": round(quantile(none, 0.10), 1),
        "ns_per_datagram_p25": round(quantile(none, 0.25), 1),
        "ns_per_datagram_median": round(none_med, 1),
    }
    for label, d in sorted(diffs.items(), key=lambda kv: ALL_PARTS.index(kv[0])):
        v = pooled[label]
        cost = statistics.median(d)
        out[label] = {
            "pairs": len(d),
            "cost_ns_median": round(cost, 1),
            "cost_ns_p25": round(quantile(d, 0.25), 1),
            "cost_ns_p75": round(quantile(d, 0.75), 1),
            "cost_ns_median_ci95": [round(x, 1) for x in median_ci95(d)],
            "rate_ratio_vs_none": round(none_med / (none_med + cost), 4),
            "cost_ns_median_of_p25_pairs": round(statistics.median(low[label]), 1),
            "pooled_blocks": len(v),
            "pooled_diff_p10": round(quantile(v, 0.10) - quantile(none, 0.10), 1),
            "pooled_diff_p25": round(quantile(v, 0.25) - quantile(none, 0.25), 1),
            "pooled_diff_median": round(statistics.median(v) - none_med, 1),
        }
    return out


# --- main --------------------------------------------------------------------


def fast_phase(parts: dict[str, Part], reps: int, period: float, seed: int) -> list[Interval]:
    intervals: list[Interval] = []
    order = list(parts)
    rng = random.Random(seed)
    run_interval("none", period, intervals)
    for _ in range(reps):
        rng.shuffle(order)  # no part always follows the same one
        for name in order:
            parts[name].on()
            try:
                run_interval(name, period, intervals)
            finally:
                parts[name].off()
            run_interval("none", period, intervals)
    return intervals


def sensor_phase(
    work: Path, reps: int, period: float, settle: float, sensor_cpus: set[int]
) -> tuple[list[Interval], list[float]]:
    intervals: list[Interval] = []
    ready: list[float] = []
    driver_cpus = os.sched_getaffinity(0)
    run_interval("none", period, intervals)
    for _ in range(reps):
        # `sluice run` inherits the affinity; the driver only sleeps meanwhile
        os.sched_setaffinity(0, sensor_cpus)
        try:
            with Sensor(work) as s:
                ready.append(s.ready_s)
                time.sleep(settle)  # its start-up work (ring buffers, first scan) is not per-packet cost
                run_interval("sensor", period, intervals)
        finally:
            os.sched_setaffinity(0, driver_cpus)
        time.sleep(settle)
        run_interval("none", period, intervals)
    return intervals, ready


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--parts", default=",".join(ALL_PARTS), help=f"comma-separated subset of {','.join(ALL_PARTS)}")
    ap.add_argument("--reps", type=int, default=30, help="on-intervals per fast part")
    ap.add_argument("--period", type=float, default=0.3, help="seconds per fast interval")
    ap.add_argument("--sensor-reps", type=int, default=8, help="sensor-on intervals")
    ap.add_argument("--sensor-period", type=float, default=3.0, help="seconds per sensor on/off interval")
    ap.add_argument("--settle", type=float, default=0.5, help="seconds after a sensor start/stop before measuring")
    ap.add_argument(
        "--sensor-cpus",
        choices=("others", "all"),
        default="others",
        help="CPUs `sluice run` may use: all but the sender's (default: only the kernel per-packet cost lands on the "
        "sender), or all (its user space competes with the sender, as on a busy node)",
    )
    ap.add_argument("--block", type=int, default=5000, help="datagrams per timed block")
    ap.add_argument("--min-blocks", type=int, default=3, help="blocks an interval needs to count")
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--dump", type=Path, help="also write every interval with its block times to this JSON file")
    args = ap.parse_args()
    chosen = [p for p in args.parts.split(",") if p]
    if not chosen or any(p not in ALL_PARTS for p in chosen):
        print(f"bench_hook_cost: --parts must name some of {', '.join(ALL_PARTS)}", file=sys.stderr)
        return 2
    if os.geteuid() != 0:
        print("bench_hook_cost: run as root (it loads and attaches BPF programs)", file=sys.stderr)
        return 2
    cpus = os.sched_getaffinity(0)
    if SENDER_CPU not in cpus or len(cpus) < 2:
        print(f"bench_hook_cost: needs CPU {SENDER_CPU} and one more CPU (have {sorted(cpus)})", file=sys.stderr)
        return 2
    others = cpus - {SENDER_CPU}
    os.sched_setaffinity(0, others)  # the driver (and by default the sensor) off the sender's CPU

    if "tp" in chosen and find_tracefs() is None:
        mount_tracefs()  # bcc reads the tracepoint's format and id there (as `sluice run` does by default)
    work = Path(tempfile.mkdtemp(prefix="sluice-bench-hook-"))
    exe = build_c(HERE / "udpblocks.c", work / "udpblocks")
    cg_path = cgroup2_mount()
    already = {
        "egress": bpfsys.cgroup_prog_ids(cg_path, bpfsys.CGROUP_INET_EGRESS),
        "ingress": bpfsys.cgroup_prog_ids(cg_path, bpfsys.CGROUP_INET_INGRESS),
    }
    if already["egress"] or already["ingress"]:
        print(f"bench_hook_cost: warning: programs already at the cgroup root: {already}", file=sys.stderr)
    out: dict[str, Any] = {
        "load": "64-byte UDP over loopback, one sender pinned to CPU 0, receiver never reads",
        "block_datagrams": args.block,
        "preexisting_cgroup_root_programs": already,
    }

    cg = os.open(cg_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        makers: dict[str, Callable[[], Part]] = {
            "egress": lambda: CgroupSkb(bpfsys.CGROUP_INET_EGRESS, cg),
            "ingress": lambda: CgroupSkb(bpfsys.CGROUP_INET_INGRESS, cg),
            "tp": ClassicTracepoint,
            "tp_btf": TpBtf,
        }
        parts: dict[str, Part] = {}
        for name in FAST_PARTS:
            if name == "both" and "both" in chosen:
                eg = parts.get("egress") or makers["egress"]()
                ig = parts.get("ingress") or makers["ingress"]()
                parts["both"] = Both(eg, ig)
            elif name in chosen:
                parts[name] = makers[name]()
        failed = 0
        dump: dict[str, list[Interval]] = {}
        if parts:
            sender = Sender(exe, args.block, work / "fast.txt")
            time.sleep(0.5)  # warm up
            try:
                intervals = fast_phase(parts, args.reps, args.period, args.seed)
            finally:
                rows = sender.stop()
            failed += sum(r[3] for r in rows)
            assign(rows, intervals)
            dump["fast"] = intervals
            out["fast"] = {"period_s": args.period, "reps": args.reps, **summarise(intervals, args.min_blocks)}
        if "sensor" in chosen:
            sender = Sender(exe, args.block, work / "sensor.txt")
            time.sleep(0.5)
            try:
                intervals, ready = sensor_phase(
                    work,
                    args.sensor_reps,
                    args.sensor_period,
                    args.settle,
                    cpus if args.sensor_cpus == "all" else others,
                )
            finally:
                rows = sender.stop()
            failed += sum(r[3] for r in rows)
            assign(rows, intervals)
            dump["sensor"] = intervals
            out["sensor_phase"] = {
                "period_s": args.sensor_period,
                "reps": args.sensor_reps,
                "sensor_cpus": sorted(cpus if args.sensor_cpus == "all" else others),
                "sensor_ready_s_median": round(statistics.median(ready), 2),
                **summarise(intervals, args.min_blocks),
            }
        out["failed_sends"] = failed
        if args.dump:
            args.dump.write_text(json.dumps({k: [asdict(i) for i in v] for k, v in dump.items()}))
    finally:
        os.close(cg)
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
