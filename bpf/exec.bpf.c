/* SPDX-License-Identifier: Apache-2.0
 *
 * Process exec, fork and exit.
 *
 * Parent pids come from sched_process_fork into a kernel map rather than from
 * task->real_parent (kernel-internal struct, unreadable with mismatched
 * headers). Arguments are not read here: by default user space reads
 * /proc/<pid>/cmdline; exec_args = "tracepoint" adds sys_enter_execve (see
 * exec_args.bpf.c) at the price of the slow syscall path for every task.
 */
#include "lib/common.bpf.h"

/* child tid -> parent tgid, filled at fork, removed at exit. */
BPF_HASH(sl_parent, __u32, __u32, SL_PID_ENTRIES);
/* tgids that exec'd while the sensor ran: only those get exit events. */
BPF_HASH(sl_execd, __u32, __u8, SL_PID_ENTRIES);

TRACEPOINT_PROBE(sched, sched_process_fork)
{
	__u32 child = args->child_pid;
	__u32 parent = bpf_get_current_pid_tgid() >> 32;
	if (sl_parent.update(&child, &parent) != 0)
		sl_stat_add(SL_STAT_PARENT_MAP_FULL, 1);
	return 0;
}

TRACEPOINT_PROBE(sched, sched_process_exec)
{
	struct sl_exec_event *ev;
	__u32 pid = args->pid;
	__u32 old_pid = args->old_pid;
	__u8 one = 1;

	/* A full table costs this process its exit event: counted. */
	if (sl_execd.update(&pid, &one) != 0)
		sl_stat_add(SL_STAT_EXECD_MAP_FULL, 1);
	__u64 cgid = bpf_get_current_cgroup_id();
	if (!sl_event_quota_ok(args, cgid))
		return 0;
	ev = sl_event_alloc(sizeof(*ev), SL_EV_EXEC);
	if (!ev)
		return 0;
	sl_fill_header(&ev->hdr, SL_EV_EXEC, pid, cgid);
	ev->old_pid = old_pid;
	__u32 *ppid = sl_parent.lookup(&pid);
	if (!ppid)
		ppid = sl_parent.lookup(&old_pid);
	ev->ppid = ppid ? *ppid : 0;
	bpf_get_current_comm(ev->comm, sizeof(ev->comm));
	TP_DATA_LOC_READ_STR(ev->filename, filename, sizeof(ev->filename));
	sl_event_submit(args, ev, sizeof(*ev), SL_EV_EXEC);
	return 0;
}

TRACEPOINT_PROBE(sched, sched_process_exit)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tid = (__u32)id;
	__u32 tgid = id >> 32;
	struct sl_exit_event *ev;

	sl_parent.delete(&tid);
	/* Threads other than the leader end here; the process ends with its
	 * leader (group_dead is not in every kernel's format). */
	if (tid != tgid || !sl_execd.lookup(&tgid))
		return 0;
	sl_execd.delete(&tgid);
	__u64 cgid = bpf_get_current_cgroup_id();
	if (!sl_event_quota_ok(args, cgid))
		return 0;
	ev = sl_event_alloc(sizeof(*ev), SL_EV_EXIT);
	if (!ev)
		return 0;
	sl_fill_header(&ev->hdr, SL_EV_EXIT, tgid, cgid);
	bpf_get_current_comm(ev->comm, sizeof(ev->comm));
	sl_event_submit(args, ev, sizeof(*ev), SL_EV_EXIT);
	return 0;
}
