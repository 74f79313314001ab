/* SPDX-License-Identifier: Apache-2.0
 *
 * AF_PACKET sends. A packet socket's frames leave below every cgroup
 * egress program, and where the BPF LSM socket hook does not load, the
 * cgroup sock_create hook does not see the socket's creation (inet only).
 * sock:sock_send_length fires after every sendmsg of every socket on the
 * host (write, send, sendmmsg, io_uring and PACKET_TX_RING flushes
 * included), in the sender's context, with the socket's family: a packet socket's use is reported (one event
 * per cgroup, pid per SL_UDP_DEDUP_NS, as sl_on_raw_socket does), and a
 * sender in a contained container is killed. That is after the send: the
 * frame of that call has left. The guard on sys_enter_socket
 * (socket.bpf.c) kills earlier, at creation, while it is attached. Where
 * the LSM hook loads (SL_SOCKET_LSM), it reports and refuses creation, and
 * this program only kills a contained sender (a socket the process held
 * before its container was contained).
 *
 * Cost: one program run per sendmsg on the host, returning after one
 * compare unless the socket is AF_PACKET (bench/RESULTS.md).
 * Needs sl_on_raw_socket from socket.bpf.c (the unit after it).
 */
#include "lib/common.bpf.h"
#include "lib/contain.bpf.h"

TRACEPOINT_PROBE(sock, sock_send_length)
{
	if (args->family != SL_AF_PACKET)
		return 0;
#ifdef SL_SOCKET_LSM
	if (!sl_contain_active() || !sl_contain_handle_current(bpf_get_current_cgroup_id()))
		return 0;
#endif
	/* the type is not in the tracepoint: 0 (reported as unknown) */
	if (sl_on_raw_socket(args, SL_AF_PACKET, 0, args->protocol, SL_SOCKET_HOOK_SEND)) {
		bpf_send_signal(SL_SIGKILL);
		sl_stat_add(SL_STAT_PACKET_KILLED, 1);
	}
	return 0;
}
