/* SPDX-License-Identifier: Apache-2.0
 *
 * Listeners and inbound connections: cgroup bind4/6 (sock_addr) and
 * sock_ops at the cgroup v2 root. Only uapi contexts and helpers.
 *
 * - bind4/6: every bind(2) with a non-zero port, in the caller's context.
 *   A port of 0 asks the kernel for an ephemeral one (a client, or a server
 *   that reports its port later): TCP listeners are caught at listen(2).
 * - sock_ops BPF_SOCK_OPS_TCP_LISTEN_CB: listen(2), in the caller's
 *   context, with the socket's real port. The caller's cgroup is stored in
 *   the listener's socket storage; the map is BPF_F_CLONE, so every socket
 *   the listener accepts inherits it.
 * - sock_ops BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB: the handshake of an
 *   inbound connection completed. This runs in softirq, where the current
 *   task and cgroup are unrelated to the socket: the cgroup comes from the
 *   cloned storage instead. Deduplicated per (cgroup, local port, peer
 *   address) per SL_ACCEPT_DEDUP_NS in an LRU; the rest are counted.
 *
 * - sock_ops BPF_SOCK_OPS_TCP_CONNECT_CB: an outbound connect(2), in the
 *   caller's context, with its source address and port already chosen.
 *   (source address, port) -> caller's cgroup goes into an LRU, so an
 *   inbound connection from a client on this node names the client's
 *   cgroup (peer_cgroup_id) even when the client has exited by the time
 *   user space reads the event (a short-lived container's address can no
 *   longer be read from /proc then). One LRU update per outbound TCP
 *   connection; a source-NATed client does not match (peer_cgroup_id 0).
 *
 * Every event here is charged to its cgroup's event share
 * (sl_event_quota_ok, lib/common.bpf.h): a container binding, listening or
 * being connected to in a loop gets its share of the ring buffer and is
 * reported (SL_EV_QUOTA), the others keep theirs.
 *
 * sock_ops runs for a handful of other callbacks per TCP connection
 * (timeout and window init, ECN); it returns at once for those and
 * sets no callback flags, so it adds no per-packet work. Every program
 * returns 1: Sluice observes, it never denies; the sock_ops reply stays 0,
 * which every callback reads as "kernel default".
 */
#include "lib/common.bpf.h"

#ifndef SL_ACCEPT_DEDUP_NS
#define SL_ACCEPT_DEDUP_NS 10000000000ULL
#endif
#ifndef SL_ACCEPT_SEEN_ENTRIES
#define SL_ACCEPT_SEEN_ENTRIES 16384
#endif
#ifndef SL_CLIENT_ENTRIES
#define SL_CLIENT_ENTRIES 8192
#endif
/* a client entry names the peer only this soon after its connect: the
 * handshake takes a round trip, and a reused (address, port) later must not
 * inherit a gone client's cgroup */
#ifndef SL_CLIENT_MAX_AGE_NS
#define SL_CLIENT_MAX_AGE_NS 10000000000ULL
#endif

/* The cgroup that called listen(2), kept with the listening socket and
 * cloned into each socket it accepts. */
BPF_F_TABLE("sk_storage", int, __u64, sl_listener_cgroup, 0, BPF_F_NO_PREALLOC | BPF_F_CLONE);

struct sl_accept_seen_key {
	__u64 cgroup_id;
	__u8 raddr[16];
	__u16 lport;
	__u16 pad1;
	__u32 pad2;
};
struct sl_accept_seen {
	__u64 last_ns;
	__u64 suppressed;
};
BPF_TABLE("lru_hash", struct sl_accept_seen_key, struct sl_accept_seen, sl_accept_seen, SL_ACCEPT_SEEN_ENTRIES);

/* An outbound TCP connection's source (address, port) -> its caller. */
struct sl_client_key {
	__u8 addr[16];
	__u16 port;
	__u16 pad1;
	__u32 pad2;
};
struct sl_client {
	__u64 cgroup_id;
	__u64 connect_ns;
};
BPF_TABLE("lru_hash", struct sl_client_key, struct sl_client, sl_client_cgroup, SL_CLIENT_ENTRIES);

