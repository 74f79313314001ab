#!/usr/bin/env python3
"""Kernel cost of naming destinations: the ingress program and the larger
first-payload read, measured in the kernel with bpf_stats.

`kernel.bpf_stats_enabled` makes the kernel time every BPF program run.
The sensor's programs (the real BccSource: every unit, as `sluice run`
loads them) run together with an EMPTY cgroup_skb ingress program (the
floor: nothing on that hook costs less) over the same packets:

- the same loads with kernel.count_received = false (the DNS-only ingress:
  a packet not from port 53 returns after its header parse), sl_ingress
  against the floor of that run;
- udp64 / tcp16k: iperf3 over loopback (each packet passes egress on the
  sender and ingress on the receiver): ns per run of sl_ingress vs the
  floor, of a program that only makes sl_ingress's one fast-path helper
  call (bpf_sk_storage_get: the floor of what is left), and of sl_egress; then, bpf_stats off, the packet rate / throughput
  with no programs, with the sensor without its ingress unit, and with it.
- first payloads: N short loopback TCP connections, each sending a 1400-byte
  first write that starts either with a TLS handshake record header (read up
  to SL_FIRST_MAX = 2048 bytes in the kernel) or with other bytes (the usual
  SL_SAMPLE_BYTES): sl_egress kernel ns per connection in each case.

Medians over rounds. Usage (root, under the benchmark lock):
    .venv/bin/python bench/bench_ingress.py [--rounds 3] [--seconds 3] [--conns 3000]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from unittest import mock

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sensor.config import default_config
from sensor.kernel import bpfsys
from sensor.kernel import hooks as H

STATS = Path("/proc/sys/kernel/bpf_stats_enabled")
FLOOR_SRC = """
int sl_floor_in(struct __sk_buff *skb) { return 1; }
/* The empty program plus the one helper call sl_ingress's fast path makes
 * (the socket's storage): what is left once everything else is gone. */
