#!/usr/bin/env python3
"""Container metadata lookup at container start: what the sensor's drain
loop waits for when a new container's cgroup appears.

The sensor looks a container up when its cgroup is created, which is while
the engine is still starting it. `GET /containers/<id>/json` (inspect) waits
for the engine's per-container lock, held for the whole start; the
container list filtered by id (what the sensor uses) is served from the
engine's in-memory view. For each of N real `docker run`s this waits for
the cgroup directory, then times both calls, alternating which goes first.
Usage (root): .venv/bin/python bench/bench_metadata.py [-n 30] [--docker-socket PATH]
Without --docker-socket it runs its own private dockerd (as the tests do).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from emulation.lab import DockerCLI, PrivateEngine, build_image
from sensor.attribution.cgroups import find_cgroup2_mount
from sensor.attribution.docker_api import DockerClient

IMAGE = "sluice-bench/busybox:latest"


def _container_dirs(base: Path) -> set[str]:
    found = set()
    for parent in (base / "docker", base / "system.slice"):
        if parent.is_dir():
            found |= {
                p.name for p in parent.iterdir() if len(p.name.removeprefix("docker-").removesuffix(".scope")) == 64
            }
    return found


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--docker-socket", help="an engine to use (default: a private dockerd of its own)")
    ap.add_argument("-n", type=int, default=30)
    a = ap.parse_args()
    if os.geteuid() != 0:
        print("bench_metadata: run as root", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="sluice-meta-"))
    engine = PrivateEngine(work / "docker") if a.docker_socket is None else None
    sock = engine.sock if engine is not None else a.docker_socket
    docker = ["docker", "-H", f"unix://{sock}"]
    client = DockerClient(sock, timeout=30)
    base = Path(find_cgroup2_mount())
    times: dict[str, list[float]] = {"inspect": [], "list": []}
    calls = {"inspect": client.get, "list": client.container_summary}
    try:
        if engine is not None:
            engine.start()
        build_image(DockerCLI(sock), work, tags=[IMAGE])
        for i in range(a.n):
            before = _container_dirs(base)
            p = subprocess.Popen(
                [*docker, "run", "-d", "--rm", "--network", "none", IMAGE, "sleep", "0.2"], stdout=subprocess.DEVNULL
            )
            deadline = time.monotonic() + 30
            new: list[str] = []
            while not new and time.monotonic() < deadline:
                new = sorted(_container_dirs(base) - before)
                time.sleep(0.002)
            if not new:
                sys.exit(
                    "bench_metadata: no container cgroup appeared (is the engine's cgroup under the cgroup2 mount?)"
                )
            cid = new[0].removeprefix("docker-").removesuffix(".scope")
            order = ("inspect", "list") if i % 2 == 0 else ("list", "inspect")
            for name in order:
                arg = f"/containers/{cid}/json" if name == "inspect" else cid
                t = time.monotonic()
                calls[name](arg)
                times[name].append(time.monotonic() - t)
            p.wait()
    finally:
        subprocess.run([*docker, "rmi", IMAGE], capture_output=True)
        if engine is not None:
            engine.stop()
        shutil.rmtree(work, ignore_errors=True)
    out: dict[str, Any] = {
        name: {"median_ms": round(statistics.median(v) * 1000, 1), "max_ms": round(max(v) * 1000, 1)}
        for name, v in times.items()
    }
    out["ratio_median_inspect_over_list"] = round(
        statistics.median(times["inspect"]) / statistics.median(times["list"]), 1
    )
    out["n"] = a.n
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
