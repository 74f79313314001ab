"""The assembled connect_unix program charges each record to the event
quota as sl_event_quota_ok does (pure assembly checks; the kernel's verdict
is the privileged tests')."""

from __future__ import annotations

import struct

import pytest

from sensor.kernel import events, unixconnect

LAYOUT = unixconnect.KernelLayout(kfunc_btf_id=4242, uaddr_offset=8, uaddrlen_offset=16)


def insns(code: bytes) -> list[tuple[int, int, int, int, int]]:
    out = []
    for i in range(0, len(code), 8):
        op, regs, off, imm = struct.unpack_from("<BBhi", code, i)
        out.append((op, regs & 0xF, regs >> 4, off, imm))
    return out


def test_without_quota_the_program_is_unchanged_in_shape() -> None:
    code = unixconnect.assemble(LAYOUT, 3, 4)
    ops = insns(code)
    assert ops[-1][0] == 0x95  # exit
    assert not any(op == 0xC3 for op, *_ in ops)  # no atomic add: no quota


def test_quota_check_comes_before_the_record_and_every_jump_lands_inside() -> None:
    code = unixconnect.assemble(LAYOUT, 3, 4, quota_fd=5, charge_fd=6, gen_fd=7, event_quota=820)
    ops = insns(code)
    n = len(ops)
    for i, (op, _dst, _src, off, _imm) in enumerate(ops):
        if op & 0x07 == 0x05 and op not in (0x85, 0x95):  # jumps (not call/exit)
            assert 0 <= i + off + 1 < n, (i, off)
    # the map fds in program order: gen, charge, quota (lookups), ..., then the ring buffer
    fds = [imm for op, _d, src, _o, imm in ops if op == 0x18 and src == unixconnect.BPF_PSEUDO_MAP_FD]
    assert fds[:3] == [7, 6, 5]
    kfunc = next(i for i, (op, _d, src, _o, _imm) in enumerate(ops) if op == 0x85 and src == 2)
    quota_cmp = next(i for i, (op, _d, _s, _o, imm) in enumerate(ops) if op == 0x35 and imm == 820)
    assert quota_cmp < kfunc  # over the share: no record is built
    # one SL_EV_QUOTA record with the quota as its limit
    assert any(op == 0x62 and imm == events.EV_QUOTA for op, *_r, imm in ops)


def test_quota_needs_every_map() -> None:
    with pytest.raises(ValueError):
        unixconnect.assemble(LAYOUT, 3, 4, quota_fd=5, charge_fd=None, gen_fd=7, event_quota=820)


def test_the_containment_check_runs_first_and_every_jump_lands_inside() -> None:
    maps = unixconnect.ContainMaps(on=11, levels=12, cgroups=13, isolated=14)
    code = unixconnect.assemble(LAYOUT, 3, 4, quota_fd=5, charge_fd=6, gen_fd=7, event_quota=820, contain=maps)
    ops = insns(code)
    n = len(ops)
    for i, (op, _dst, _src, off, _imm) in enumerate(ops):
        if op & 0x07 == 0x05 and op not in (0x85, 0x95):
            assert 0 <= i + off + 1 < n, (i, off)
    fds = [imm for op, _d, src, _o, imm in ops if op == 0x18 and src == unixconnect.BPF_PSEUDO_MAP_FD]
    # sl_contain_on first (a node with nothing contained pays one array read), before the quota's maps
    assert fds[0] == 11 and fds.index(7) > fds.index(14)
    # one ancestor per level a contained cgroup may sit at
    calls = [imm for op, _d, src, _o, imm in ops if op == 0x85 and src == 0]
    assert calls.count(unixconnect.GET_CURRENT_ANCESTOR_CGROUP_ID) == unixconnect.CONTAIN_MAX_LEVEL
    # the refusal is counted, and the return value is !refused, masked to [0, 1]
    assert any(op == 0x62 and imm == events.STAT_UNIX_DENIED for op, *_r, imm in ops)
    assert [op for op, *_ in ops[-4:]] == [0x79, 0x57, 0xA7, 0x95]


def test_without_the_containment_maps_nothing_is_refused() -> None:
    ops = insns(unixconnect.assemble(LAYOUT, 3, 4))
    calls = [imm for op, _d, src, _o, imm in ops if op == 0x85 and src == 0]
    assert unixconnect.GET_CURRENT_ANCESTOR_CGROUP_ID not in calls
    # the slot the exit reads is zeroed first
    assert ops[3][0] == 0x7A and ops[3][3] == unixconnect.DENY_SLOT and ops[3][4] == 0
