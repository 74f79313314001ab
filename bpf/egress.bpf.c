/* SPDX-License-Identifier: Apache-2.0
 *
 * Egress bytes and payload samples: one cgroup_skb program at the cgroup v2
 * root sees every socket's outgoing packets with the socket's cgroup id.
 *
 * Cost model (the data path must stay near free):
 *  - every packet: header loads, one hash lookup, a few atomic adds;
 *  - payload is read only for sampled packets: the first
 *    SL_SAMPLE_FIRST_PACKETS payload packets of each socket (protocol hint,
 *    handshake), then every SL_SAMPLE_EVERY-th payload packet of a flow, at
 *    most SL_SAMPLE_MAX_PER_FLOW_WINDOW per flow per window. Sample volume
 *    is therefore bounded by connections and flows, not by throughput.
 *
 * The program returns 1 (allow), or 0 (drop) for a contained cgroup's packets.
 */
#include "lib/common.bpf.h"
#include <uapi/linux/if_ether.h>
#include <uapi/linux/in.h>

struct sl_sock_state {
	__u32 payload_pkts;
};
BPF_SK_STORAGE(sl_sock, struct sl_sock_state);

struct sl_l3l4 {
	__u8 daddr[16];
	__u32 l4_off;
	__u16 dport;
	__u8 protocol;
};

/* IPv6 extension headers before the transport header: hop-by-hop (0),
 * routing (43), destination options (60), fragment (44), authentication
 * (51). Up to SL_IPV6_EXT_MAX of them are walked; a packet with more, or a
 * non-first fragment (no transport header), keeps the last next-header
 * value with port 0. */
#define SL_IPV6_EXT_MAX 6

static __always_inline void sl_skip_ipv6_ext(struct __sk_buff *skb, struct sl_l3l4 *p)
{
#pragma unroll
	for (int i = 0; i < SL_IPV6_EXT_MAX; i++) {
		__u8 h[2];
		__u8 nh = p->protocol;
		if (nh != 0 && nh != 43 && nh != 60 && nh != 44 && nh != 51)
			return;
		if (bpf_skb_load_bytes(skb, p->l4_off, h, 2) < 0)
			return;
		if (nh == 44) {
			__u16 frag;
			if (bpf_skb_load_bytes(skb, p->l4_off + 2, &frag, 2) < 0)
				return;
			p->protocol = h[0];
			p->l4_off += 8;
			if (bpf_ntohs(frag) & 0xfff8) {   /* offset != 0: no transport header here */
				p->protocol = 44;
				return;
			}
		} else {
			p->protocol = h[0];
			p->l4_off += nh == 51 ? ((__u32)h[1] + 2) * 4 : ((__u32)h[1] + 1) * 8;
		}
	}
}

static __always_inline int sl_parse(struct __sk_buff *skb, struct sl_l3l4 *p)
{
	if (skb->protocol == bpf_htons(ETH_P_IP)) {
		__u8 vihl;
		__u32 daddr;
		if (bpf_skb_load_bytes(skb, 0, &vihl, 1) < 0)
			return -1;
		if (bpf_skb_load_bytes(skb, 9, &p->protocol, 1) < 0)
			return -1;
		if (bpf_skb_load_bytes(skb, 16, &daddr, 4) < 0)
			return -1;
		sl_set_v4mapped(p->daddr, daddr);
		p->l4_off = (vihl & 0x0f) * 4;
	} else if (skb->protocol == bpf_htons(ETH_P_IPV6)) {
		if (bpf_skb_load_bytes(skb, 6, &p->protocol, 1) < 0)
			return -1;
		if (bpf_skb_load_bytes(skb, 24, p->daddr, 16) < 0)
			return -1;
		p->l4_off = 40;
		sl_skip_ipv6_ext(skb, p);
	} else {
		return -1;
	}
	if (p->protocol == IPPROTO_TCP || p->protocol == IPPROTO_UDP) {
		__u16 port;
		if (bpf_skb_load_bytes(skb, p->l4_off + 2, &port, 2) < 0)
			return -1;
		p->dport = bpf_ntohs(port);
	}
	return 0;
}

static __always_inline __u32 sl_payload_off(struct __sk_buff *skb, struct sl_l3l4 *p)
{
	if (p->protocol == IPPROTO_TCP) {
		__u8 doff;
		if (bpf_skb_load_bytes(skb, p->l4_off + 12, &doff, 1) < 0)
			return skb->len;
		return p->l4_off + (doff >> 4) * 4;
	}
	if (p->protocol == IPPROTO_UDP)
		return p->l4_off + 8;
	return skb->len;
}

/* Containment (`sluice isolate` / `sluice block`): egress of an isolated
 * cgroup, or to a blocked destination (for one cgroup, or for every cgroup
 * with cgroup id 0), is dropped here and counted in the entry. Loopback
 * stays open: an isolated container keeps talking to itself.
 * sl_contain_on[0] is non-zero only while entries exist, so the common path
 * pays one array read. */
#ifndef SL_CONTAIN_ENTRIES
#define SL_CONTAIN_ENTRIES 4096
#endif
struct sl_block_key {
	__u64 cgroup_id;
	__u8 daddr[16];
};
BPF_ARRAY(sl_contain_on, __u32, 1);
BPF_HASH(sl_isolated, __u64, __u64, SL_CONTAIN_ENTRIES);
BPF_HASH(sl_blocked, struct sl_block_key, __u64, SL_CONTAIN_ENTRIES);

