/* SPDX-License-Identifier: Apache-2.0
 *
 * Maps and helpers shared by the Sluice programs (kernel only).
 *
 * Build-time constants come from the loader as -D flags (sensor/loader.py);
 * the defaults below only keep the file compilable on its own.
 *
 * Nothing here reads kernel-internal structs: bcc compiles against whatever
 * kernel build tree is installed, which need not match the running kernel.
 * Only tracepoint arguments, uapi contexts and helpers are used.
 */
#ifndef SLUICE_COMMON_BPF_H
#define SLUICE_COMMON_BPF_H

#include "sluice_events.h"

#ifndef SL_RINGBUF_PAGES
#define SL_RINGBUF_PAGES 256
#endif
#ifndef SL_FLOW_ENTRIES
#define SL_FLOW_ENTRIES 65536
#endif
#ifndef SL_PID_ENTRIES
#define SL_PID_ENTRIES 65536
#endif
#ifndef SL_SAMPLE_BYTES
#define SL_SAMPLE_BYTES 64
#endif
#ifndef SL_SAMPLE_FIRST_PACKETS
#define SL_SAMPLE_FIRST_PACKETS 8
#endif
#ifndef SL_SAMPLE_EVERY
#define SL_SAMPLE_EVERY 64
#endif
#ifndef SL_SAMPLE_MAX_PER_FLOW_WINDOW
#define SL_SAMPLE_MAX_PER_FLOW_WINDOW 32
#endif
#ifndef SL_SAMPLE_MAX_DNS_PER_FLOW_WINDOW
#define SL_SAMPLE_MAX_DNS_PER_FLOW_WINDOW 256
#endif
#ifndef SL_UDP_DEDUP_NS
#define SL_UDP_DEDUP_NS 1000000000ULL
#endif
#ifndef SL_CGROUP2_HIERARCHY
#define SL_CGROUP2_HIERARCHY 0
#endif
/* Fair share, per cgroup and window: new flow entries, events submitted. */
#ifndef SL_FLOW_QUOTA
#define SL_FLOW_QUOTA 2048
#endif
#ifndef SL_EVENT_QUOTA
#define SL_EVENT_QUOTA 16384
#endif
#ifndef SL_QUOTA_ENTRIES
#define SL_QUOTA_ENTRIES 8192
#endif

/* Ring buffer where the kernel has one (5.8+), perf buffer otherwise. With
 * the perf buffer, events are built in a per-CPU scratch slot (one slot per
 * event type, so a softirq egress sample cannot clobber a half-built exec). */
#ifdef SL_USE_RINGBUF
BPF_RINGBUF_OUTPUT(sl_events, SL_RINGBUF_PAGES);
#else
BPF_PERF_OUTPUT(sl_events);
union sl_any_event {
	struct sl_exec_event exec;
	struct sl_exit_event exit;
	struct sl_exec_args_event args;
	struct sl_connect_event connect;
	struct sl_sample_event sample;
	struct sl_sample_first_event sample_first;
	struct sl_cgroup_event cgroup;
	struct sl_dns_event dns;
	struct sl_listen_event listen;
	struct sl_accept_event accept;
	struct sl_unix_into_event unix_into;
};
BPF_PERCPU_ARRAY(sl_scratch, union sl_any_event, SL_EV_TYPE_MAX);
#endif

BPF_PERCPU_ARRAY(sl_stats, __u64, SL_STAT_MAX);
#ifndef SL_WAKEUP_EVERY
#define SL_WAKEUP_EVERY 256
#endif
#ifdef SL_USE_RINGBUF
/* Records submitted on this CPU since user space was last woken. */
BPF_PERCPU_ARRAY(sl_unwoken, __u64, 1);
#endif
/* [0]: the window epoch, incremented by user space at each window end; its
 * low bit is the flow generation (sl_flow_key.gen). */
BPF_ARRAY(sl_gen, __u32, 1);
/* [0]: CLOCK_MONOTONIC in ns (bpf_ktime_get_ns's clock) as user space last
 * wrote it: at start and then at every poll of the event buffer (at most
 * ~0.1 s apart while the sensor runs). For intervals of a second on
 * per-packet paths (the unconnected-send deduplication): an inlined array
 * read instead of a helper call (bpf_ktime_get_ns costs ~90 ns on this
 * machine kind, bench/RESULTS.md). A stalled sensor only lengthens those
 * intervals: fewer repeated reports, never more. */
