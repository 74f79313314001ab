#!/usr/bin/env python3
"""What the AF_PACKET coverage costs (issue 10), without the BPF LSM hook.

Two programs (bpf/packet.bpf.c, bpf/socket.bpf.c):
- sock:sock_send_length, always attached: one run per sendmsg of any socket
  on the host, returning after one compare unless the socket is AF_PACKET;
- syscalls:sys_enter_socket (the packet guard), attached only while some
  container is contained: it moves every task of the host to the slow
  syscall path, so every syscall pays, not only socket().

Measured with the sensor's own loader (BccSource, real programs, default
configuration), in this order each round (the order of the first two
alternating between rounds):
  a. the sensor without the packet unit (its UNITS minus "packet");
  b. the sensor as shipped, nothing contained (guard detached);
  c. the same sensor, one container id contained (guard attached: the
     loader's own switch, through set_contained_container);
  d. released again (guard detached).
Each: a getppid loop (ns per syscall) and a 64-byte UDP sendto loop over
loopback (ns per send). Then one pass with bpf_stats on: ns per run of the
send program over the UDP loop and of the guard over a socket()/close()
loop. Medians over rounds; the machine is shared, so quote same-run deltas.

Usage (root): .venv/bin/python bench/bench_packet.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from unittest import mock

from sensor.config import default_config
from sensor.kernel import bpfsys, loader
from sensor.kernel import hooks as H
from sensor.kernel.probe import probe

LOOPS_C = r"""
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec * 1e9 + t.tv_nsec; }
int main(int argc, char **argv) {
    long n = atol(argv[2]);
    double a = now();
    if (!strcmp(argv[1], "getppid")) {
        for (long i = 0; i < n; i++) syscall(SYS_getppid);
    } else if (!strcmp(argv[1], "udp")) {
        int s = socket(AF_INET, SOCK_DGRAM, 0);
        struct sockaddr_in d = {.sin_family = AF_INET, .sin_port = htons(9), .sin_addr.s_addr = htonl(0x7f000001)};
        char buf[64] = {0};
        a = now();
        for (long i = 0; i < n; i++) sendto(s, buf, sizeof buf, 0, (struct sockaddr *)&d, sizeof d);
    } else {
        for (long i = 0; i < n; i++) close(socket(AF_INET, SOCK_DGRAM, 0));
    }
    printf("%.2f\n", (now() - a) / n);
    return 0;
}
"""

N = {"getppid": 5_000_000, "udp": 1_000_000, "socket": 300_000}
FAKE_ID = "f" * 64  # a container id no runtime has: contained, never running


def build(work: Path) -> str:
    src, exe = work / "loops.c", work / "loops"
    src.write_text(LOOPS_C)
    subprocess.run(["gcc", "-O2", "-o", str(exe), str(src)], check=True)
    return str(exe)


def run(exe: str, what: str) -> float:
    return float(subprocess.run([exe, what, str(N[what])], capture_output=True, text=True, check=True).stdout)


@contextmanager
def sensor(with_packet: bool) -> Iterator[loader.BccSource]:
    units = H.UNITS if with_packet else tuple(u for u in H.UNITS if u.name != "packet")
    with mock.patch.object(loader, "UNITS", units):
        src = loader.BccSource(default_config().kernel, probe(True, H.UNITS))
        try:
            src.start(lambda _r: None)
            yield src
        finally:
            src.close()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench_packet: run as root (it loads the sensor)", file=sys.stderr)
        return 2
    exe = build(Path(tempfile.mkdtemp(prefix="sluice-bench-packet-")))
    res: dict[str, list[float]] = {}

    def add(k: str, v: float) -> None:
        res.setdefault(k, []).append(v)

    for i in range(args.rounds):
        for with_packet in (False, True) if i % 2 == 0 else (True, False):
            with sensor(with_packet) as src:
                tag = "shipped" if with_packet else "no_packet_unit"
                add(f"getppid_ns_{tag}", run(exe, "getppid"))
                add(f"udp_send_ns_{tag}", run(exe, "udp"))
                if not with_packet:
                    continue
                assert src.status[H.PACKET_GUARD_TRACEPOINT].startswith("detached"), src.status
                src.set_contained_container(FAKE_ID, 1 << 63, True)
                assert src.status[H.PACKET_GUARD_TRACEPOINT].startswith("attached"), src.status
                add("getppid_ns_guard_attached", run(exe, "getppid"))
                add("udp_send_ns_guard_attached", run(exe, "udp"))
                src.set_contained_container(FAKE_ID, 1 << 63, False)
                assert src.status[H.PACKET_GUARD_TRACEPOINT].startswith("detached"), src.status
                add("getppid_ns_released", run(exe, "getppid"))
    # kernel-side cost per run, with bpf_stats on (two clock reads per run)
    stats_fd = bpfsys.enable_stats()
    try:
        with sensor(True) as src:
            src.set_contained_container(FAKE_ID, 1 << 63, True)
            before = {c.program: c for c in src.program_costs()}
            run(exe, "udp")
            run(exe, "socket")
            after = {c.program: c for c in src.program_costs()}
            src.set_contained_container(FAKE_ID, 1 << 63, False)
    finally:
        os.close(stats_fd)
    per_run = {}
    for name in ("tracepoint__sock__sock_send_length", H.PACKET_GUARD_FUNCTION):
        a, b = before.get(name), after.get(name)
        if a and b and b.runs > a.runs:
            per_run[name] = {
                "runs": b.runs - a.runs,
                "ns_per_run": round((b.run_time_ns - a.run_time_ns) / (b.runs - a.runs), 1),
            }
    out = {k: round(statistics.median(v), 1) for k, v in sorted(res.items())}
    out["rounds"] = args.rounds
    print(json.dumps({"medians": out, "bpf_stats": per_run, "raw": res}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
