#!/usr/bin/env python3
"""Event drain: can Sluice keep up, and does it count what it cannot?

1. User-space cost: raw records replayed through the real decoder and
   pipeline, events/s per kind on one core (no kernel involved).
2. Sustained load through the kernel: UDP connect()s at 20,000/s and execs
   at the highest rate this machine can generate, for 30 s each, with the
   real sensor attached: every event the kernel submitted must be handled,
   none dropped; the sensor's CPU time per event is reported.
3. Overload: a one-page ring buffer and a connect flood: losses must be
   counted exactly (kernel submitted + dropped == connect hook runs), and
   the sensor must keep working afterwards.

Usage (root): .venv/bin/python bench/bench_drain.py [--seconds 30]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import HERE, Sensor, build_c


def replay_rates() -> dict[str, float]:
    from emulation.records import connect_rec, exec_rec, sample_rec
    from sensor.attribution.cgroups import CgroupResolver
    from sensor.attribution.containers import Attributor
    from sensor.telemetry.pipeline import Pipeline, monotonic_to_wall_factory

    d = Path(tempfile.mkdtemp())
    (d / "docker" / ("a" * 64)).mkdir(parents=True)
    r = CgroupResolver(str(d))
    r.scan()
    cg = r.id_of("/docker/" + "a" * 64)
    p = Pipeline(Attributor(r, None), lambda _d: None, "h", False, monotonic_to_wall_factory())
    n = 50_000
    kinds = {
        "connect": [connect_rec(5_000_000 + i % 100, cg, f"10.0.{i % 200}.1", 443) for i in range(n)],
        "sample": [sample_rec(cg, f"10.0.{i % 50}.1", 443, os.urandom(64)) for i in range(n)],
        "exec": [exec_rec(5_000_000 + i, cg, filename=b"/bin/true", comm=b"true", ppid=1) for i in range(n // 5)],
    }
    out: dict[str, float] = {}
    for k, recs in kinds.items():
        t = time.perf_counter()
        for x in recs:
            p.handle_raw(x)
        out[k] = round(len(recs) / (time.perf_counter() - t))
    mix = kinds["connect"][:25_000] + kinds["sample"][:20_000] + kinds["exec"][:5_000]
    t = time.perf_counter()
    for x in mix:
        p.handle_raw(x)
    out["mix_50_40_10"] = round(len(mix) / (time.perf_counter() - t))
    return out


def counters(s: Sensor) -> dict[str, int]:
    st = s.status()
    return {**st["counters"], **{k: v for k, v in st["drops"].items()}}


# One generator is one cgroup: its fair share of events per window
# (kernel.event_quota_per_cgroup) would cap what these runs measure, the
# reader's throughput, so the quota is lifted here.
NO_QUOTA = "[kernel]\nevent_quota_per_cgroup = 10000000\n"


def sustained(work: Path, gen: str, kind: str, rate: int, seconds: float, procs: int = 1) -> dict[str, object]:
    with Sensor(work, NO_QUOTA) as s:
        ps = psutil.Process(s.proc.pid)  # type: ignore[union-attr]
        time.sleep(1.0)
        c0, cpu0 = counters(s), ps.cpu_times()
        args = [gen, kind, str(rate // procs), str(seconds)] + (["9"] if kind == "connect" else ["/bin/busybox"])
        gens = [subprocess.Popen(args, stdout=subprocess.PIPE, text=True) for _ in range(procs)]
        done = sum(int(g.communicate()[0].split()[0]) for g in gens)
        time.sleep(1.5)  # let the last events drain
        c1, cpu1 = counters(s), ps.cpu_times()
    ev = "connect" if kind == "connect" else "exec"
    submitted = c1[f"submitted_{ev}"] - c0[f"submitted_{ev}"]
    dropped = c1[f"dropped_{ev}"] - c0[f"dropped_{ev}"]
    handled = c1[ev] - c0[ev]
    cpu = (cpu1.user + cpu1.system) - (cpu0.user + cpu0.system)
    return {
        "generated": done,
        "achieved_rate": round(done / seconds),
        "kernel_submitted": submitted,
        "kernel_dropped": dropped,
        "handled": handled,
        "lost": submitted - handled,
        "sensor_cpu_seconds": round(cpu, 2),
        "sensor_cpu_share": round(cpu / seconds, 3),
        "events_per_sensor_cpu_second": round(handled / cpu) if cpu else None,
    }


def overload(work: Path, gen: str, seconds: float) -> dict[str, object]:
    with Sensor(work, NO_QUOTA + "ring_buffer_pages = 1\n") as s:
        time.sleep(0.5)
        c0 = counters(s)
        g = subprocess.run([gen, "connect", "200000", str(seconds), "9"], capture_output=True, text=True)
        done = int(g.stdout.split()[0])
        time.sleep(1.5)
        c1 = counters(s)
        # recovery: a few connects after the flood are all handled
        g2 = subprocess.run([gen, "connect", "100", "1", "9"], capture_output=True, text=True)
        time.sleep(1.5)
        c2 = counters(s)
        health_reports = s.status()["drops"]["total"]
    sub = c1["submitted_connect"] - c0["submitted_connect"]
    drop = c1["dropped_connect"] - c0["dropped_connect"]
    return {
        "generated": done,
        "kernel_submitted": sub,
        "kernel_dropped": drop,
        "hook_runs_minus_generated": sub + drop - done,
        "handled": c1["connect"] - c0["connect"],
        "after_flood_generated": int(g2.stdout.split()[0]),
        "after_flood_handled": c2["connect"] - c1["connect"],
        "after_flood_dropped": c2["dropped_connect"] - c1["dropped_connect"],
        "drops_reported_in_status": health_reports,
    }


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=30.0)
    a = ap.parse_args()
    if os.geteuid() != 0:
        print("bench_drain: run as root", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="sluice-drain-"))
    gen = build_c(HERE / "gen.c", work / "gen")
    res = {
        "replay_events_per_second_one_core": replay_rates(),
        "connect_20k_per_s": sustained(work, gen, "connect", 20_000, a.seconds),
        "exec_max_rate": sustained(work, gen, "exec", 5_000, a.seconds, procs=2),
        "overload_one_page_ring": overload(work, gen, 5.0),
    }
    print(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