BPF_ARRAY(sl_clock, __u64, 1);
/* Flow counters live in an array, in slots handed out per generation
 * (generation g owns [g * SL_FLOW_ENTRIES, (g + 1) * SL_FLOW_ENTRIES)), and
 * sl_flows maps a flow key to its slot. Array lookups are inlined by the
 * verifier: no helper call, so a slot number cached per socket
 * (egress.bpf.c) reaches the counters without hashing the 32-byte key.
 * User space drains a generation after flipping away from it, then resets
 * its sl_flow_next entry. */
BPF_HASH(sl_flows, struct sl_flow_key, __u32, SL_FLOW_ENTRIES);
/* One slot per cache line: flows counted on different CPUs must not share
 * one (measured: +30 ns per packet on loopback TCP, whose data and ACK
 * flows got adjacent slots). */
struct sl_flow_slot {
	struct sl_flow_value v;
} __attribute__((aligned(64)));
BPF_ARRAY(sl_flow_vals, struct sl_flow_slot, 2 * SL_FLOW_ENTRIES);
BPF_ARRAY(sl_flow_next, __u32, 2);  /* slots handed out per generation */
/* Per-cgroup quota state. LRU: cgroups that stopped sending age out, and a
 * full map evicts instead of failing. */
BPF_TABLE("lru_hash", __u64, struct sl_quota, sl_quota, SL_QUOTA_ENTRIES);
/* cgroup id -> the cgroup its quotas are charged to: a container's own
 * cgroup for each of its sub-cgroups (and itself), so that a container that
 * can create sub-cgroups (a delegated subtree) does not multiply its share.
 * A map rather than an ancestor walk (lib/contain.bpf.h does that for
 * containment): one lookup, and it works where no ancestor helper applies
 * (sock_ops in softirq knows its cgroup only as a number). Filled by user
 * space for the containers it knows (their own cgroup and sub-cgroups it
 * sees) and by cgroup_mkdir (lifecycle.bpf.c) for a cgroup created from
 * inside a charged cgroup, before the new cgroup can hold a process. No
 * entry: the cgroup is charged itself. */
BPF_HASH(sl_quota_charge, __u64, __u64, SL_QUOTA_ENTRIES);

/* Cgroups a bind to port 53 or a raw/packet socket of which went
 * unreported (its event quota refused the event, or the ring buffer was
 * full): a map, not an event, so the loss itself cannot be lost. User space
 * drains it at each window close and takes their DNS answers as possibly
 * forged (sensor/telemetry/names.py FlowNamer.distrust). LRU: never fails
 * to record. */
#ifndef SL_UNREPORTED_ENTRIES
#define SL_UNREPORTED_ENTRIES 4096
#endif
BPF_TABLE("lru_hash", __u64, __u64, sl_unreported, SL_UNREPORTED_ENTRIES);

static __always_inline void sl_note_unreported(__u64 cgroup_id)
{
	__u64 one = 1;
	sl_unreported.update(&cgroup_id, &one);
}

static __always_inline void sl_stat_add(__u32 idx, __u64 n)
{
	__u64 *v = sl_stats.lookup(&idx);
	if (v)
		*v += n;   /* per-CPU slot: no atomics needed */
}

static __always_inline __u32 sl_current_epoch(void)
{
	__u32 zero = 0;
	__u32 *g = sl_gen.lookup(&zero);
	return g ? *g : 0;
}

/* sl_clock's time, or the kernel clock before user space first set it. */
static __always_inline __u64 sl_coarse_now(void)
{
	__u32 zero = 0;
	__u64 *c = sl_clock.lookup(&zero);
	return c && *c ? *c : bpf_ktime_get_ns();
}

static __always_inline __u8 sl_current_gen(void)
{
	return (__u8)(sl_current_epoch() & 1);
}

static __always_inline void sl_fill_header(struct sl_event_header *h, __u32 type,
					   __u32 pid, __u64 cgroup_id)
{
	h->type = type;
	h->pid = pid;
	h->ktime_ns = bpf_ktime_get_ns();
	h->cgroup_id = cgroup_id;
}

/* Event allocation and submission. Functions rather than macros: bcc
 * rewrites map method calls only outside macro expansions. Sizes are compile
 * time constants once inlined, as bpf_ringbuf_reserve requires. */
static __always_inline void *sl_event_alloc(__u32 size, __u32 type)
{
#ifdef SL_USE_RINGBUF
	void *p = sl_events.ringbuf_reserve(size);
	if (!p)
		sl_stat_add(SL_STAT_DROPPED + type, 1);
	return p;
#else
	__u32 slot = type;
	return (void *)sl_scratch.lookup(&slot);
#endif
}

