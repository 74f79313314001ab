"""The few bpf(2) commands bcc 0.26 does not expose, over ctypes.

- BPF_LINK_CREATE for cgroup programs: a link detaches by itself when its
  file descriptor closes, so a sensor that is killed (OOM, SIGKILL) leaves no
  program attached to the host's cgroups. bpf_prog_attach would.
- BPF_MAP_CREATE of a ring buffer, to probe for one.
- BPF_PROG_QUERY on a cgroup, to report (and test) what is attached.
- BPF_PROG_LOAD with an attach BTF id (tp_btf programs: bcc 0.26 loads
  fentry/LSM ones only) or of hand-assembled code (connect_unix, the BPF LSM
  probe), with the verifier's log kept for the error.
- BPF_RAW_TRACEPOINT_OPEN, which attaches a tp_btf or LSM program (its fd
  detaches it when closed, like a link).
"""

from __future__ import annotations

import ctypes as ct
import errno
import os
import platform
import struct

_SYS_BPF = {"x86_64": 321, "aarch64": 280, "armv7l": 386, "ppc64le": 361, "s390x": 351}

BPF_MAP_CREATE = 0
BPF_PROG_LOAD = 5
BPF_PROG_QUERY = 16
BPF_RAW_TRACEPOINT_OPEN = 17
BPF_LINK_CREATE = 28
BPF_ENABLE_STATS = 32
BPF_STATS_RUN_TIME = 0
BPF_MAP_TYPE_RINGBUF = 27
BPF_F_QUERY_EFFECTIVE = 1
BPF_F_ALLOW_MULTI = 2

BPF_PROG_TYPE_CGROUP_SOCK_ADDR = 18
BPF_PROG_TYPE_TRACING = 26
BPF_PROG_TYPE_LSM = 29

# enum bpf_attach_type
TRACE_RAW_TP = 23  # a tp_btf program (with BPF_PROG_TYPE_TRACING)
LSM_MAC = 27  # a BPF LSM program (with BPF_PROG_TYPE_LSM)
CGROUP_INET_INGRESS = 0
CGROUP_INET_EGRESS = 1
CGROUP_INET_SOCK_CREATE = 2
CGROUP_SOCK_OPS = 3
CGROUP_INET4_BIND = 8
CGROUP_INET6_BIND = 9
CGROUP_INET4_CONNECT = 10
CGROUP_INET6_CONNECT = 11
CGROUP_UDP4_SENDMSG = 14
CGROUP_UDP6_SENDMSG = 15
CGROUP_UNIX_CONNECT = 49  # Linux 6.7+; newer than the uapi headers bcc 0.26 ships
CGROUP_UNIX_SENDMSG = 50

_libc = ct.CDLL(None, use_errno=True)
_libc.syscall.restype = ct.c_long


class BpfError(OSError):
    """A bpf(2) command failed; for BPF_PROG_LOAD, `log` is the end of the verifier's log."""

    log = ""


def _bpf(cmd: int, attr: ct.Array[ct.c_char]) -> int:
    nr = _SYS_BPF.get(platform.machine())
    if nr is None:
        raise BpfError(errno.ENOSYS, f"bpf(2) syscall number unknown for {platform.machine()}")
    ret = _libc.syscall(ct.c_long(nr), ct.c_int(cmd), attr, ct.c_uint(len(attr)))
    if ret < 0:
        e = ct.get_errno()
        raise BpfError(e, os.strerror(e))
    return int(ret)


def link_create(prog_fd: int, target_fd: int, attach_type: int) -> int:
    """A bpf_link attaching prog_fd to target_fd; returns the link fd."""
    attr = ct.create_string_buffer(struct.pack("=IIII", prog_fd, target_fd, attach_type, 0), 64)
    return _bpf(BPF_LINK_CREATE, attr)


