/* SPDX-License-Identifier: Apache-2.0
 *
 * cgroup creation and removal on the cgroup v2 hierarchy: container start and
 * stop with kernel timestamps, and the id -> path mapping for attribution.
 * v1 hierarchies fire the same tracepoints; only SL_CGROUP2_HIERARCHY is kept.
 */
#include "lib/common.bpf.h"

static __always_inline struct sl_cgroup_event *sl_cgroup_event(__u64 id, int level,
							       __u32 op)
{
	struct sl_cgroup_event *ev = sl_event_alloc(sizeof(*ev), SL_EV_CGROUP);
	if (!ev)
		return 0;
	sl_fill_header(&ev->hdr, SL_EV_CGROUP, bpf_get_current_pid_tgid() >> 32, id);
	ev->op = op;
	ev->level = level;
	return ev;
}

/* The path is read in the probe body itself: bcc resolves the data_loc of a
 * tracepoint argument only there. */
TRACEPOINT_PROBE(cgroup, cgroup_mkdir)
{
	if (args->root != SL_CGROUP2_HIERARCHY)
		return 0;
	struct sl_cgroup_event *ev = sl_cgroup_event(args->id, args->level, SL_CGROUP_MKDIR);
	if (!ev)
		return 0;
	TP_DATA_LOC_READ_STR(ev->path, path, sizeof(ev->path));
	sl_event_submit(args, ev, sizeof(*ev), SL_EV_CGROUP);
	return 0;
}

TRACEPOINT_PROBE(cgroup, cgroup_rmdir)
{
	if (args->root != SL_CGROUP2_HIERARCHY)
		return 0;
	struct sl_cgroup_event *ev = sl_cgroup_event(args->id, args->level, SL_CGROUP_RMDIR);
	if (!ev)
		return 0;
	TP_DATA_LOC_READ_STR(ev->path, path, sizeof(ev->path));
	sl_event_submit(args, ev, sizeof(*ev), SL_EV_CGROUP);
	return 0;
}
