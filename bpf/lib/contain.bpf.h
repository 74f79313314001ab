/* SPDX-License-Identifier: Apache-2.0
 *
 * Containment state (`sluice isolate` / `sluice block`), shared by the
 * egress program (drops packets), the cgroup_mkdir tracepoint (follows a
 * container into the cgroup of its next run) and the socket hooks (refuse
 * raw and packet sockets).
 *
 * Entries are per *handle*, a non-zero u64 user space picks per contained
 * container (the container's cgroup id when it was first contained); handle
 * 0 holds the node-wide blocks. Every cgroup of a contained container maps
 * to its handle in sl_contain_cg:
 *  - the container's cgroup(s) at the time, put there by user space;
 *  - the cgroup of a restart or re-creation of the same container (same
 *    container id, new cgroup), put there by cgroup_mkdir from
 *    sl_contain_ids (container id -> handle). The tracepoint fires before
 *    the new directory is activated (visible), so before any process can
 *    join it: there is no window in which the new cgroup is uncontained;
 *  - sub-cgroups of those, found at packet time through their ancestor at
 *    the container's level (bit L of sl_contain_levels set when some
 *    contained cgroup sits at level L).
 * Every lookup here runs only while sl_contain_on[0] is set (some entry
 * exists), so a node with nothing contained pays one array read.
 */
#ifndef SLUICE_CONTAIN_BPF_H
#define SLUICE_CONTAIN_BPF_H

#include "common.bpf.h"

#ifndef SL_CONTAIN_ENTRIES
#define SL_CONTAIN_ENTRIES 4096
#endif
/* Deepest cgroup level a contained container's cgroup may sit at (kubepods
 * paths are 3-5 levels deep). */
#define SL_CONTAIN_MAX_LEVEL 12
#define SL_CONTAINER_ID_LEN 64

struct sl_block_key {
	__u64 handle;      /* 0: every cgroup on the node */
	__u8 daddr[16];
};
struct sl_container_key {
	char id[SL_CONTAINER_ID_LEN];   /* 64 lowercase hex digits, no NUL */
};
/* An isolation: packets dropped, and whether the container's loopback is
 * dropped too (SL_ISO_NO_LOOPBACK: its network namespace is shared, with
 * the host or other containers, whose processes could relay for it). */
struct sl_isolation {
	__u64 dropped;
	__u32 flags;
	__u32 pad;
};
#define SL_ISO_NO_LOOPBACK 1
BPF_ARRAY(sl_contain_on, __u32, 1);
BPF_ARRAY(sl_contain_levels, __u32, 1);
/* handle -> its isolation */
BPF_HASH(sl_isolated, __u64, struct sl_isolation, SL_CONTAIN_ENTRIES);
BPF_HASH(sl_blocked, struct sl_block_key, __u64, SL_CONTAIN_ENTRIES);
/* cgroup id -> handle; container id -> handle */
BPF_HASH(sl_contain_cg, __u64, __u64, SL_CONTAIN_ENTRIES);
BPF_HASH(sl_contain_ids, struct sl_container_key, __u64, SL_CONTAIN_ENTRIES);

static __always_inline int sl_contain_active(void)
{
	__u32 zero = 0;
	__u32 *on = sl_contain_on.lookup(&zero);
	return on && *on;
}

static __always_inline __u32 sl_contain_level_mask(void)
{
	__u32 zero = 0;
	__u32 *lv = sl_contain_levels.lookup(&zero);
	return lv ? *lv : 0;
}

/* (bcc rewrites map calls only outside macros: the lookup is a function.) */
static __always_inline __u64 sl_contain_cg_handle(__u64 cgroup_id)
{
	__u64 *h = sl_contain_cg.lookup(&cgroup_id);
	return h ? *h : 0;
}

/* The handle of a cgroup (0: not contained): the cgroup itself, else its
 * ancestors at the levels where contained cgroups sit. Two copies because
 * the ancestor helper differs by program type (a socket's cgroup in
 * cgroup_skb, the current task's elsewhere); each is a bounded loop that
 * runs only over the levels set. */
#define SL_CONTAIN_HANDLE_BODY(ANCESTOR)                                       \
	__u64 h = sl_contain_cg_handle(cgroup_id);                             \
	if (h)                                                                 \
		return h;                                                      \
	__u32 levels = sl_contain_level_mask();                                \
	for (int l = 1; l <= SL_CONTAIN_MAX_LEVEL; l++) {                      \
		if (!(levels & (1u << l)))                                     \
			continue;                                              \
		__u64 a = ANCESTOR;                                            \
		if (!a)                                                        \
			break; /* the cgroup is shallower than l */            \
		h = sl_contain_cg_handle(a);                                   \
		if (h)                                                         \
			return h;                                              \
	}                                                                      \
	return 0;

static __always_inline __u64 sl_contain_handle_skb(struct __sk_buff *skb, __u64 cgroup_id)
{
	SL_CONTAIN_HANDLE_BODY(bpf_skb_ancestor_cgroup_id(skb, l))
}

static __always_inline __u64 sl_contain_handle_current(__u64 cgroup_id)
{
	SL_CONTAIN_HANDLE_BODY(bpf_get_current_ancestor_cgroup_id(l))
}

#endif /* SLUICE_CONTAIN_BPF_H */
