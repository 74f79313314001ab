/* SPDX-License-Identifier: Apache-2.0
 *
 * Ingress: what destinations send back, and DNS answers. One cgroup_skb
 * program at the cgroup v2 root sees every packet delivered to a socket,
 * with the receiving socket's cgroup id.
 *
 *  - every packet: headers by direct packet access (bpf_skb_load_bytes only
 *    when they are not in the linear part, or for IPv6 extension headers),
 *    then three atomic adds into the flow entry the egress program keeps for
 *    the same (cgroup, remote address, remote port, transport): the packet's
 *    source is the flow's destination. The receiving socket's storage
 *    (sl_sock_in) caches that entry's slot, its cgroup id and the window:
 *    a packet of the flow the socket last received in this window makes ONE
 *    helper call (bpf_sk_storage_get) and two inlined array reads; only the
 *    socket's first packet from a source in a window pays the cgroup id
 *    (once per socket) and the flow hash. No clock read (only for an entry
 *    the packet creates), no per-packet events.
 *  - source port 53 (UDP or TCP), and only that: the response payload, up
 *    to SL_DNS_MAX bytes (longer ones cut and counted), is submitted as an
 *    SL_EV_DNS event, at most SL_SAMPLE_MAX_DNS_PER_FLOW_WINDOW per flow per
 *    window (the rest counted), so user space can bind names to addresses.
 *
 * With kernel.count_received = false (SL_COUNT_RX 0) only the second: a
 * packet not from port 53 returns after reading its source port
 * (sl_surely_not_dns), before any helper call or write.
 *
 * IPv6 extension headers are walked by sl_skip_ipv6_ext() from
 * egress.bpf.c: this unit is assembled after it (sensor/kernel/hooks.py).
 * No kernel struct is read. The program always returns 1 (allow).
 */

/* kernel.count_received (the loader sets 0 for false) */
#ifndef SL_COUNT_RX
#define SL_COUNT_RX 1
#endif

struct sl_l3l4_in {
	__u8 saddr[16] __attribute__((aligned(8)));  /* compared as two __u64 */
	__u32 l4_off;
	__u16 sport;
	__u8 protocol;
};

static __always_inline int sl_parse_in(struct __sk_buff *skb, struct sl_l3l4_in *p)
{
	if (skb->protocol == bpf_htons(ETH_P_IP)) {
		__u8 vihl;
		__u32 saddr;
		if (bpf_skb_load_bytes(skb, 0, &vihl, 1) < 0)
			return -1;
		if (bpf_skb_load_bytes(skb, 9, &p->protocol, 1) < 0)
			return -1;
		if (bpf_skb_load_bytes(skb, 12, &saddr, 4) < 0)
			return -1;
		sl_set_v4mapped(p->saddr, saddr);
		p->l4_off = (vihl & 0x0f) * 4;
	} else if (skb->protocol == bpf_htons(ETH_P_IPV6)) {
		struct sl_l3l4 e = {};
		if (bpf_skb_load_bytes(skb, 6, &e.protocol, 1) < 0)
			return -1;
		if (bpf_skb_load_bytes(skb, 8, p->saddr, 16) < 0)
			return -1;
		e.l4_off = 40;
		sl_skip_ipv6_ext(skb, &e);
		p->protocol = e.protocol;
		p->l4_off = e.l4_off;
	} else {
		return -1;
	}
	if (p->protocol == IPPROTO_TCP || p->protocol == IPPROTO_UDP) {
		__u16 port;
		if (bpf_skb_load_bytes(skb, p->l4_off, &port, 2) < 0)
			return -1;
		p->sport = bpf_ntohs(port);
	}
	return 0;
}

static __always_inline void sl_dns_submit(struct __sk_buff *skb, struct sl_flow_key *key,
					  struct sl_l3l4_in *p, __u32 poff, __u32 plen)
{
	struct sl_dns_event *ev = sl_event_alloc(sizeof(*ev), SL_EV_DNS);
	if (!ev)
		return;
	sl_fill_header(&ev->hdr, SL_EV_DNS, 0, key->cgroup_id);
	__builtin_memcpy(ev->saddr, p->saddr, 16);
	ev->sport = p->sport;
	ev->protocol = p->protocol;
	ev->flags = 0;
	ev->payload_len = plen;
	ev->pad = 0;
	__u32 n = plen;
	if (n > SL_DNS_MAX) {
		n = SL_DNS_MAX;
		ev->flags |= SL_DNS_F_TRUNCATED;
		sl_stat_add(SL_STAT_DNS_TRUNCATED, 1);
	}
	/* Length bounded to [1, SL_DNS_MAX] by a mask the verifier keeps (the
	 * identity for n in that range); plen > 0 here. */
	__u32 sz = ((n - 1) & (SL_DNS_MAX - 1)) + 1;
	if (bpf_skb_load_bytes(skb, poff, ev->data, sz) < 0)
		n = 0;
	ev->data_len = n;
	sl_event_submit(skb, ev, sizeof(*ev), SL_EV_DNS);
}

