/* SPDX-License-Identifier: Apache-2.0
 *
 * Destinations: cgroup sock_addr hooks at the cgroup v2 root.
 *
 * connect4/6 see TCP and connected-UDP connect(2) in the caller's context
 * (pid, comm, cgroup). sendmsg4/6 see unconnected UDP sends (DNS); those can
 * be per-packet, so one event per (cgroup, pid, destination) per
 * SL_UDP_DEDUP_NS is emitted and the rest are only counted. Every program
 * returns 1: Sluice observes, it never denies.
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

static __always_inline int sl_on_sock_addr(struct bpf_sock_addr *ctx, __u8 op,
					   int v6)
{
	struct sl_connect_event *ev;
	__u64 cgid = bpf_get_current_cgroup_id();
	__u32 pid = bpf_get_current_pid_tgid() >> 32;
	__u8 daddr[16];
	__u16 dport = bpf_ntohs((__u16)ctx->user_port);
	__u8 proto = ctx->protocol;
	__u64 now = bpf_ktime_get_ns();

	sl_sock_addr_ip(ctx, v6, daddr);

	if (op == SL_SENDMSG) {
		struct sl_udp_seen_key k = {};
		k.cgroup_id = cgid;
		__builtin_memcpy(k.daddr, daddr, 16);
		k.pid = pid;
		k.dport = dport;
		__u64 *last = sl_udp_seen.lookup(&k);
		if (last && now - *last < SL_UDP_DEDUP_NS) {
			sl_stat_add(SL_STAT_UDP_SEND_DEDUPED, 1);
			return 1;
		}
		sl_udp_seen.update(&k, &now);
	} else {
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
