/* SPDX-License-Identifier: Apache-2.0
 *
 * cgroup creation and removal on the cgroup v2 hierarchy: container start and
 * stop with kernel timestamps, and the id -> path mapping for attribution.
 * v1 hierarchies fire the same tracepoints; only SL_CGROUP2_HIERARCHY is kept.
 */
#include "lib/common.bpf.h"
#include "lib/contain.bpf.h"

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
/* Containment follows the container (see lib/contain.bpf.h): a new cgroup
 * whose last path component ends in the id of a contained container
 * (<id>, docker-<id>.scope, cri-containerd-<id>.scope, crio-<id>.scope,
 * libpod-<id>.scope) gets that container's handle before the directory is
 * activated, so before any process can join it. The path comes from the
 * tracepoint record itself (its data_loc: offset, length with the NUL). */
static __always_inline void sl_contain_follow(char *path, __u32 len, __u64 cgroup_id, __u32 level)
{
	__u32 end = len ? len - 1 : 0;   /* string length */
	char tail[6];
	if (end >= SL_CONTAINER_ID_LEN + 7 && bpf_probe_read_kernel(tail, 6, path + end - 6) == 0 &&
	    tail[0] == '.' && tail[1] == 's' && tail[2] == 'c' && tail[3] == 'o' && tail[4] == 'p' && tail[5] == 'e')
		end -= 6;
	if (end < SL_CONTAINER_ID_LEN + 1 || end > SL_PATH_LEN)
		return;
	char sep = 0;
	struct sl_container_key ck;
	if (bpf_probe_read_kernel(&sep, 1, path + end - SL_CONTAINER_ID_LEN - 1) < 0 || (sep != '/' && sep != '-'))
		return;
	if (bpf_probe_read_kernel(ck.id, SL_CONTAINER_ID_LEN, path + end - SL_CONTAINER_ID_LEN) < 0)
		return;
	__u64 *h = sl_contain_ids.lookup(&ck);
	if (!h)
		return;
	__u64 handle = *h;
	/* Made from inside the container (its cgroup or one under it): a
	 * sub-cgroup, covered through its ancestor. A contained container that
	 * can write cgroupfs filled the map with mkdir/rmdir of names ending in
	 * its own id, until isolation failed node-wide (review). The runtime
	 * makes a restart's cgroup from outside (runc, the shim, systemd). */
	if (sl_contain_handle_current(bpf_get_current_cgroup_id()) == handle)
		return;
	if (sl_contain_cg.update(&cgroup_id, &handle) != 0) {
		sl_stat_add(SL_STAT_CONTAIN_MAP_FULL, 1);
		return;
	}
	sl_stat_add(SL_STAT_CONTAIN_FOLLOWED, 1);
	__u32 zero = 0;
	__u32 *lv = sl_contain_levels.lookup(&zero);
	/* Plain read-modify-write: mkdirs are rare, and user space sets the
	 * same bits from the paths it knows. */
	if (lv && level <= SL_CONTAIN_MAX_LEVEL)
		*lv |= 1u << level;
}

/* Fair share follows delegation (see sl_quota_charge in lib/common.bpf.h):
 * a cgroup created by a task whose cgroup is charged to a container is
 * charged to the same container. The tracepoint runs in the creating task,
 * before the new directory is activated: no process can run in the new
 * cgroup uncharged. */
static __always_inline void sl_quota_follow(__u64 cgroup_id)
{
	__u64 creator = bpf_get_current_cgroup_id();
	__u64 *c = sl_quota_charge.lookup(&creator);
	if (!c || !*c)
		return;
	__u64 charged = *c;
	sl_quota_charge.update(&cgroup_id, &charged);
}

TRACEPOINT_PROBE(cgroup, cgroup_mkdir)
{
	if (args->root != SL_CGROUP2_HIERARCHY)
		return 0;
	sl_quota_follow(args->id);
	/* before the event: containment must not depend on buffer space */
	if (sl_contain_active())
		sl_contain_follow((char *)args + (args->data_loc_path & 0xffff), args->data_loc_path >> 16,
				  args->id, args->level);
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
