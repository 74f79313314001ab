"""Shared by the benchmarks: a real `sluice run` subprocess and its status."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from control.client import request
from sensor.errors import SluiceError

SLUICE = str(Path(sys.executable).parent / "sluice")
HERE = Path(__file__).resolve().parent


class Sensor:
    def __init__(
        self, work: Path, extra: str = "", args: tuple[str, ...] = (), command: tuple[str, ...] = (SLUICE,)
    ) -> None:
        self.work = work
        self.command = command
        self.proc: subprocess.Popen[bytes] | None = None
        self.cfg = work / f"bench-{abs(hash(extra)) % 10**8}.toml"
        self.cfg.write_text(
            f'[sensor]\ncontrol_socket = "{work}/ctl.sock"\ncontainment_state = "{work}/containment.json"\n' + extra
        )
        self.args = args
        self.out = work / "out.jsonl"

    def __enter__(self) -> Sensor:
        t0 = time.monotonic()
        self.proc = subprocess.Popen(
            [*self.command, "run", "-c", str(self.cfg), "-o", str(self.out), *self.args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        # Polled in this process: a `sluice status` per poll would add its
        # own interpreter start (~0.5 s) to the figure.
        while not self._answers():
            if self.proc.poll() is not None:
                raise RuntimeError("sensor exited")
            time.sleep(0.02)
        self.ready_s = time.monotonic() - t0
        return self

    def _answers(self) -> bool:
        try:
            request(str(self.work / "ctl.sock"), "status", timeout=1.0)
        except SluiceError:
            return False
        return True

    def status(self) -> dict[str, Any]:
        r = subprocess.run([SLUICE, "status", "--json", "-c", str(self.cfg)], capture_output=True, text=True)
        st: dict[str, Any] = json.loads(r.stdout)
        return st

    def __exit__(self, *exc: object) -> None:
        assert self.proc
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(30)


def build_c(src: Path, out: Path) -> str:
    subprocess.run(["gcc", "-O2", "-o", str(out), str(src)], check=True)
    return str(out)
