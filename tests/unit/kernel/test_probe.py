"""The preflight's fatal errors say what is wrong and how to fix it."""

from __future__ import annotations

import pytest

from sensor.errors import SluiceError
from sensor.kernel.hooks import EXEC_ARGS_UNIT, UNITS
from sensor.kernel.probe import ProbeReport, require_runnable, units_available


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
