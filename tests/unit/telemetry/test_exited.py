"""Exited processes stay known while a flow may still name them (the window
they exited in, the next, and while flows remember them as senders), then
they are forgotten: a churn of processes does not keep thousands of command
lines past that (issue 10)."""

from __future__ import annotations

from pathlib import Path

from emulation.records import exec_args_rec, exec_rec, exit_rec
from sensor.kernel.source import ReplaySource
from sensor.telemetry.counters import SENDER_MEMORY_WINDOWS
from sensor.telemetry.pipeline import (
    CMDLINE_TRUNCATED,
    EXITED_CMDLINE_BYTES,
    EXITED_FULL_WINDOWS,
    EXITED_WINDOWS,
    MAX_EXITED,
    shorten_args,
)
from tests.unit.telemetry.test_pipeline import make_world

PID = 5_000_123  # above PID_MAX_LIMIT: never a real process on this host


def _feed(w, recs: list[bytes]) -> None:
    src = ReplaySource(recs, [])
    src.start(w.pipe.handle_raw)
    src.poll(0)


def test_exited_processes_are_forgotten_after_their_windows(tmp_path: Path) -> None:
    w = make_world(tmp_path, str(tmp_path / "no-docker.sock"), events=False)
    _feed(w, [exec_rec(pid=PID + i, cgroup_id=w.cg, comm=b"job") for i in range(3)])
    _feed(w, [exit_rec(pid=PID, cgroup_id=w.cg, comm=b"job")])
    # a flow remembers a sender for SENDER_MEMORY_WINDOWS: it must stay resolvable
    assert EXITED_WINDOWS > SENDER_MEMORY_WINDOWS
    w.pipe.close_window([], 0.0, 1.0)  # the window it exited in
    _feed(w, [exit_rec(pid=PID + 1, cgroup_id=w.cg, comm=b"job")])
    for i in range(1, EXITED_WINDOWS):
        w.pipe.close_window([], float(i), i + 1.0)
    assert set(w.pipe.exited) == {PID, PID + 1}
    w.pipe.close_window([], 100.0, 101.0)
    assert set(w.pipe.exited) == {PID + 1}
    w.pipe.close_window([], 101.0, 102.0)
    assert not w.pipe.exited and set(w.pipe.procs) == {PID + 2}  # the living stay


def test_exited_processes_are_capped_within_a_window(tmp_path: Path) -> None:
    w = make_world(tmp_path, str(tmp_path / "no-docker.sock"), events=False)
    n = MAX_EXITED + 10
    _feed(w, [exec_rec(pid=PID + i, cgroup_id=w.cg, comm=b"job") for i in range(n)])
    _feed(w, [exit_rec(pid=PID + i, cgroup_id=w.cg, comm=b"job") for i in range(n)])
    assert len(w.pipe.exited) == MAX_EXITED and PID not in w.pipe.exited and PID + n - 1 in w.pipe.exited


def test_an_exited_process_kept_for_its_flows_keeps_a_short_command_line(tmp_path: Path) -> None:
    w = make_world(tmp_path, str(tmp_path / "no-docker.sock"), events=False)
    big = [b"/bin/sh", b"-c", b"sleep 6", b"A" * 3000]
    _feed(w, [exec_args_rec(PID, w.cg, big), exec_rec(pid=PID, cgroup_id=w.cg, comm=b"sh")])
    full = w.pipe.procs[PID].args
    assert full is not None and len(full[3]) > EXITED_CMDLINE_BYTES
    _feed(w, [exit_rec(pid=PID, cgroup_id=w.cg, comm=b"sh")])
    for i in range(EXITED_FULL_WINDOWS):
        w.pipe.close_window([], float(i), i + 1.0)
    assert w.pipe.exited[PID].args == full  # the windows that may hold its bytes: whole
    w.pipe.close_window([], 10.0, 11.0)
    p = w.pipe.exited[PID]
    assert p.lean and p.args is not None and p.args[:3] == ["/bin/sh", "-c", "sleep 6"]
    assert p.args[-1] == CMDLINE_TRUNCATED and sum(len(a) for a in p.args[:-1]) <= EXITED_CMDLINE_BYTES
    assert w.pipe._flow_process(PID, "sh").args == p.args  # a sender named later shows the short one


def test_shorten_args() -> None:
    assert shorten_args(["a", "bb"], 10) == ["a", "bb"]
    assert shorten_args(["abc", "defgh"], 6) == ["abc", "de", CMDLINE_TRUNCATED]
    assert shorten_args(["x", CMDLINE_TRUNCATED], 100) == ["x", CMDLINE_TRUNCATED]
