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
/* A socket's first payload is read up to this many bytes (a power of two)
 * when it starts a TLS handshake or an HTTP request: enough for the TLS
 * ClientHello's server_name (post-quantum key shares make hellos ~1.8 KB) or
 * the HTTP Host header. Carried by a longer SL_EV_SAMPLE record. */
#define SL_FIRST_MAX 2048
/* DNS response payload carried by one SL_EV_DNS event (longer responses are
 * cut here and counted in SL_STAT_DNS_TRUNCATED). */
#define SL_DNS_MAX 512

enum sl_event_type {
	SL_EV_EXEC = 1,
	SL_EV_EXIT = 2,
	SL_EV_CONNECT = 3,
	SL_EV_SAMPLE = 4,
	SL_EV_CGROUP = 5,
	SL_EV_EXEC_ARGS = 6,
	SL_EV_DNS = 7,           /* a DNS response received (ingress, source port 53) */
	SL_EV_LISTEN = 8,        /* bind(2) with a port, listen(2) (listen.bpf.c) */
	SL_EV_ACCEPT = 9,        /* inbound TCP connection established (listen.bpf.c) */
	SL_EV_UNIX_CONNECT = 10, /* connect(2) to a unix socket path (sensor/kernel/unixconnect.py) */
	SL_EV_SOCKET = 11,       /* raw or packet socket created */
	SL_EV_QUOTA = 12,        /* a cgroup hit its flow or event quota this window */
	SL_EV_UNIX_INTO = 13,    /* a unix stream connect into an isolated container, refused (socket.bpf.c) */
	SL_EV_TYPE_MAX = 14,
};

/* Every event starts with this header; user space dispatches on .type. */
struct sl_event_header {
	__u32 type;       /* enum sl_event_type */
	__u32 pid;        /* tgid of the task in context, 0 when none (softirq) */
	__u64 ktime_ns;   /* bpf_ktime_get_ns() (CLOCK_MONOTONIC) */
	__u64 cgroup_id;  /* cgroup v2 id: inode number of the cgroup directory */
};

/* argv as the kernel laid it out for the new program (NUL-separated), its
 * first SL_EXEC_ARGV_LEN bytes; read where the kernel's BTF gives the
 * offsets (else argv_len 0): a process gone before user space reads
 * /proc/<pid>/cmdline keeps its command line (curl | sh of a one-line
 * stage; review) */
#define SL_EXEC_ARGV_LEN 256
struct sl_exec_event {
	struct sl_event_header hdr;
	__u32 ppid;        /* parent tgid recorded at fork, 0 when unknown */
	__u32 old_pid;     /* thread id that called exec */
	char comm[SL_COMM_LEN];
	char filename[SL_PATH_LEN];
	__u16 stdin_mode;  /* i_mode of fd 0's inode (S_IFIFO, S_IFSOCK...); 0: unknown */
	__u16 argv_len;    /* bytes of argv read */
	__u32 gppid;       /* the parent's parent recorded at its fork (SL_EXEC_GPPID_MASK; 0: unknown),
	                    * SL_EXEC_PARENT_EXECD set when the parent exec'd while the sensor ran
	                    * (unset with a known gppid: the parent is a fork that exec'd nothing) */
	__u8 argv[SL_EXEC_ARGV_LEN];
};
#define SL_EXEC_GPPID_MASK 0x7fffffffu
#define SL_EXEC_PARENT_EXECD 0x80000000u

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
	__u32 sample_len;     /* bytes valid in .data: the first read, then the second */
	/* Payload bytes this sample stands for: sent on its socket since the
	 * socket's previous sample point, this packet's included (0: unknown,
	 * no socket state; then it stands for SL_SAMPLE_EVERY packets). */
	__u32 span_bytes;
	/* A large packet is read a second time at a random payload offset: its
	 * second_len bytes are the last ones of .data[0, sample_len). 0: none. */
	__u32 second_off;
	__u32 second_len;
	__u32 pad;
	__u8 data[SL_SAMPLE_MAX];
};