static __always_inline void sl_event_submit(void *ctx, void *ev, __u32 size, __u32 type)
{
#ifdef SL_USE_RINGBUF
	/* Waking the reader for every record costs more than the record: most
	 * are submitted without a wake-up and the reader drains on a short
	 * timer; every SL_WAKEUP_EVERY-th record per CPU forces one, so a
	 * burst cannot fill the buffer unseen. Execs and cgroup events keep
	 * the kernel's adaptive wake-up: exec arguments are read from /proc,
	 * and a new container's metadata from its runtime (engine or OCI
	 * bundle), both only while they still exist; cgroups are rare. */
	__u64 flags = 0;
	if (type != SL_EV_EXEC && type != SL_EV_CGROUP) {
		__u32 zero = 0;
		__u64 *n = sl_unwoken.lookup(&zero);
		flags = BPF_RB_NO_WAKEUP;
		if (n && ++*n >= SL_WAKEUP_EVERY) {
			*n = 0;
			flags = BPF_RB_FORCE_WAKEUP;
		}
	}
	sl_events.ringbuf_submit(ev, flags);
	sl_stat_add(SL_STAT_SUBMITTED + type, 1);
#else
	if (sl_events.perf_submit(ctx, ev, size) == 0)
		sl_stat_add(SL_STAT_SUBMITTED + type, 1);
	else
		sl_stat_add(SL_STAT_DROPPED + type, 1);
#endif
}

/* Write an IPv4 address (network order) as an IPv4-mapped IPv6 address. */
static __always_inline void sl_set_v4mapped(__u8 *dst, __u32 addr_be)
{
	__builtin_memset(dst, 0, 10);
	dst[10] = 0xff;
	dst[11] = 0xff;
	__builtin_memcpy(dst + 12, &addr_be, 4);
}

/* A sock_addr hook's user address (connect, sendmsg, bind) as 16 bytes:
 * IPv6 as given, IPv4 as ::ffff:a.b.c.d. The IPv6 words are read one by
 * one (the verifier takes user_ip6 only in 4-byte loads). */
static __always_inline void sl_sock_addr_ip(struct bpf_sock_addr *ctx, int v6, __u8 *dst)
{
	if (v6) {
		__u32 a[4];
		a[0] = ctx->user_ip6[0];
		a[1] = ctx->user_ip6[1];
		a[2] = ctx->user_ip6[2];
		a[3] = ctx->user_ip6[3];
		__builtin_memcpy(dst, a, 16);
	} else {
		sl_set_v4mapped(dst, ctx->user_ip4);
	}
}

/* The skb's socket as bpf_sk_storage_get takes it (full sockets only on
 * kernels before 5.11: the loader defines SL_SK_STORAGE_NEEDS_FULLSOCK), or
 * 0 when there is none. */
static __always_inline struct bpf_sock *sl_skb_storage_sock(struct __sk_buff *skb)
{
	struct bpf_sock *sk = skb->sk;
#ifdef SL_SK_STORAGE_NEEDS_FULLSOCK
	if (sk)
		sk = bpf_sk_fullsock(sk);
#endif
	return sk;
}

/* --- fair share ------------------------------------------------------------
 * A cgroup may create SL_FLOW_QUOTA flow entries and submit SL_EVENT_QUOTA
 * events per window; past that, its new destinations are counted in one
 * aggregate entry (SL_FLOW_F_OVER_QUOTA: bytes and packets kept) and its
 * events only counted, so a flooding container cannot push the others out
 * of the flow table or the event buffer. The first refusal of each kind in
 * a window sends one SL_EV_QUOTA (user space names the cgroup). Only new
 * flows and events pay for this: one LRU lookup, never on the fast path of
 * a known flow. Counters race between CPUs (no atomics on the reset): a
 * quota may be overrun by a few entries, never by a flood. */
static __always_inline struct sl_quota *sl_quota_get(__u64 cgroup_id, __u32 window)
{
	struct sl_quota *q = sl_quota.lookup(&cgroup_id);
	if (!q) {
		struct sl_quota z = {};
		z.window = window;
		sl_quota.update(&cgroup_id, &z);
		q = sl_quota.lookup(&cgroup_id);
		if (!q)
			return 0;
	}
	if (q->window != window) {
		q->window = window;
		q->flows = 0;
		q->events = 0;
		q->reported = 0;
		if (window & 1) {
			q->flows_over[1] = 0;
			q->events_over[1] = 0;
		} else {
			q->flows_over[0] = 0;
			q->events_over[0] = 0;
		}
	}
	return q;
}