/* The common case without a helper call: IPv4 (no options beyond what the
 * linear part holds) or IPv6 without extension headers, TCP or UDP, headers
 * read by direct packet access. Returns 0 when the slow parse must decide.
 * *poff: the payload offset (TCP data offset read here too). */
static __always_inline int sl_parse_in_fast(struct __sk_buff *skb, struct sl_l3l4_in *p, __u32 *poff)
{
	__u8 *d = (__u8 *)(long)skb->data;
	__u8 *end = (__u8 *)(long)skb->data_end;
	__u32 l4;
	if (skb->protocol == bpf_htons(ETH_P_IP)) {
		if (d + 20 > end)
			return 0;
		l4 = (d[0] & 0x0f) * 4;
		p->protocol = d[9];
		sl_set_v4mapped(p->saddr, *(__u32 *)(d + 12));
	} else if (skb->protocol == bpf_htons(ETH_P_IPV6)) {
		if (d + 40 > end)
			return 0;
		l4 = 40;
		p->protocol = d[6];
		__builtin_memcpy(p->saddr, d + 8, 16);
	} else {
		return 0;
	}
	if (p->protocol != IPPROTO_TCP && p->protocol != IPPROTO_UDP)
		return 0;
	if (l4 < 20 || l4 > 60)
		return 0;
	__u8 *t = d + l4;
	if (t + 14 > end)
		return 0;
	p->l4_off = l4;
	p->sport = (__u16)t[0] << 8 | t[1];
	*poff = l4 + (p->protocol == IPPROTO_TCP ? (t[12] >> 4) * 4 : 8);
	return 1;
}

/* Per socket: the flow slot of the last packet it received, for the
 * current window. Its own storage, not egress's sl_sock: a socket's sends
 * and receives are counted under the same key, but keeping the two caches
 * apart means neither program's cache thrashes the other's (an unconnected
 * UDP socket sending to one peer and hearing from another), and each file
 * keeps its own layout. Packets of one socket may be received on several
 * CPUs at once, so the cache is a hint validated field by field; the slot
 * is read once, before the fields it vouches for, and written last. */
struct sl_sock_in_state {
	__u32 slot;       /* flow slot + 1; 0: nothing cached */
	__u32 epoch;      /* sl_gen[0] when the slot was cached */
	__u16 sport;
	__u8 protocol;
	__u8 pad;
	__u32 pad2;
	__u64 cgroup_id;  /* the socket's cgroup: fixed for its life */
	__u64 saddr[2];
};
BPF_SK_STORAGE(sl_sock_in, struct sl_sock_in_state);

