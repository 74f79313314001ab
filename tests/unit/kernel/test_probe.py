"""The preflight's fatal errors say what is wrong and how to fix it."""

from __future__ import annotations

from pathlib import Path

import pytest

from sensor.errors import SluiceError
from sensor.kernel.hooks import EXEC_ARGS_UNIT, UNITS
from sensor.kernel.probe import (
    ProbeReport,
    require_runnable,
    syscall_args_problem,
    tracepoint_fields,
    units_available,
)


def _report(**kw: object) -> ProbeReport:
    base = dict(
        kernel_release="6.1.0-test",
        btf=True,
        build_tree="/usr/src/linux-headers-6.1.0",
        tracefs="/sys/kernel/tracing",
        tracefs_mounted_by_sluice=False,
        cgroup2_mount="/sys/fs/cgroup",
        cgroup_mode="unified",
        ringbuf=True,
    )
    base.update(kw)
    return ProbeReport(**base)  # type: ignore[arg-type]


def test_runnable_report_passes() -> None:
    require_runnable(_report())


def test_missing_build_tree_names_the_path_and_the_fix() -> None:
    with pytest.raises(SluiceError) as e:
        require_runnable(_report(build_tree=None))
    assert "/lib/modules/6.1.0-test/build" in str(e.value)
    assert "make setup" in e.value.hint


def test_missing_tracefs_says_how_to_mount_it() -> None:
    with pytest.raises(SluiceError) as e:
        require_runnable(_report(tracefs=None))
    assert "mount -t tracefs" in e.value.hint


def test_missing_cgroup2_is_explained() -> None:
    with pytest.raises(SluiceError) as e:
        require_runnable(_report(cgroup2_mount=None))
    assert "cgroup v2" in str(e.value)


def test_units_without_their_tracepoints_are_left_out_with_a_reason() -> None:
    r = _report()
    r.tracepoints = {tp: True for u in UNITS for tp in u.tracepoints}
    r.tracepoints["cgroup:cgroup_rmdir"] = False
    ok, missing = units_available(r, UNITS + (EXEC_ARGS_UNIT,))
    names = [u.name for u in ok]
    assert "lifecycle" not in names and "exec" in names and "egress" in names
    assert "cgroup:cgroup_rmdir" in missing["lifecycle"]
    assert "syscalls:sys_enter_execve" in missing["exec_args"]


SYS_ENTER_SOCKET_FORMAT = """name: sys_enter_socket
ID: 1234
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;
\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:int __syscall_nr;\toffset:8;\tsize:4;\tsigned:1;
\tfield:int family;\toffset:16;\tsize:8;\tsigned:0;
\tfield:int type;\toffset:24;\tsize:8;\tsigned:0;
\tfield:int protocol;\toffset:32;\tsize:8;\tsigned:0;

print fmt: "family: 0x%08lx", ((unsigned long)(REC->family))
"""


def test_tracepoint_fields_from_the_tracefs_format() -> None:
    f = tracepoint_fields(SYS_ENTER_SOCKET_FORMAT)
    assert f["family"] == (16, 8) and f["protocol"] == (32, 8) and f["common_pid"] == (4, 4)
    assert tracepoint_fields("field:char comm[16];\toffset:8;\tsize:16;\tsigned:0;")["comm"] == (8, 16)
    assert tracepoint_fields("garbage\nfield:int x; offset:z; size:4;") == {}


def test_syscall_args_layout_is_checked_before_the_guard_attaches(tmp_path: Path) -> None:
    fmt = tmp_path / "events" / "syscalls" / "sys_enter_socket" / "format"
    fmt.parent.mkdir(parents=True)
    fmt.write_text(SYS_ENTER_SOCKET_FORMAT)
    tp, args = "syscalls:sys_enter_socket", ("family", "type", "protocol")
    assert syscall_args_problem(str(tmp_path), tp, args) == ""
    fmt.write_text(SYS_ENTER_SOCKET_FORMAT.replace("offset:24", "offset:20"))
    assert "field type at (20, 8), expected (24, 8)" in syscall_args_problem(str(tmp_path), tp, args)
    assert "not readable" in syscall_args_problem(str(tmp_path), "syscalls:sys_enter_nope", args)
    assert syscall_args_problem(None, tp, args) == "tracefs is not mounted"
