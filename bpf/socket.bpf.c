/* SPDX-License-Identifier: Apache-2.0
 *
 * Raw and packet sockets: an AF_PACKET socket sends frames below the IP
 * layer, where no cgroup egress program sees them, and containers get
 * CAP_NET_RAW by default. Creation of a raw (AF_INET/AF_INET6 SOCK_RAW) or
 * packet (AF_PACKET) socket is reported from any cgroup (one event per
 * cgroup, pid, family and type per SL_UDP_DEDUP_NS), and refused with
 * EPERM in a contained container (lib/contain.bpf.h).
 *
 * Two hooks, one of which is attached:
 *  - the BPF LSM socket_create hook (SL_SOCKET_LSM), when the kernel lets
 *    LSM programs load: every family, scalar arguments only;
 *  - else the cgroup sock_create hook at the cgroup v2 root: inet sockets
 *    only. AF_PACKET is then covered by two tracepoints instead:
 *    sock_send_length (bpf/packet.bpf.c: reports the first send on a
 *    packet socket, kills a contained sender after it) and sl_packet_guard
 *    below on syscalls:sys_enter_socket, which kills a contained process
 *    creating a packet socket before it can use it. A syscall tracepoint
 *    moves every task of the host to the slow syscall path (+35-40 ns per
 *    syscall), so the loader attaches the guard only while some container
 *    is contained.
 *
 * With the BPF LSM, two more hooks: unix_stream_connect and unix_may_send
 * refuse a connect or a datagram INTO an isolated container's unix socket
 * from outside it (a host process, another container, over a volume they
 * share), and a datagram OUT of one over a socket connected before its
 * isolation: the container's own connects by path are refused by
 * connect_unix (unixconnect.py), but a listener it opened could still be
 * reached, and its accepted connection carries data out with no address
 * to refuse. A socket is judged by the cgroup of the process that made it,
 * not of the one holding it now: one made inside and handed out (or made
 * outside and handed in) before the isolation is the containment
 * service's per-window sweep's to cut.
 */
#include "lib/common.bpf.h"
#include "lib/contain.bpf.h"

#define SL_AF_INET 2
#define SL_AF_INET6 10
#define SL_AF_PACKET 17
#define SL_SOCK_DGRAM 2
#define SL_SOCK_RAW 3
#define SL_SOCK_TYPE_MASK 0xf   /* SOCK_NONBLOCK / SOCK_CLOEXEC are flags above */
#define SL_SIGKILL 9

struct sl_socket_seen_key {
	__u64 cgroup_id;
	__u32 pid;
	__u16 family;
	__u8 type;
	__u8 denied;
};
BPF_TABLE("lru_hash", struct sl_socket_seen_key, __u64, sl_socket_seen, 4096);

static __always_inline int sl_raw_socket(__u32 family, __u32 type)
{
	if (family == SL_AF_PACKET)
		return 1;
	return (family == SL_AF_INET || family == SL_AF_INET6) && (type & SL_SOCK_TYPE_MASK) == SL_SOCK_RAW;
}

/* Report a raw/packet socket creation; returns 1 when it must be refused. */
static __always_inline int sl_on_raw_socket(void *ctx, __u32 family, __u32 type, __u32 protocol, __u8 hook)
{
	__u64 cgid = bpf_get_current_cgroup_id();
	__u32 pid = bpf_get_current_pid_tgid() >> 32;
	__u64 now = bpf_ktime_get_ns();
	int deny = sl_contain_active() && sl_contain_handle_current(cgid) != 0;
	if (deny)
		sl_stat_add(SL_STAT_SOCKETS_DENIED, 1);

	struct sl_socket_seen_key k = {};
	k.cgroup_id = cgid;
	k.pid = pid;
	k.family = family;
	k.type = type & SL_SOCK_TYPE_MASK;
	k.denied = deny;
	__u64 *last = sl_socket_seen.lookup(&k);
	if (last && now - *last < SL_UDP_DEDUP_NS) {
		sl_stat_add(SL_STAT_SOCKET_DEDUPED, 1);
		return deny;
	}
	sl_socket_seen.update(&k, &now);
	/* unreported (quota, full ring buffer): remembered in sl_unreported, so
	 * its DNS answers are still taken as possibly forged */
	if (!sl_event_quota_ok(ctx, cgid)) {
		sl_note_unreported(cgid);
		return deny;
	}
	struct sl_socket_event *ev = sl_event_alloc(sizeof(*ev), SL_EV_SOCKET);
	if (!ev) {
		sl_note_unreported(cgid);
		return deny;
	}
	sl_fill_header(&ev->hdr, SL_EV_SOCKET, pid, cgid);
	ev->family = family;
	ev->type = type & SL_SOCK_TYPE_MASK;
	ev->protocol = protocol;
	ev->denied = deny;
	ev->hook = hook;
	ev->pad = 0;
	bpf_get_current_comm(ev->comm, sizeof(ev->comm));
	sl_event_submit(ctx, ev, sizeof(*ev), SL_EV_SOCKET);
	return deny;
}