def prog_load(prog_type: int, code: bytes, name: str, expected_attach_type: int = 0, attach_btf_id: int = 0) -> int:
    """Load BPF instructions (map references as BPF_PSEUDO_MAP_FD of fds this
    process holds); returns the program fd. A refusal raises BpfError whose
    `log` holds the last lines of the verifier's log. Loaded without a log
    first: a verifier log that outgrows its buffer fails the load with
    ENOSPC (a bounded loop of 64 steps does), so the log is asked for only
    to say why a load failed."""
    try:
        return _prog_load(prog_type, code, name, expected_attach_type, attach_btf_id, 0)
    except BpfError as first:
        try:
            return _prog_load(prog_type, code, name, expected_attach_type, attach_btf_id, 1)
        except BpfError as second:
            # the refusal's own errno (the retry's may be the log's ENOSPC), the retry's log
            first.log = second.log
            raise first from None


def _prog_load(
    prog_type: int, code: bytes, name: str, expected_attach_type: int, attach_btf_id: int, log_level: int
) -> int:
    insns = ct.create_string_buffer(code, len(code))
    lic = ct.create_string_buffer(b"GPL")
    log = ct.create_string_buffer(1 << 20 if log_level else 1)
    attr = ct.create_string_buffer(128)
    # union bpf_attr, BPF_PROG_LOAD: prog_type, insn_cnt, insns, license,
    # log_level, log_size, log_buf, kern_version, prog_flags, prog_name[16],
    # prog_ifindex, expected_attach_type ... attach_btf_id at offset 108
    struct.pack_into(
        "<IIQQIIQII16sII",
        attr,
        0,
        prog_type,
        len(code) // 8,
        ct.addressof(insns),
        ct.addressof(lic),
        log_level,
        len(log) if log_level else 0,
        ct.addressof(log) if log_level else 0,
        0,
        0,
        name.encode()[:15],
        0,
        expected_attach_type,
    )
    struct.pack_into("<I", attr, 108, attach_btf_id)
    try:
        return _bpf(BPF_PROG_LOAD, attr)
    except BpfError as e:
        e.log = " | ".join(log.value.decode(errors="replace").strip().splitlines()[-3:]) if log_level else ""
        raise


def raw_tracepoint_open(prog_fd: int) -> int:
    """Attach a tp_btf (or LSM) program to the tracepoint (or LSM hook) its
    attach BTF id names; returns the fd that keeps it attached."""
    attr = ct.create_string_buffer(struct.pack("=QI", 0, prog_fd), 16)
    return _bpf(BPF_RAW_TRACEPOINT_OPEN, attr)


def ringbuf_supported() -> bool:
    attr = ct.create_string_buffer(struct.pack("=IIIII", BPF_MAP_TYPE_RINGBUF, 0, 0, 4096, 0), 72)
    try:
        fd = _bpf(BPF_MAP_CREATE, attr)
    except BpfError:
        return False
    os.close(fd)
    return True


def cgroup_prog_ids(cgroup_path: str, attach_type: int, effective: bool = False) -> list[int]:
    """Ids of the programs attached to a cgroup for one attach type."""
    fd = os.open(cgroup_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        ids = (ct.c_uint32 * 256)()
        head = struct.pack("=IIII", fd, attach_type, BPF_F_QUERY_EFFECTIVE if effective else 0, 0)
        attr = ct.create_string_buffer(head + struct.pack("=QI", ct.addressof(ids), 256), 64)
        _bpf(BPF_PROG_QUERY, attr)
        count = struct.unpack_from("=I", attr.raw, 24)[0]
        return list(ids[:count])
    finally:
        os.close(fd)


def enable_stats() -> int:
    """BPF_ENABLE_STATS: the kernel times every BPF program run while the
    returned fd is open (Linux 5.8+), without touching the sysctl."""
    attr = ct.create_string_buffer(struct.pack("=I", BPF_STATS_RUN_TIME), 8)
    return _bpf(BPF_ENABLE_STATS, attr)
