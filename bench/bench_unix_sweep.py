#!/usr/bin/env python3
"""What the per-window unix sweep of an isolated container costs.

Where the unix LSM programs do not load (bpf/socket.bpf.c: this project's
test machines), the containment service sweeps every isolated container's
unix connections once a window (sensor/response/service.py, recheck): it
freezes the container (cgroup v2 freezer), dumps the unix sockets of its
network namespaces (sock_diag), walks its tasks' descriptors, cuts any
connection to a peer outside it, and thaws it. This times that sweep as
the service runs it (ContainmentService.cut_unix's steps, nothing cut) on
real containers of 1, 16 and 64 processes each holding a unix socket pair;
the container is frozen for the whole sweep (its first part is the wait
for the freeze to complete). And the per-window pass's first step, which
reads unfrozen whether there is anything to cut (read_only): with nothing
to cut, the only cost of a window.

Usage (root): .venv/bin/python bench/bench_unix_sweep.py [--sweeps 200]
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from emulation.lab import DockerCLI, PrivateEngine, build_image
from sensor.attribution.netmap import cgroup_tasks
from sensor.response import unixpeers
from sensor.response.freeze import frozen
from sensor.response.service import _in_netns, _tasks_per_netns

IMAGE = "sluice-bench-sweep:latest"
# each process holds a socketpair (perl's base library)
HOLDER = "perl -MSocket -e 'socketpair(my $a, my $b, AF_UNIX, SOCK_STREAM, 0) or die; sleep 600'"


def _cgroup_dir(cid: str) -> str:
    for root in ("/sys/fs/cgroup/unified", "/sys/fs/cgroup"):
        for d in (f"{root}/docker/{cid}", f"{root}/system.slice/docker-{cid}.scope"):
            if os.path.isfile(f"{d}/cgroup.freeze"):
                return d
    raise SystemExit(f"bench_unix_sweep: no cgroup v2 directory with cgroup.freeze for {cid}")


def sweep(cgroup_dir: str) -> tuple[float, float, int]:
    """One sweep as ContainmentService.cut_unix runs it: (seconds in all,
    of which waiting for the freeze to complete, connections cut). The
    container is frozen from the first to the end of the sweep."""
    t0 = time.monotonic()
    cut = 0
    with frozen(cgroup_dir) as not_frozen:
        t1 = time.monotonic()
        assert not not_frozen, not_frozen
        tasks = cgroup_tasks(cgroup_dir) or []
        for ino, in_ns in _tasks_per_netns(tasks).items():
            got = _in_netns(ino, in_ns, lambda t: unixpeers.cut(tasks, f"/proc/{t}/ns/net", False), acts=True)
            cut += len(got[0]) if got else 0
    return time.monotonic() - t0, t1 - t0, cut


def read_only(cgroup_dir: str) -> float:
    """The per-window pass's first step: is there anything to cut? (read
    unfrozen; the freeze and cut above only when there is). Seconds."""
    t0 = time.monotonic()
    tasks = cgroup_tasks(cgroup_dir) or []
    for ino, in_ns in _tasks_per_netns(tasks).items():
        _in_netns(ino, in_ns, lambda t: unixpeers.pending(tasks, f"/proc/{t}/ns/net", False))
    return time.monotonic() - t0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sweeps", type=int, default=200)
    a = ap.parse_args()
    if os.geteuid() != 0:
        print("bench_unix_sweep: run as root", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="sluice-sweep-"))
    engine = PrivateEngine(work / "docker")
    docker = ["docker", "-H", f"unix://{engine.sock}"]
    out: dict[str, Any] = {"sweeps": a.sweeps}
    try:
        engine.start()
        build_image(DockerCLI(engine.sock), work, tags=[IMAGE], perl=True)
        for n in (1, 16, 64):
            script = " & ".join([HOLDER] * n) + " & wait"
            cid = subprocess.run(
                [*docker, "run", "-d", "--network", "none", IMAGE, "sh", "-c", script],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.strip()
            try:
                d = _cgroup_dir(cid)
                deadline = time.monotonic() + 30
                while len(cgroup_tasks(d) or []) < n + 1 and time.monotonic() < deadline:
                    time.sleep(0.1)
                took, held, cut = [], [], 0
                for _ in range(a.sweeps):
                    t, f, c = sweep(d)
                    took.append(t)
                    held.append(f)
                    cut += c
                took.sort()
                reads = sorted(read_only(d) for _ in range(a.sweeps))
                out[f"{n}_processes"] = {
                    "tasks": len(cgroup_tasks(d) or []),
                    "sweep_ms_median": round(statistics.median(took) * 1000, 2),
                    "sweep_ms_p95": round(took[int(len(took) * 0.95) - 1] * 1000, 2),
                    "freeze_wait_ms_median": round(statistics.median(held) * 1000, 2),
                    "read_only_ms_median": round(statistics.median(reads) * 1000, 2),
                    "read_only_ms_p95": round(reads[int(len(reads) * 0.95) - 1] * 1000, 2),
                    "connections_cut": cut,
                }
            finally:
                subprocess.run([*docker, "rm", "-f", cid], capture_output=True)
    finally:
        subprocess.run([*docker, "rmi", IMAGE], capture_output=True)
        engine.stop()
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