#define SL_SAMPLE_F_SOCK_START 0x1  /* among the socket's first packets */
#define SL_SAMPLE_F_NO_SOCK    0x2  /* no socket state (sampled by rate only) */
#define SL_SAMPLE_F_FIRST      0x4  /* a socket's first payload, read up to SL_FIRST_MAX */

/* The longer record of a socket's first payload (TLS handshake or HTTP
 * request): the same type and layout as sl_sample_event, with .data going on
 * for SL_FIRST_MAX bytes; .sample_len says how many are valid. */
struct sl_sample_first_event {
	struct sl_sample_event s;
	__u8 more[SL_FIRST_MAX - SL_SAMPLE_MAX];
};

/* A DNS response delivered to a socket (cgroup_skb ingress, source port 53,
 * UDP or TCP). hdr.cgroup_id is the receiving socket's cgroup. */
struct sl_dns_event {
	struct sl_event_header hdr;   /* pid is 0: ingress runs in softirq */
	__u8 saddr[16];       /* the resolver that answered */
	__u16 sport;          /* 53 */
	__u8 protocol;        /* IPPROTO_UDP / IPPROTO_TCP (with its 2-byte length prefix) */
	__u8 flags;           /* SL_DNS_F_* */
	__u32 payload_len;    /* transport payload length of the packet */
	__u32 data_len;       /* bytes valid in .data */
	__u32 pad;
	__u8 data[SL_DNS_MAX];
};

#define SL_DNS_F_TRUNCATED 0x1  /* payload longer than SL_DNS_MAX */

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

/* A raw (AF_INET/AF_INET6 SOCK_RAW) or packet (AF_PACKET) socket was
 * created. Reported by the BPF LSM socket_create hook where it loads (it
 * sees AF_PACKET), else by the cgroup sock_create hook (inet sockets only),
 * and for AF_PACKET by the sock_send_length tracepoint (at a socket's send:
 * type 0, unknown there) and, while some container is contained, by the
 * sys_enter_socket tracepoint (bpf/socket.bpf.c, bpf/packet.bpf.c).
 * One event per (cgroup, pid, family, type) per SL_UDP_DEDUP_NS. */
enum sl_socket_hook {
	SL_SOCKET_HOOK_LSM = 1,
	SL_SOCKET_HOOK_CGROUP = 2,
	SL_SOCKET_HOOK_SYSCALL = 3,  /* sys_enter_socket: denied means killed (SIGKILL) */
	SL_SOCKET_HOOK_SEND = 4,     /* sock_send_length: denied means killed after the send */
};

struct sl_socket_event {
	struct sl_event_header hdr;
	__u32 family;      /* AF_INET, AF_INET6, AF_PACKET */
	__u32 type;        /* SOCK_RAW, SOCK_DGRAM, ... (flags masked off) */
	__u32 protocol;    /* as passed (AF_PACKET: ethertype, network order) */
	__u8 denied;       /* 1: refused (EPERM) or the process killed: the container is contained */
	__u8 hook;         /* enum sl_socket_hook */
	__u16 pad;
	char comm[SL_COMM_LEN];
};

/* A connect(2) to a unix stream listener of an isolated container, or a
 * datagram sent to one of its unix sockets, from a process outside it (the
 * host's, another container's: a volume shared with the socket's path),
 * refused by the BPF LSM unix_stream_connect / unix_may_send hooks; or a
 * datagram out of an isolated container to a socket outside it (over a
 * socket connected before the isolation). One
 * record per (caller cgroup, pid, target, op) per SL_UDP_DEDUP_NS; every
 * refusal is counted (SL_STAT_UNIX_INTO_DENIED). hdr: the caller. */
