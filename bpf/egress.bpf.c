/* SPDX-License-Identifier: Apache-2.0
 *
 * Egress bytes and payload samples: one cgroup_skb program at the cgroup v2
 * root sees every socket's outgoing packets with the socket's cgroup id.
 *
 * Cost model: this runs for every packet the host sends, so the common case
 * is kept to ONE helper call. On this machine kind a helper call costs 25 to
 * 90 ns (return thunks of the CPU mitigations), an empty program on this hook
 * about 33 ns: a clock read, a cgroup id, a skb_load_bytes or a hash lookup
 * each cost more than the floor. So (bench/bench_bpf_cost.py measures it):
 *  - headers are read by direct packet access (bpf_skb_load_bytes only
 *    when they are not in the linear part, or for IPv6 extension headers);
 *  - the socket's storage (the one helper call) caches the flow slot,
 *    destination and cgroup id of its last packet for the current window:
 *    a hit reaches the counters through an inlined array lookup, with no
 *    flow hash, no bpf_skb_cgroup_id and no clock read;
 *  - everything else is off the fast path: new flows and new windows (the
 *    flow hash, insertion), containment (one inlined array read while no
 *    entry exists), and sampling. A packet is sampled when it is among its
 *    socket's first SL_SAMPLE_FIRST_PACKETS payload packets, when its
 *    socket's paces reach a point (about every SL_SAMPLE_EVERY_BYTES
 *    payload bytes of its large packets, every SL_SAMPLE_EVERY of its small
 *    ones: a GSO stream of 64 KiB super-packets gets samples in proportion
 *    to its bytes, not one per 4 MiB), when it is its flow's first packet
 *    from this socket in the window and the flow has no sample yet, or
 *    when it is a DNS query; at
 *    most SL_SAMPLE_MAX_PER_FLOW_WINDOW per flow per window besides the
 *    sockets' first packets (DNS: its own cap) and a socket's sample that
 *    stands for SL_SAMPLE_UNCAPPED_SPAN bytes the cap refused to sample,
 *    within the cgroup's event quota. Each sample says how many
 *    payload bytes it stands for (span_bytes), and a large packet is read
 *    a second time at a random offset, so a cleartext prefix at the start
 *    of each write cannot hide what follows it. Sample volume is bounded
 *    by connections and flows, not by throughput.
 *
 * The program returns 1 (allow), or 0 (drop) for a contained cgroup's packets.
 */
#include "lib/common.bpf.h"
#include "lib/contain.bpf.h"
#include <uapi/linux/if_ether.h>
/* IANA protocol numbers, defined here: <uapi/linux/in.h> for these two
 * constants pulled linux/socket.h and more through the kernel headers and
 * cost 0.85 s of every start's compile (bench/RESULTS.md, eighth session). */
#define IPPROTO_TCP 6
#define IPPROTO_UDP 17

/* Sampling by bytes: a socket is due for a sample when it has sent this
 * many payload bytes since its last sample point (kernel.sample_every_bytes). */
#ifndef SL_SAMPLE_EVERY_BYTES
#define SL_SAMPLE_EVERY_BYTES 131072
#endif
/* The second read of a large packet: as long as the first, within the
 * record (SL_SAMPLE_MAX); none when the first read takes it all. */
#define SL_SAMPLE_SECOND_BYTES \
	(SL_SAMPLE_BYTES <= SL_SAMPLE_MAX / 2 ? SL_SAMPLE_BYTES : SL_SAMPLE_MAX - SL_SAMPLE_BYTES)
#define SL_SAMPLE_SECOND_MIN 16   /* shorter reads are not judged by user space */
/* A socket whose sample points the flow's cap refused until it had sent
 * this many payload bytes unsampled gets its next sample past the cap,
 * standing for all of them: another socket to the same destination (a
 * decoy of many tiny packets, whose packet-paced points come every ~64
 * packets) can fill the cap within milliseconds of each window, but not
 * keep a socket's bytes from being judged by that socket's own payload.
 * The socket's k-th such sample in a window needs k times this span, so
 * a socket sending b bytes in a window gets about sqrt(2 b / span) of
 * them (~220 for 10 Gbit/s over a 10 s window, well within the cgroup's
 * event quota), and no other socket can raise its threshold. */
#define SL_SAMPLE_UNCAPPED_SPAN (4u * SL_SAMPLE_EVERY_BYTES)
/* The span a refused point carries to the next one stops growing here. */
#define SL_SPAN_CARRY_MAX (1u << 30)

/* a + b, saturating at SL_SPAN_CARRY_MAX (concurrent sends may race on
 * the fields added: no sum may wrap) */