static __always_inline struct sl_sock_in_state *sl_sock_in_of(struct __sk_buff *skb)
{
	struct bpf_sock *sk = sl_skb_storage_sock(skb);
	if (!sk)
		return 0;
	return sl_sock_in.sk_storage_get(sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
}

/* A packet whose flow the socket has not cached in this window (or with no
 * socket storage): the flow hash (inserting the flow if new), then the
 * socket caches the slot. The cgroup id comes from the socket's storage
 * once it has been read for it. */
static __always_inline struct sl_flow_value *sl_ingress_slow(struct __sk_buff *skb, struct sl_sock_in_state *ss,
							     struct sl_flow_key *key, __u32 epoch, __u32 len)
{
	__u32 slot = 0;
	key->cgroup_id = ss && ss->cgroup_id ? ss->cgroup_id : bpf_skb_cgroup_id(skb);
	key->gen = epoch & 1;
	/* Inserting (not only looking up) keeps the bytes of a download whose
	 * window flipped between request and answer, at the price of an entry
	 * for a flow that only receives (its egress ACKs would make one). The
	 * clock is read only for an entry this packet created. */
	struct sl_flow_value *fv = sl_flow_get_slot(key, 0, len, &slot);
	if (!fv)
		return 0;
	if (fv->first_ns == 0)
		fv->first_ns = sl_coarse_now();
	if (ss) {
		*(volatile __u32 *)&ss->slot = 0;
		ss->epoch = epoch;
		ss->sport = key->dport;
		ss->protocol = key->protocol;
		ss->cgroup_id = key->cgroup_id;
		__builtin_memcpy(ss->saddr, key->daddr, 16);
		*(volatile __u32 *)&ss->slot = slot + 1;
	}
	return fv;
}

#if !SL_COUNT_RX
/* kernel.count_received = false: is this packet surely not a DNS answer?
 * The source port by direct packet access, nothing else read or written.
 * 0 (not sure: IPv6 extension headers, headers outside the linear part)
 * leaves it to the full parse. Not IP, or IPv4 neither TCP nor UDP: sure. */
static __always_inline int sl_surely_not_dns(struct __sk_buff *skb)
{
	__u8 *d = (__u8 *)(long)skb->data;
	__u8 *end = (__u8 *)(long)skb->data_end;
	__u32 l4;
	__u8 proto;
	if (skb->protocol == bpf_htons(ETH_P_IP)) {
		if (d + 20 > end)
			return 0;
		proto = d[9];
		if (proto != IPPROTO_TCP && proto != IPPROTO_UDP)
			return 1;
		l4 = (d[0] & 0x0f) * 4;
	} else if (skb->protocol == bpf_htons(ETH_P_IPV6)) {
		if (d + 40 > end)
			return 0;
		proto = d[6];
		if (proto != IPPROTO_TCP && proto != IPPROTO_UDP)
			return 0;
		l4 = 40;
	} else {
		return 1;
	}
	__u8 *t = d + l4;
	if (t + 2 > end)
		return 0;
	return t[0] != 0 || t[1] != 53;
}
#endif

int sl_ingress(struct __sk_buff *skb)
{
#if !SL_COUNT_RX
	if (sl_surely_not_dns(skb))
		return 1;
#endif
	struct sl_l3l4_in p = {};
	__u32 len = skb->len;
	__u32 poff = len;

	int fast = sl_parse_in_fast(skb, &p, &poff);
	if (!fast) {
		__builtin_memset(&p, 0, sizeof(p));
		if (sl_parse_in(skb, &p) < 0)
			return 1;
	}
#if !SL_COUNT_RX
	/* what sl_surely_not_dns left undecided, decided by the full parse */
	if (p.sport != 53)
		return 1;
#endif
	/* Fast path: one helper call (the socket's storage), then an inlined
	 * array read for the window and one for the counters. */
	__u32 epoch = sl_current_epoch();
	struct sl_sock_in_state *ss = sl_sock_in_of(skb);
	struct sl_flow_value *fv = 0;
	const __u64 *a = (const __u64 *)p.saddr;
	if (ss) {
		__u32 slot = *(volatile __u32 *)&ss->slot;
		if (slot && ss->epoch == epoch && ss->sport == p.sport && ss->protocol == p.protocol &&
		    ss->saddr[0] == a[0] && ss->saddr[1] == a[1])
			fv = sl_flow_at(slot - 1);
	}
	struct sl_flow_key key = {};
	if (!fv) {
		__builtin_memcpy(key.daddr, p.saddr, 16);
		key.dport = p.sport;
		key.protocol = p.protocol;
		fv = sl_ingress_slow(skb, ss, &key, epoch, len);
		if (!fv)
			return 1;
	}
	if (!fast) {
		if (p.protocol == IPPROTO_TCP) {
			__u8 doff;
			if (bpf_skb_load_bytes(skb, p.l4_off + 12, &doff, 1) == 0)
				poff = p.l4_off + (doff >> 4) * 4;
		} else if (p.protocol == IPPROTO_UDP) {
			poff = p.l4_off + 8;
		}
	}
	__u32 segs = skb->gso_segs;
	if (segs == 0)
		segs = 1;
	__u32 plen = poff < len ? len - poff : 0;
	/* GRO: each coalesced segment had its own headers, counted once in len. */
	__sync_fetch_and_add(&fv->rx_bytes, len + (segs - 1) * (poff < len ? poff : 0));
	__sync_fetch_and_add(&fv->rx_packets, segs);
	if (plen == 0)
		return 1;
	__sync_fetch_and_add(&fv->rx_payload_bytes, plen);

	if (p.sport != 53 || (p.protocol != IPPROTO_UDP && p.protocol != IPPROTO_TCP))
		return 1;
	/* Racy read of the cap, like egress sampling: a bound, not an exact count. */
	if (fv->dns_events >= SL_SAMPLE_MAX_DNS_PER_FLOW_WINDOW) {
		sl_stat_add(SL_STAT_DNS_CAPPED, 1);
		return 1;
	}
	__sync_fetch_and_add(&fv->dns_events, 1);
	if (!key.cgroup_id)   /* a cache hit: the socket's cgroup */
		key.cgroup_id = ss ? ss->cgroup_id : bpf_skb_cgroup_id(skb);
	sl_dns_submit(skb, &key, &p, poff, plen);
	return 1;
}
