#!/usr/bin/env python3
"""Sensor memory: resident set while tracking 1,000 live containers, and
over 2,000 container create/destroy cycles (it must stay flat).

Containers are real cgroups under the cgroup2 mount named as docker names
them (docker/<64 hex>), each with a process that sends a UDP packet: the
sensor sees cgroup_mkdir/rmdir, attributes egress, and tracks them as it
would docker's (no engine: id-only metadata). Usage (root):
    .venv/bin/python bench/bench_memory.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from common import HERE, Sensor, build_c

from sensor.attribution.cgroups import find_cgroup2_mount


def rss_mb(s: Sensor) -> float:
    return round(float(s.status()["memory_kb"]["VmRSS"]) / 1024, 1)


def main() -> int:
    if os.geteuid() != 0:
        print("bench_memory: run as root", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="sluice-mem-"))
    holder = build_c(HERE / "holder.c", work / "holder")
    base = find_cgroup2_mount()
    out: dict[str, object] = {}
    with Sensor(work, "window_seconds = 1.0\n" + f'[runtime]\ndocker_socket = "{work}/no-docker.sock"\n') as s:
        time.sleep(2)
        out["idle_rss_mb"] = rss_mb(s)
        h = subprocess.Popen(
            [holder, "hold", base, "1000", "0"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert h.stdout is not None and h.stdout.readline().strip() == "ready"
        deadline = time.monotonic() + 60
        while s.status()["containers_tracked"] < 1000 and time.monotonic() < deadline:
            time.sleep(0.5)
        time.sleep(3)  # a few windows with 1,000 containers' flows
        st = s.status()
        out["tracked"] = st["containers_tracked"]
        out["rss_mb_1000_live"] = round(st["memory_kb"]["VmRSS"] / 1024, 1)
        h.communicate("")  # release them
        time.sleep(2)
        samples = []
        for batch in range(4):
            subprocess.run([holder, "churn", base, "500", str(10_000 + batch * 500)], check=True, capture_output=True)
            time.sleep(2)
            samples.append(rss_mb(s))
        out["rss_mb_after_each_500_cycles"] = samples
        out["growth_mb_over_2000_cycles"] = round(samples[-1] - samples[0], 1)
        st = s.status()
        out["tracked_after_churn"] = st["containers_tracked"]
        out["drops"] = st["drops"]["total"]
        out["cgroup_events"] = st["counters"]["cgroup"]
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
