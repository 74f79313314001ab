#!/usr/bin/env python3
"""A/B of sl_egress variants, timed by the kernel over the same packets.

Each variant is a bpf/ directory (a git revision's, or the working tree's),
compiled with the sensor's default -D flags (with its ingress program, as
the sensor runs them: both write the same flow slots) and attached alone,
in turn, at the cgroup v2 root before the EMPTY cgroup_skb program (the
floor). With `kernel.bpf_stats_enabled=1` the kernel times both over the
same packets, so each variant's ratio to the floor is comparable between
variants on a shared, noisy machine (attached together, variants disturb
each other: the first pays the packet's cold cache lines, and their socket
storages share lines). Between loads the window
epoch of each variant is advanced (as the sensor does once per window), so
sampling caps reset as they do in production.

This is a development tool for changes to bpf/egress.bpf.c; the figures to
quote come from bench_bpf_cost.py (the whole sensor), this one says which
variant is cheaper and by how much.

Usage (root): .venv/bin/python bench/bench_egress_ab.py [--rounds 3] [--seconds 3]
    [--loads tcp16k,udp64,conns,udp64u,udp64m] VARIANT...   (VARIANT: a git revision, "worktree", or a bpf/ directory)
    ... --parts VARIANT   (where the fast path's time goes: see PARTS)
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
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench_bpf_cost import Floor, bpf_stats, cgroup2_mount, load_runners, prog_facts, prog_fdinfo

from sensor.config import default_config
from sensor.kernel import bpfsys
from sensor.kernel.hooks import assemble_source
from sensor.kernel.loader import cflags

REPO = Path(__file__).resolve().parent.parent


def variant_dir(rev: str, work: Path) -> Path:
    if rev == "worktree":
        return REPO / "bpf"
    if Path(rev).is_dir():  # a copy of a bpf/ directory
        return Path(rev)
    out = work / rev.replace("/", "_")
    out.mkdir()
    archive = subprocess.run(["git", "-C", str(REPO), "archive", rev, "bpf"], check=True, capture_output=True)
    subprocess.run(["tar", "-x", "-C", str(out)], input=archive.stdout, check=True)
    return out / "bpf"


# --parts: where sl_egress's fast path returns early in each cut-down copy
# (the text the return goes after, and the return). A packet's cost is
# mostly the cache lines it touches (a 64 KiB GSO copy between two TCP
# packets leaves every one cold), so the parts are cumulative: each adds
# what the fast path touches next. Anchors that no longer match the source
# stop the tool with their name.
PARTS: dict[str, tuple[str, str]] = {
    "empty": ("int sl_egress(struct __sk_buff *skb)\n{\n", "\treturn 1;\n"),
    "stat": ("\tsl_stat_add(SL_STAT_EGRESS_PACKETS, 1);\n", "\treturn 1;\n"),
    "parse": ("\tif (sl_parse(skb, &p) < 0)\n\t\treturn 1;\n", "\treturn 1;\n"),
    "storage": ("\t__u32 cached = ss ? sl_sock_cached(ss, &p, epoch) : 0;\n", "\tif (cached)\n\t\treturn 1;\n"),
    "counters": (
        "\t__sync_fetch_and_add(&fv->packets, segs);\n",
        "\tif (ss && sl_sock_cached(ss, &p, epoch))\n\t\treturn 1;\n",
    ),
}


def part_dirs(src: Path, name: str, work: Path) -> list[tuple[str, Path]]:
    """Cut-down copies of bpf/ directory `src` (see PARTS), then `src`."""
    out = []
    text = (src / "egress.bpf.c").read_text()
    for part, (anchor, ret) in PARTS.items():
        if text.count(anchor) != 1:
            raise SystemExit(f"bench_egress_ab: --parts: the {part!r} anchor is not in {src}/egress.bpf.c once")
        d = work / f"part-{part}"
        shutil.copytree(src, d)
        (d / "egress.bpf.c").write_text(text.replace(anchor, anchor + ret))
        out.append((f"{name}:{part}", d))
    return out + [(name, src)]


class Variant:
    def __init__(self, name: str, root: Path, ingress: bool) -> None:
        from bcc import BPF  # Debian python3-bpfcc

        self.name = name
        cfg = default_config().kernel
        files = ["egress.bpf.c"] + (["ingress.bpf.c"] if ingress and (root / "ingress.bpf.c").exists() else [])
        text = assemble_source(root, files)
        self.b = BPF(text=text.encode(), cflags=cflags(cfg, bpfsys.ringbuf_supported(), root))
        self.fn = self.b.load_func(b"sl_egress", BPF.CGROUP_SKB, None, bpfsys.CGROUP_INET_EGRESS)
        self.cg = os.open(cgroup2_mount(), os.O_RDONLY | os.O_DIRECTORY)
        self.links: list[int] = []
        self.ingress = None
        if len(files) == 2:
            self.ingress = self.b.load_func(b"sl_ingress", BPF.CGROUP_SKB, None, bpfsys.CGROUP_INET_INGRESS)
        self.attach()
        self.samples = 0
        if bpfsys.ringbuf_supported():
            self.b["sl_events"].open_ring_buffer(self._on_record)

    def attach(self) -> None:
        """Attached last: the cgroup runs its programs in attach order, and
        the first to touch a packet pays its cold cache lines, so the order
        rotates between rounds."""
        self.links.append(bpfsys.link_create(self.fn.fd, self.cg, bpfsys.CGROUP_INET_EGRESS))
        if self.ingress is not None:
            self.links.append(bpfsys.link_create(self.ingress.fd, self.cg, bpfsys.CGROUP_INET_INGRESS))

    def detach(self) -> None:
        for fd in self.links:
            os.close(fd)
        self.links = []

    def _on_record(self, _ctx: Any, _data: Any, _size: int) -> None:
        self.samples += 1

    def poll(self) -> None:
        self.b.ring_buffer_poll(50)

    def next_window(self) -> None:
        """What the sensor does at a window end: advance the epoch, free the
        old generation's slots (this tool never reads them)."""
        g = self.b["sl_gen"]
        k = g.Key(0)
        epoch = g[k].value + 1
        g[k] = g.Leaf(epoch)
        flows = self.b["sl_flows"]
        for key in list(flows.keys()):
            if key.gen != (epoch & 1):
                del flows[key]
        nxt = self.b["sl_flow_next"]
        nxt[nxt.Key(1 - (epoch & 1))] = nxt.Leaf(0)

    def info(self, fn: Any = None) -> dict[str, int]:
        info = prog_fdinfo(os.getpid(), (fn or self.fn).fd)
        assert info
        return info

    def timed(self) -> dict[str, dict[str, int]]:
        out = {self.name: self.info()}
        if self.ingress is not None:
            out[f"{self.name} (sl_ingress)"] = self.info(self.ingress)
        return out

    def close(self) -> None:
        self.detach()
        os.close(self.cg)
        self.b.cleanup()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--loads", default="tcp16k,udp64")
    ap.add_argument(
        "--no-ingress", action="store_true", help="attach sl_egress only (default: with sl_ingress, as the sensor runs)"
    )
    ap.add_argument(
        "--parts",
        action="store_true",
        help="one variant: also time cut-down copies of its sl_egress that return after each part of the fast path",
    )
    ap.add_argument("variants", nargs="+")
    args = ap.parse_args()
    if args.parts and len(args.variants) != 1:
        ap.error("--parts takes one variant")
    if os.geteuid() != 0:
        print("bench_egress_ab: run as root", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="sluice-egress-ab-"))
    port = 5201 + os.getpid() % 1000 + 2000
    server = subprocess.Popen(["iperf3", "-s", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    loads = load_runners(work, port, args.seconds)  # bench_bpf_cost.py's loads
    chosen = [ld for ld in args.loads.split(",") if ld in loads]
    variants: list[Variant] = []
    stop = threading.Event()
    res: dict[str, dict[str, list[float]]] = {ld: {} for ld in chosen}
    floors: dict[str, dict[str, list[float]]] = {ld: {} for ld in chosen}
    try:
        for v in args.variants:
            if args.parts:
                for name, d in part_dirs(variant_dir(v, work), v, work):
                    variants.append(Variant(name, d, not args.no_ingress))
            else:
                variants.append(Variant(v, variant_dir(v, work), not args.no_ingress))

        def drain() -> None:
            while not stop.is_set():
                for v in variants:
                    v.poll()

        t = threading.Thread(target=drain, daemon=True)
        t.start()
        with Floor() as fl, bpf_stats(True):
            for r in range(args.rounds):
                for ld in chosen:
                    # One variant at a time with the floor attached after it
                    # (as bench_bpf_cost attaches it after the sensor): no
                    # variant shares a socket's storage or a cache line with
                    # another; the order rotates between rounds.
                    for v in variants[r % len(variants) :] + variants[: r % len(variants)]:
                        os.close(fl.link)
                        for other in variants:
                            other.detach()
                        v.attach()
                        fl.link = bpfsys.link_create(fl.fn.fd, fl.cg, bpfsys.CGROUP_INET_EGRESS)
                        v.next_window()
                        before = v.timed() | {"FLOOR": next(iter(fl.progs().values()))}
                        for attempt in range(3):  # iperf3's server may still be busy with the last test
                            try:
                                loads[ld]()
                                break
                            except (KeyError, subprocess.CalledProcessError):
                                if attempt == 2:
                                    raise
                                time.sleep(1)
                        after = v.timed() | {"FLOOR": next(iter(fl.progs().values()))}
                        ns = {}
                        for name in after:
                            d_cnt = after[name]["run_cnt"] - before[name]["run_cnt"]
                            d_ns = after[name]["run_time_ns"] - before[name]["run_time_ns"]
                            ns[name] = d_ns / d_cnt if d_cnt else 0.0
                        for name, x in ns.items():
                            if name != "FLOOR":
                                res[ld].setdefault(name, []).append(x)
                                floors[ld].setdefault(name, []).append(ns["FLOOR"])
                        print(ld, {k: round(x, 1) for k, x in ns.items()}, file=sys.stderr, flush=True)
        stop.set()
        t.join()
        out: dict[str, Any] = {"rounds": args.rounds, "seconds": args.seconds, "loadavg_1m": os.getloadavg()[0]}
        for ld in chosen:
            out[ld] = {
                name: {
                    "ns_per_run": round(statistics.median(vals), 1),
                    "floor_ns_per_run": round(statistics.median(floors[ld][name]), 1),
                    "x_floor": round(
                        statistics.median(a / f for a, f in zip(vals, floors[ld][name], strict=True) if f), 2
                    ),
                    "per_round": [round(x, 1) for x in vals],
                }
                for name, vals in res[ld].items()
            }
        out["programs"] = {
            v.name: {**prog_facts(v.info()["prog_id"]), "verified_insns": v.info().get("verified_insns")}
            for v in variants
        }
        print(json.dumps(out, indent=2))
    finally:
        stop.set()
        for v in variants:
            v.close()
        server.terminate()
    return 0


if __name__ == "__main__":
    sys.exit(main())
