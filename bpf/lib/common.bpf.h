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
	struct sl_cgroup_event cgroup;
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
/* [0]: current flow generation, flipped by user space at each window end. */
BPF_ARRAY(sl_gen, __u32, 1);
BPF_HASH(sl_flows, struct sl_flow_key, struct sl_flow_value, SL_FLOW_ENTRIES);

static __always_inline void sl_stat_add(__u32 idx, __u64 n)
{
	__u64 *v = sl_stats.lookup(&idx);
	if (v)
		*v += n;   /* per-CPU slot: no atomics needed */
}

static __always_inline __u8 sl_current_gen(void)
{
	__u32 zero = 0;
	__u32 *g = sl_gen.lookup(&zero);
	return g ? (__u8)(*g & 1) : 0;
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

/* Count one event against a flow of the current generation. Returns the
 * value so callers can update more fields, or NULL when the map is full
 * (counted: nothing is dropped silently). */
static __always_inline struct sl_flow_value *sl_flow_get(struct sl_flow_key *key,
							 __u64 now, __u64 bytes)
{
	struct sl_flow_value *v = sl_flows.lookup(key);
	if (v)
		return v;
	struct sl_flow_value zero = {};
	zero.first_ns = now;
	/* insert() is BPF_NOEXIST: losing a creation race to another CPU is
	 * fine, the lookup below finds its entry. */
	sl_flows.insert(key, &zero);
	v = sl_flows.lookup(key);
	if (!v) {
		sl_stat_add(SL_STAT_FLOW_MAP_FULL, 1);
		sl_stat_add(SL_STAT_FLOW_BYTES_UNTRACKED, bytes);
	}
	return v;
}

#endif /* SLUICE_COMMON_BPF_H */
