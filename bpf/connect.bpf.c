/* SPDX-License-Identifier: Apache-2.0
 *
 * Destinations: cgroup sock_addr hooks at the cgroup v2 root.
 *
 * connect4/6 see TCP and connected-UDP connect(2) in the caller's context
 * (pid, comm, cgroup). sendmsg4/6 see unconnected UDP sends (DNS); those can
 * be per-packet, so one event per (cgroup, pid, destination) per
 * SL_UDP_DEDUP_NS is emitted and the rest are only counted. Every program
 * returns 1: Sluice observes, it never denies.
 *
 * Unconnected sends are per packet (a DNS server answers every query with
 * one), so their deduplication is kept cheap: no clock helper (sl_clock,
 * written by user space), and a socket that keeps sending to the
 * destination it last reported (a resolver, a syslog or statsd client, a
 * QUIC client) is recognised by its own storage (sl_sock_send) without
 * hashing the 32-byte key. Measured: bench/RESULTS.md.
 */
#include "lib/common.bpf.h"

struct sl_udp_seen_key {
	__u64 cgroup_id;
	__u8 daddr[16];
	__u32 pid;
	__u16 dport;
	__u16 pad;
};
BPF_TABLE("lru_hash", struct sl_udp_seen_key, __u64, sl_udp_seen, 16384);

/* Per socket: the last unconnected-send destination reported (or found
 * reported) for it, by which process, and when (sl_clock). Sends on one
 * socket may run concurrently, so it is a hint validated field by field;
 * `valid` is cleared first and set last by the writer. A lost race costs
 * one more lookup of sl_udp_seen, which stays the authority. The sender's
 * cgroup is not compared (a helper call per packet): a process moved to
 * another cgroup has its repeated sends to a destination it had just
 * reported deduplicated until that report's SL_UDP_DEDUP_NS ends, then
 * reported under its new cgroup. */
struct sl_send_cache {
	__u64 daddr[2];
	__u64 at;
	__u32 pid;
	__u16 dport;
	__u16 valid;
};
BPF_SK_STORAGE(sl_sock_send, struct sl_send_cache);

/* Per CPU, direct-mapped by a hash of the sl_udp_seen key: when that key
 * was last reported, as sl_udp_seen said. The socket's own cache above
 * holds one destination; a socket that sends to a new one with every
 * datagram (a DNS server answering its clients) missed it every time and
 * paid the LRU lookup (a helper call, a hash of the 32-byte key and the
 * LRU's bookkeeping), the largest part of this hook's cost there
 * (bench/RESULTS.md, udp64m). A hit within the dedup interval is what the
 * LRU would have answered (or, if the LRU evicted the key meanwhile, one
 * report fewer within the interval, as the socket cache does). Per CPU, so
 * only tasks preempted on this CPU can interleave: the writer clears
 * `valid` first and sets it last, a reader checks it before and after the
 * key (compiler barriers keep that order), and an entry left mixed by two
 * interleaved writes (one key's words, another's time) fails its seeded
 * check (sl_cache_check, bpf/lib/common.bpf.h). */
#ifndef SL_SEEN_CACHE_SLOTS
#define SL_SEEN_CACHE_SLOTS 512   /* a power of two; 72 B each: 36 KiB per CPU */
#endif
struct sl_seen_cache_ent {
	struct sl_udp_seen_key k;
	__u64 at;
	__u64 check;    /* sl_cache_check(key hash, at) */
	__u32 valid;
	__u32 pad;
};
BPF_PERCPU_ARRAY(sl_seen_cache, struct sl_seen_cache_ent, SL_SEEN_CACHE_SLOTS);

static __always_inline struct sl_seen_cache_ent *sl_seen_cache_of(__u64 h)
{
	__u32 i = (__u32)h & (SL_SEEN_CACHE_SLOTS - 1);
	return sl_seen_cache.lookup(&i);
}

/* When the key was last reported, as cached, or 0. */
static __always_inline __u64 sl_seen_cache_get(struct sl_seen_cache_ent *c, const struct sl_udp_seen_key *k,
					       __u64 h)
{
	const __u64 *w = (const __u64 *)k, *e = (const __u64 *)&c->k;
	__u32 v = *(volatile __u32 *)&c->valid;
	sl_compiler_barrier();
	__u64 at = c->at;
	int same = v && e[0] == w[0] && e[1] == w[1] && e[2] == w[2] && e[3] == w[3] &&
		   c->check == sl_cache_check(h, at);
	sl_compiler_barrier();
	return same && *(volatile __u32 *)&c->valid == v ? at : 0;
}

static __always_inline void sl_seen_cache_put(struct sl_seen_cache_ent *c, const struct sl_udp_seen_key *k,
					      __u64 h, __u64 at)
{
	const __u64 *w = (const __u64 *)k;
	__u64 *e = (__u64 *)&c->k;
	__u32 v = c->valid + 1;
	*(volatile __u32 *)&c->valid = 0;
	sl_compiler_barrier();
	e[0] = w[0];
	e[1] = w[1];
	e[2] = w[2];
	e[3] = w[3];
	c->at = at;
	c->check = sl_cache_check(h, at);
	sl_compiler_barrier();
	*(volatile __u32 *)&c->valid = v ? v : 1;
}