static __always_inline void sl_listen_submit(void *ctx, __u8 op, __u8 proto, __u32 family,
					     __u8 *laddr, __u16 lport, __u64 cookie)
{
	__u64 cgid = bpf_get_current_cgroup_id();
	/* binds and listens are the caller's to repeat at will: the cgroup's
	 * event share (lib/common.bpf.h), like connects */
	/* port 53: it could answer the cgroup's own DNS queries; an unreported
	 * one is remembered in sl_unreported */
	if (!sl_event_quota_ok(ctx, cgid)) {
		if (lport == 53)
			sl_note_unreported(cgid);
		return;
	}
	struct sl_listen_event *ev = sl_event_alloc(sizeof(*ev), SL_EV_LISTEN);
	if (!ev) {
		if (lport == 53)
			sl_note_unreported(cgid);
		return;
	}
	sl_fill_header(&ev->hdr, SL_EV_LISTEN, bpf_get_current_pid_tgid() >> 32, cgid);
	ev->sock_cookie = cookie;
	__builtin_memcpy(ev->laddr, laddr, 16);
	ev->lport = lport;
	ev->protocol = proto;
	ev->op = op;
	ev->family = family;
	bpf_get_current_comm(ev->comm, sizeof(ev->comm));
	sl_event_submit(ctx, ev, sizeof(*ev), SL_EV_LISTEN);
}

static __always_inline int sl_on_bind(struct bpf_sock_addr *ctx, int v6)
{
	__u16 port = bpf_ntohs((__u16)ctx->user_port);
	__u8 laddr[16];

	if (port == 0)
		return 1;
	sl_sock_addr_ip(ctx, v6, laddr);
	sl_listen_submit(ctx, SL_LISTEN_BIND, ctx->protocol, ctx->user_family, laddr, port,
			 bpf_get_socket_cookie(ctx));
	return 1;
}

int sl_bind4(struct bpf_sock_addr *ctx) { return sl_on_bind(ctx, 0); }
int sl_bind6(struct bpf_sock_addr *ctx) { return sl_on_bind(ctx, 1); }

/* Every address field is read unconditionally and through volatile loads:
 * otherwise the compiler keeps a ctx pointer plus offset around and loads
 * through it later, which the verifier refuses ("dereference of modified
 * ctx ptr"). */
#define SL_CTX_U32(field) (*(volatile __u32 *)&(field))
static __always_inline void sl_sockops_addrs(struct bpf_sock_ops *skops, __u8 *raddr, __u8 *laddr)
{
	__u32 family = skops->family;
	__u32 r4 = SL_CTX_U32(skops->remote_ip4), l4 = SL_CTX_U32(skops->local_ip4);
	__u32 r6[4], l6[4];

	r6[0] = SL_CTX_U32(skops->remote_ip6[0]);
	r6[1] = SL_CTX_U32(skops->remote_ip6[1]);
	r6[2] = SL_CTX_U32(skops->remote_ip6[2]);
	r6[3] = SL_CTX_U32(skops->remote_ip6[3]);
	l6[0] = SL_CTX_U32(skops->local_ip6[0]);
	l6[1] = SL_CTX_U32(skops->local_ip6[1]);
	l6[2] = SL_CTX_U32(skops->local_ip6[2]);
	l6[3] = SL_CTX_U32(skops->local_ip6[3]);
	if (family == 10 /* AF_INET6 */) {
		__builtin_memcpy(raddr, r6, 16);
		__builtin_memcpy(laddr, l6, 16);
	} else {
		sl_set_v4mapped(raddr, r4);
		sl_set_v4mapped(laddr, l4);
	}
}