#ifdef SL_SOCKET_LSM
LSM_PROBE(socket_create, int family, int type, int protocol, int kern)
{
	if (kern || !sl_raw_socket(family, type))
		return 0;
	return sl_on_raw_socket(ctx, family, type, protocol, SL_SOCKET_HOOK_LSM) ? -1 /* EPERM */ : 0;
}
#endif

/* cgroup sock_create (inet sockets only): 0 refuses with EPERM. */
int sl_sock_create(struct bpf_sock *sk)
{
	if (!sl_raw_socket(sk->family, sk->type))
		return 1;
	return sl_on_raw_socket(sk, sk->family, sk->type, sk->protocol, SL_SOCKET_HOOK_CGROUP) ? 0 : 1;
}

/* syscalls:sys_enter_socket as tracefs lays it out (struct
 * syscall_trace_enter: the common fields, the syscall number, then each
 * argument in 8 bytes). Not TRACEPOINT_PROBE: bcc would attach that at
 * load, and this one is attached only while some container is contained.
 * The loader checks these offsets against the tracefs format first. */
struct sl_sys_enter_socket_args {
	__u64 common;
	__s32 nr;
	__u32 pad;
	__u64 family;
	__u64 type;
	__u64 protocol;
};

/* A task of a contained container that creates an AF_PACKET socket is
 * killed: a tracepoint cannot refuse the call, and SIGKILL is delivered
 * before the syscall returns to user space, so the socket is never used
 * (another thread of the process would have to send on the new descriptor
 * in the microseconds before the group exit reaches it). Other processes'
 * packet sockets are reported while the guard is attached. (bpf_send_signal
 * on the current task sends a kernel-private SIGKILL: it stops a container's
 * PID 1 too, tested.) */
int sl_packet_guard(struct sl_sys_enter_socket_args *args)
{
	__u32 family = (__u32)args->family;
	if (family != SL_AF_PACKET)
		return 0;
	if (sl_on_raw_socket(args, family, (__u32)args->type, (__u32)args->protocol, SL_SOCKET_HOOK_SYSCALL)) {
		bpf_send_signal(SL_SIGKILL);
		sl_stat_add(SL_STAT_PACKET_KILLED, 1);
	}
	return 0;
}

#ifdef SL_UNIX_INTO_BTF
/* Two BPF LSM programs, loaded and attached by the loader itself (not
 * LSM_PROBE: bcc would load them with the rest, and a kernel that refuses
 * them would stop the whole sensor), where the BPF LSM is available: on
 * unix_stream_connect(sock, other, newsk) and unix_may_send(sock, other).
 * ctx holds the hook's arguments. Pointers are read with
 * bpf_probe_read_kernel at offsets from the kernel's own BTF. */
/* The receiving socket's cgroup (the cgroup of the process that made it),
 * read through the running kernel's layout (offsets from its BTF, passed by
 * the loader: never from the build headers): sock.sk_cgrp_data.cgroup ->
 * cgroup.kn -> kernfs_node.id, the cgroup id. Its handle is looked for at
 * the cgroup and its ancestors (kernfs_node's parent), as
 * sl_contain_handle_current does for the current task. */
/* Deeper than this under a contained cgroup's level, the walk gives up and
 * the socket counts as a contained container's (fail closed: a container
 * that can write cgroupfs nests sub-cgroups at will; review). */
#define SL_UNIX_WALK_MAX 64
#define SL_UNIX_TOO_DEEP ((__u64)-1)