static __always_inline int sl_is_loopback(const __u8 *a)
{
	/* v4-mapped 127.0.0.0/8, or ::1 */
	if (a[10] == 0xff && a[11] == 0xff)
		return a[12] == 127;
	for (int i = 0; i < 15; i++)
		if (a[i])
			return 0;
	return a[15] == 1;
}

static __always_inline int sl_contained(__u64 cgroup_id, const __u8 *daddr)
{
	__u32 zero = 0;
	__u32 *on = sl_contain_on.lookup(&zero);
	if (!on || !*on || sl_is_loopback(daddr))
		return 0;
	__u64 *n = sl_isolated.lookup(&cgroup_id);
	if (!n) {
		struct sl_block_key bk = {};
		bk.cgroup_id = cgroup_id;
		__builtin_memcpy(bk.daddr, daddr, 16);
		n = sl_blocked.lookup(&bk);
		if (!n) {
			bk.cgroup_id = 0;
			n = sl_blocked.lookup(&bk);
		}
	}
	if (!n)
		return 0;
	__sync_fetch_and_add(n, 1);
	return 1;
}

int sl_egress(struct __sk_buff *skb)
{
	struct sl_l3l4 p = {};
	struct sl_flow_key key = {};
	__u64 now = bpf_ktime_get_ns();
	__u32 len = skb->len;

	sl_stat_add(SL_STAT_EGRESS_PACKETS, 1);
	if (sl_parse(skb, &p) < 0)
		return 1;

	key.cgroup_id = bpf_skb_cgroup_id(skb);
	if (sl_contained(key.cgroup_id, p.daddr))
		return 0;   /* dropped: not counted as egress, counted in the entry */
	__builtin_memcpy(key.daddr, p.daddr, 16);
	key.dport = p.dport;
	key.protocol = p.protocol;
	key.gen = sl_current_gen();

	struct sl_flow_value *fv = sl_flow_get(&key, now, len);
	if (!fv)
		return 1;

	__u32 segs = skb->gso_segs;
	if (segs == 0)
		segs = 1;
	__u32 poff = sl_payload_off(skb, &p);
	__u32 plen = poff < len ? len - poff : 0;

	/* GSO: each segment repeats the headers, which skb->len counts once. */
	__sync_fetch_and_add(&fv->bytes, len + (segs - 1) * poff);
	__sync_fetch_and_add(&fv->packets, segs);
	fv->last_ns = now;
	if (plen == 0)
		return 1;
	__sync_fetch_and_add(&fv->payload_bytes, plen);
	/* The fetched value of an atomic add needs BPF_FETCH (v3 ISA), which bcc
	 * does not target; a racy read is good enough to pace sampling. */
	__sync_fetch_and_add(&fv->payload_packets, 1);
	__u32 flow_pkt = fv->payload_packets - 1;

	/* Decide whether to sample this packet's payload. */
	__u8 flags = 0;
	__u32 sock_idx = 0;
	struct bpf_sock *sk = skb->sk;
	struct sl_sock_state *ss = 0;
	if (sk)
		sk = bpf_sk_fullsock(sk);
	if (sk)
		ss = sl_sock.sk_storage_get(sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (ss) {
		/* Per-socket: sends on one socket are serialised by its lock. */
		sock_idx = ss->payload_pkts++;
		if (sock_idx < SL_SAMPLE_FIRST_PACKETS)
			flags |= SL_SAMPLE_F_SOCK_START;
	} else {
		flags |= SL_SAMPLE_F_NO_SOCK;
	}
	/* DNS: every query is sampled (names are the payload), up to a cap. */
	int dns = p.dport == 53;
	if (dns) {
		if (fv->samples >= SL_SAMPLE_MAX_DNS_PER_FLOW_WINDOW)
			return 1;
	} else if (!(flags & SL_SAMPLE_F_SOCK_START)) {
		if (flow_pkt % SL_SAMPLE_EVERY != 0)
			return 1;
		if (fv->samples >= SL_SAMPLE_MAX_PER_FLOW_WINDOW)
			return 1;
	}
	__sync_fetch_and_add(&fv->samples, 1);

	struct sl_sample_event *ev;
	ev = sl_event_alloc(sizeof(*ev), SL_EV_SAMPLE);
	if (!ev)
		return 1;
	sl_fill_header(&ev->hdr, SL_EV_SAMPLE, 0, key.cgroup_id);
	ev->sock_cookie = bpf_get_socket_cookie(skb);
	__builtin_memcpy(ev->daddr, p.daddr, 16);
	ev->dport = p.dport;
	ev->protocol = p.protocol;
	ev->flags = flags;
	ev->sock_pkt_index = sock_idx;
	ev->payload_len = plen;
	__u32 want = dns ? SL_SAMPLE_MAX : SL_SAMPLE_BYTES;
	__u32 n = plen < want ? plen : want;
	/* The verifier needs the length register itself bounded to
	 * [1, SL_SAMPLE_MAX]; clang folds plain clamps away, a mask it keeps.
	 * For n in [1, SL_SAMPLE_MAX] this is the identity. */
	if (n > 0) {
		__u32 sz = ((n - 1) & (SL_SAMPLE_MAX - 1)) + 1;
		if (bpf_skb_load_bytes(skb, poff, ev->data, sz) < 0)
			n = 0;
	}
	ev->sample_len = n;
	sl_event_submit(skb, ev, sizeof(*ev), SL_EV_SAMPLE);
	return 1;
}