static __always_inline __u32 sl_span_add(__u32 a, __u32 b)
{
	return a < SL_SPAN_CARRY_MAX && b < SL_SPAN_CARRY_MAX - a ? a + b : SL_SPAN_CARRY_MAX;
}

/* Per socket. Sends on one socket may run concurrently (lockless UDP), so
 * the cache is a hint validated field by field, and the sampling pace
 * (payload_pkts, since_weight, credit) may miss an update. */
struct sl_sock_state {
	__u32 payload_pkts;  /* payload packets sent on the socket */
	__u32 epoch;         /* sl_gen[0] when the slot was cached */
	__u32 slot;          /* flow slot + 1; 0: nothing cached */
	__u16 dport;
	__u8 protocol;
	__u8 pad;
	__u64 cgroup_id;
	__u64 daddr[2];
	/* Two paces, [0] for small packets, [1] for large (SL_PACE_MIN_WEIGHT) */
	__u32 since_weight[2];  /* a pace's weight since its last point */
	__u32 credit[2];        /* reaches SL_BYTE_PACE2 at the pace's next point */
	__u32 rng;              /* xorshift32 state for the draws; 0: not seeded */
	/* Samples past the flow's cap in window win_epoch (else zero). */
	__u32 uncapped;
	__u32 win_epoch;
	/* Bytes of refused points on the flow (carry_daddr, carry_dport,
	 * carry_proto), refused in window carry_epoch, that the socket's next
	 * sample on that flow stands for. Only on that flow: bytes sent
	 * elsewhere are not weighed by this flow's sample. From an earlier
	 * window only at a paced point (drawn at random), never at the point
	 * a window's first packet makes, whose content the sender chooses. */
	__u32 carried;
	__u32 carry_epoch;
	__u32 pad3;
	__u64 carry_daddr[2];
	__u16 carry_dport;
	__u8 carry_proto;
	__u8 pad2;
	__u32 pad4;
};

/* Two paces per socket, one for packets shorter than SL_PACE_MIN_WEIGHT
 * (a pace's worth of SL_SAMPLE_EVERY packets) and one for the rest. A
 * large packet weighs its payload bytes, a small one SL_PACE_MIN_WEIGHT,
 * and a point falls on the packet whose weight crosses the pace's next
 * point, so a packet is drawn in proportion to its weight among its own
 * size: a point about every SL_SAMPLE_EVERY_BYTES bytes of large packets
 * and every SL_SAMPLE_EVERY small ones. A point's sample stands for its
 * pace's weight since the last point times its bytes over its weight (a
 * Horvitz-Thompson estimate: each kind of byte is counted at its bytes in
 * expectation, and however a sender mixes sizes, each pace sees one size
 * class). Before, a byte pace and a packet pace over the same packets
 * stood for overlapping bytes: ciphertext in 16 KiB datagrams between
 * 1,024 16-byte ones of text was counted at 23 % of the payload where it
 * was 50 % (a model of the kernel's pacing; a single pace weighted as
 * here, 54 % but rarely drawn; two, 50 %;
 * tests/adversarial/test_sample_steering.py). */
#define SL_PACE_MIN_WEIGHT (SL_SAMPLE_EVERY_BYTES / SL_SAMPLE_EVERY > 0 ? SL_SAMPLE_EVERY_BYTES / SL_SAMPLE_EVERY : 1)

/* Paced sample points fall at random distances: uniform in [pace / 2,
 * 3 x pace / 2), one pace on average, drawn at each sample point. A window
 * of one pace is as wide as any pattern a sender could repeat within a
 * pace, and keeps the spans samples stand for within a factor of three
 * (a width of two paces made one misjudged sample weigh up to twice as
 * much: the cleartext-prefix test fell to 86 % encrypted once). At fixed distances a sender who knows the pace could
 * cut its writes so that every point lands on a small cleartext packet
 * between large encrypted ones (tests/adversarial/test_sample_steering.py);
 * at random ones, the packet that reaches a point is drawn in proportion to
 * its weight. The draws
 * come from a per-socket xorshift32 seeded once from bpf_get_prandom_u32:
 * a helper call at every point cost a TCP bulk stream ~25 ns per packet
 * (points fall every few GSO packets, capped or not), and a sender sees
 * nothing of which packets were sampled, so cannot recover the state. */
#define SL_BYTE_PACE2 (2u * SL_SAMPLE_EVERY_BYTES)

/* The next draw of the socket's xorshift32 (*r, advanced): where a pace's
 * credit starts, so that its next point falls uniformly in [pace / 2,
 * 3 x pace / 2) further on. */
