/* SPDX-License-Identifier: Apache-2.0
 *
 * Process exec, fork and exit.
 *
 * Parent pids come from sched_process_fork into a kernel map rather than from
 * task->real_parent (kernel-internal struct, unreadable with mismatched
 * headers). The new program's argv (its first SL_EXEC_ARGV_LEN bytes) and
 * its stdin's inode mode are read here where the kernel has BTF (offsets
 * from it, SL_EXEC_BTF); user space reads /proc/<pid>/cmdline first and
 * falls back to them; exec_args = "tracepoint" adds sys_enter_execve (see
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
	__u32 parent = ppid ? *ppid : 0;
	if (old_pid != pid) {
		/* a thread other than the leader exec'd: it took the leader's
		 * pid, so its own entry would never see its exit (review: a
		 * thread-exec loop filled the map); and the entry found may be
		 * its creator's, the process itself: unknown then (user space
		 * reads /proc) */
		sl_parent.delete(&old_pid);
		if (parent == pid)
			parent = 0;
	}
	ev->ppid = parent;
	/* the grandparent while the parent surely lives, and whether the parent
	 * exec'd: a subshell that only forked is gone milliseconds later, before
	 * user space could read /proc (SL-C2-001's `$(curl URL | cat)`) */
	ev->gppid = 0;
	__u32 *gp = parent ? sl_parent.lookup(&parent) : 0;
	if (gp) {
		ev->gppid = *gp & SL_EXEC_GPPID_MASK;
		if (sl_execd.lookup(&parent))
			ev->gppid |= SL_EXEC_PARENT_EXECD;
	}
	bpf_get_current_comm(ev->comm, sizeof(ev->comm));
	TP_DATA_LOC_READ_STR(ev->filename, filename, sizeof(ev->filename));
	ev->stdin_mode = 0;
	ev->argv_len = 0;
#ifdef SL_EXEC_BTF
	/* The new program's argv (its stack, just written by the kernel) and
	 * fd 0's inode mode, by offsets from the running kernel's BTF (the
	 * loader passes them; the headers bcc compiles against may not match
	 * the kernel). A bad read leaves a field empty, never more. */
	char *task = (char *)bpf_get_current_task();
	char *mm = 0, *files = 0, *fdt = 0, **fds = 0, *f0 = 0, *inode = 0;
	unsigned long as = 0, ae = 0;
	bpf_probe_read_kernel(&mm, sizeof(mm), task + SL_OFF_TASK_MM);
	if (mm) {
		bpf_probe_read_kernel(&as, sizeof(as), mm + SL_OFF_MM_ARG_START);
		bpf_probe_read_kernel(&ae, sizeof(ae), mm + SL_OFF_MM_ARG_END);
	}
	if (ae > as) {
		__u32 n = ae - as < SL_EXEC_ARGV_LEN ? ae - as : SL_EXEC_ARGV_LEN;
		__u32 sz = ((n - 1) & (SL_EXEC_ARGV_LEN - 1)) + 1;  /* [1, SL_EXEC_ARGV_LEN] for the verifier */
		if (bpf_probe_read_user(ev->argv, sz, (void *)as) == 0)
			ev->argv_len = sz;
	}
	bpf_probe_read_kernel(&files, sizeof(files), task + SL_OFF_TASK_FILES);
	if (files)
		bpf_probe_read_kernel(&fdt, sizeof(fdt), files + SL_OFF_FILES_FDT);
	if (fdt)
		bpf_probe_read_kernel(&fds, sizeof(fds), fdt + SL_OFF_FDT_FD);
	if (fds)
		bpf_probe_read_kernel(&f0, sizeof(f0), fds);
	if (f0)
		bpf_probe_read_kernel(&inode, sizeof(inode), f0 + SL_OFF_FILE_INODE);
	if (inode)
		bpf_probe_read_kernel(&ev->stdin_mode, sizeof(ev->stdin_mode), inode + SL_OFF_INODE_MODE);
#endif
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
