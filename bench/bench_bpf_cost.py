#!/usr/bin/env python3
"""Per-packet kernel cost of the sensor's programs, measured in the kernel.

`kernel.bpf_stats_enabled` makes the kernel time every BPF program run
(run_time_ns, run_cnt per program). The floor is an EMPTY cgroup_skb egress
program (`return 1`) attached at the cgroup v2 root, where sl_egress is: no
program on that hook can cost less per packet. Loads, each over loopback:

- tcp16k: iperf3, 16 KiB writes (GSO super-packets: few, large packets);
- udp64:  iperf3 -u -b 0 -l 64 (as many 64-byte datagrams as it can send);
- conns:  many short TCP connections (bench/conns.c: connect, 32-byte
  request and answer, close), i.e. connect hooks and socket starts;
- udp64u: 64-byte sendto() on an unconnected socket to one destination
  (bench/udpsend.c: a resolver, syslog or statsd client), which adds the
  cgroup sendmsg4 hook to every datagram;
- udp64m: the same to 256 destinations in turn (a DNS server answering its
  clients: every send a different destination).

Per round, the order of "none" and "sensor" alternating between rounds:
  1. bpf_stats OFF: no program / the empty program alone / `sluice run`
     (default config) alone: packet rate and throughput, so the ratios are
     taken as production runs (bpf_stats adds two clock reads per run);
  2. bpf_stats ON: `sluice run` AND the empty program attached together, so
     the floor and every sensor program are timed over the same packets in
     the same seconds: ns per run and runs per second of each program.
Medians over rounds. The machine is shared: quote the same-run ratios.

Usage (root): .venv/bin/python bench/bench_bpf_cost.py [--rounds 3] [--seconds 3] [--loads udp64,...]
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
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from common import HERE, Sensor, build_c

from sensor.kernel import bpfsys

STATS_SYSCTL = Path("/proc/sys/kernel/bpf_stats_enabled")
FLOOR_SRC = "int sl_floor(struct __sk_buff *skb) { return 1; }"


def cgroup2_mount() -> str:
    """The cgroup v2 mount point, from /proc/self/mountinfo (never assumed)."""
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        if right.split(" ", 1)[0] == "cgroup2":
            return left.split(" ")[4]
    raise RuntimeError("no cgroup2 mount in /proc/self/mountinfo")


def prog_fdinfo(pid: int | str, fd: int | str) -> dict[str, int] | None:
    """prog_id, run_time_ns, run_cnt, verified_insns of a BPF program fd."""
    try:
        text = Path(f"/proc/{pid}/fdinfo/{fd}").read_text()
    except OSError:
        return None
    out = {}
    for line in text.splitlines():
        k, _, v = line.partition(":")
        if k in ("prog_id", "run_time_ns", "run_cnt", "verified_insns"):
            out[k] = int(v.strip())
    return out if "prog_id" in out else None


def process_progs(pid: int) -> dict[int, dict[str, int]]:
    """Every BPF program a process holds open, by program id."""
    out: dict[int, dict[str, int]] = {}
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") != "anon_inode:bpf-prog":
                continue
        except OSError:
            continue
        info = prog_fdinfo(pid, fd)
        if info:
            out[info["prog_id"]] = info
    return out


def prog_facts(prog_id: int) -> dict[str, Any]:
    r = subprocess.run(["bpftool", "prog", "show", "id", str(prog_id), "--json"], capture_output=True, text=True)
    d = json.loads(r.stdout) if r.returncode == 0 else {}
    return {
        "name": d.get("name", f"id{prog_id}"),
        "bytes_jited": d.get("bytes_jited"),
        "bytes_xlated": d.get("bytes_xlated"),
    }


@contextmanager
def bpf_stats(on: bool) -> Iterator[None]:
    old = STATS_SYSCTL.read_text().strip()
    STATS_SYSCTL.write_text("1" if on else "0")
    try:
        yield
    finally:
        STATS_SYSCTL.write_text(old)


class Floor:
    """The empty cgroup_skb egress program, attached at the cgroup v2 root
    through a bpf_link (detached when the link fd closes)."""

    def __enter__(self) -> Floor:
        from bcc import BPF  # Debian python3-bpfcc

        self.b = BPF(text=FLOOR_SRC.encode())
        self.fn = self.b.load_func(b"sl_floor", BPF.CGROUP_SKB, None, bpfsys.CGROUP_INET_EGRESS)
        self.cg = os.open(cgroup2_mount(), os.O_RDONLY | os.O_DIRECTORY)
        self.link = bpfsys.link_create(self.fn.fd, self.cg, bpfsys.CGROUP_INET_EGRESS)
        return self

    def progs(self) -> dict[int, dict[str, int]]:
        info = prog_fdinfo(os.getpid(), self.fn.fd)
        assert info
        return {info["prog_id"]: info}

    def __exit__(self, *exc: object) -> None:
        os.close(self.link)
        os.close(self.cg)
        self.b.cleanup()


# --- loads: each returns its figure (higher is better) ------------------------

# iperf3 client on CPU 0, server on CPU 1: whether the two share a core
# otherwise decides the rate (seen: 160k vs 280k datagrams/s, bimodal).
PIN = ("-A", "0,1") if (os.cpu_count() or 1) >= 2 else ()


def iperf_tcp16k(port: int, seconds: float) -> float:
    r = subprocess.run(
        ["iperf3", "-c", "127.0.0.1", "-p", str(port), "-t", str(seconds), "-l", "16K", "-J", *PIN],
        capture_output=True,
        text=True,
        check=True,
    )
    return float(json.loads(r.stdout)["end"]["sum_received"]["bits_per_second"]) / 1e9  # Gbit/s


def iperf_udp64(port: int, seconds: float) -> float:
    r = subprocess.run(
        ["iperf3", "-c", "127.0.0.1", "-p", str(port), "-t", str(seconds), "-u", "-b", "0", "-l", "64", "-J", *PIN],
        capture_output=True,
        text=True,
        check=True,
    )
    s = json.loads(r.stdout)["end"]["sum_sent"]
    return float(s["packets"]) / float(s["seconds"])  # datagrams sent per second


def udp_sendto(exe: str, port: int, seconds: float, mode: tuple[str, ...]) -> float:
    r = subprocess.run(
        ["taskset", "-c", "0", exe, str(seconds), str(port), *mode], capture_output=True, text=True, check=True
    )
    return float(r.stdout.split()[0])  # datagrams sent per second


def short_conns(exe: str, port: int, seconds: float) -> float:
    r = subprocess.run([exe, str(seconds), str(port)], capture_output=True, text=True, check=True)
    return float(r.stdout.split()[0])  # connections per second


def load_runners(work: Path, base: int, seconds: float) -> dict[str, Callable[[], float]]:
    """Each load (the module docstring says what each is) as a call that
    runs it for `seconds` and returns its rate; iperf3's server listens on
    port `base`, the other loads use ports above it. Builds the C clients
    into `work`."""
    conns = build_c(HERE / "conns.c", work / "conns")
    udpsend = build_c(HERE / "udpsend.c", work / "udpsend")
    return {
        "tcp16k": lambda: iperf_tcp16k(base, seconds),
        "udp64": lambda: iperf_udp64(base, seconds),
        "conns": lambda: short_conns(conns, base + 1500, seconds),
        "udp64u": lambda: udp_sendto(udpsend, base + 3000, seconds, ("unconnected",)),
        "udp64m": lambda: udp_sendto(udpsend, base + 3300, seconds, ("many", "256")),
    }


LOADS = ("tcp16k", "udp64", "conns", "udp64u", "udp64m")
UNITS = {
    "tcp16k": "Gbit/s",
    "udp64": "packets/s",
    "conns": "connections/s",
    "udp64u": "packets/s",
    "udp64m": "packets/s",
}


def measure_progs(
    load: Callable[[], float], holders: list[Callable[[], dict[int, dict[str, int]]]]
) -> tuple[float, float, dict[int, dict[str, int]], dict[int, dict[str, int]]]:
    before: dict[int, dict[str, int]] = {}
    for h in holders:
        before.update(h())
    t0 = time.monotonic()
    figure = load()
    elapsed = time.monotonic() - t0
    after: dict[int, dict[str, int]] = {}
    for h in holders:
        after.update(h())
    return figure, elapsed, before, after


# The rate targets (issue 13: 64-byte UDP >= 0.98 of none) read through
# throughput are noise here: the empty program alone reads 0.80-1.38 of
# none between runs. The same target as a budget in time: with the sender
# saturating its CPU, 0.98 of the rate leaves 1/0.98 - 1 = 2.04 % of the
# time one datagram takes with no program for everything attached. Loopback
# receives in the sender's softirq, so every program's time counts:
# egress, ingress and the per-send hooks. The programs' time per datagram
# comes from bpf_stats (low noise; each run includes the stats' own two
# clock reads, so the predicted ratio is on the pessimistic side).
RATE_TARGET = 0.98
PER_DATAGRAM = ("udp64", "udp64u", "udp64m")


def rate_budget(ld: str, med: dict[str, float], progs: dict[str, dict[str, float]]) -> dict[str, Any]:
    if ld not in PER_DATAGRAM or not med.get("none"):
        return {}
    ns_none = 1e9 / med["none"]  # one datagram's time on the saturated sender, no program
    floor = progs.get("FLOOR (empty cgroup_skb)", {})
    # datagrams/s of the timed run: the floor ran once per datagram
    rate = floor.get("runs_per_s") or med["none"]
    per_datagram = {k: v["ns_per_run"] * v["runs_per_s"] / rate for k, v in progs.items()}
    floor_ns = per_datagram.pop("FLOOR (empty cgroup_skb)", 0.0)
    sensor_ns = sum(per_datagram.values())
    return {
        "ns_per_datagram_none": round(ns_none, 1),
        "budget_ns_for_target": round(ns_none * (1 / RATE_TARGET - 1), 1),
        "sensor_program_ns_per_datagram": round(sensor_ns, 1),
        "floor_ns_per_datagram": round(floor_ns, 1),
        "predicted_ratio_sensor_vs_none": round(ns_none / (ns_none + sensor_ns), 3),
        "predicted_ratio_floor_vs_none": round(ns_none / (ns_none + floor_ns), 3),
    }


# Two runs without the sensor that differ by more than this bracket a
# switch of the machine's speed state: that round's ratio is not taken.
BRACKET_SPREAD = 0.08


def bracketed(sensor: list[float], none: list[float]) -> dict[str, Any]:
    """Each sensor run against the mean of the runs without it just before
    and just after; the median over rounds whose brackets agree."""
    ratios, unstable = [], 0
    for i, v in enumerate(sensor):
        a, b = none[i], none[i + 1]
        if abs(a - b) > BRACKET_SPREAD * max(a, b):
            unstable += 1
            continue
        ratios.append(v / ((a + b) / 2))
    return {
        "ratio_sensor_vs_none_bracketed": round(statistics.median(ratios), 3) if ratios else None,
        "rounds_bracket_unstable": unstable,
    }


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--loads", default=",".join(LOADS), help=f"comma-separated subset of {','.join(LOADS)}")
    args = ap.parse_args()
    chosen = tuple(ld for ld in LOADS if ld in args.loads.split(","))
    if not chosen:
        print(f"bench_bpf_cost: --loads must name some of {', '.join(LOADS)}", file=sys.stderr)
        return 2
    if os.geteuid() != 0:
        print("bench_bpf_cost: run as root (it loads BPF programs)", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="sluice-bench-cost-"))
    base = 5201 + os.getpid() % 1000
    server = subprocess.Popen(["iperf3", "-s", "-p", str(base)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    loads = load_runners(work, base, args.seconds)
    # figures[load][setup] -> per-round figure; cost[load][prog] -> per-round (ns/run, runs/s)
    figures: dict[str, dict[str, list[float]]] = {ld: {"none": [], "floor": [], "sensor": []} for ld in chosen}
    cost: dict[str, dict[str, list[tuple[float, float]]]] = {ld: {} for ld in chosen}
    names: dict[int, dict[str, Any]] = {}
    verified: dict[str, int] = {}
    load_avg: list[float] = []

    def run_plain(setup: str) -> None:
        for ld in chosen:
            figures[ld][setup].append(loads[ld]())

    def run_none() -> None:
        run_plain("none")
        with Floor():
            run_plain("floor")

    try:
        with bpf_stats(False):
            # every sensor run between two runs without it: the machine
            # switches between speed states for minutes at a time (seen:
            # 262k and 362k datagrams/s with no program, no steal time), so
            # a ratio is taken against the runs on either side
            run_none()
            for _i in range(args.rounds):
                load_avg.append(os.getloadavg()[0])
                with Sensor(work) as s:
                    assert s.proc
                    pid = s.proc.pid
                    run_plain("sensor")
                    holders = [partial(process_progs, pid)]
                    with Floor() as fl, bpf_stats(True):
                        for ld in chosen:
                            _, el, b, a = measure_progs(loads[ld], [*holders, fl.progs])
                            floor_id = next(iter(fl.progs()))
                            for pid_, info in a.items():
                                if pid_ not in names:
                                    names[pid_] = prog_facts(pid_)
                                name = "FLOOR (empty cgroup_skb)" if pid_ == floor_id else names[pid_]["name"]
                                verified[name] = info.get("verified_insns", 0)
                                d_cnt = info["run_cnt"] - b.get(pid_, {}).get("run_cnt", 0)
                                d_ns = info["run_time_ns"] - b.get(pid_, {}).get("run_time_ns", 0)
                                cost[ld].setdefault(name, []).append((d_ns / d_cnt if d_cnt else 0.0, d_cnt / el))
                run_none()
    finally:
        server.terminate()
        shutil.rmtree(work, ignore_errors=True)

    out: dict[str, Any] = {"rounds": args.rounds, "seconds_per_load": args.seconds, "loadavg_1m": load_avg}
    for ld in chosen:
        med = {k: statistics.median(v) for k, v in figures[ld].items()}
        progs = {}
        for name, vals in sorted(cost[ld].items()):
            progs[name] = {
                "ns_per_run": round(statistics.median(v[0] for v in vals), 1),
                "runs_per_s": round(statistics.median(v[1] for v in vals)),
            }
        floor_ns = progs.get("FLOOR (empty cgroup_skb)", {}).get("ns_per_run", 0.0)
        egress_ns = progs.get("sl_egress", {}).get("ns_per_run", 0.0)
        # per-round same-run ratio sl_egress / floor, then its median
        per_round = [
            e[0] / f[0]
            for e, f in zip(cost[ld].get("sl_egress", []), cost[ld].get("FLOOR (empty cgroup_skb)", []), strict=True)
            if f[0]
        ]
        out[ld] = {
            **rate_budget(ld, med, progs),
            "unit": UNITS[ld],
            "median": {k: round(v, 2) for k, v in med.items()},
            "ratio_sensor_vs_none": round(med["sensor"] / med["none"], 3),
            **bracketed(figures[ld]["sensor"], figures[ld]["none"]),
            "ratio_floor_vs_none": round(med["floor"] / med["none"], 3),
            "sl_egress_over_floor": round(statistics.median(per_round), 2) if per_round else None,
            "floor_ns_per_run": floor_ns,
            "sl_egress_ns_per_run": egress_ns,
            "programs": progs,
            "per_round": figures[ld],
        }
    out["program_sizes"] = {
        v["name"]: {"bytes_xlated": v["bytes_xlated"], "bytes_jited": v["bytes_jited"]} for v in names.values()
    }
    out["verified_insns"] = verified
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