enum sl_unix_into_op {
	SL_UNIX_INTO_CONNECT = 1,
	SL_UNIX_INTO_SEND = 2,
	SL_UNIX_OUT_SEND = 3,    /* a datagram out of an isolated container (hdr: its sender) */
};
struct sl_unix_into_event {
	struct sl_event_header hdr;
	__u64 target_cgroup_id;  /* the receiving socket's cgroup (the one that made it) */
	__u32 op;                /* enum sl_unix_into_op */
	__u32 pad;
	char comm[SL_COMM_LEN];  /* the caller's */
};

/* Fair share: a cgroup that creates more than its quota of flow entries or
 * submits more than its quota of events in one window. Sent once per cgroup
 * per window and kind, at the first refusal; the counts are read from
 * sl_quota when the window closes. */
enum sl_quota_kind {
	SL_QUOTA_FLOWS = 1,
	SL_QUOTA_EVENTS = 2,
};

struct sl_quota_event {
	struct sl_event_header hdr;  /* cgroup_id: the cgroup over quota */
	__u32 kind;                  /* enum sl_quota_kind */
	__u32 limit;                 /* the quota (per window) */
};

/* Per-cgroup quota state (LRU hash keyed by cgroup id). Counts belong to
 * window .window (the sl_gen[0] value); the first update in a new window
 * resets them. The refused counts are kept per generation, so user space
 * can read the closed window's after the flip. */
struct sl_quota {
	__u32 window;
	__u32 flows;            /* flow entries created in .window */
	__u32 events;           /* events submitted in .window */
	__u32 reported;         /* SL_QUOTA_* bits already reported in .window */
	__u64 flows_over[2];    /* by generation: flow entries refused */
	__u64 events_over[2];   /* by generation: events not submitted */
};

enum sl_listen_op {
	SL_LISTEN_BIND = 1,    /* bind(2) with a non-zero port (TCP or UDP) */
	SL_LISTEN_LISTEN = 2,  /* listen(2): the TCP socket's real port, also when auto-bound */
};

/* A socket bound or listening, in the caller's context (pid, comm, cgroup). */
struct sl_listen_event {
	struct sl_event_header hdr;
	__u64 sock_cookie;
	__u8 laddr[16];    /* IPv4 as ::ffff:a.b.c.d; all zero for a wildcard */
	__u16 lport;       /* host byte order */
	__u8 protocol;     /* IPPROTO_TCP / IPPROTO_UDP */
	__u8 op;           /* enum sl_listen_op */
	__u32 family;      /* AF_INET / AF_INET6 */
	char comm[SL_COMM_LEN];
};

/* An inbound TCP connection, seen when the handshake completes (softirq:
 * hdr.pid is 0). hdr.cgroup_id is the listening socket's cgroup, recorded at
 * listen(2); 0 when the listener predates the sensor. One event per
 * (cgroup, local port, peer address) per SL_ACCEPT_DEDUP_NS; .suppressed
 * counts the connections folded into it since the previous event.
 * .peer_cgroup_id: the cgroup that connected from (raddr, rport) on this
 * node (listen.bpf.c, TCP_CONNECT_CB), 0 when not a local client. */
struct sl_accept_event {
	struct sl_event_header hdr;
	__u64 netns_cookie;
	__u8 raddr[16];
	__u8 laddr[16];
	__u16 rport;       /* host byte order */
	__u16 lport;       /* host byte order */
	__u32 family;
	__u32 suppressed;
	__u32 pad;
	__u64 peer_cgroup_id;
};

#define SL_UNIX_PATH_LEN 108  /* sizeof(sockaddr_un.sun_path) */

/* connect(2) to a unix socket, in the caller's context. */
struct sl_unix_connect_event {
	struct sl_event_header hdr;
	__u64 sock_cookie;
	__u32 path_len;    /* bytes of .path that came from the caller's address */
	__u32 denied;      /* 1: refused (the caller's container is isolated) */
	char comm[SL_COMM_LEN];
	char path[SL_UNIX_PATH_LEN];  /* sun_path; abstract names start with NUL */
	__u32 pad2;
};

/* Per-(generation, cgroup, destination) counters aggregated in the kernel and
 * drained once per window. */
