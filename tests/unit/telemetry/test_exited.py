"""Exited processes stay known while the windows that may hold their last
bytes close (the one they exited in and the next), then they are forgotten:
a churn of processes does not keep thousands of command lines (issue 10)."""

from __future__ import annotations

from pathlib import Path

from emulation.records import exec_rec, exit_rec
from sensor.kernel.source import ReplaySource
from sensor.telemetry.pipeline import EXITED_WINDOWS, MAX_EXITED
from tests.unit.telemetry.test_pipeline import make_world

PID = 5_000_123  # above PID_MAX_LIMIT: never a real process on this host


def _feed(w, recs: list[bytes]) -> None:  # type: ignore[no-untyped-def]
    src = ReplaySource(recs, [])
    src.start(w.pipe.handle_raw)
    src.poll(0)


def test_exited_processes_are_forgotten_after_their_windows(tmp_path: Path) -> None:
    w = make_world(tmp_path, str(tmp_path / "no-docker.sock"), events=False)
    _feed(w, [exec_rec(pid=PID + i, cgroup_id=w.cg, comm=b"job") for i in range(3)])
    _feed(w, [exit_rec(pid=PID, cgroup_id=w.cg, comm=b"job")])
    assert EXITED_WINDOWS == 2
    w.pipe.close_window([], 0.0, 1.0)  # the window it exited in
    _feed(w, [exit_rec(pid=PID + 1, cgroup_id=w.cg, comm=b"job")])
    w.pipe.close_window([], 1.0, 2.0)  # the next one: bytes around the flip
    assert set(w.pipe.exited) == {PID, PID + 1}
    w.pipe.close_window([], 2.0, 3.0)
    assert set(w.pipe.exited) == {PID + 1}
    w.pipe.close_window([], 3.0, 4.0)
    assert not w.pipe.exited and set(w.pipe.procs) == {PID + 2}  # the living stay


def test_exited_processes_are_capped_within_a_window(tmp_path: Path) -> None:
    w = make_world(tmp_path, str(tmp_path / "no-docker.sock"), events=False)
    n = MAX_EXITED + 10
    _feed(w, [exec_rec(pid=PID + i, cgroup_id=w.cg, comm=b"job") for i in range(n)])
    _feed(w, [exit_rec(pid=PID + i, cgroup_id=w.cg, comm=b"job") for i in range(n)])
    assert len(w.pipe.exited) == MAX_EXITED and PID not in w.pipe.exited and PID + n - 1 in w.pipe.exited
