#!/usr/bin/env python3
"""Sensor memory under abuse (issue 10): containers that run hundreds of
processes with ~1 MB command lines and churn through destinations (UDP to
tens of thousands of loopback addresses, DNS queries for thousands of
random subdomains). The sensor's resident set must stay flat (< +20 MB).

Containers are real cgroups under the cgroup2 mount named as docker names
them (docker/<64 hex>); their processes are real (sh with a ~1 MB argv)
and their packets real, to loopback only. Usage (root):
    .venv/bin/python bench/bench_memory_abuse.py [--rounds N]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import struct
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from common import Sensor

from sensor.attribution.cgroups import find_cgroup2_mount

CONTAINERS = 4
PROCS_PER_ROUND = 100  # per container: 400 processes with ~1 MB command lines each round
ARG = "A" * (128 * 1024 - 1)  # MAX_ARG_STRLEN is 128 KiB
ARGS = [ARG] * 8  # ~1 MiB of command line
DESTINATIONS_PER_ROUND = 20_000  # per container
DNS_NAMES_PER_ROUND = 3_000  # per container


def rss_mb(s: Sensor) -> float:
    return round(float(s.status()["memory_kb"]["VmRSS"]) / 1024, 1)


def _enter(cgdir: str) -> None:
    with open(f"{cgdir}/cgroup.procs", "w") as f:
        f.write("0")


def _dns_query(name: str) -> bytes:
    q = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    return struct.pack("!HHHHHH", random.getrandbits(16), 0x0100, 1, 0, 0, 0) + q + b"\0\1\0\1"


def _churn(cgdir: str, round_no: int, n_dest: int, n_dns: int) -> None:
    """In the container's cgroup: UDP to n_dest distinct loopback addresses,
    then n_dns DNS queries for random subdomains (to 127.0.0.53)."""
    pid = os.fork()
    if pid:
        os.waitpid(pid, 0)
        return
    try:
        _enter(cgdir)
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        base = (127 << 24) + (round_no << 16)
        for i in range(n_dest):
            a = base + 1 + i
            s.sendto(b"x" * 32, (socket.inet_ntoa(struct.pack("!I", a)), 9))
        for _ in range(n_dns):
            sub = f"{random.getrandbits(128):032x}"
            s.sendto(_dns_query(f"{sub}.r{round_no}.exfil.test"), ("127.0.0.53", 53))
    finally:
        os._exit(0)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=4)
    a = ap.parse_args()
    if os.geteuid() != 0:
        print("bench_memory_abuse: run as root", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="sluice-memab-"))
    base = find_cgroup2_mount()
    os.makedirs(f"{base}/docker", exist_ok=True)
    cgs = [f"{base}/docker/{0x5200000000 + i:064x}" for i in range(CONTAINERS)]
    for d in cgs:
        os.makedirs(d, exist_ok=True)
    out: dict[str, Any] = {"containers": CONTAINERS, "cmdline_bytes": sum(len(x) + 1 for x in ARGS)}
    procs: list[subprocess.Popen[bytes]] = []
    try:
        with Sensor(work, "window_seconds = 1.0\n" + f'[runtime]\ndocker_socket = "{work}/no-docker.sock"\n') as s:
            time.sleep(2)
            out["idle_rss_mb"] = rss_mb(s)
            samples = []
            for r in range(a.rounds):
                t0 = time.monotonic()
                for d in cgs:
                    for _ in range(PROCS_PER_ROUND):
                        procs.append(
                            subprocess.Popen(
                                ["/bin/sh", "-c", "sleep 6", "sh", *ARGS],
                                preexec_fn=partial(_enter, d),
                                stdout=subprocess.DEVNULL,
                            )
                        )
                    _churn(d, r + 1, DESTINATIONS_PER_ROUND, DNS_NAMES_PER_ROUND)
                out.setdefault("round_seconds", []).append(round(time.monotonic() - t0, 1))
                for p in procs:
                    p.wait()
                procs.clear()
                time.sleep(3)  # the windows holding all that have closed
                mem = s.status()["memory_kb"]
                samples.append(round(mem["VmRSS"] / 1024, 1))
                out.setdefault("rss_anon_mb_after_each_round", []).append(round(mem.get("RssAnon", 0) / 1024, 1))
                out.setdefault("rss_file_mb_after_each_round", []).append(round(mem.get("RssFile", 0) / 1024, 1))
            st = s.status()
            out["rss_mb_after_each_round"] = samples
            out["growth_mb_from_first_round"] = round(samples[-1] - samples[0], 1)
            out["growth_mb_from_idle"] = round(samples[-1] - out["idle_rss_mb"], 1)
            c = st["counters"]
            out["execs"] = c.get("exec")
            out["cmdline_truncated"] = c.get("cmdline_truncated")
            out["view_events_capped"] = c.get("view_events_capped")
            out["state_evictions"] = (st.get("detection") or {}).get("state_evictions")
            out["flow_state_evictions"] = c.get("flow_state_evictions")
            out["memory_trim"] = st.get("memory_trim")
            out["drops_total"] = st["drops"]["total"]
    finally:
        for p in procs:
            p.kill()
        for d in cgs:
            try:
                os.rmdir(d)
            except OSError:
                pass
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