struct sl_flow_key {
	__u64 cgroup_id;
	__u8 daddr[16];
	__u16 dport;
	__u8 protocol;
	__u8 gen;          /* window generation the entry belongs to (0 or 1) */
	__u32 flags;       /* SL_FLOW_F_*; 0 for a per-destination entry */
};

/* The aggregate of a cgroup over its flow quota: every destination it
 * reached after the quota, daddr/dport/protocol zero. Bytes and packets
 * stay counted. */
#define SL_FLOW_F_OVER_QUOTA 0x1

struct sl_flow_value {
	/* First cache line: written per packet by egress (and per connect). */
	__u64 bytes;          /* L3 bytes sent (IP header included) */
	__u64 packets;        /* packets sent (GSO segments counted) */
	__u64 payload_bytes;  /* transport payload bytes */
	__u64 connects;       /* connect(2) calls to this destination */
	__u64 last_ns;        /* last connect, new flow or sample: the egress fast
	                       * path reads no clock (it costs more than the rest) */
	__u32 samples;        /* sample events emitted in this window */
	__u32 payload_packets;
	__u32 start_samples;  /* of them, samples of sockets' first packets */
	__u32 capped_samples; /* the others (DNS aside): what the per-flow cap counts */
	/* Keeps what egress writes per packet and what ingress writes per
	 * packet 64 bytes apart: a TCP flow's data leave on one CPU while its
	 * ACKs arrive on another, and both programs write the flow's slot
	 * (the array's base alignment decides the lines; the gain was not
	 * measurable above this machine's noise: bench/RESULTS.md, 2026-12-02). */
	__u64 line_pad;
	/* Second line: first_ns (read per packet by ingress) and ingress
	 * (bpf/ingress.bpf.c): what the destination sent back on this flow,
	 * counted under the same key (its source is our destination). */
	__u64 first_ns;
	__u64 rx_bytes;       /* L3 bytes received (IP header included) */
	__u64 rx_packets;     /* packets received (GRO segments counted) */
	__u64 rx_payload_bytes;
	__u32 dns_events;     /* SL_EV_DNS events emitted in this window */
	__u32 rx_pad;
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
	SL_STAT_DNS_TRUNCATED,    /* DNS responses longer than SL_DNS_MAX (cut) */
	SL_STAT_DNS_CAPPED,       /* DNS responses over the per-flow window cap (not sent) */
	/* kernel-hostile (issue 10) */
	SL_STAT_EXECD_MAP_FULL,         /* sl_execd.update failed: no exit event */
	SL_STAT_IPV4_FRAGMENTS,         /* IPv4 non-first fragments (no ports) */
	SL_STAT_CONTAIN_FOLLOWED,       /* new cgroups contained at creation */
	SL_STAT_CONTAIN_MAP_FULL,       /* ... that did not fit the map */
	SL_STAT_SOCKETS_DENIED,         /* raw/packet sockets refused */
	SL_STAT_SOCKET_DEDUPED,         /* raw/packet socket events deduplicated */
	SL_STAT_FLOW_QUOTA_REFUSED,     /* flow entries refused by the quota */
	SL_STAT_EVENT_QUOTA_REFUSED,    /* events refused by the quota */
	SL_STAT_ACCEPT_DEDUPED,       /* inbound connections folded into an earlier event */
	SL_STAT_ACCEPT_NO_LISTENER,   /* inbound connections whose listener predates the sensor */
	SL_STAT_PACKET_KILLED,        /* processes of contained containers killed for an AF_PACKET socket */
	SL_STAT_SOCK_STATE_REFUSED,   /* egress packets whose socket storage could not be created */
	SL_STAT_UNIX_DENIED,          /* unix connects and addressed sends refused to an isolated container (sensor/kernel/unixconnect.py) */
	SL_STAT_UNIX_INTO_DENIED,     /* unix connects and datagrams into an isolated container refused (socket.bpf.c) */
	SL_STAT_MAX,
};

#endif /* SLUICE_EVENTS_H */
