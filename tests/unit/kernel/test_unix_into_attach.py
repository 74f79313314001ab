"""The loader's attach of the unix LSM programs (sensor/kernel/loader.py,
_attach_unix_into): a refusal half way leaves no descriptor open and a
status that says why; the sensor goes on. bpf(2) and BTF are stood in for:
pure logic (the real load is tests/privileged/test_unix_into_program.py)."""

from __future__ import annotations

import os
from typing import Any

import pytest

from sensor.kernel import bpfsys, btf
from sensor.kernel import hooks as H
from sensor.kernel.loader import BccSource


class _Bcc:
    def __init__(self, broken: bool = False) -> None:
        self.broken = broken

    def dump_func(self, name: bytes) -> bytes:
        if self.broken:
            raise Exception(f"Failed to load BPF program {name.decode()}")  # what bcc raises
        return b"\x95" + b"\0" * 7


def _loader(lsm: str = "", broken: bool = False) -> Any:
    src: Any = BccSource.__new__(BccSource)
    src.b, src.lsm, src.status, src._unix_into_fds = _Bcc(broken), lsm, {}, []
    src._unix_into_layout = btf.UnixIntoLayout(24, 4, 672, 256, 96, 8)
    return src


@pytest.fixture
def fds(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    opened: list[int] = []
    loads = iter([None, bpfsys.BpfError(1, "Operation not permitted")])

    def prog_load(*_a: Any) -> int:
        err = next(loads)
        if err is not None:
            raise err
        opened.append(os.open("/dev/null", os.O_RDONLY))
        return opened[-1]

    def attach(_fd: int) -> int:
        opened.append(os.open("/dev/null", os.O_RDONLY))
        return opened[-1]

    monkeypatch.setattr(bpfsys, "prog_load", prog_load)
    monkeypatch.setattr(bpfsys, "raw_tracepoint_open", attach)
    ids = {(btf.KIND_FUNC, h): btf.BtfType(i + 1, {}) for i, (h, _fn) in enumerate(H.UNIX_INTO_PROGRAMS)}
    monkeypatch.setattr(btf, "find", lambda wanted, *_a: {k: v for k, v in ids.items() if k in wanted})
    return opened


def _closed(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return True
    return False


def test_the_second_program_refused_closes_the_first(fds: list[int]) -> None:
    src = _loader()
    src._attach_unix_into()
    assert len(fds) == 2 and all(_closed(fd) for fd in fds)  # the first program and its link
    assert src._unix_into_fds == []
    status = src.status[H.UNIX_INTO_HOOK]
    assert status.startswith("unavailable: the kernel refused the program (Operation not permitted)"), status
    assert status.endswith(H.UNIX_INTO_MISSING)


def test_bccs_own_failure_is_a_status_not_a_crash(fds: list[int]) -> None:
    src = _loader(broken=True)
    src._attach_unix_into()
    assert fds == [] and src._unix_into_fds == []
    assert src.status[H.UNIX_INTO_HOOK].startswith("unavailable: the program could not be prepared (Failed to load")


def test_without_the_bpf_lsm_nothing_is_loaded(fds: list[int]) -> None:
    src = _loader(lsm="bpf is not an active LSM (lockdown,capability)")
    src._attach_unix_into()
    assert fds == []
    assert src.status[H.UNIX_INTO_HOOK].startswith("unavailable: bpf is not an active LSM")
