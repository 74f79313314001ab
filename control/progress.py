"""Progress for long work: a live rich bar when stderr is a terminal, plain
lines on stderr otherwise (a log, CI, a pipe)."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import IO, Any

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from sensor.outputs.terminal import safe

from .ui import console, duration, is_tty


def _bar(stderr: IO[str], *columns: Any) -> Progress:
    # Lines the sensor writes to stdout (the compact format at a terminal)
    # are printed above the bar; stdout going elsewhere is left alone.
    return Progress(
        *columns,
        console=console(stderr=True, file=stderr),
        redirect_stdout=is_tty(sys.stdout),
        redirect_stderr=True,
        transient=False,
    )


class LearnProgress:
    """`baseline learn`: time left, windows and workloads learned, read from
    the learning sensor (in this process) by a small thread."""

    def __init__(
        self,
        sensor: Callable[[], Any],
        seconds: float,
        stderr: IO[str] | None = None,
        every: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.sensor = sensor  # the Sensor, once made (None before)
        self.seconds = seconds
        self.stderr = stderr if stderr is not None else sys.stderr
        self.tty = is_tty(self.stderr)
        # plain lines: about ten over the run, at most one every 60 s, at least 10 s apart
        self.every = every if every is not None else max(10.0, min(60.0, seconds / 10))
        self.clock = clock
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sluice-learn-progress", daemon=True)
        self._bar: Progress | None = None
        self._task: TaskID | None = None

    def state(self) -> tuple[str, float, int, int]:
        """(phase, seconds learned, windows, workloads)."""
        s = self.sensor()
        until = getattr(s, "learn_until", None) if s is not None else None
        if until is None:
            return "starting", 0.0, 0, 0
        done = min(self.seconds, max(0.0, self.seconds - (until - self.clock())))
        learner, baseline = s.learner, s.baseline
        return (
            "learning",
            done,
            learner.windows if learner is not None else 0,
            len(baseline.workloads) if baseline is not None else 0,
        )

    def line(self) -> str:
        phase, done, windows, workloads = self.state()
        if phase == "starting":
            return "sluice: learning: starting (loading the BPF programs)"
        return (
            f"sluice: learning: {duration(done)} of {duration(self.seconds)}, {duration(self.seconds - done)} left, "
            f"{windows} windows, {workloads} workloads"
        )

    def _update(self) -> None:
        assert self._bar is not None and self._task is not None
        phase, done, windows, workloads = self.state()
        self._bar.update(
            self._task,
            completed=done,
            description="starting" if phase == "starting" else "learning",
            info=f"{duration(done)} of {duration(self.seconds)}, {duration(self.seconds - done)} left, "
            f"{windows} windows, {workloads} workloads",
        )

    def _run(self) -> None:
        next_line = self.clock()
        while not self._stop.wait(0.5):
            if self._bar is not None:
                self._update()
            elif self.clock() >= next_line:
                print(safe(self.line()), file=self.stderr, flush=True)
                next_line = self.clock() + self.every

    def __enter__(self) -> LearnProgress:
        if self.tty:
            self._bar = _bar(
                self.stderr,
                SpinnerColumn(),
                TextColumn("{task.description}", markup=False),
                BarColumn(),
                TextColumn("{task.fields[info]}", markup=False),
            )
            self._task = self._bar.add_task("starting", total=self.seconds, info="")
            self._bar.start()
        self._thread.start()
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join(2)
        if self._bar is not None:
            self._update()
            self._bar.stop()
        elif self.sensor() is not None:
            print(safe(self.line()), file=self.stderr, flush=True)  # where it ended


class EmulateProgress:
    """`emulate run`: scenario n/m and its phase on a bar; the lab's lines
    printed above it. Not a terminal: the lab's plain lines only."""

    def __init__(self, total: int, stderr: IO[str] | None = None) -> None:
        self.stderr = stderr if stderr is not None else sys.stderr
        self.tty = is_tty(self.stderr)
        self.total = total
        self._bar: Progress | None = None
        self._task: TaskID | None = None

    def line(self, message: str) -> None:
        if self._bar is not None:
            self._bar.console.print(safe(message), markup=False, highlight=False)
        else:
            print(safe(message), file=self.stderr, flush=True)

    def phase(self, done: int, total: int, name: str, what: str) -> None:
        if self._bar is None or self._task is None:
            return
        where = "lab" if name == "lab" else f"[{min(done + 1, total)}/{total}] {name}"
        self._bar.update(self._task, completed=done, total=total, description=safe(f"{where}: {what}"))

    def __enter__(self) -> EmulateProgress:
        if self.tty:
            self._bar = _bar(
                self.stderr,
                SpinnerColumn(),
                TextColumn("{task.description}", markup=False),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
            )
            self._task = self._bar.add_task("lab", total=self.total)
            self._bar.start()
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        if self._bar is not None:
            self._bar.stop()