static __always_inline void sl_on_tcp_listen(struct bpf_sock_ops *skops)
{
	struct bpf_sock *sk = skops->sk;
	__u8 raddr[16], laddr[16];
	__u64 cgid = bpf_get_current_cgroup_id();

	if (sk) {
		__u64 *v = sl_listener_cgroup.sk_storage_get(sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
		if (v)
			*v = cgid;
	}
	sl_sockops_addrs(skops, raddr, laddr);
	sl_listen_submit(skops, SL_LISTEN_LISTEN, 6 /* IPPROTO_TCP */, skops->family, laddr,
			 (__u16)skops->local_port, bpf_get_socket_cookie(skops));
}

static __always_inline void sl_on_tcp_connect(struct bpf_sock_ops *skops)
{
	struct sl_client_key k = {};
	struct sl_client v = {};
	__u8 raddr[16];

	sl_sockops_addrs(skops, raddr, k.addr);
	k.port = (__u16)skops->local_port;
	v.cgroup_id = bpf_get_current_cgroup_id();
	v.connect_ns = bpf_ktime_get_ns();
	sl_client_cgroup.update(&k, &v);
}

static __always_inline void sl_on_passive_established(struct bpf_sock_ops *skops)
{
	struct bpf_sock *sk = skops->sk;
	struct sl_accept_seen_key k = {};
	struct sl_accept_event *ev;
	__u64 now = bpf_ktime_get_ns();
	__u64 suppressed = 0;
	__u8 laddr[16];

	if (sk) {
		__u64 *v = sl_listener_cgroup.sk_storage_get(sk, 0, 0);
		if (v)
			k.cgroup_id = *v;
	}
	if (!k.cgroup_id)
		sl_stat_add(SL_STAT_ACCEPT_NO_LISTENER, 1);
	sl_sockops_addrs(skops, k.raddr, laddr);
	k.lport = (__u16)skops->local_port;
	struct sl_accept_seen *seen = sl_accept_seen.lookup(&k);
	if (seen && now - seen->last_ns < SL_ACCEPT_DEDUP_NS) {
		__sync_fetch_and_add(&seen->suppressed, 1);
		sl_stat_add(SL_STAT_ACCEPT_DEDUPED, 1);
		return;
	}
	if (seen)
		suppressed = __sync_lock_test_and_set(&seen->suppressed, 0);
	struct sl_accept_seen fresh = {};
	fresh.last_ns = now;
	sl_accept_seen.update(&k, &fresh);

	/* Peers are the container's to multiply (each new source address
	 * passes the dedup): charged to the listener's cgroup. No listener
	 * known (cgroup 0): charged to cgroup 0, one share for all of them. */
	if (!sl_event_quota_ok(skops, k.cgroup_id))
		return;
	ev = sl_event_alloc(sizeof(*ev), SL_EV_ACCEPT);
	if (!ev)
		return;
	sl_fill_header(&ev->hdr, SL_EV_ACCEPT, 0, k.cgroup_id);
	ev->netns_cookie = bpf_get_netns_cookie(skops);
	__builtin_memcpy(ev->raddr, k.raddr, 16);
	__builtin_memcpy(ev->laddr, laddr, 16);
	/* remote_port is the port in network order, as a 32-bit word */
	ev->rport = (__u16)bpf_ntohl(skops->remote_port);
	ev->lport = k.lport;
	ev->family = skops->family;
	ev->suppressed = (__u32)suppressed;
	ev->pad = 0;
	ev->peer_cgroup_id = 0;
	struct sl_client_key ck = {};
	__builtin_memcpy(ck.addr, k.raddr, 16);
	ck.port = ev->rport;
	struct sl_client *client = sl_client_cgroup.lookup(&ck);
	if (client && now - client->connect_ns < SL_CLIENT_MAX_AGE_NS)
		ev->peer_cgroup_id = client->cgroup_id;
	sl_event_submit(skops, ev, sizeof(*ev), SL_EV_ACCEPT);
}

int sl_sockops(struct bpf_sock_ops *skops)
{
	switch (skops->op) {
	case BPF_SOCK_OPS_TCP_LISTEN_CB:
		sl_on_tcp_listen(skops);
		break;
	case BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB:
		sl_on_passive_established(skops);
		break;
	case BPF_SOCK_OPS_TCP_CONNECT_CB:
		sl_on_tcp_connect(skops);
		break;
	}
	return 1;
}
