/* SPDX-License-Identifier: Apache-2.0
 *
 * Optional (config kernel.exec_args = "tracepoint"): argv at sys_enter_execve.
 *
 * Overhead warning: enabling any syscalls:sys_enter_* tracepoint moves every
 * task on the host to the slow syscall path (bench/bench_datapath.py measured
 * +81 ns on every syscall of every process), which is why the default reads
 * /proc/<pid>/cmdline from user space instead. The event precedes the exec
 * event of the same pid; user space pairs them.
 */
#include "lib/common.bpf.h"

#ifndef SL_MAX_ARGS
#define SL_MAX_ARGS 16
#endif

TRACEPOINT_PROBE(syscalls, sys_enter_execve)
{
	struct sl_exec_args_event *ev;
	const char *const *argv = (const char *const *)args->argv;
	__u32 off = 0;

	__u64 cgid = bpf_get_current_cgroup_id();
	/* A record of SL_ARGS_LEN bytes per execve(2), even a failing one: the
	 * cgroup's event share (lib/common.bpf.h) bounds what a container can
	 * put in the ring buffer this way. */
	if (!sl_event_quota_ok(args, cgid))
		return 0;
	ev = sl_event_alloc(sizeof(*ev), SL_EV_EXEC_ARGS);
	if (!ev)
		return 0;
	sl_fill_header(&ev->hdr, SL_EV_EXEC_ARGS, bpf_get_current_pid_tgid() >> 32, cgid);
	ev->argc = 0;
#pragma unroll
	for (int i = 0; i < SL_MAX_ARGS; i++) {
		const char *arg = 0;
		if (bpf_probe_read_user(&arg, sizeof(arg), &argv[i]) < 0 || !arg)
			break;
		/* Each argument is read with a constant size of half the buffer
		 * from an offset masked below half, which the verifier can bound:
		 * arguments start within the first half, the last one may run
		 * into the second. */
		if (off >= SL_ARGS_LEN / 2)
			break;
		int n = bpf_probe_read_user_str(&ev->args[off & (SL_ARGS_LEN / 2 - 1)],
						SL_ARGS_LEN / 2, arg);
		if (n <= 0)
			break;
		off += n;
		ev->argc++;
	}
	ev->args_len = off > SL_ARGS_LEN ? SL_ARGS_LEN : off;
	sl_event_submit(args, ev, sizeof(*ev), SL_EV_EXEC_ARGS);
	return 0;
}
