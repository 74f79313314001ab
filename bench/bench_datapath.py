#!/usr/bin/env python3
"""Data-path cost of the sensor: loopback TCP throughput and a cheap syscall,
with `sluice run` (default config) attached vs no sensor, in alternating
rounds on this machine. Prints medians and ratios; quote the ratios (the
machine is shared and noisy), not the absolute numbers.

Usage (root): .venv/bin/python bench/bench_datapath.py [--rounds N] [--seconds S]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import SLUICE, Sensor

GETPPID_C = r"""
#include <stdio.h>
#include <time.h>
#include <unistd.h>
#include <sys/syscall.h>
int main(void) {
    const long n = 5000000;
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (long i = 0; i < n; i++) syscall(SYS_getppid);
    clock_gettime(CLOCK_MONOTONIC, &b);
    printf("%.2f\n", ((b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec)) / n);
    return 0;
}
"""


class BpfTrace:
    PROG = "tracepoint:net:net_dev_queue { @[cgroup] = sum(args->len); }"

    def __enter__(self) -> BpfTrace:
        self.proc = subprocess.Popen(
            ["bpftrace", "-e", self.PROG], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
        )
        assert self.proc.stdout is not None
        for line in self.proc.stdout:  # "Attaching 1 probe..."
            if line.startswith("Attaching"):
                break
        time.sleep(0.5)
        return self

    def __exit__(self, *exc: object) -> None:
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:  # it has been seen to hang at exit on a loaded machine
            self.proc.kill()
            self.proc.communicate()


def build_getppid(out: Path) -> str:
    src, exe = out / "getppid.c", out / "getppid"
    src.write_text(GETPPID_C)
    subprocess.run(["gcc", "-O2", "-o", str(exe), str(src)], check=True)
    return str(exe)


def iperf(port: int, seconds: float) -> float:
    r = subprocess.run(
        ["iperf3", "-c", "127.0.0.1", "-p", str(port), "-t", str(seconds), "-l", "16K", "-J"],
        capture_output=True,
        text=True,
        check=True,
    )
    return float(json.loads(r.stdout)["end"]["sum_received"]["bits_per_second"]) / 1e9


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=3.0)
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench_datapath: run as root (it loads the sensor)", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="sluice-bench-"))
    getppid = build_getppid(work)
    port = 5201 + os.getpid() % 1000
    server = subprocess.Popen(["iperf3", "-s", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    res: dict[str, list[float]] = {
        k: []
        for k in ("gbps_off", "gbps_on", "gbps_bpftrace", "gbps_contained", "ns_off", "ns_on", "ns_args", "ready_s")
    }
    try:
        for i in range(args.rounds):
            # alternate the order so drift does not favour one side
            for on in (False, True) if i % 2 == 0 else (True, False):
                if on:
                    with Sensor(work) as s:
                        res["ready_s"].append(s.ready_s)
                        res["gbps_on"].append(iperf(port, args.seconds))
                        res["ns_on"].append(float(subprocess.run([getppid], capture_output=True, text=True).stdout))
                else:
                    res["gbps_off"].append(iperf(port, args.seconds))
                    res["ns_off"].append(float(subprocess.run([getppid], capture_output=True, text=True).stdout))
            # the floor for "any BPF at all": a bpftrace one-liner counting egress
            # bytes per cgroup per packet. bpftrace cannot attach cgroup_skb
            # programs, so it uses the per-packet net:net_dev_queue tracepoint.
            with BpfTrace():
                res["gbps_bpftrace"].append(iperf(port, args.seconds))
            # containment active: a node-wide block of a documentation address
            # (never contacted) makes every packet take the containment path's
            # three map lookups (isolated? blocked for its cgroup? node-wide?)
            with Sensor(work) as s:
                subprocess.run(
                    [SLUICE, "block", "192.0.2.1", "--reason", "bench", "-c", str(s.cfg)],
                    check=True,
                    capture_output=True,
                )
                res["gbps_contained"].append(iperf(port, args.seconds))
                # entries persist across sensor restarts: lift it, or the next
                # rounds' sensors would start with containment active
                subprocess.run(
                    [SLUICE, "release", "--destination", "192.0.2.1", "-c", str(s.cfg)], check=True, capture_output=True
                )
            # the documented opt-in: argv at sys_enter_execve (a syscall tracepoint)
            with Sensor(work, '[kernel]\nexec_args = "tracepoint"\n'):
                res["ns_args"].append(float(subprocess.run([getppid], capture_output=True, text=True).stdout))
    finally:
        server.terminate()
        shutil.rmtree(work, ignore_errors=True)
    med = {k: statistics.median(v) for k, v in res.items()}
    out = {
        "rounds": args.rounds,
        "iperf3_16k_gbps_median": {"no_sensor": round(med["gbps_off"], 2), "sensor": round(med["gbps_on"], 2)},
        "iperf3_throughput_ratio": round(med["gbps_on"] / med["gbps_off"], 3),
        "iperf3_bpftrace_floor_ratio": round(med["gbps_bpftrace"] / med["gbps_off"], 3),
        "iperf3_containment_active_ratio": round(med["gbps_contained"] / med["gbps_off"], 3),
        "getppid_ns_median": {"no_sensor": round(med["ns_off"], 1), "sensor": round(med["ns_on"], 1)},
        "getppid_added_ns": round(med["ns_on"] - med["ns_off"], 1),
        "getppid_ns_median_exec_args_tracepoint": round(med["ns_args"], 1),
        "getppid_added_ns_exec_args_tracepoint": round(med["ns_args"] - med["ns_off"], 1),
        "startup_to_ready_s_median": round(med["ready_s"], 2),
        "per_round": res,
    }
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
