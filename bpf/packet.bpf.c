/* SPDX-License-Identifier: Apache-2.0
 *
 * AF_PACKET sends. A packet socket's frames leave below every cgroup
 * egress program, and where the BPF LSM socket hook does not load, the
 * cgroup sock_create hook does not see the socket's creation (inet only).
 * sock:sock_send_length fires after every sendmsg of every socket on the
 * host (write, send, sendmmsg, io_uring and PACKET_TX_RING flushes
 * included), in the sender's context, with the socket: a packet socket's
 * use is reported (one event per cgroup, pid per SL_UDP_DEDUP_NS, as
 * sl_on_raw_socket does), and a sender in a contained container is killed.
 * That is after the send: the frame of that call has left. The guard on
 * sys_enter_socket (socket.bpf.c) kills earlier, at creation, while it is
 * attached. Where the LSM hook loads (SL_SOCKET_LSM), it reports and
 * refuses creation, and this program only kills a contained sender (a
 * socket the process held before its container was contained).
 *
 * Cost: one program run per sendmsg on the host, returning after one
 * compare unless the socket is AF_PACKET. Two ways in, the same body; the
 * loader (sensor/kernel/loader.py) attaches one:
 *  - sl_pktsend_btf, a tp_btf program (SL_PACKET_BTF): the tracepoint
 *    calls it directly with the socket pointer. The perf tracepoint
 *    machinery of the classic way (a per-CPU record filled for every send,
 *    recursion bookkeeping) costs more than the program; measured ~100 ns
 *    per send less on this machine (bench/RESULTS.md). It reads the
 *    socket's family and protocol at offsets from the running kernel's own
 *    BTF (sensor/kernel/btf.py), and the verifier checks both loads against
 *    that BTF: no header is trusted. bcc cannot load tp_btf programs, so
 *    the loader loads this function's compiled code itself.
 *  - sl_pktsend_tp, the classic tracepoint, where tp_btf is not
 *    available (no kernel BTF, or the verifier refuses it): its record
 *    has the family and protocol (layout checked against tracefs).
 * Needs sl_on_raw_socket from socket.bpf.c (the unit after it).
 */
#include "lib/common.bpf.h"
#include "lib/contain.bpf.h"

static __always_inline void sl_packet_sent(void *ctx, __u32 protocol)
{
#ifdef SL_SOCKET_LSM
	if (!sl_contain_active() || !sl_contain_handle_current(bpf_get_current_cgroup_id()))
		return;
#endif
	/* the type is not known here: 0 (reported as unknown) */
	if (sl_on_raw_socket(ctx, SL_AF_PACKET, 0, protocol, SL_SOCKET_HOOK_SEND)) {
		bpf_send_signal(SL_SIGKILL);
		sl_stat_add(SL_STAT_PACKET_KILLED, 1);
	}
}

/* sock:sock_send_length as tracefs lays it out (the loader checks it). */
struct sl_sock_send_length_args {
	__u64 common;
	__u64 sk;
	__u16 family;
	__u16 protocol;
	__s32 ret;
	__s32 flags;
};

int sl_pktsend_tp(struct sl_sock_send_length_args *args)
{
	if (args->family != SL_AF_PACKET)
		return 0;
	sl_packet_sent(args, args->protocol);
	return 0;
}

#ifdef SL_PACKET_BTF
/* ctx[0]: the struct sock (a BTF pointer: loads are checked by the
 * verifier, at the offsets the loader read from the kernel's BTF). */
int sl_pktsend_btf(__u64 *ctx)
{
	const char *sk = (const char *)ctx[0];
	if (*(const __u16 *)(sk + SL_SKC_FAMILY_OFF) != SL_AF_PACKET)
		return 0;
	__u32 protocol = 0;
#if SL_SK_PROTOCOL_OFF >= 0
	protocol = *(const __u16 *)(sk + SL_SK_PROTOCOL_OFF);
#endif
	sl_packet_sent(ctx, protocol);
	return 0;
}
#endif
