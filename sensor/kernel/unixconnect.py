"""The cgroup connect_unix program (Linux 6.7+), assembled here, not by bcc.

Why not bcc: the unix path is only reachable through the kfunc
bpf_cast_to_kern_ctx (the uapi bpf_sock_addr has no sun_path field; the
kernel's own selftest connect_unix_prog.c reads it the same way), and bcc
0.26 cannot emit kfunc calls ("cannot call non-static helper function").
The program is small, so it is written as BPF instructions and loaded with
the bpf(2) syscall.

Why this is still header-independent: the kfunc's id and the two fields it
reads (bpf_sock_addr_kern.uaddr and .uaddrlen) are looked up in the running
kernel's own BTF (/sys/kernel/btf/vmlinux), never in installed headers. No
other kernel memory is read: the path bytes are copied from the kernel's
copy of the caller's sockaddr with bpf_probe_read_kernel.

The program emits one SL_EV_UNIX_CONNECT record per connect(2) to a unix
socket (into the shared ring buffer) and counts submitted/dropped records in
sl_stats like every other program. Each record is charged to the caller's
cgroup's event share first, exactly as sl_event_quota_ok in
bpf/lib/common.bpf.h does it (same sl_quota map and layout, one SL_EV_QUOTA
report per window when refused): connect(2) to a unix socket is cheap to
repeat, and without the share a container could fill the ring buffer with
them.

With the containment maps (bpf/lib/contain.bpf.h), it refuses (returns 0:
EPERM) a connect by path from an isolated container, and one to an abstract
name when the isolation also drops loopback (a shared network namespace,
whose abstract names are the host's or a neighbour's: containerd's shims
listened on such names, CVE-2020-15257). A path alone cannot tell a daemon's
socket mounted into the container (docker.sock: `docker run` a new,
uncontained container) from the container's own, so every path is refused;
the record says so (`denied`) and sl_stats counts it. Blocks (per
destination) refuse nothing here.
"""

from __future__ import annotations

import ctypes as ct
import os
import struct
from dataclasses import dataclass

from sensor.kernel import bpfsys, btf, events

KFUNC = "bpf_cast_to_kern_ctx"
KERN_CTX = "bpf_sock_addr_kern"

BPF_PSEUDO_MAP_FD = 1
BPF_PSEUDO_KFUNC_CALL = 2

# helpers
GET_CURRENT_CGROUP_ID = 80
GET_CURRENT_PID_TGID = 14
KTIME_GET_NS = 5
GET_SOCKET_COOKIE = 46
GET_CURRENT_COMM = 16
PROBE_READ_KERNEL = 113
GET_CURRENT_ANCESTOR_CGROUP_ID = 123
RINGBUF_RESERVE = 131
RINGBUF_SUBMIT = 132
MAP_LOOKUP_ELEM = 1
MAP_UPDATE_ELEM = 2
BPF_RB_NO_WAKEUP = 1

EVENT_SIZE = ct.sizeof(events.UnixConnectEventC)
_F = events.UnixConnectEventC
_Q = events.QuotaC
_QE = events.QuotaEventC


class UnixConnectUnavailable(Exception):
    pass


@dataclass(frozen=True)
class KernelLayout:
    kfunc_btf_id: int
    uaddr_offset: int
    uaddrlen_offset: int


BTF_TYPES = ((btf.KIND_FUNC, KFUNC), (btf.KIND_STRUCT, KERN_CTX))


def kernel_layout(path: str = btf.BTF_PATH) -> KernelLayout:
    """The kfunc's BTF id and the kern ctx's field offsets, from vmlinux BTF."""
    func, ctx = BTF_TYPES
    try:
        got = btf.find(set(BTF_TYPES), path)
    except btf.BtfUnavailable as e:
        raise UnixConnectUnavailable(str(e)) from None
    if func not in got:
        raise UnixConnectUnavailable(f"kernel has no {KFUNC} kfunc (Linux 6.2+)")
    members = got[ctx].members if ctx in got else {}
    if "uaddr" not in members or "uaddrlen" not in members:
        raise UnixConnectUnavailable(f"kernel BTF has no {KERN_CTX}.uaddr/uaddrlen")
    return KernelLayout(got[func].type_id, members["uaddr"][0], members["uaddrlen"][0])


# --- assembling --------------------------------------------------------------