static __always_inline __u64 sl_unix_peer_handle(void *sk, __u64 *cgroup_id)
{
	void *cg = 0, *kn = 0;
	bpf_probe_read_kernel(&cg, sizeof(cg), sk + SL_OFF_SK_CGROUP);
	if (!cg)
		return 0;
	bpf_probe_read_kernel(&kn, sizeof(kn), cg + SL_OFF_CGROUP_KN);
	for (int l = 0; l < SL_UNIX_WALK_MAX; l++) {
		if (!kn)
			return 0;
		__u64 id = 0;
		bpf_probe_read_kernel(&id, sizeof(id), kn + SL_OFF_KN_ID);
		if (l == 0)
			*cgroup_id = id;
		__u64 h = sl_contain_cg_handle(id);
		if (h)
			return h;
		void *up = 0;
		bpf_probe_read_kernel(&up, sizeof(up), kn + SL_OFF_KN_PARENT);
		kn = up;
	}
	return kn ? SL_UNIX_TOO_DEEP : 0;
}

struct sl_unix_into_key {
	__u64 cgroup_id;
	__u64 target;
	__u32 pid;
	__u32 op;
};
BPF_TABLE("lru_hash", struct sl_unix_into_key, __u64, sl_unix_into_seen, 1024);

/* Refuse (1) when `sk` is an isolated container's and the caller is not in
 * it; with `out`, also when the caller's container is isolated and `sk` is
 * not its own (op becomes SL_UNIX_OUT_SEND). Each refusal counted, reported
 * once per key per SL_UDP_DEDUP_NS (a datagram flood is a record a second). */
static __always_inline int sl_unix_into(void *ctx, void *sk, __u32 op, int out)
{
	__u64 target = 0;
	__u64 h = sl_unix_peer_handle(sk, &target);
	__u64 cgid = bpf_get_current_cgroup_id();
	__u64 mine = sl_contain_handle_current(cgid);
	if (mine == h)
		return 0;  /* within one container (or neither contained) */
	if (h == SL_UNIX_TOO_DEEP) {
		/* not judged: refused into, whoever the caller (counted, reported) */
	} else if (!(h && sl_isolated.lookup(&h))) {
		/* (blocks are per destination address: nothing here) */
		if (!out || !mine || !sl_isolated.lookup(&mine))
			return 0;
		op = SL_UNIX_OUT_SEND;
	}
	sl_stat_add(SL_STAT_UNIX_INTO_DENIED, 1);
	__u64 now = bpf_ktime_get_ns();
	struct sl_unix_into_key k = {};
	k.cgroup_id = cgid;
	k.target = target;
	k.pid = bpf_get_current_pid_tgid() >> 32;
	k.op = op;
	__u64 *last = sl_unix_into_seen.lookup(&k);
	if (last && now - *last < SL_UDP_DEDUP_NS)
		return 1;
	sl_unix_into_seen.update(&k, &now);
	/* reported like every record: the caller's event share first */
	if (!sl_event_quota_ok(ctx, cgid))
		return 1;
	struct sl_unix_into_event *ev = sl_event_alloc(sizeof(*ev), SL_EV_UNIX_INTO);
	if (!ev)
		return 1;
	sl_fill_header(&ev->hdr, SL_EV_UNIX_INTO, k.pid, cgid);
	ev->target_cgroup_id = target;
	ev->op = op;
	ev->pad = 0;
	bpf_get_current_comm(ev->comm, sizeof(ev->comm));
	sl_event_submit(ctx, ev, sizeof(*ev), SL_EV_UNIX_INTO);
	return 1;
}

int sl_unix_into_connect(__u64 *ctx)
{
	if (!sl_contain_active())
		return 0;
	/* (its own connects out are connect_unix's: by path, and abstract names
	 * in a shared namespace) */
	return sl_unix_into(ctx, (void *)ctx[1], SL_UNIX_INTO_CONNECT, 0) ? -1 /* EPERM */ : 0;
}

/* Every datagram to a unix socket (connected or addressed), once the
 * receiver is known (`other`, its struct socket): into an isolated
 * container from outside, and out of one over a socket connected before
 * its isolation (sendmsg_unix sees only addressed sends; connect_unix
 * only new connects). */
int sl_unix_into_send(__u64 *ctx)
{
	if (!sl_contain_active())
		return 0;
	void *sk = 0;
	short type = 0;
	/* datagrams only (the hook's meaning; stream sends were connected
	 * through unix_stream_connect) */
	bpf_probe_read_kernel(&type, sizeof(type), (void *)ctx[1] + SL_OFF_SOCKET_TYPE);
	if (type != SL_SOCK_DGRAM)
		return 0;
	bpf_probe_read_kernel(&sk, sizeof(sk), (void *)ctx[1] + SL_OFF_SOCKET_SK);
	if (!sk)
		return 0;
	return sl_unix_into(ctx, sk, SL_UNIX_INTO_SEND, 1) ? -1 /* EPERM */ : 0;
}
#endif