static __always_inline __u32 sl_pace_draw(__u32 *r)
{
	__u32 x = *r;
	x ^= x << 13;
	x ^= x >> 17;
	x ^= x << 5;
	*r = x;
	return SL_SAMPLE_EVERY_BYTES / 2 + (__u32)(((__u64)x * SL_SAMPLE_EVERY_BYTES) >> 32);
}
BPF_SK_STORAGE(sl_sock, struct sl_sock_state);

struct sl_l3l4 {
	__u8 daddr[16] __attribute__((aligned(8)));  /* compared as two __u64 */
	__u32 l4_off;
	__u32 poff;      /* payload offset; skb->len when not TCP/UDP */
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

/* Header parse through bpf_skb_load_bytes: headers outside the linear
 * part, IPv6 extension headers. */
static __always_inline int sl_parse_slow(struct __sk_buff *skb, struct sl_l3l4 *p)
{
	if (skb->protocol == bpf_htons(ETH_P_IP)) {
		__u8 vihl;
		__u8 fttp[4];   /* flags + fragment offset, ttl, protocol */
		__u32 daddr;
		if (bpf_skb_load_bytes(skb, 0, &vihl, 1) < 0)
			return -1;
		if (bpf_skb_load_bytes(skb, 6, fttp, 4) < 0)
			return -1;
		if (bpf_skb_load_bytes(skb, 16, &daddr, 4) < 0)
			return -1;
		sl_set_v4mapped(p->daddr, daddr);
		p->protocol = fttp[3];
		p->l4_off = (vihl & 0x0f) * 4;
		/* a non-first fragment: see sl_parse_direct */
		if ((fttp[0] & 0x1f) | fttp[1]) {
			p->protocol = 44;
			sl_stat_add(SL_STAT_IPV4_FRAGMENTS, 1);
		}
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
	p->poff = skb->len;
	if (p->protocol == IPPROTO_TCP || p->protocol == IPPROTO_UDP) {
		__u16 port;
		if (bpf_skb_load_bytes(skb, p->l4_off + 2, &port, 2) < 0)
			return -1;
		p->dport = bpf_ntohs(port);
		if (p->protocol == IPPROTO_UDP) {
			p->poff = p->l4_off + 8;
		} else {
			__u8 doff;
			if (bpf_skb_load_bytes(skb, p->l4_off + 12, &doff, 1) == 0)
				p->poff = p->l4_off + (doff >> 4) * 4;
		}
	}
	return 0;
}

/* Header parse by direct packet access (no helper call): IPv4, or IPv6
 * without extension headers, with the transport header in the linear part.
 * Returns 1 when sl_parse_slow must do it, -1 when not IP. */
static __always_inline int sl_parse_direct(struct __sk_buff *skb, struct sl_l3l4 *p)
{
	__u8 *data = (__u8 *)(long)skb->data;
	__u8 *end = (__u8 *)(long)skb->data_end;
	__u32 l4;

	if (skb->protocol == bpf_htons(ETH_P_IP)) {
		if (data + 20 > end)
			return 1;
		l4 = (data[0] & 0x0f) * 4;
		p->protocol = data[9];
		sl_set_v4mapped(p->daddr, *(__u32 *)(data + 16));
		/* A non-first fragment (offset != 0) carries no transport
		 * header: no ports, no payload. Like IPv6's, it is counted
		 * under protocol 44 (fragment) with port 0; bytes are kept. */
		if ((data[6] & 0x1f) | data[7]) {
			p->protocol = 44;
			sl_stat_add(SL_STAT_IPV4_FRAGMENTS, 1);
		}
	} else if (skb->protocol == bpf_htons(ETH_P_IPV6)) {
		if (data + 40 > end)
			return 1;
		p->protocol = data[6];
		if (p->protocol != IPPROTO_TCP && p->protocol != IPPROTO_UDP)
			return 1;  /* extension headers */
		__builtin_memcpy(p->daddr, data + 24, 16);
		l4 = 40;
	} else {
		return -1;
	}
	p->l4_off = l4;
	p->poff = skb->len;
	if (p->protocol != IPPROTO_TCP && p->protocol != IPPROTO_UDP)
		return 0;
	__u8 *th = data + l4;
	if (th + 14 > end)   /* ports, and the TCP data offset at byte 12 */
		return 1;
	p->dport = ((__u16)th[2] << 8) | th[3];
	p->poff = p->protocol == IPPROTO_UDP ? l4 + 8 : l4 + (th[12] >> 4) * 4;
	return 0;
}

static __always_inline int sl_parse(struct __sk_buff *skb, struct sl_l3l4 *p)
{
	int r = sl_parse_direct(skb, p);
	if (r > 0)
		return sl_parse_slow(skb, p);
	return r;
}

/* Containment (`sluice isolate` / `sluice block`, maps and handles in
 * lib/contain.bpf.h): egress of a contained container's cgroups (and their
 * sub-cgroups), or to a blocked destination (for one container, or for
 * every cgroup with handle 0), is dropped here and counted in the entry.
 * An isolated container keeps talking to itself over 127.0.0.1 and ::1,
 * unless its network namespace is shared (SL_ISO_NO_LOOPBACK: the host's,
 * a pod's, another container's), where a process outside the container
 * listens on that loopback and could relay (a mesh sidecar, a proxy).
 * The rest of 127.0.0.0/8 is dropped for every isolated container: those
 * addresses are where relays outside the container listen (Docker's
 * embedded DNS server at 127.0.0.11 forwards queries from dockerd's own
 * socket, systemd-resolved's stub at 127.0.0.53). Blocks never apply to
 * loopback. sl_contain_on[0] is non-zero only while entries exist, so the
 * common path pays one array read. */
#define SL_LO_NONE 0
#define SL_LO_OWN 1     /* 127.0.0.1, ::1 */
#define SL_LO_OTHER 2   /* the rest of 127.0.0.0/8 */
static __always_inline int sl_loopback_kind(const __u8 *a)
{
	/* v4-mapped 127.0.0.0/8 (::ffff:127.x.y.z: the first ten bytes zero,
	 * then ff ff; a global IPv6 address may carry ff ff 7f in the same
	 * place), or ::1 */
	const __u64 *d = (const __u64 *)a;
	if (d[0])
		return SL_LO_NONE;
	if (a[8] || a[9])
		return SL_LO_NONE;
	if (a[10] == 0xff && a[11] == 0xff) {
		if (a[12] != 127)
			return SL_LO_NONE;
		return a[13] == 0 && a[14] == 0 && a[15] == 1 ? SL_LO_OWN : SL_LO_OTHER;
	}
	if (a[10] || a[11] || a[12] || a[13] || a[14])
		return SL_LO_NONE;
	return a[15] == 1 ? SL_LO_OWN : SL_LO_NONE;
}

static __always_inline int sl_contained(struct __sk_buff *skb, __u64 cgroup_id, const __u8 *daddr)
{
	if (!sl_contain_active())
		return 0;
	int lo = sl_loopback_kind(daddr);
	__u64 handle = sl_contain_handle_skb(skb, cgroup_id);
	if (handle) {
		struct sl_isolation *iso = sl_isolated.lookup(&handle);
		if (iso) {
			if (lo == SL_LO_OWN && !(iso->flags & SL_ISO_NO_LOOPBACK))
				return 0;
			__sync_fetch_and_add(&iso->dropped, 1);
			return 1;
		}
	}
	if (lo != SL_LO_NONE)
		return 0;
	struct sl_block_key bk = {};
	__builtin_memcpy(bk.daddr, daddr, 16);
	__u64 *n = 0;
	if (handle) {
		bk.handle = handle;
		n = sl_blocked.lookup(&bk);
	}
	if (!n) {
		bk.handle = 0;
		n = sl_blocked.lookup(&bk);
	}
	if (!n)
		return 0;
	__sync_fetch_and_add(n, 1);
	return 1;
}

/* A DNS query: to port 53, or to Docker's embedded resolver (127.0.0.11
 * on every user-defined network), whose queries reach this hook already
 * DNAT'ed to a per-container port (iptables OUTPUT runs before it). Every
 * query is sampled, whole, under the DNS cap (sl_sample). One compare of
 * the address's second half: ::ffff:127.0.0.11 read as a little-endian
 * __u64. */
#define SL_DOCKER_DNS_HI 0x0b00007fffff0000ULL
static __always_inline int sl_dns_dest(const struct sl_l3l4 *p)
{
	const __u64 *d = (const __u64 *)p->daddr;
	return p->dport == 53 || (d[1] == SL_DOCKER_DNS_HI && d[0] == 0);
}

/* A packet sampled as a DNS query: to a DNS destination, and short enough
 * for the one read to take it whole. A longer one is no query (user space
 * names DNS only a query that ends within the read): it is sampled like
 * any packet (its pace, the flow's cap, the second read), so bytes behind
 * 256 bytes of cleartext to port 53 are read too. */
static __always_inline int sl_dns_query_pkt(const struct sl_l3l4 *p, __u32 plen)
{
	return sl_dns_dest(p) && plen <= SL_SAMPLE_MAX;
}

/* Does a socket's first payload start a TLS handshake record, an HTTP
 * request line or an SSH identification line? Then it is read up to
 * SL_FIRST_MAX bytes: TLS's server_name and HTTP's Host (names), and
 * enough of a TLS hello or of an SSH KEXINIT sent with its line for user
 * space to check their form (sensor/telemetry/protocol.py). One 4-byte
 * load, once per TCP socket, on the sampling path only. */
static __always_inline int sl_names_first(struct __sk_buff *skb, __u32 poff)
{
	__u8 b[4];
	if (bpf_skb_load_bytes(skb, poff, b, 4) < 0)
		return 0;
	if (b[0] == 0x16 && b[1] == 0x03)   /* TLS record: handshake */
		return 1;
	__u32 w = (__u32)b[0] << 24 | (__u32)b[1] << 16 | (__u32)b[2] << 8 | b[3];
	return w == 0x47455420 /* "GET " */ || w == 0x504f5354 /* POST */ ||
	       w == 0x50555420 /* "PUT " */ || w == 0x48454144 /* HEAD */ ||
	       w == 0x44454c45 /* DELE */ || w == 0x50415443 /* PATC */ ||
	       w == 0x4f505449 /* OPTI */ || w == 0x434f4e4e /* CONN */ ||
	       w == 0x5353482d /* "SSH-" */;
}

static __always_inline int sl_sample_first(struct __sk_buff *skb, __u64 cgroup_id,
					   const struct sl_l3l4 *p, __u32 plen, __u8 flags)
{
	struct sl_sample_first_event *ev;
	/* within the cgroup's event quota like every other sample: a connect
	 * loop of TLS or HTTP openings must not fill the ring buffer for all */
	if (!sl_event_quota_ok(skb, cgroup_id))
		return 0;
	ev = sl_event_alloc(sizeof(*ev), SL_EV_SAMPLE);
	if (!ev)
		return 0;
	sl_fill_header(&ev->s.hdr, SL_EV_SAMPLE, 0, cgroup_id);
	ev->s.sock_cookie = bpf_get_socket_cookie(skb);
	__builtin_memcpy(ev->s.daddr, p->daddr, 16);
	ev->s.dport = p->dport;
	ev->s.protocol = p->protocol;
	ev->s.flags = flags | SL_SAMPLE_F_FIRST;
	ev->s.sock_pkt_index = 0;
	ev->s.payload_len = plen;
	ev->s.span_bytes = plen;
	ev->s.second_off = 0;
	ev->s.second_len = 0;
	ev->s.pad = 0;
	__u32 n = plen < SL_FIRST_MAX ? plen : SL_FIRST_MAX;
	/* [1, SL_FIRST_MAX] by a mask the verifier keeps; plen > 0 here. */
	__u32 sz = ((n - 1) & (SL_FIRST_MAX - 1)) + 1;
	if (bpf_skb_load_bytes(skb, p->poff, ev->s.data, sz) < 0)
		n = 0;
	ev->s.sample_len = n;
	sl_event_submit(skb, ev, sizeof(*ev), SL_EV_SAMPLE);
	return 1;
}


/* The socket's storage, created on its first packet. Kernels before 5.11
 * take only full sockets in bpf_sk_storage_get (the loader says so). The
 * kernel charges it to the socket's option memory and refuses it when
 * that is full (net.core.optmem_max): a sender can fill it first (~960
 * TCP_MD5SIG keys for other peers, socket filters), and its socket is then
 * sampled without per-socket state (by the flow's packet count, a pace it
 * can steer). Counted here; user space names the container
 * (SL-EVA-001) from its samples flagged SL_SAMPLE_F_NO_SOCK. */
static __always_inline struct sl_sock_state *sl_sock_state_of(struct __sk_buff *skb)
{
	struct bpf_sock *sk = sl_skb_storage_sock(skb);
	if (!sk)
		return 0;
	struct sl_sock_state *ss = sl_sock.sk_storage_get(sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (!ss)
		sl_stat_add(SL_STAT_SOCK_STATE_REFUSED, 1);
	return ss;
}

/* The slot cached for this packet's flow, + 1; 0 when the cache does not
 * match. The slot is read once, before the fields it vouches for: the
 * writer (sl_flow_slow) clears it first and sets it last. */
static __always_inline __u32 sl_sock_cached(const struct sl_sock_state *ss, const struct sl_l3l4 *p,
					    __u32 epoch)
{
	const __u64 *d = (const __u64 *)p->daddr;
	__u32 slot = *(volatile const __u32 *)&ss->slot;
	if (slot && ss->epoch == epoch && ss->dport == p->dport && ss->protocol == p->protocol &&
	    ss->daddr[0] == d[0] && ss->daddr[1] == d[1])
		return slot;
	return 0;
}

/* A flow seen for the first time in this window by this socket (or a
 * packet without socket storage): the flow hash, insertion of new flows,
 * then the socket caches the slot. */
static __always_inline struct sl_flow_value *sl_flow_slow(struct sl_sock_state *ss,
							  const struct sl_l3l4 *p, __u64 cgroup_id,
							  __u32 epoch, __u32 len)
{
	struct sl_flow_key key = {};
	__u32 slot = 0;
	key.cgroup_id = cgroup_id;
	__builtin_memcpy(key.daddr, p->daddr, 16);
	key.dport = p->dport;
	key.protocol = p->protocol;
	key.gen = epoch & 1;
	/* first_ns / last_ns to sl_clock's ~0.1 s: a socket that sends to a
	 * new destination with every packet (a DNS server answering its
	 * clients) takes this path per packet, and the clock helper would be
	 * its most expensive part (bench/RESULTS.md). */
	__u64 now = sl_coarse_now();
	struct sl_flow_value *fv = sl_flow_get_slot(&key, now, len, &slot);
	if (!fv)
		return 0;
	fv->last_ns = now;
	if (ss) {
		*(volatile __u32 *)&ss->slot = 0;
		ss->epoch = epoch;
		ss->dport = p->dport;
		ss->protocol = p->protocol;
		ss->cgroup_id = cgroup_id;
		__builtin_memcpy(ss->daddr, p->daddr, 16);
		*(volatile __u32 *)&ss->slot = slot + 1;
	}
	return fv;
}

/* Emit a sample of this packet's payload, which is due (sl_egress says
 * why), within the per-flow caps and the cgroup's event quota. span: the
 * payload bytes it stands for (0: unknown); past_cap: it may go past the
 * flow's cap (SL_SAMPLE_UNCAPPED_SPAN). Returns 0 when it was refused (a
 * cap, the quota, a full ring), 2 when it went past the cap, else 1. */
static __always_inline int sl_sample(struct __sk_buff *skb, const struct sl_l3l4 *p,
				      struct sl_flow_value *fv, __u64 cgroup_id, __u8 flags,
				      __u32 sock_idx, __u32 plen, __u32 span, int past_cap, int dns)
{
	int got = 1;
	/* DNS: every query is sampled (names are the payload), up to a cap.
	 * A socket's first packets are always sampled and are not charged to
	 * the flow's cap: decoy connections opened to the upload's destination
	 * would otherwise use it up with their first packets, and the window's
	 * bytes would be judged by decoys alone (their number is bounded by
	 * the cgroup's event quota, whose overflow is itself reported). */
	if (dns) {
		if (fv->samples >= SL_SAMPLE_MAX_DNS_PER_FLOW_WINDOW)
			return 0;
	} else if ((flags & SL_SAMPLE_F_SOCK_START) && !sl_dns_query_pkt(p, plen)) {
		/* (past the flow's DNS cap, a fresh socket's query goes under the
		 * flow's cap below: resolvers open a socket per lookup) */
		__sync_fetch_and_add(&fv->start_samples, 1);
	} else {
		/* its own counter: no difference of two racy reads to underflow;
		 * past the cap only a socket with enough bytes unsampled (its
		 * refused points carried their spans here) */
		if (fv->capped_samples >= SL_SAMPLE_MAX_PER_FLOW_WINDOW) {
			if (!past_cap)
				return 0;
			got = 2;
		}
		__sync_fetch_and_add(&fv->capped_samples, 1);
	}
	__sync_fetch_and_add(&fv->samples, 1);
	/* A socket's first payload that starts a TLS handshake or an HTTP
	 * request: read longer, for its server_name / Host (names). */
	if (sock_idx == 0 && !(flags & SL_SAMPLE_F_NO_SOCK) && p->protocol == IPPROTO_TCP &&
	    plen > SL_SAMPLE_BYTES && sl_names_first(skb, p->poff))
		return sl_sample_first(skb, cgroup_id, p, plen, flags) ? got : 0;

	struct sl_sample_event *ev;
	if (!sl_event_quota_ok(skb, cgroup_id))
		return 0;
	ev = sl_event_alloc(sizeof(*ev), SL_EV_SAMPLE);
	if (!ev)
		return 0;
	sl_fill_header(&ev->hdr, SL_EV_SAMPLE, 0, cgroup_id);
	fv->last_ns = ev->hdr.ktime_ns;
	ev->sock_cookie = bpf_get_socket_cookie(skb);
	__builtin_memcpy(ev->daddr, p->daddr, 16);
	ev->dport = p->dport;
	ev->protocol = p->protocol;
	ev->flags = flags;
	ev->sock_pkt_index = sock_idx;
	ev->payload_len = plen;
	ev->span_bytes = span;
	ev->second_off = 0;
	ev->second_len = 0;
	ev->pad = 0;
	/* A DNS query, or a packet too short for a second read (at most two
	 * reads long), is read whole: a cleartext prefix as long as the first
	 * read in front of each small packet hid the rest (64 + 63-byte
	 * datagrams: 48 MiB of ciphertext uncounted, found by review). */
	__u32 want = dns || plen <= 2 * SL_SAMPLE_BYTES ? SL_SAMPLE_MAX : SL_SAMPLE_BYTES;
	__u32 n = plen < want ? plen : want;
	/* The verifier needs the length register itself bounded to
	 * [1, SL_SAMPLE_MAX]; clang folds plain clamps away, a mask it keeps.
	 * For n in [1, SL_SAMPLE_MAX] this is the identity. */
	if (n > 0) {
		__u32 sz = ((n - 1) & (SL_SAMPLE_MAX - 1)) + 1;
		if (bpf_skb_load_bytes(skb, p->poff, ev->data, sz) < 0)
			n = 0;
	}
	/* A large packet, read again at a random offset past the first read:
	 * a low-entropy prefix in front of every write (or every packet) then
	 * hides nothing behind it, and where the read lands cannot be aimed
	 * at. bpf_skb_load_bytes reads the paged (non-linear) part of GSO
	 * packets too. One more helper call per sample, none per packet. */
	if (SL_SAMPLE_SECOND_BYTES >= SL_SAMPLE_SECOND_MIN && !dns && n == SL_SAMPLE_BYTES &&
	    plen >= SL_SAMPLE_BYTES + SL_SAMPLE_SECOND_BYTES) {
		__u32 room = plen - SL_SAMPLE_BYTES - SL_SAMPLE_SECOND_BYTES + 1;
		__u32 off = SL_SAMPLE_BYTES + (__u32)(((__u64)bpf_get_prandom_u32() * room) >> 32);
		if (bpf_skb_load_bytes(skb, p->poff + off, ev->data + SL_SAMPLE_BYTES, SL_SAMPLE_SECOND_BYTES) == 0) {
			ev->second_off = off;
			ev->second_len = SL_SAMPLE_SECOND_BYTES;
			n += SL_SAMPLE_SECOND_BYTES;
		}
	}
	ev->sample_len = n;
	sl_event_submit(skb, ev, sizeof(*ev), SL_EV_SAMPLE);
	return got;
}

int sl_egress(struct __sk_buff *skb)
{
	struct sl_l3l4 p = {};
	__u32 len = skb->len;

	sl_stat_add(SL_STAT_EGRESS_PACKETS, 1);
	if (sl_parse(skb, &p) < 0)
		return 1;

	__u32 epoch = sl_current_epoch();
	struct sl_sock_state *ss = sl_sock_state_of(skb);
	struct sl_flow_value *fv = 0;
	__u64 cgroup_id;
	__u32 cached = ss ? sl_sock_cached(ss, &p, epoch) : 0;
	if (cached) {
		/* fast path: the socket's cached slot */
		cgroup_id = ss->cgroup_id;
		fv = sl_flow_at(cached - 1);
	} else if (ss && ss->cgroup_id) {
		/* a socket's cgroup is fixed at its creation (sk_cgrp_data), so
		 * the one cached with any earlier flow is this packet's too */
		cgroup_id = ss->cgroup_id;
	} else {
		cgroup_id = bpf_skb_cgroup_id(skb);
	}
	if (sl_contained(skb, cgroup_id, p.daddr))
		return 0;   /* dropped: not counted as egress, counted in the entry */
	if (!fv) {
		fv = sl_flow_slow(ss, &p, cgroup_id, epoch, len);
		if (!fv)
			return 1;
	}

	__u32 segs = skb->gso_segs;
	if (segs == 0)
		segs = 1;
	__u32 poff = p.poff;
	__u32 plen = poff < len ? len - poff : 0;

	/* GSO: each segment repeats the headers, which skb->len counts once. */
	__sync_fetch_and_add(&fv->bytes, len + (segs - 1) * poff);
	__sync_fetch_and_add(&fv->packets, segs);
	if (plen == 0)
		return 1;
	__sync_fetch_and_add(&fv->payload_bytes, plen);
	/* Sampled as a DNS query (every one, whole, under the DNS cap) until
	 * the flow's DNS cap is full; past it like any packet (paced, the
	 * flow's cap, the past-cap rescue): 256 real queries a window then
	 * small datagrams of ciphertext to port 53 left those unread. */
	int dnsq = sl_dns_query_pkt(&p, plen) && fv->samples < SL_SAMPLE_MAX_DNS_PER_FLOW_WINDOW;

	__u8 flags = 0;
	__u32 sock_idx = 0, span = 0;
	int paced = 0, oob = 0;
	if (ss) {
		sock_idx = ss->payload_pkts++;
		/* its pace (by its size) and its weight there */
		int large = plen >= SL_PACE_MIN_WEIGHT;
		__u32 w = large ? plen : SL_PACE_MIN_WEIGHT;
		__u32 *credit_p = large ? &ss->credit[1] : &ss->credit[0];
		__u32 *since_p = large ? &ss->since_weight[1] : &ss->since_weight[0];
		__u32 credit = *credit_p + w;
		/* Past the socket's first packets, to a flow the socket already
		 * sent to in this window (cached) or one that has its sample of
		 * the window: the paces' packets. */
		int later = sock_idx >= SL_SAMPLE_FIRST_PACKETS && (cached || fv->samples);
		/* The common case: one of the paces' packets, under its pace, not
		 * a DNS query. */
		if (later && credit < SL_BYTE_PACE2 && !dnsq) {
			*since_p += w;
			*credit_p = credit;
			return 1;
		}
		__u32 r = ss->rng;
		if (!r)
			r = bpf_get_prandom_u32() | 1;
		if (later && credit >= SL_BYTE_PACE2) {
			/* A paced point: it stands for its pace's weight since the
			 * last one times its bytes over its weight (at least its own
			 * bytes: since includes w). */
			__u32 since = *since_p + w;
			span = large ? since : (__u32)(((__u64)since * plen) / SL_PACE_MIN_WEIGHT);
			*since_p = 0;
			__u32 excess = credit - SL_BYTE_PACE2;
			__u32 start = sl_pace_draw(&r) + (excess < SL_BYTE_PACE2 ? excess : SL_BYTE_PACE2);
			*credit_p = start < SL_BYTE_PACE2 ? start : SL_BYTE_PACE2 - 1;
			paced = 1;
		} else {
			/* Sampled for itself, outside the paces (a socket's first
			 * packets, its first to a flow in the window, a DNS
			 * query): it stands for its own bytes and moves no pace. */
			span = plen;
			oob = dnsq && later;
			if (sock_idx == 0) {
				/* each pace's first point, drawn */
				ss->credit[0] = sl_pace_draw(&r);
				ss->credit[1] = sl_pace_draw(&r);
			}
		}
		ss->rng = r;
		if (sock_idx < SL_SAMPLE_FIRST_PACKETS)
			flags = SL_SAMPLE_F_SOCK_START;
	} else {
		/* No socket state: paced by the flow's payload packets. A racy
		 * read after the add paces well enough, and needs no fetching
		 * atomic (BPF_FETCH: Linux 5.12, v3 ISA). */
		__sync_fetch_and_add(&fv->payload_packets, 1);
		if (!dnsq && (fv->payload_packets - 1) % SL_SAMPLE_EVERY != 0)
			return 1;
		flags = SL_SAMPLE_F_NO_SOCK;
	}
	/* A refused point's bytes are carried to the socket's next sample on
	 * the same flow (SL_SAMPLE_UNCAPPED_SPAN, and the carry_ fields): the
	 * sample that gets out stands for them. (One call: sl_sample is
	 * inlined.) */
	__u32 unc = 0, carried = 0;
	int past_cap = 0, same = 0, use = 0;
	const __u64 *d = (const __u64 *)p.daddr;
	if (ss) {
		if (ss->win_epoch == epoch)
			unc = ss->uncapped;
		same = ss->carried && ss->carry_daddr[0] == d[0] && ss->carry_daddr[1] == d[1] &&
		       ss->carry_dport == p.dport && ss->carry_proto == p.protocol;
		/* a DNS query sampled for itself stands for its own bytes: it
		 * takes no carry and never goes past the cap */
		use = !oob && same && (ss->carry_epoch == epoch || paced);
		carried = use ? ss->carried : 0;
		span = sl_span_add(span, carried);
		past_cap = !oob && (__u64)span >= (__u64)SL_SAMPLE_UNCAPPED_SPAN * (unc + 1);
	}
	int got = sl_sample(skb, &p, fv, cgroup_id, flags, sock_idx, plen, span, past_cap, dnsq);
	if (ss) {
		if (ss->win_epoch != epoch) {
			ss->win_epoch = epoch;
			ss->uncapped = 0;
		}
		if (got == 2)
			ss->uncapped = unc + 1;
		if (!got && !oob) {
			/* kept: this point's span, and a carry not used here */
			ss->carried = sl_span_add(span, same && !use ? ss->carried : 0);
			ss->carry_epoch = epoch;
			ss->carry_daddr[0] = d[0];
			ss->carry_daddr[1] = d[1];
			ss->carry_dport = p.dport;
			ss->carry_proto = p.protocol;
		} else if (use) {
			ss->carried = 0;
		}
	}
	return 1;
}