static __always_inline void sl_quota_report(void *ctx, struct sl_quota *q, __u64 cgroup_id, __u32 kind,
					    __u32 limit)
{
	if (q->reported & kind)
		return;
	q->reported |= kind;
	struct sl_quota_event *ev = sl_event_alloc(sizeof(*ev), SL_EV_QUOTA);
	if (!ev)
		return;
	sl_fill_header(&ev->hdr, SL_EV_QUOTA, bpf_get_current_pid_tgid() >> 32, cgroup_id);
	ev->kind = kind;
	ev->limit = limit;
	sl_event_submit(ctx, ev, sizeof(*ev), SL_EV_QUOTA);
}

/* The cgroup a cgroup's quotas are charged to (see sl_quota_charge). */
static __always_inline __u64 sl_quota_cgroup(__u64 cgroup_id)
{
	__u64 *c = sl_quota_charge.lookup(&cgroup_id);
	return c && *c ? *c : cgroup_id;
}

/* May this cgroup submit one more event in this window? Counted either way,
 * against its container's share (sl_quota_cgroup), which a refusal names. */
static __always_inline int sl_event_quota_ok(void *ctx, __u64 leaf_cgroup_id)
{
	__u64 cgroup_id = sl_quota_cgroup(leaf_cgroup_id);
	__u32 window = sl_current_epoch();
	struct sl_quota *q = sl_quota_get(cgroup_id, window);
	if (!q)
		return 1;   /* no quota state: fail open (the map is LRU, so rare) */
	if (q->events < SL_EVENT_QUOTA) {
		__sync_fetch_and_add(&q->events, 1);
		return 1;
	}
	if (window & 1)
		__sync_fetch_and_add(&q->events_over[1], 1);
	else
		__sync_fetch_and_add(&q->events_over[0], 1);
	sl_stat_add(SL_STAT_EVENT_QUOTA_REFUSED, 1);
	sl_quota_report(ctx, q, cgroup_id, SL_QUOTA_EVENTS, SL_EVENT_QUOTA);
	return 0;
}

/* The counters in slot `slot` (from sl_flows or a per-socket cache). */
static __always_inline struct sl_flow_value *sl_flow_at(__u32 slot)
{
	struct sl_flow_slot *s = sl_flow_vals.lookup(&slot);
	return s ? &s->v : 0;
}

/* A free slot of generation gen, or -1 when the generation has none left.
 * Lock-free claim without a fetching atomic (BPF_FETCH needs Linux 5.12 and
 * the v3 ISA): read the counter, add one, read it again. The claim holds
 * only when exactly our add happened in between; two claimants of one slot
 * would each have to see the other's add inside their window, which the
 * single modification order of the counter rules out. A lost race retries. */
static __always_inline __s64 sl_slot_claim(__u32 gen)
{
	__u32 *next = sl_flow_next.lookup(&gen);
	if (!next)
		return -1;
#pragma unroll
	for (int i = 0; i < 4; i++) {
		__u32 seen = *(volatile __u32 *)next;
		if (seen >= SL_FLOW_ENTRIES)
			return -1;
		__sync_fetch_and_add(next, 1);
		if (*(volatile __u32 *)next == seen + 1)
			return (__s64)gen * SL_FLOW_ENTRIES + seen;
	}
	return -1;
}

/* Count one event against a flow of the current generation: the slow path
 * (hash lookup, insertion of new flows). Returns the counters and their
 * slot, or NULL when the table is full (counted: nothing is dropped
 * silently). */
static __always_inline struct sl_flow_value *sl_flow_insert_slot(struct sl_flow_key *key, __u64 now,
								 __u64 bytes, __u32 *slot_out)
{
	__u32 *slot = sl_flows.lookup(key);
	if (slot) {
		*slot_out = *slot;
		return sl_flow_at(*slot);
	}
	__s64 claimed = sl_slot_claim(key->gen & 1);
	struct sl_flow_value *v = 0;
	if (claimed >= 0) {
		__u32 s = (__u32)claimed;
		v = sl_flow_at(s);
		if (v) {
			/* The slot is ours alone until its key is published. */
			__builtin_memset(v, 0, sizeof(*v));
			v->first_ns = now;
			v->last_ns = now;
			/* BPF_NOEXIST: losing a creation race to another CPU
			 * wastes this slot; the lookup below finds the winner. */
			sl_flows.insert(key, &s);
		}
	}
	slot = sl_flows.lookup(key);
	if (!slot) {
		sl_stat_add(SL_STAT_FLOW_MAP_FULL, 1);
		sl_stat_add(SL_STAT_FLOW_BYTES_UNTRACKED, bytes);
		return 0;
	}
	*slot_out = *slot;
	return sl_flow_at(*slot);
}