struct sl_floor_state { __u64 v[5]; };
BPF_SK_STORAGE(sl_floor_sk_map, struct sl_floor_state);
int sl_floor_sk(struct __sk_buff *skb)
{
    struct bpf_sock *sk = skb->sk;
    if (sk)
        sl_floor_sk_map.sk_storage_get(sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
    return 1;
}
"""


def cgroup2_mount() -> str:
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        if right.split(" ", 1)[0] == "cgroup2":
            return left.split(" ")[4]
    raise RuntimeError("no cgroup2 mount")


def fdinfo(fd: int) -> tuple[int, int]:
    run_ns = cnt = 0
    for line in Path(f"/proc/self/fdinfo/{fd}").read_text().splitlines():
        k, _, v = line.partition(":")
        if k == "run_time_ns":
            run_ns = int(v)
        elif k == "run_cnt":
            cnt = int(v)
    return run_ns, cnt


@contextmanager
def bpf_stats(on: bool) -> Iterator[None]:
    old = STATS.read_text().strip()
    STATS.write_text("1" if on else "0")
    try:
        yield
    finally:
        STATS.write_text(old)


@contextmanager
def floor() -> Iterator[tuple[Any, Any]]:
    """The empty ingress program and the one-helper one, both attached."""
    from bcc import BPF

    b = BPF(text=FLOOR_SRC.encode())
    fns = [b.load_func(n, BPF.CGROUP_SKB, None, bpfsys.CGROUP_INET_INGRESS) for n in (b"sl_floor_in", b"sl_floor_sk")]
    cg = os.open(cgroup2_mount(), os.O_RDONLY | os.O_DIRECTORY)
    links = [bpfsys.link_create(fn.fd, cg, bpfsys.CGROUP_INET_INGRESS) for fn in fns]
    try:
        yield fns[0], fns[1]
    finally:
        for link in links:
            os.close(link)
        os.close(cg)
        b.cleanup()


@contextmanager
def sensor(with_ingress: bool, count_received: bool = True) -> Iterator[Any]:
    """The real programs (BccSource), drained by a thread like the sensor's
    loop; count_received=False: the DNS-only ingress (kernel.count_received)."""
    import sensor.kernel.loader as L
    from sensor.kernel.loader import BccSource
    from sensor.kernel.probe import probe

    units = H.UNITS if with_ingress else tuple(u for u in H.UNITS if u.name != "ingress")
    with mock.patch.object(H, "UNITS", units), mock.patch.object(L, "UNITS", units):
        kc = dataclasses.replace(default_config().kernel, count_received=count_received)
        src = BccSource(kc, probe(True, units))
        src.start(lambda _r: None)
    stop = threading.Event()

    def drain() -> None:
        last = time.monotonic()
        while not stop.is_set():
            src.poll(50)
            if time.monotonic() - last >= 1.0:  # windows of 1 s, as in the tests
                src.drain_flows()
                last = time.monotonic()

    t = threading.Thread(target=drain, daemon=True)
    t.start()
    try:
        yield src
    finally:
        stop.set()
        t.join(2)
        src.close()


def prog_fd(src: Any, hook: str) -> int:
    for a in src._attachments:
        if a.hook == hook:
            return int(a.fn.fd)
    raise KeyError(hook)


def iperf(load: str, seconds: float, port: int) -> float:
    args = ["iperf3", "-c", "127.0.0.1", "-p", str(port), "-t", str(seconds), "-J"]
    args += ["-u", "-b", "0", "-l", "64"] if load == "udp64" else ["-l", "16K"]
    r = subprocess.run(args, capture_output=True, text=True, check=True)
    end = json.loads(r.stdout)["end"]
    if load == "udp64":
        s = end["sum"]
        return float(s["packets"]) / float(s["seconds"])  # datagrams/s
    return float(end["sum_received"]["bits_per_second"]) / 1e9  # Gbit/s


def timed_loads(fds: dict[str, int], seconds: float, add: Callable[[str, float], None]) -> None:
    """Each iperf3 load once; ns per run of each program over its packets."""
    for load in ("udp64", "tcp16k"):
        before = {k: fdinfo(fd) for k, fd in fds.items()}
        iperf(load, seconds, 5299)
        for k, fd in fds.items():
            ns, cnt = fdinfo(fd)
            dn, dc = ns - before[k][0], cnt - before[k][1]
            if dc:
                add(f"{load}.{k}.ns_per_run", dn / dc)


def conn_server(port: int, stop: threading.Event) -> None:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", port))
    s.listen(512)
    s.settimeout(0.2)
    while not stop.is_set():
        try:
            c, _ = s.accept()
        except TimeoutError:
            continue
        try:
            c.recv(4096)
        finally:
            c.close()
    s.close()


def connections(port: int, n: int, first: bytes) -> None:
    for _ in range(n):
        c = socket.create_connection(("127.0.0.1", port))
        c.sendall(first)
        c.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--conns", type=int, default=3000)
    a = ap.parse_args()
    ip = subprocess.Popen(["iperf3", "-s", "-p", "5299"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    res: dict[str, list[float]] = {}

    def add(k: str, v: float) -> None:
        res.setdefault(k, []).append(v)

    tls = b"\x16\x03\x01\x05\x70\x01" + bytes(1394)
    other = b"\x00\x01\x02\x03" + bytes(1396)
    try:
        for _r in range(a.rounds):
            # 1. ns per run, sensor + floor over the same packets
            with sensor(True) as src, floor() as (fl, fl_sk), bpf_stats(True):
                fds = {
                    "sl_ingress": prog_fd(src, "ingress"),
                    "sl_egress": prog_fd(src, "egress"),
                    "floor": fl.fd,
                    "floor_sk_storage": fl_sk.fd,
                }
                timed_loads(fds, a.seconds, add)
                # first payloads: sl_egress kernel ns per connection
                stop = threading.Event()
                th = threading.Thread(target=conn_server, args=(5300, stop), daemon=True)
                th.start()
                time.sleep(0.2)
                for name, first in (("other", other), ("tls", tls), ("other2", other)):
                    b0 = fdinfo(fds["sl_egress"])
                    connections(5300, a.conns, first)
                    b1 = fdinfo(fds["sl_egress"])
                    add(f"first.{name}.egress_ns_per_conn", (b1[0] - b0[0]) / a.conns)
                    add(f"first.{name}.egress_runs_per_conn", (b1[1] - b0[1]) / a.conns)
                stop.set()
                th.join(2)
                st = src.kernel_stats()
                add("dns_truncated", st.get("dns_responses_truncated", 0))
            # 1b. the DNS-only ingress (kernel.count_received = false), same way
            with sensor(True, count_received=False) as src, floor() as (fl, _fl_sk), bpf_stats(True):
                timed_loads(
                    {"sl_ingress_dns_only": prog_fd(src, "ingress"), "floor_dns_only_run": fl.fd}, a.seconds, add
                )
            # 2. rates, bpf_stats off: none / sensor without ingress / with
            for label, ctx in (("none", None), ("no_ingress", False), ("with_ingress", True)):
                if ctx is None:
                    for load in ("udp64", "tcp16k"):
                        add(f"{load}.rate.{label}", iperf(load, a.seconds, 5299))
                    continue
                with sensor(ctx):
                    for load in ("udp64", "tcp16k"):
                        add(f"{load}.rate.{label}", iperf(load, a.seconds, 5299))
    finally:
        ip.terminate()
        ip.wait()
    med = {k: round(statistics.median(v), 2) for k, v in sorted(res.items())}
    for load in ("udp64", "tcp16k"):
        none = med.get(f"{load}.rate.none")
        if none:
            for lbl in ("no_ingress", "with_ingress"):
                med[f"{load}.ratio.{lbl}"] = round(med[f"{load}.rate.{lbl}"] / none, 3)
        if f"{load}.floor.ns_per_run" in med and f"{load}.sl_ingress.ns_per_run" in med:
            med[f"{load}.sl_ingress.minus_floor_ns"] = round(
                med[f"{load}.sl_ingress.ns_per_run"] - med[f"{load}.floor.ns_per_run"], 2
            )
        if f"{load}.floor_dns_only_run.ns_per_run" in med and f"{load}.sl_ingress_dns_only.ns_per_run" in med:
            med[f"{load}.sl_ingress_dns_only.minus_floor_ns"] = round(
                med[f"{load}.sl_ingress_dns_only.ns_per_run"] - med[f"{load}.floor_dns_only_run.ns_per_run"], 2
            )
        if f"{load}.floor.ns_per_run" in med and f"{load}.floor_sk_storage.ns_per_run" in med:
            med[f"{load}.floor_sk_storage.minus_floor_ns"] = round(
                med[f"{load}.floor_sk_storage.ns_per_run"] - med[f"{load}.floor.ns_per_run"], 2
            )
    med["first.tls_minus_other_ns_per_conn"] = round(
        med["first.tls.egress_ns_per_conn"]
        - (med["first.other.egress_ns_per_conn"] + med["first.other2.egress_ns_per_conn"]) / 2,
        1,
    )
    print(json.dumps({"rounds": a.rounds, "seconds": a.seconds, "conns": a.conns, "median": med}, indent=1))


if __name__ == "__main__":
    main()
