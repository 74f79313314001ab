#!/usr/bin/env python3
"""Cost of the sensor on the unix stream connect path, measured in the kernel.

Every connect(2) to a unix stream socket on the node runs two of the
sensor's programs: connect_unix (cgroup hook, sensor/kernel/unixconnect.py:
one record per connect, refusals of an isolated container's) and the BPF
LSM unix_stream_connect hook (bpf/socket.bpf.c: a connect INTO an isolated
container from outside it refused). The floor is an EMPTY BPF LSM program
(`r0 = 0; exit`) on the same LSM hook, attached beside the sensor's. Where
the kernel refuses BPF LSM programs (this project's test machines), there
is no floor and no LSM program: the output says so ("floor"), and the
figures are connect_unix's alone.

Load: bench/unixconns.c, connect and close in a loop against a forked
server that accepts and closes. Per round, alternating like
bench_bpf_cost.py: with bpf_stats OFF, connects/s with no program, with the
empty program alone, with `sluice run` (default config) alone, and with the
sensor while some containment entry exists (a node-wide block of
198.18.0.1, a test address: the LSM program then walks the listener's
cgroup and its ancestors instead of stopping at its first map read); with
bpf_stats ON, the sensor and the empty program together, each program's ns
per run over the same connects, containment off and on.

Usage (root): .venv/bin/python bench/bench_unix_connect.py [--rounds 3] [--seconds 3]
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
from functools import partial
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench_bpf_cost import bpf_stats, process_progs, prog_facts, prog_fdinfo
from common import HERE, SLUICE, Sensor, build_c

from sensor.kernel import bpfsys, btf

EMPTY_LSM = bytes([0xB7, 0, 0, 0, 0, 0, 0, 0, 0x95, 0, 0, 0, 0, 0, 0, 0])  # r0 = 0; exit
FLOOR = "FLOOR (empty LSM)"
BLOCKED = "198.18.0.1"


class LsmFloor:
    """The empty program on bpf_lsm_unix_stream_connect (detached when
    closed); nothing where the kernel refuses BPF LSM programs (`why`)."""

    why = ""

    def __enter__(self) -> LsmFloor:
        hook = (btf.KIND_FUNC, btf.UNIX_INTO_HOOK)
        found = btf.find({hook})
        self.fd = self.link = -1
        try:
            self.fd = bpfsys.prog_load(
                bpfsys.BPF_PROG_TYPE_LSM, EMPTY_LSM, "sl_floor", bpfsys.LSM_MAC, found[hook].type_id
            )
            self.link = bpfsys.raw_tracepoint_open(self.fd)
        except bpfsys.BpfError as e:
            LsmFloor.why = f"the kernel refused an empty BPF LSM program ({e.strerror})"
            if self.fd >= 0:
                os.close(self.fd)
            self.fd = -1
        return self

    def progs(self) -> dict[int, dict[str, int]]:
        info = prog_fdinfo(os.getpid(), self.fd) if self.fd >= 0 else None
        return {info["prog_id"]: info} if info else {}

    def __exit__(self, *exc: object) -> None:
        for fd in (self.link, self.fd):
            if fd >= 0:
                os.close(fd)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=3.0)
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench_unix_connect: run as root (it loads BPF programs)", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="sluice-bench-unix-"))
    exe = build_c(HERE / "unixconns.c", work / "unixconns")
    path = str(work / "l.sock")

    def load() -> float:
        r = subprocess.run([exe, str(args.seconds), path], capture_output=True, text=True, check=True)
        return float(r.stdout)

    figures: dict[str, list[float]] = {"none": [], "floor": [], "sensor": [], "sensor_containing": []}
    cost: dict[str, dict[str, list[float]]] = {"off": {}, "on": {}}
    names: dict[int, str] = {}

    def timed(holders: list[Any], floor_id: int, into: dict[str, list[float]]) -> None:
        before: dict[int, dict[str, int]] = {}
        for h in holders:
            before.update(h())
        load()
        for h in holders:
            for pid_, info in h().items():
                name = FLOOR if pid_ == floor_id else names.setdefault(pid_, prog_facts(pid_)["name"])
                d_cnt = info["run_cnt"] - before.get(pid_, {}).get("run_cnt", 0)
                d_ns = info["run_time_ns"] - before.get(pid_, {}).get("run_time_ns", 0)
                if d_cnt:
                    into.setdefault(name, []).append(d_ns / d_cnt)

    def none() -> None:
        figures["none"].append(load())
        with LsmFloor():
            figures["floor"].append(load())

    try:
        with bpf_stats(False):
            none()
            for _i in range(args.rounds):
                with Sensor(work) as s:
                    assert s.proc
                    figures["sensor"].append(load())
                    holders: list[Any] = [partial(process_progs, s.proc.pid)]
                    with LsmFloor() as fl, bpf_stats(True):
                        floor_id = next(iter(fl.progs()), -1)
                        timed([*holders, fl.progs], floor_id, cost["off"])
                    subprocess.run([SLUICE, "block", BLOCKED, "-c", str(s.cfg)], check=True, capture_output=True)
                    figures["sensor_containing"].append(load())
                    with LsmFloor() as fl, bpf_stats(True):
                        floor_id = next(iter(fl.progs()), -1)
                        timed([*holders, fl.progs], floor_id, cost["on"])
                    subprocess.run(
                        [SLUICE, "release", "--destination", BLOCKED, "-c", str(s.cfg)], check=True, capture_output=True
                    )
                none()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    med = {k: statistics.median(v) for k, v in figures.items()}
    out: dict[str, Any] = {
        "rounds": args.rounds,
        "seconds_per_load": args.seconds,
        "unit": "connections/s",
        "median": {k: round(v, 1) for k, v in med.items()},
        "ratio_floor_vs_none": round(med["floor"] / med["none"], 3),
        "floor": LsmFloor.why or "loaded",
        "ratio_sensor_vs_none": round(med["sensor"] / med["none"], 3),
        "ratio_sensor_containing_vs_none": round(med["sensor_containing"] / med["none"], 3),
        "ns_per_run": {
            state: {name: round(statistics.median(v), 1) for name, v in sorted(progs.items())}
            for state, progs in (("containment_off", cost["off"]), ("containment_on", cost["on"]))
        },
        "per_round": figures,
    }
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
