"""Progress of `baseline learn` and `emulate run`: a live bar on a real
terminal (a pty), plain lines elsewhere."""

from __future__ import annotations

import io
import os
import pty
import re
import select
import time
from types import SimpleNamespace
from typing import Any

import pytest

from control.progress import EmulateProgress, LearnProgress

SGR_OR_CURSOR = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def learning_sensor(clock: Clock, seconds: float, windows: int, workloads: int) -> Any:
    return SimpleNamespace(
        learn_until=clock.t + seconds,
        learner=SimpleNamespace(windows=windows),
        baseline=SimpleNamespace(workloads={f"w{i}": None for i in range(workloads)}),
    )


def test_learn_line_says_time_left_windows_and_workloads() -> None:
    clock = Clock()
    box: list[Any] = []
    p = LearnProgress(lambda: box[0] if box else None, 3600, stderr=io.StringIO(), clock=clock)
    assert p.line() == "sluice: learning: starting (loading the BPF programs)"
    box.append(learning_sensor(clock, 3600, 0, 0))
    clock.t += 1200
    box[0].learner.windows, box[0].baseline.workloads = 120, {"a": 1, "b": 2, "c": 3}
    assert p.line() == "sluice: learning: 20m00s of 1h00m00s, 40m00s left, 120 windows, 3 workloads"
    clock.t += 5000  # past the end: never negative
    assert "0s left" in p.line()


def test_learn_plain_lines_when_not_a_terminal() -> None:
    err = io.StringIO()
    box: list[Any] = []
    with LearnProgress(lambda: box[0] if box else None, 2, stderr=err, every=0.1):
        box.append(SimpleNamespace(learn_until=time.monotonic() + 2, learner=None, baseline=None))
        time.sleep(1.2)
        box[0].learner = SimpleNamespace(windows=3)
        box[0].baseline = SimpleNamespace(workloads={"x": 1})
        time.sleep(0.8)
    lines = err.getvalue().splitlines()
    assert len(lines) >= 3 and all(ln.startswith("sluice: learning: ") for ln in lines), lines
    assert "\x1b" not in err.getvalue()
    assert lines[-1].endswith("3 windows, 1 workloads")


def _read_all(fd: int, wait: float = 0.3) -> str:
    out = b""
    while select.select([fd], [], [], wait)[0]:
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    return out.decode(errors="replace")


def test_learn_bar_on_a_real_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "160")
    master, slave = pty.openpty()
    tty = os.fdopen(slave, "w")
    try:
        clock_sensor = SimpleNamespace(
            learn_until=time.monotonic() + 60,
            learner=SimpleNamespace(windows=7),
            baseline=SimpleNamespace(workloads={"shop/web": 1, "shop/db": 1}),
        )
        with LearnProgress(lambda: clock_sensor, 60, stderr=tty):
            time.sleep(1.2)
        screen = SGR_OR_CURSOR.sub("", _read_all(master))
    finally:
        tty.close()
        os.close(master)
    assert "learning" in screen and "7 windows" in screen and "2 workloads" in screen, screen
    assert re.search(r"\ds of 1m00s, 5\ds left, 7 windows, 2 workloads", screen), screen
    assert "\u2501" in screen  # the bar


def test_emulate_progress_bar_and_lines_on_a_real_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "160")
    master, slave = pty.openpty()
    tty = os.fdopen(slave, "w")
    try:
        with EmulateProgress(12, stderr=tty) as p:
            p.line("lab: building image \x1b]0;x\x07")
            p.phase(0, 12, "lab", "learning benign workloads for 20 s")
            p.phase(2, 12, "c2-multistage-chain", "waiting for its alerts (up to 9 s)")
            time.sleep(0.3)
        screen = SGR_OR_CURSOR.sub("", _read_all(master))
    finally:
        tty.close()
        os.close(master)
    assert "[3/12] c2-multistage-chain: waiting for its alerts (up to 9 s)" in screen, screen
    assert "2/12" in screen
    assert "lab: building image \\x1b]0;x\\x07" in screen
    assert "\x1b]" not in screen


def test_emulate_progress_plain_lines() -> None:
    err = io.StringIO()
    with EmulateProgress(3, stderr=err) as p:
        p.line("[ 1/3] exfil-openssl (T1048.001) ...")
        p.phase(0, 3, "exfil-openssl", "running")  # no bar: nothing printed
        p.line("        detected in 2.1s")
    assert err.getvalue().splitlines() == ["[ 1/3] exfil-openssl (T1048.001) ...", "        detected in 2.1s"]