def _insn(code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    return struct.pack("<BBhi", code, (src << 4) | dst, off, imm)


def _mov_reg(dst: int, src: int) -> bytes:
    return _insn(0xBF, dst, src)


def _mov_imm(dst: int, imm: int) -> bytes:
    return _insn(0xB7, dst, 0, 0, imm)


def _call(helper: int) -> bytes:
    return _insn(0x85, 0, 0, 0, helper)


def _ld_map_fd(dst: int, fd: int) -> bytes:
    return _insn(0x18, dst, BPF_PSEUDO_MAP_FD, 0, fd) + _insn(0, 0, 0, 0, 0)


def _stx(size: int, dst: int, off: int, src: int) -> bytes:  # *(size *)(dst + off) = src
    return _insn({4: 0x63, 8: 0x7B}[size], dst, src, off)


def _st_imm(size: int, dst: int, off: int, imm: int) -> bytes:
    return _insn({4: 0x62, 8: 0x7A}[size], dst, 0, off, imm)


def _ldx(size: int, dst: int, src: int, off: int) -> bytes:
    return _insn({1: 0x71, 4: 0x61, 8: 0x79}[size], dst, src, off)


def _stat_add(stats_fd: int, index: int) -> list[bytes]:
    """sl_stats[index] += 1 (this CPU's slot)."""
    return [
        _st_imm(4, 10, -4, index),
        _ld_map_fd(1, stats_fd),
        _mov_reg(2, 10),
        _insn(0x07, 2, 0, 0, -4),  # r2 += -4
        _call(MAP_LOOKUP_ELEM),
        _insn(0x15, 0, 0, 3, 0),  # if r0 == 0 goto +3
        _ldx(8, 1, 0, 0),
        _insn(0x07, 1, 0, 0, 1),  # r1 += 1
        _stx(8, 0, 0, 1),
    ]


# an instruction, a label, or a jump to a label ("jmp", code, dst, src, imm, label)
_Part = bytes | str | tuple[str, int, int, int, int, str]


def _resolve(parts: list[_Part]) -> list[bytes]:
    """Labels (a str) and jumps to them (("jmp", code, dst, src, imm, label)) into
    instructions; offsets count instruction slots (ld_imm64 takes two)."""
    at: dict[str, int] = {}
    n = 0
    for x in parts:
        if isinstance(x, str):
            at[x] = n
        else:
            n += len(x) // 8 if isinstance(x, bytes) else 1
    out: list[bytes] = []
    n = 0
    for x in parts:
        if isinstance(x, str):
            continue
        if isinstance(x, tuple):
            _, code, dst, src, imm, label = x
            out.append(_insn(code, dst, src, at[label] - n - 1, imm))
            n += 1
        else:
            out.append(x)
            n += len(x) // 8
    return out


def _quota_check(
    quota_fd: int, charge_fd: int, gen_fd: int, ringbuf_fd: int, stats_fd: int, event_quota: int
) -> list[_Part]:
    """sl_event_quota_ok(ctx, r7) of bpf/lib/common.bpf.h, step for step
    (the cgroup charged from sl_quota_charge, then its sl_quota entry): falls through when the event may be submitted, jumps to
    "exit" when the cgroup is over its share (counted, reported once per
    window). Uses r1-r5, r8, r9 and the stack from fp-64 to fp-1."""
    q_window, q_events, q_reported = _Q.window.offset, _Q.events.offset, _Q.reported.offset
    q_events_over = _Q.events_over.offset
    ev_over = events.QUOTA_EVENTS
    parts: list[_Part] = [
        # r8 = sl_gen[0] (the window epoch), 0 if unreadable
        _st_imm(4, 10, -4, 0),
        _ld_map_fd(1, gen_fd),
        _mov_reg(2, 10),
        _insn(0x07, 2, 0, 0, -4),
        _call(MAP_LOOKUP_ELEM),
        _mov_imm(8, 0),
        _insn(0x15, 0, 0, 1, 0),  # if r0 == 0 goto +1
        _ldx(4, 8, 0, 0),
        # fp-16 = the cgroup charged: sl_quota_charge[cgroup id] or itself
        _stx(8, 10, -16, 7),
        _ld_map_fd(1, charge_fd),
        _mov_reg(2, 10),
        _insn(0x07, 2, 0, 0, -16),
        _call(MAP_LOOKUP_ELEM),
        _insn(0x15, 0, 0, 3, 0),  # if r0 == 0 goto +3
        _ldx(8, 1, 0, 0),
        _insn(0x15, 1, 0, 1, 0),  # if r1 == 0 goto +1
        _stx(8, 10, -16, 1),
        # r0 = sl_quota[fp-16]
        _ld_map_fd(1, quota_fd),
        _mov_reg(2, 10),
        _insn(0x07, 2, 0, 0, -16),
        _call(MAP_LOOKUP_ELEM),
        ("jmp", 0x55, 0, 0, 0, "have"),  # if r0 != 0 goto have
        # a new entry: zeroes, window = epoch
        *[_st_imm(8, 10, off, 0) for off in range(-64, -16, 8)],
        _stx(4, 10, -64 + q_window, 8),
        _ld_map_fd(1, quota_fd),
        _mov_reg(2, 10),
        _insn(0x07, 2, 0, 0, -16),
        _mov_reg(3, 10),
        _insn(0x07, 3, 0, 0, -64),
        _mov_imm(4, 0),
        _call(MAP_UPDATE_ELEM),
        _ld_map_fd(1, quota_fd),
        _mov_reg(2, 10),
        _insn(0x07, 2, 0, 0, -16),
        _call(MAP_LOOKUP_ELEM),
        ("jmp", 0x15, 0, 0, 0, "ok"),  # no quota state: fail open
        "have",
        _mov_reg(9, 0),
        _ldx(4, 1, 9, q_window),
        ("jmp", 0x1D, 1, 8, 0, "same_window"),  # if r1 == r8
        # a new window: reset the counts and this generation's refusals
        _stx(4, 9, q_window, 8),
        _st_imm(4, 9, _Q.flows.offset, 0),
        _st_imm(4, 9, q_events, 0),
        _st_imm(4, 9, q_reported, 0),
        _mov_reg(1, 8),
        _insn(0x57, 1, 0, 0, 1),  # r1 &= 1
        _insn(0x67, 1, 0, 0, 3),  # r1 <<= 3
        _mov_reg(2, 9),
        _insn(0x0F, 2, 1),  # r2 += r1
        _st_imm(8, 2, _Q.flows_over.offset, 0),
        _st_imm(8, 2, q_events_over, 0),
        "same_window",
        _ldx(4, 1, 9, q_events),
        ("jmp", 0x35, 1, 0, event_quota, "over"),  # if r1 >= quota goto over
        _mov_imm(1, 1),
        _insn(0xC3, 9, 1, q_events, 0),  # lock *(u32 *)(r9 + events) += r1
        ("jmp", 0x05, 0, 0, 0, "ok"),
        "over",
        _mov_reg(1, 8),
        _insn(0x57, 1, 0, 0, 1),
        _insn(0x67, 1, 0, 0, 3),
        _mov_reg(2, 9),
        _insn(0x0F, 2, 1),
        _mov_imm(1, 1),
        _insn(0xDB, 2, 1, q_events_over, 0),  # lock *(u64 *)(r2 + events_over[gen]) += r1
        *_stat_add(stats_fd, events.STAT_EVENT_QUOTA_REFUSED),
        _ldx(4, 1, 9, q_reported),
        _mov_reg(2, 1),
        _insn(0x57, 2, 0, 0, ev_over),
        ("jmp", 0x55, 2, 0, 0, "exit"),  # reported in this window already
        _insn(0x47, 1, 0, 0, ev_over),  # r1 |= QUOTA_EVENTS
        _stx(4, 9, q_reported, 1),
        _ld_map_fd(1, ringbuf_fd),
        _mov_imm(2, ct.sizeof(_QE)),
        _mov_imm(3, 0),
        _call(RINGBUF_RESERVE),
        ("jmp", 0x15, 0, 0, 0, "report_dropped"),
        _mov_reg(9, 0),
        _st_imm(4, 9, _QE.hdr.offset + 0, events.EV_QUOTA),
        _call(GET_CURRENT_PID_TGID),
        _insn(0x77, 0, 0, 0, 32),
        _stx(4, 9, _QE.hdr.offset + 4, 0),
        _call(KTIME_GET_NS),
        _stx(8, 9, _QE.hdr.offset + 8, 0),
        _ldx(8, 1, 10, -16),
        _stx(8, 9, _QE.hdr.offset + 16, 1),  # the cgroup charged
        _st_imm(4, 9, _QE.kind.offset, ev_over),
        _st_imm(4, 9, _QE.limit.offset, event_quota),
        _mov_reg(1, 9),
        _mov_imm(2, BPF_RB_NO_WAKEUP),
        _call(RINGBUF_SUBMIT),
        *_stat_add(stats_fd, events.STAT_SUBMITTED + events.EV_QUOTA),
        ("jmp", 0x05, 0, 0, 0, "exit"),
        "report_dropped",
        *_stat_add(stats_fd, events.STAT_DROPPED + events.EV_QUOTA),
        ("jmp", 0x05, 0, 0, 0, "exit"),
        "ok",
    ]
    return parts


@dataclass(frozen=True)
class ContainMaps:
    """The fds of bpf/lib/contain.bpf.h's maps the refusal reads."""

    on: int  # sl_contain_on
    levels: int  # sl_contain_levels
    cgroups: int  # sl_contain_cg: cgroup id -> handle
    isolated: int  # sl_isolated: handle -> struct sl_isolation


CONTAIN_MAX_LEVEL = 12  # SL_CONTAIN_MAX_LEVEL
ISOLATION_FLAGS_OFFSET = 8  # struct sl_isolation { __u64 dropped; __u32 flags; ... }
ISO_NO_LOOPBACK = 1  # SL_ISO_NO_LOOPBACK
DENY_SLOT = -72  # the stack slot of the refusal (0 or 1), below _quota_check's


def _handle_lookup(cg_fd: int) -> list[_Part]:
    """r0 = sl_contain_cg[fp-16] (a pointer, or 0)."""
    return [_ld_map_fd(1, cg_fd), _mov_reg(2, 10), _insn(0x07, 2, 0, 0, -16), _call(MAP_LOOKUP_ELEM)]


def _contain_check(m: ContainMaps, layout: KernelLayout, stats_fd: int) -> list[_Part]:
    """fp-72 = 1 when the caller (cgroup id in r7, ctx in r6) must be
    refused, else 0: sl_contain_handle_current of contain.bpf.h (the cgroup,
    then its ancestors at the levels where contained cgroups sit), then the
    handle's isolation and the address's kind. Uses r0-r5, r8, r9 and
    fp-24..fp-1 (before the quota check, which reuses them)."""
    parts: list[_Part] = [
        _st_imm(8, 10, DENY_SLOT, 0),
        # nothing contained on the node: one array read
        _st_imm(4, 10, -4, 0),
        _ld_map_fd(1, m.on),
        _mov_reg(2, 10),
        _insn(0x07, 2, 0, 0, -4),
        _call(MAP_LOOKUP_ELEM),
        ("jmp", 0x15, 0, 0, 0, "contain_done"),  # if r0 == 0
        _ldx(4, 1, 0, 0),
        ("jmp", 0x15, 1, 0, 0, "contain_done"),  # if !*on
        _stx(8, 10, -16, 7),
        *_handle_lookup(m.cgroups),
        ("jmp", 0x55, 0, 0, 0, "have_handle"),  # if r0 != 0
        _st_imm(4, 10, -4, 0),
        _ld_map_fd(1, m.levels),
        _mov_reg(2, 10),
        _insn(0x07, 2, 0, 0, -4),
        _call(MAP_LOOKUP_ELEM),
        ("jmp", 0x15, 0, 0, 0, "contain_done"),
        _ldx(4, 9, 0, 0),  # r9 = the level mask
    ]
    for lv in range(1, CONTAIN_MAX_LEVEL + 1):
        parts += [
            _mov_reg(1, 9),
            _insn(0x57, 1, 0, 0, 1 << lv),  # r1 &= 1 << lv
            ("jmp", 0x15, 1, 0, 0, f"level_{lv + 1}"),
            _mov_imm(1, lv),
            _call(GET_CURRENT_ANCESTOR_CGROUP_ID),
            ("jmp", 0x15, 0, 0, 0, "contain_done"),  # shallower than lv
            _stx(8, 10, -16, 0),
            *_handle_lookup(m.cgroups),
            ("jmp", 0x55, 0, 0, 0, "have_handle"),
            f"level_{lv + 1}",
        ]
    parts += [
        ("jmp", 0x05, 0, 0, 0, "contain_done"),
        "have_handle",
        _ldx(8, 1, 0, 0),
        _stx(8, 10, -16, 1),  # the handle
        _ld_map_fd(1, m.isolated),
        _mov_reg(2, 10),
        _insn(0x07, 2, 0, 0, -16),
        _call(MAP_LOOKUP_ELEM),
        ("jmp", 0x15, 0, 0, 0, "contain_done"),  # blocked destinations only
        _ldx(4, 9, 0, ISOLATION_FLAGS_OFFSET),  # r9 = the isolation's flags
        _mov_reg(1, 6),
        _insn(0x85, 0, BPF_PSEUDO_KFUNC_CALL, 0, layout.kfunc_btf_id),  # r0 = bpf_cast_to_kern_ctx(ctx)
        _mov_reg(8, 0),
        _ldx(4, 1, 8, layout.uaddrlen_offset),
        ("jmp", 0xB5, 1, 0, 2, "deny"),  # if uaddrlen <= 2 (no name: the kernel refuses it anyway)
        # sun_path[0]: NUL for an abstract name
        _st_imm(8, 10, -24, 0),
        _mov_reg(1, 10),
        _insn(0x07, 1, 0, 0, -24),
        _mov_imm(2, 1),
        _ldx(8, 3, 8, layout.uaddr_offset),
        _insn(0x07, 3, 0, 0, 2),  # skip sun_family
        _call(PROBE_READ_KERNEL),
        _ldx(1, 1, 10, -24),
        ("jmp", 0x55, 1, 0, 0, "deny"),  # a path
        _insn(0x57, 9, 0, 0, ISO_NO_LOOPBACK),
        ("jmp", 0x15, 9, 0, 0, "contain_done"),  # abstract, own network namespace
        "deny",
        _st_imm(8, 10, DENY_SLOT, 1),
        *_stat_add(stats_fd, events.STAT_UNIX_DENIED),
        "contain_done",
    ]
    return parts


def _head() -> list[_Part]:
    """r6 = ctx, r7 = the caller's cgroup id (both kept across calls)."""
    return [_mov_reg(6, 1), _call(GET_CURRENT_CGROUP_ID), _mov_reg(7, 0)]


def _exit_not_refused() -> list[_Part]:
    """r0 = !refused (1 lets the call through, 0 fails it with EPERM),
    masked so the verifier sees r0 in [0, 1]; exit."""
    return [_ldx(8, 0, 10, DENY_SLOT), _insn(0x57, 0, 0, 0, 1), _insn(0xA7, 0, 0, 0, 1), _insn(0x95)]


def assemble(
    layout: KernelLayout,
    ringbuf_fd: int,
    stats_fd: int,
    quota_fd: int | None = None,
    charge_fd: int | None = None,
    gen_fd: int | None = None,
    event_quota: int = 0,
    contain: ContainMaps | None = None,
) -> bytes:
    # the ld_imm64 of a map fd is two instruction slots: jump offsets count slots
    def slots(parts: list[bytes]) -> int:
        return sum(len(p) // 8 for p in parts)

    ok_stat = _stat_add(stats_fd, events.STAT_SUBMITTED + events.EV_UNIX_CONNECT)
    drop_stat = _stat_add(stats_fd, events.STAT_DROPPED + events.EV_UNIX_CONNECT)
    head = _head()
    body: list[bytes] = [
        _mov_reg(1, 6),
        _insn(0x85, 0, BPF_PSEUDO_KFUNC_CALL, 0, layout.kfunc_btf_id),  # r0 = bpf_cast_to_kern_ctx(ctx)
        _mov_reg(8, 0),  # r8 = struct bpf_sock_addr_kern *
        _ld_map_fd(1, ringbuf_fd),
        _mov_imm(2, EVENT_SIZE),
        _mov_imm(3, 0),
        _call(RINGBUF_RESERVE),
        _mov_reg(9, 0),  # r9 = event or NULL
    ]
    fill: list[bytes] = [
        _st_imm(4, 9, _F.hdr.offset + 0, events.EV_UNIX_CONNECT),
        _call(GET_CURRENT_PID_TGID),
        _insn(0x77, 0, 0, 0, 32),  # r0 >>= 32
        _stx(4, 9, _F.hdr.offset + 4, 0),
        _call(KTIME_GET_NS),
        _stx(8, 9, _F.hdr.offset + 8, 0),
        _stx(8, 9, _F.hdr.offset + 16, 7),
        _mov_reg(1, 6),
        _call(GET_SOCKET_COOKIE),
        _stx(8, 9, _F.sock_cookie.offset, 0),
        # path_len = max(uaddrlen, 2) - 2 (the sun_family bytes)
        _ldx(4, 1, 8, layout.uaddrlen_offset),
        _insn(0x25, 1, 0, 1, 2),  # if r1 > 2 goto +1
        _mov_imm(1, 2),
        _insn(0x07, 1, 0, 0, -2),
        _stx(4, 9, _F.path_len.offset, 1),
        _ldx(8, 1, 10, DENY_SLOT),
        _stx(4, 9, _F.denied.offset, 1),
        _st_imm(4, 9, _F.pad2.offset, 0),
        _mov_reg(1, 9),
        _insn(0x07, 1, 0, 0, _F.comm.offset),
        _mov_imm(2, events.COMM_LEN),
        _call(GET_CURRENT_COMM),
        _mov_reg(1, 9),
        _insn(0x07, 1, 0, 0, _F.path.offset),
        _mov_imm(2, events.UNIX_PATH_LEN),
        _ldx(8, 3, 8, layout.uaddr_offset),
        _insn(0x07, 3, 0, 0, 2),  # skip sun_family
        _call(PROBE_READ_KERNEL),  # zero-fills on failure
        _mov_reg(1, 9),
        # BPF_RB_NO_WAKEUP, as the other programs' records: a wake-up per
        # record is the costly part of a submit; the reader drains on its timer
        _mov_imm(2, BPF_RB_NO_WAKEUP),
        _call(RINGBUF_SUBMIT),
        *ok_stat,
    ]
    exit_ = _exit_not_refused()
    # if r9 == 0 goto drop; <fill>; goto exit; drop: <drop_stat>; exit
    prog = body + [_insn(0x15, 9, 0, slots(fill) + 1, 0)] + fill
    prog += [_insn(0x05, 0, 0, slots(drop_stat), 0)] + drop_stat
    quota: list[_Part] = []
    if quota_fd is not None:
        if charge_fd is None or gen_fd is None or event_quota <= 0:
            raise ValueError("the event quota needs sl_quota_charge's and sl_gen's fds and a quota")
        quota = _quota_check(quota_fd, charge_fd, gen_fd, ringbuf_fd, stats_fd, event_quota)
    check = _contain_check(contain, layout, stats_fd) if contain is not None else [_st_imm(8, 10, DENY_SLOT, 0)]
    parts: list[_Part] = [*head, *check, *quota, *prog, "exit", *exit_]
    return b"".join(_resolve(parts))


def assemble_refusal(layout: KernelLayout, stats_fd: int, contain: ContainMaps) -> bytes:
    """The cgroup sendmsg_unix program: a datagram sent to an address (a
    path or an abstract name, no connect) by an isolated container is
    refused as its connect would be; nothing is recorded but the count (a
    host's syslog() calls come this way: a record each would be a flood)."""
    return b"".join(_resolve([*_head(), *_contain_check(contain, layout, stats_fd), *_exit_not_refused()]))


def load_refusal(layout: KernelLayout, stats_fd: int, contain: ContainMaps) -> int:
    """Load assemble_refusal's program; returns its fd (UnixConnectUnavailable
    with the verifier's log when refused)."""
    try:
        return bpfsys.prog_load(
            bpfsys.BPF_PROG_TYPE_CGROUP_SOCK_ADDR,
            assemble_refusal(layout, stats_fd, contain),
            "sl_sendmsg_unix",
            bpfsys.CGROUP_UNIX_SENDMSG,
        )
    except bpfsys.BpfError as e:
        raise UnixConnectUnavailable(f"the kernel refused the program ({e.strerror}): {e.log}") from None


def load(
    layout: KernelLayout,
    ringbuf_fd: int,
    stats_fd: int,
    quota_fd: int | None = None,
    charge_fd: int | None = None,
    gen_fd: int | None = None,
    event_quota: int = 0,
    contain: ContainMaps | None = None,
) -> int:
    """Load the program; returns its fd. Raises UnixConnectUnavailable with
    the verifier's log when the kernel refuses it. With quota_fd (sl_quota),
    charge_fd (sl_quota_charge), gen_fd (sl_gen) and event_quota, each record
    is charged to the caller's container's event share first. With contain,
    an isolated container's connects are refused (see the module's text)."""
    code = assemble(layout, ringbuf_fd, stats_fd, quota_fd, charge_fd, gen_fd, event_quota, contain)
    try:
        return bpfsys.prog_load(
            bpfsys.BPF_PROG_TYPE_CGROUP_SOCK_ADDR, code, "sl_connect_unix", bpfsys.CGROUP_UNIX_CONNECT
        )
    except bpfsys.BpfError as e:
        raise UnixConnectUnavailable(f"the kernel refused the program ({e.strerror}): {e.log}") from None


def close(fd: int) -> None:
    os.close(fd)
