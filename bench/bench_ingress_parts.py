#!/usr/bin/env python3
"""Where sl_ingress's time goes: the program and cut-down copies of its
fast path, all attached at once to the cgroup v2 root's ingress hook next
to an empty program, timed by bpf_stats over the same packets.

  floor           return 1
  parse           the header parse (direct packet access), then return
  parse_sk        + the window read, bpf_sk_storage_get and the cache check
  no_atomics      the whole fast path with plain adds instead of atomic ones
                  (wrong under concurrency: a measurement, not a proposal)
  sl_ingress      the program as shipped (it fills the socket caches the
                  copies above read)

The copies are appended to the real program text and call its own inline
functions, so they cost what the same code costs inside sl_ingress. Each
runs alone with the empty program (attached first): programs on one hook
run one after the other on the same packet, and a later one finds the
socket's storage already in the CPU cache (measured: a cut-down copy run
after sl_ingress looked 20-40 ns cheaper than the same code run first).
sl_ingress runs in every round, so the copies that read the socket cache
(parse_sk, no_atomics) are measured right after it filled the caches.
Usage (root, under the benchmark lock):
    .venv/bin/python bench/bench_ingress_parts.py [--rounds 3] [--seconds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_ingress import bpf_stats, cgroup2_mount, fdinfo, iperf

from sensor.config import default_config
from sensor.kernel import bpfsys
from sensor.kernel import hooks as H
from sensor.kernel.loader import cflags

PARTS = r"""
int abl_floor(struct __sk_buff *skb) { return 1; }

int abl_parse(struct __sk_buff *skb)
{
	struct sl_l3l4_in p = {};
	__u32 poff = skb->len;
	if (!sl_parse_in_fast(skb, &p, &poff)) {
		__builtin_memset(&p, 0, sizeof(p));
		sl_parse_in(skb, &p);
	}
	return 1;
}

static __always_inline struct sl_flow_value *abl_cached(struct __sk_buff *skb, struct sl_l3l4_in *p, __u32 *poff)
{
	if (!sl_parse_in_fast(skb, p, poff))
		return 0;
	__u32 epoch = sl_current_epoch();
	struct sl_sock_in_state *ss = sl_sock_in_of(skb);
	const __u64 *a = (const __u64 *)p->saddr;
	if (!ss)
		return 0;
	__u32 slot = *(volatile __u32 *)&ss->slot;
	if (slot && ss->epoch == epoch && ss->sport == p->sport && ss->protocol == p->protocol &&
		ss->saddr[0] == a[0] && ss->saddr[1] == a[1])
		return sl_flow_at(slot - 1);
	return 0;
}

int abl_parse_sk(struct __sk_buff *skb)
{
	struct sl_l3l4_in p = {};
	__u32 poff = skb->len;
	struct sl_flow_value *fv = abl_cached(skb, &p, &poff);
	return fv ? 1 : 1;
}

int abl_no_atomics(struct __sk_buff *skb)
{
	struct sl_l3l4_in p = {};
	__u32 len = skb->len;
	__u32 poff = len;
	struct sl_flow_value *fv = abl_cached(skb, &p, &poff);
	if (!fv)
		return 1;
	__u32 segs = skb->gso_segs;
	if (segs == 0)
		segs = 1;
	__u32 plen = poff < len ? len - poff : 0;
	fv->rx_pad += len + (segs - 1) * (poff < len ? poff : 0);
	fv->rx_pad += segs;
	if (plen)
		fv->rx_pad += plen;
	return 1;
}
"""
NAMES = ("abl_floor", "abl_parse", "abl_parse_sk", "abl_no_atomics", "sl_ingress")


def main() -> None:
    from bcc import BPF

    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=3.0)
    a = ap.parse_args()
    root = H.bpf_dir()
    text = H.assemble_source(root, ["egress.bpf.c", "ingress.bpf.c"]) + PARTS
    b = BPF(text=text.encode(), cflags=cflags(default_config().kernel, True, root))
    fns = {n: b.load_func(n.encode(), BPF.CGROUP_SKB, None, bpfsys.CGROUP_INET_INGRESS) for n in NAMES}
    cg = os.open(cgroup2_mount(), os.O_RDONLY | os.O_DIRECTORY)
    ip = subprocess.Popen(["iperf3", "-s", "-p", "5298"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    res: dict[str, list[float]] = {}
    floor_link = bpfsys.link_create(fns["abl_floor"].fd, cg, bpfsys.CGROUP_INET_INGRESS)
    try:
        with bpf_stats(True):
            for _r in range(a.rounds):
                for n in ("sl_ingress", *NAMES[1:-1]):
                    link = bpfsys.link_create(fns[n].fd, cg, bpfsys.CGROUP_INET_INGRESS)
                    try:
                        for load in ("udp64", "tcp16k"):
                            pair = {"floor": fns["abl_floor"].fd, "prog": fns[n].fd}
                            before = {k: fdinfo(fd) for k, fd in pair.items()}
                            iperf(load, a.seconds, 5298)
                            after = {k: fdinfo(fd) for k, fd in pair.items()}
                            per = {k: (after[k][0] - before[k][0]) / max(after[k][1] - before[k][1], 1) for k in pair}
                            res.setdefault(f"{load}.{n}", []).append(per["prog"])
                            res.setdefault(f"{load}.{n}.minus_floor", []).append(per["prog"] - per["floor"])
                    finally:
                        os.close(link)
    finally:
        ip.terminate()
        ip.wait()
        os.close(floor_link)
        os.close(cg)
        b.cleanup()
    med = {k: round(statistics.median(v), 1) for k, v in sorted(res.items())}
    print(json.dumps({"rounds": a.rounds, "seconds": a.seconds, "ns_per_run": med}, indent=1))


if __name__ == "__main__":
    main()