/* --- hashing for the per-CPU caches ---------------------------------------
 * A per-CPU cache in front of a hash map (sl_seen_cache, connect.bpf.c) is
 * direct-mapped by sl_hash4 of the map's key; its entries carry
 * sl_cache_check over their contents. Both are keyed by sl_seed, so a
 * sender can neither aim keys at one entry nor forge a check. */
/* [0]: a random seed the loader writes at start (0 until then: the caches
 * still work, their hash is then predictable). */
BPF_ARRAY(sl_seed, __u64, 1);
#define sl_compiler_barrier() asm volatile("" ::: "memory")

static __always_inline __u64 sl_seed_value(void)
{
	__u32 zero = 0;
	__u64 *s = sl_seed.lookup(&zero);
	return s ? *s : 0;
}

/* Four 64-bit words, absorbed one at a time by an invertible step (odd
 * multiply, xor-shift): keys that differ in one word never collide. */
static __always_inline __u64 sl_hash4(const __u64 *w, __u64 seed)
{
	__u64 h = (seed ^ w[0]) * 0x9e3779b97f4a7c15ULL;
	h = ((h ^ (h >> 29)) ^ w[1]) * 0xbf58476d1ce4e5b9ULL;
	h = ((h ^ (h >> 32)) ^ w[2]) * 0x94d049bb133111ebULL;
	h = ((h ^ (h >> 29)) ^ w[3]) * 0x9e3779b97f4a7c15ULL;
	return h ^ (h >> 32);
}

static __always_inline __u64 sl_cache_check(__u64 h, __u64 v)
{
	__u64 c = (h ^ v) * 0xbf58476d1ce4e5b9ULL;
	c = (c ^ (c >> 31)) * 0x94d049bb133111ebULL;
	return c ^ (c >> 29);
}

/* The flow's counters, or (a new flow of a cgroup past its flow quota)
 * its cgroup's over-quota aggregate. The quota report needs the program's
 * context only for the perf buffer, which this path does not have: there,
 * user space learns of the cgroup from the aggregate entry it drains. */
static __always_inline struct sl_flow_value *sl_flow_get_slot(struct sl_flow_key *key, __u64 now,
							      __u64 bytes, __u32 *slot_out)
{
	__u32 *slot = sl_flows.lookup(key);
	if (slot) {
		*slot_out = *slot;
		return sl_flow_at(*slot);
	}
	/* A new flow: charge its cgroup's (its container's) quota. */
	__u32 window = sl_current_epoch();
	__u64 charged = sl_quota_cgroup(key->cgroup_id);
	struct sl_quota *q = sl_quota_get(charged, window);
	if (q && q->flows >= SL_FLOW_QUOTA) {
		if (window & 1)
			__sync_fetch_and_add(&q->flows_over[1], 1);
		else
			__sync_fetch_and_add(&q->flows_over[0], 1);
		sl_stat_add(SL_STAT_FLOW_QUOTA_REFUSED, 1);
#ifdef SL_USE_RINGBUF
		sl_quota_report(0, q, charged, SL_QUOTA_FLOWS, SL_FLOW_QUOTA);
#endif
		/* aggregated under the cgroup charged, which user space names */
		struct sl_flow_key agg = {};
		agg.cgroup_id = charged;
		agg.gen = key->gen;
		agg.flags = SL_FLOW_F_OVER_QUOTA;
		return sl_flow_insert_slot(&agg, now, bytes, slot_out);
	}
	if (q)
		__sync_fetch_and_add(&q->flows, 1);
	return sl_flow_insert_slot(key, now, bytes, slot_out);
}

static __always_inline struct sl_flow_value *sl_flow_get(struct sl_flow_key *key, __u64 now, __u64 bytes)
{
	__u32 slot;
	return sl_flow_get_slot(key, now, bytes, &slot);
}

#endif /* SLUICE_COMMON_BPF_H */