static __always_inline void sl_send_cache_set(struct sl_send_cache *sc, __u32 pid, const __u8 *daddr, __u16 dport,
					      __u64 at)
{
	if (!sc)
		return;
	*(volatile __u16 *)&sc->valid = 0;
	__builtin_memcpy(sc->daddr, daddr, 16);
	sc->pid = pid;
	sc->dport = dport;
	sc->at = at;
	*(volatile __u16 *)&sc->valid = 1;
}

static __always_inline int sl_on_sock_addr(struct bpf_sock_addr *ctx, __u8 op,
					   int v6)
{
	struct sl_connect_event *ev;
	__u64 cgid;
	__u32 pid = bpf_get_current_pid_tgid() >> 32;
	__u8 daddr[16] __attribute__((aligned(8)));  /* compared as two __u64 */
	__u16 dport = bpf_ntohs((__u16)ctx->user_port);
	__u8 proto = ctx->protocol;
	__u64 now;

	sl_sock_addr_ip(ctx, v6, daddr);

	if (op == SL_SENDMSG) {
		now = sl_coarse_now();
		struct sl_send_cache *sc = 0;
		struct bpf_sock *sk = ctx->sk;
		if (sk)
			sc = sl_sock_send.sk_storage_get(sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
		const __u64 *d = (const __u64 *)daddr;
		if (sc && *(volatile __u16 *)&sc->valid && sc->pid == pid && sc->dport == dport &&
		    sc->daddr[0] == d[0] && sc->daddr[1] == d[1] && now - sc->at < SL_UDP_DEDUP_NS) {
			sl_stat_add(SL_STAT_UDP_SEND_DEDUPED, 1);
			return 1;
		}
		cgid = bpf_get_current_cgroup_id();
		struct sl_udp_seen_key k = {};
		k.cgroup_id = cgid;
		__builtin_memcpy(k.daddr, daddr, 16);
		k.pid = pid;
		k.dport = dport;
		__u64 h = sl_hash4((const __u64 *)&k, sl_seed_value());
		struct sl_seen_cache_ent *c = sl_seen_cache_of(h);
		__u64 at = c ? sl_seen_cache_get(c, &k, h) : 0;
		if (at && now - at < SL_UDP_DEDUP_NS) {
			sl_send_cache_set(sc, pid, daddr, dport, at);
			sl_stat_add(SL_STAT_UDP_SEND_DEDUPED, 1);
			return 1;
		}
		__u64 *last = sl_udp_seen.lookup(&k);
		if (last && now - *last < SL_UDP_DEDUP_NS) {
			at = *last;
			sl_send_cache_set(sc, pid, daddr, dport, at);
			if (c)
				sl_seen_cache_put(c, &k, h, at);
			sl_stat_add(SL_STAT_UDP_SEND_DEDUPED, 1);
			return 1;
		}
		sl_udp_seen.update(&k, &now);
		sl_send_cache_set(sc, pid, daddr, dport, now);
		if (c)
			sl_seen_cache_put(c, &k, h, now);
	} else {
		cgid = bpf_get_current_cgroup_id();
		now = bpf_ktime_get_ns();
		struct sl_flow_key fk = {};
		fk.cgroup_id = cgid;
		__builtin_memcpy(fk.daddr, daddr, 16);
		fk.dport = dport;
		fk.protocol = proto;
		fk.gen = sl_current_gen();
		struct sl_flow_value *fv = sl_flow_get(&fk, now, 0);
		if (fv) {
			__sync_fetch_and_add(&fv->connects, 1);
			fv->last_ns = now;
		}
	}

	if (!sl_event_quota_ok(ctx, cgid))
		return 1;
	ev = sl_event_alloc(sizeof(*ev), SL_EV_CONNECT);
	if (!ev)
		return 1;
	sl_fill_header(&ev->hdr, SL_EV_CONNECT, pid, cgid);
	ev->sock_cookie = bpf_get_socket_cookie(ctx);
	__builtin_memcpy(ev->daddr, daddr, 16);
	ev->dport = dport;
	ev->protocol = proto;
	ev->op = op;
	ev->family = ctx->user_family;
	bpf_get_current_comm(ev->comm, sizeof(ev->comm));
	sl_event_submit(ctx, ev, sizeof(*ev), SL_EV_CONNECT);
	return 1;
}

int sl_connect4(struct bpf_sock_addr *ctx) { return sl_on_sock_addr(ctx, SL_CONNECT, 0); }
int sl_connect6(struct bpf_sock_addr *ctx) { return sl_on_sock_addr(ctx, SL_CONNECT, 1); }
int sl_sendmsg4(struct bpf_sock_addr *ctx) { return sl_on_sock_addr(ctx, SL_SENDMSG, 0); }
int sl_sendmsg6(struct bpf_sock_addr *ctx) { return sl_on_sock_addr(ctx, SL_SENDMSG, 1); }
