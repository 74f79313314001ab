#!/usr/bin/env python3
"""Cost of the listener / inbound / unix-connect hooks (listen.bpf.c and the
connect_unix and sendmsg_unix programs): loopback TCP connections per
second, unix-socket connects per second and unix datagrams sent to an
address per second, no sensor vs `sluice run` (default config), in
alternating rounds; and the kernel's own ns per program run from bpf_stats
(kernel.bpf_stats_enabled) while the sensor runs the same load.

TCP modes: "same-peer" (every connection from 127.0.0.1: after the first,
each one is folded into the kernel's per-peer deduplication), "new-peer"
(each connection from a different 127.x.y.z source: one event per
connection, the worst case for the ring buffer and user space).

Usage (root): .venv/bin/python bench/bench_inbound.py [--rounds N] [--conns N]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import Sensor, build_c

CONNS_C = r"""
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec / 1e9; }
int main(int argc, char **argv) {
    const char *mode = argv[1];
    long n = atol(argv[2]);
    struct linger lg = {1, 0};  /* RST on close: no TIME_WAIT pile-up */
    int one = 1;
    double t0;
    if (strcmp(mode, "unix") == 0) {
        struct sockaddr_un a = {.sun_family = AF_UNIX};
        snprintf(a.sun_path, sizeof a.sun_path, "%s", argv[3]);
        unlink(a.sun_path);
        int l = socket(AF_UNIX, SOCK_STREAM, 0);
        if (bind(l, (void *)&a, sizeof a) || listen(l, 128)) { perror("unix listen"); return 1; }
        t0 = now();
        for (long i = 0; i < n; i++) {
            int c = socket(AF_UNIX, SOCK_STREAM, 0);
            if (connect(c, (void *)&a, sizeof a)) { perror("connect"); return 1; }
            int s = accept(l, NULL, NULL);
            close(c); close(s);
        }
    } else if (strcmp(mode, "unixdgram") == 0) {
        /* datagrams sent to an address, no connect (sendmsg_unix), each
         * read back so the queue never fills */
        struct sockaddr_un a = {.sun_family = AF_UNIX};
        snprintf(a.sun_path, sizeof a.sun_path, "%s.dg", argv[3]);
        unlink(a.sun_path);
        int r = socket(AF_UNIX, SOCK_DGRAM, 0);
        if (bind(r, (void *)&a, sizeof a)) { perror("unix dgram bind"); return 1; }
        int c = socket(AF_UNIX, SOCK_DGRAM, 0);
        char b[64] = {0};
        t0 = now();
        for (long i = 0; i < n; i++) {
            if (sendto(c, b, sizeof b, 0, (void *)&a, sizeof a) < 0) { perror("sendto"); return 1; }
            if (recv(r, b, sizeof b, 0) < 0) { perror("recv"); return 1; }
        }
    } else {
        int l = socket(AF_INET, SOCK_STREAM, 0);
        setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        if (bind(l, (void *)&a, sizeof a) || listen(l, 1024)) { perror("listen"); return 1; }
        socklen_t al = sizeof a;
        getsockname(l, (void *)&a, &al);
        int newpeer = strcmp(mode, "new-peer") == 0;
        t0 = now();
        for (long i = 0; i < n; i++) {
            int c = socket(AF_INET, SOCK_STREAM, 0);
            setsockopt(c, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
            if (newpeer) {
                struct sockaddr_in src = {.sin_family = AF_INET};
                src.sin_addr.s_addr = htonl(0x7f000000u | (1u + (unsigned)(i % 16000000)));
                if (bind(c, (void *)&src, sizeof src)) { perror("bind"); return 1; }
            }
            if (connect(c, (void *)&a, sizeof a)) { perror("connect"); return 1; }
            int s = accept(l, NULL, NULL);
            setsockopt(s, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
            close(c); close(s);
        }
    }
    printf("%.0f\n", n / (now() - t0));
    return 0;
}
"""

PROGS = ("sl_bind4", "sl_bind6", "sl_sockops", "sl_connect_unix", "sl_sendmsg_unix", "sl_connect4")


def prog_stats() -> dict[str, tuple[int, int]]:
    out = subprocess.run(["bpftool", "prog", "show", "--json"], capture_output=True, text=True, check=True).stdout
    res: dict[str, tuple[int, int]] = {}
    for p in json.loads(out):
        name = p.get("name", "")
        if name in PROGS:
            a, b = res.get(name, (0, 0))
            res[name] = (a + int(p.get("run_time_ns", 0)), b + int(p.get("run_cnt", 0)))
    return res


class HooksOnly:
    """Only this issue's programs (listen.bpf.c and connect_unix), loaded as
    the sensor loads them, with a thread draining the ring buffer: their
    cost without the rest of the sensor (egress, connect, user space)."""

    def __enter__(self) -> HooksOnly:
        import os
        import threading

        from bcc import BPF

        from sensor.attribution.cgroups import find_cgroup2_mount
        from sensor.config import load_config
        from sensor.kernel import bpfsys, unixconnect
        from sensor.kernel.hooks import UNITS, assemble_source, bpf_dir
        from sensor.kernel.loader import cflags

        root = bpf_dir()
        unit = next(u for u in UNITS if u.name == "listen")
        self.b = BPF(
            text=assemble_source(root, [unit.source]).encode(), cflags=cflags(load_config(None).kernel, True, root)
        )
        cg = os.open(find_cgroup2_mount(Path("/proc/self/mountinfo").read_text()), os.O_RDONLY)
        self.fds = [cg]
        for cp in unit.cgroup_programs:
            fn = self.b.load_func(cp.function.encode(), getattr(BPF, cp.prog_type), None, cp.attach_type)
            self.fds.append(bpfsys.link_create(fn.fd, cg, cp.attach_type))
        ufd = unixconnect.load(unixconnect.kernel_layout(), self.b["sl_events"].map_fd, self.b["sl_stats"].map_fd)
        self.fds += [bpfsys.link_create(ufd, cg, bpfsys.CGROUP_UNIX_CONNECT), ufd]
        self.n = 0
        self.b["sl_events"].open_ring_buffer(lambda _c, _d, _s: setattr(self, "n", self.n + 1))
        self.stop = False
        self.t = threading.Thread(target=self._drain, daemon=True)
        self.t.start()
        return self

    def _drain(self) -> None:
        while not self.stop:
            self.b.ring_buffer_poll(10)

    def __exit__(self, *exc: object) -> None:
        import os

        self.stop = True
        self.t.join()
        for fd in reversed(self.fds):
            os.close(fd)
        self.b.cleanup()


def rate(binary: str, mode: str, n: int, work: Path) -> float:
    r = subprocess.run([binary, mode, str(n), str(work / "bench.sock")], capture_output=True, text=True, check=True)
    return float(r.stdout)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--conns", type=int, default=20000)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="sluice-bench-inbound-"))
    (work / "conns.c").write_text(CONNS_C)
    binary = build_c(work / "conns.c", work / "conns")
    modes = ("same-peer", "new-peer", "unix", "unixdgram")
    none: dict[str, list[float]] = {m: [] for m in modes}
    with_s: dict[str, list[float]] = {m: [] for m in modes}
    hooks: dict[str, list[float]] = {m: [] for m in modes}
    for r in range(args.rounds):
        order = ("none", "hooks", "sluice") if r % 2 == 0 else ("sluice", "hooks", "none")
        for what in order:
            if what == "sluice":
                with Sensor(work):
                    for m in modes:
                        with_s[m].append(rate(binary, m, args.conns, work))
            elif what == "hooks":
                with HooksOnly():
                    for m in modes:
                        hooks[m].append(rate(binary, m, args.conns, work))
            else:
                for m in modes:
                    none[m].append(rate(binary, m, args.conns, work))
    # kernel ns per run while the sensor is attached
    old = Path("/proc/sys/kernel/bpf_stats_enabled").read_text().strip()
    Path("/proc/sys/kernel/bpf_stats_enabled").write_text("1")
    try:
        with Sensor(work):
            before = prog_stats()
            for m in modes:
                rate(binary, m, args.conns, work)
            after = prog_stats()
    finally:
        Path("/proc/sys/kernel/bpf_stats_enabled").write_text(old)
    ns = {}
    for name, (t, c) in after.items():
        t0, c0 = before.get(name, (0, 0))
        if c - c0 > 0:
            ns[name] = {"runs": c - c0, "ns_per_run": round((t - t0) / (c - c0), 1)}
    tcp_conns = 2 * args.conns  # same-peer and new-peer rounds
    so = ns.get("sl_sockops")
    if so:
        so["runs_per_tcp_connection"] = round(so["runs"] / tcp_conns, 2)
        so["ns_per_tcp_connection"] = round(so["ns_per_run"] * so["runs"] / tcp_conns, 1)
    result = {
        "conns_per_round": args.conns,
        "rounds": args.rounds,
        "per_second_median": {
            m: {
                "none": statistics.median(none[m]),
                "these_hooks_only": statistics.median(hooks[m]),
                "sluice": statistics.median(with_s[m]),
                "ratio_hooks_only": round(statistics.median(hooks[m]) / statistics.median(none[m]), 3),
                "ratio_sluice": round(statistics.median(with_s[m]) / statistics.median(none[m]), 3),
            }
            for m in modes
        },
        "kernel_ns_per_run": ns,
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
