/* SPDX-License-Identifier: Apache-2.0
 *
 * Kernel-to-user event layouts shared by every Sluice BPF program.
 *
 * Keep in sync with sensor/events.py: tests/unit/test_event_layout.py compiles
 * this header with the host compiler and checks every size and offset against
 * the ctypes mirror.
 *
 * Only fixed-width uapi types are used so the header compiles both inside bcc
 * and in a plain C program.
 */
#ifndef SLUICE_EVENTS_H
#define SLUICE_EVENTS_H

#include <linux/types.h>

#define SL_COMM_LEN 16
#define SL_PATH_LEN 256
/* Upper bound for the payload bytes carried by one sample event (a power of
 * two). The bytes loaded per packet are SL_SAMPLE_BYTES (config, <= this),
 * except DNS packets (port 53), loaded up to this bound so that long
 * (tunnelled) query names are seen whole. */
#define SL_SAMPLE_MAX 256

enum sl_event_type {
	SL_EV_EXEC = 1,
	SL_EV_EXIT = 2,
	SL_EV_CONNECT = 3,
	SL_EV_SAMPLE = 4,
	SL_EV_CGROUP = 5,
	SL_EV_EXEC_ARGS = 6,
	SL_EV_TYPE_MAX = 7,
};

/* Every event starts with this header; user space dispatches on .type. */
struct sl_event_header {
	__u32 type;       /* enum sl_event_type */
	__u32 pid;        /* tgid of the task in context, 0 when none (softirq) */
	__u64 ktime_ns;   /* bpf_ktime_get_ns() (CLOCK_MONOTONIC) */
	__u64 cgroup_id;  /* cgroup v2 id: inode number of the cgroup directory */
};

struct sl_exec_event {
	struct sl_event_header hdr;
	__u32 ppid;        /* parent tgid recorded at fork, 0 when unknown */
	__u32 old_pid;     /* thread id that called exec */
	char comm[SL_COMM_LEN];
	char filename[SL_PATH_LEN];
};

struct sl_exit_event {
	struct sl_event_header hdr;
	char comm[SL_COMM_LEN];
};

/* Optional (exec_args = "tracepoint"): argv captured at sys_enter_execve. */
#define SL_ARGS_LEN 512
struct sl_exec_args_event {
	struct sl_event_header hdr;
	__u32 argc;        /* arguments captured (at most SL_MAX_ARGS) */
	__u32 args_len;    /* bytes used in .args: NUL-separated strings */
	char args[SL_ARGS_LEN];
};

enum sl_connect_op {
	SL_CONNECT = 1,    /* connect(2): TCP or connected UDP */
	SL_SENDMSG = 2,    /* unconnected UDP sendmsg with a destination */
};

struct sl_connect_event {
	struct sl_event_header hdr;
	__u64 sock_cookie;
	__u8 daddr[16];    /* IPv4 as ::ffff:a.b.c.d */
	__u16 dport;       /* host byte order */
	__u8 protocol;     /* IPPROTO_TCP / IPPROTO_UDP */
	__u8 op;           /* enum sl_connect_op */
	__u32 family;      /* AF_INET / AF_INET6 as the caller asked */
	char comm[SL_COMM_LEN];
};

struct sl_sample_event {
	struct sl_event_header hdr;   /* pid is 0: egress may run in softirq */
	__u64 sock_cookie;
	__u8 daddr[16];
	__u16 dport;
	__u8 protocol;
	__u8 flags;           /* SL_SAMPLE_F_* */
	__u32 sock_pkt_index; /* payload packets sent before this one on the socket */
	__u32 payload_len;    /* transport payload length of the packet */
	__u32 sample_len;     /* bytes valid in .data */
	__u8 data[SL_SAMPLE_MAX];
};

#define SL_SAMPLE_F_SOCK_START 0x1  /* among the socket's first packets */
#define SL_SAMPLE_F_NO_SOCK    0x2  /* no socket state (sampled by rate only) */

enum sl_cgroup_op {
	SL_CGROUP_MKDIR = 1,
	SL_CGROUP_RMDIR = 2,
};

struct sl_cgroup_event {
	struct sl_event_header hdr;  /* cgroup_id is the created/removed cgroup */
	__u32 op;                    /* enum sl_cgroup_op */
	__u32 level;
	char path[SL_PATH_LEN];      /* relative to the cgroup2 mount */
};

/* Per-(generation, cgroup, destination) counters aggregated in the kernel and
 * drained once per window. */
struct sl_flow_key {
	__u64 cgroup_id;
	__u8 daddr[16];
	__u16 dport;
	__u8 protocol;
	__u8 gen;          /* window generation the entry belongs to (0 or 1) */
	__u32 pad;
};

struct sl_flow_value {
	__u64 bytes;          /* L3 bytes sent (IP header included) */
	__u64 packets;        /* packets sent (GSO segments counted) */
	__u64 payload_bytes;  /* transport payload bytes */
	__u64 connects;       /* connect(2) calls to this destination */
	__u64 first_ns;
	__u64 last_ns;        /* last connect, new flow or sample: the egress fast
	                       * path reads no clock (it costs more than the rest) */
	__u32 samples;        /* sample events emitted in this window */
	__u32 payload_packets;
};

/* Indexes into the per-CPU sl_stats array. */
enum sl_stat {
	SL_STAT_SUBMITTED = 0,                    /* + event type */
	SL_STAT_DROPPED = SL_EV_TYPE_MAX,         /* + event type: buffer full */
	SL_STAT_FLOW_MAP_FULL = 2 * SL_EV_TYPE_MAX,
	SL_STAT_FLOW_BYTES_UNTRACKED,
	SL_STAT_PARENT_MAP_FULL,
	SL_STAT_UDP_SEND_DEDUPED,
	SL_STAT_EGRESS_PACKETS,
	SL_STAT_MAX,
};

#endif /* SLUICE_EVENTS_H */
