"""The exec'd file, not the caller's spelling of it: `./nc`, `//tmp/nc`,
`/./tmp/nc` and `/proc/self/root/tmp/nc` ran /tmp/nc past SL-C2-001's
writable-path check (review). Real processes, real /proc."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sensor.telemetry.pipeline import canonical_path, resolve_executable


@pytest.mark.parametrize(
    ("spelled", "canonical"),
    [
        ("//tmp/nc", "/tmp/nc"),
        ("/./tmp/nc", "/tmp/nc"),
        ("/tmp/x/../nc", "/tmp/nc"),
        ("/proc/self/root/tmp/nc", "/tmp/nc"),
        ("/proc/1/root/proc/self/root//tmp/./nc", "/tmp/nc"),
        ("/proc/thread-self/root/var/tmp/nc", "/var/tmp/nc"),
        ("./nc", "nc"),
        ("/usr/bin/env", "/usr/bin/env"),
        ("/proc/self/rootkit/nc", "/proc/self/rootkit/nc"),
    ],
)
def test_canonical_path(spelled: str, canonical: str) -> None:
    assert canonical_path(spelled) == canonical


@pytest.fixture
def running_copy(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    """A copy of sleep named nc in a directory of its own, started as ./nc
    from there."""
    exe = tmp_path / "nc"
    sleep = shutil.which("sleep")
    assert sleep
    shutil.copy(sleep, exe)
    p = subprocess.Popen(["./nc", "30"], cwd=tmp_path)
    deadline = time.monotonic() + 5
    while Path(f"/proc/{p.pid}/exe").resolve() != exe.resolve():
        assert time.monotonic() < deadline, "the copy did not start"
        time.sleep(0.01)
    try:
        yield p, exe
    finally:
        p.kill()
        p.wait()


def test_a_relative_exec_is_the_file_the_process_runs(running_copy: tuple[subprocess.Popen[bytes], Path]) -> None:
    p, exe = running_copy
    assert resolve_executable(p.pid, "./nc") == str(exe.resolve())
    assert resolve_executable(p.pid, "nc") == str(exe.resolve())
    assert resolve_executable(p.pid, "/" + str(exe)) == str(exe.resolve())
    assert resolve_executable(p.pid, "/proc/self/root" + str(exe)) == str(exe.resolve())


def test_another_base_name_is_not_taken_from_proc(running_copy: tuple[subprocess.Popen[bytes], Path]) -> None:
    """The process exec'd something else since (its exe has another base
    name): the path as spelled, canonically."""
    p, _exe = running_copy
    assert resolve_executable(p.pid, "//tmp/stage") == "/tmp/stage"
    assert resolve_executable(p.pid, "./stage") == "stage"


def test_a_gone_process_gets_the_canonical_spelling() -> None:
    p = subprocess.Popen(["true"])
    p.wait()
    assert resolve_executable(p.pid, "/./tmp//nc") == "/tmp/nc"
    assert resolve_executable(p.pid, "/tmp/nc") == "/tmp/nc"


def test_the_kernels_argv() -> None:
    """The exec event's copy of argv (bpf/exec.bpf.c): NUL-separated, its
    first EXEC_ARGV_LEN bytes."""
    from sensor.kernel.events import EXEC_ARGV_LEN
    from sensor.telemetry.pipeline import CMDLINE_TRUNCATED, kernel_args

    assert kernel_args(b"") is None
    assert kernel_args(b"\0") == [""]  # exec -a '' sh
    assert kernel_args(b"sh\0/dev/stdin\0") == ["sh", "/dev/stdin"]
    cut = (b"python3\0-c\0" + b"x" * EXEC_ARGV_LEN)[:EXEC_ARGV_LEN]
    assert kernel_args(cut) == ["python3", "-c", "x" * (EXEC_ARGV_LEN - 11), CMDLINE_TRUNCATED]
