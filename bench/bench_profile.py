#!/usr/bin/env python3
"""Where the sensor's Python time goes under load: py-spy samples the real
sensor while UDP connects arrive at 20,000/s plus a TCP stream (samples),
and the self time per function is printed, largest first. Usage (root):
    .venv/bin/python bench/bench_profile.py [--seconds 10]
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import HERE, Sensor, build_c


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=10.0)
    a = ap.parse_args()
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if os.geteuid() != 0 or not os.path.exists(spy):
        print("bench_profile: run as root with py-spy installed (pip install py-spy)", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="sluice-prof-"))
    gen = build_c(HERE / "gen.c", work / "gen")
    raw = work / "stacks.txt"
    with Sensor(work) as s:
        assert s.proc is not None
        rec = subprocess.Popen(
            [
                spy,
                "record",
                "--pid",
                str(s.proc.pid),
                "--duration",
                str(int(a.seconds)),
                "--format",
                "raw",
                "--output",
                str(raw),
                "--rate",
                "200",
                "--nonblocking",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(1)
        subprocess.run([gen, "connect", "20000", str(a.seconds - 2), "9"], capture_output=True)
        rec.wait(a.seconds + 30)
    self_time: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        frames = stack.split(";")
        leaf = frames[-1]
        count = int(n)
        total += count
        self_time[leaf.split(" (")[0] + " (" + leaf.split(" (")[-1] if " (" in leaf else leaf] += count
    top = [{"function": f, "share": round(c / total, 3)} for f, c in self_time.most_common(15)]
    print(json.dumps({"samples": total, "top_self_time": top}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
