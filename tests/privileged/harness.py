"""Real parts for privileged tests: a private dockerd, a tiny image built
with `docker import` from host binaries, a sink "internet" netns on
198.18.0.0/16, and the real `sluice run` as a subprocess.

Traffic goes only to hosts inside network namespaces made here.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from emulation.lab import SINK_IP, Lab, PrivateEngine, SinkNet, build_image, wait_until
from tests.support.ecs_schema import explain, validate

IMAGE = "sluice-test:latest"
SLUICE = str(Path(sys.executable).parent / "sluice")
__all__ = ["SINK_IP", "SinkNet"]


def prerequisite_problems() -> list[str]:
    probs = []
    if os.geteuid() != 0:
        probs.append("not root")
    try:
        import bcc  # noqa: F401
    except ImportError:
        probs.append("bcc not importable (python3-bpfcc, venv with --system-site-packages)")
    if not os.path.isdir(f"/lib/modules/{os.uname().release}/build"):
        probs.append("no kernel build tree at /lib/modules/$(uname -r)/build")
    for tool in ("dockerd", "docker", "ip", "nsenter", "busybox", "openssl"):
        if shutil.which(tool) is None:
            probs.append(f"{tool} not installed")
    return probs


# --- docker -----------------------------------------------------------------


class Docker(PrivateEngine):
    """The tests' private dockerd, with the test image."""

    def build_image(self) -> None:
        # perl: test_names' container forges a DNS answer to itself
        build_image(self.cli, self.base, tags=[IMAGE], perl=True)


# --- containers on the lab network ---------------------------------------------


def run_container(
    docker: Docker,
    net: SinkNet | None,
    script: str,
    *,
    rm: bool = False,
    volumes: tuple[str, ...] = (),
    wait: bool = True,
    timeout: float = 60,
) -> str:
    """Run `script` (busybox sh) in a new container on the sink network
    (none when net is None); it starts once the network is attached."""
    lab = Lab(docker.cli, net, "tests")  # type: ignore[arg-type]  # no net: no attach
    cid, _ip = lab.start(IMAGE, script, network=net is not None, volumes=volumes)
    if wait:
        lab.wait(cid, timeout)
        if rm:
            docker.docker("rm", cid)
    return cid


# --- the sensor ---------------------------------------------------------------


class SensorProc:
    """`sluice run --events` as a subprocess, its JSON output parsed."""

    def __init__(self, base: Path, docker_sock: str, name: str = "main", extra_config: str = "") -> None:
        self.dir = base / f"sensor-{name}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.out = self.dir / "out.jsonl"
        self.ctl = str(self.dir / "ctl.sock")
        self.config = self.dir / "sluice.toml"
        self.config.write_text(
            f'[sensor]\nwindow_seconds = 1.0\nhealth_interval_seconds = 5.0\ncontrol_socket = "{self.ctl}"\n'
            f'containment_state = "{self.dir / "containment.json"}"\n'
            f'[runtime]\ndocker_socket = "{docker_sock}"\n' + extra_config
        )
        self.proc: subprocess.Popen[bytes] | None = None
        self._docs: list[dict[str, Any]] = []
        self._pos = 0
        self.ecs = _output_format(self.config.read_text()) == "ecs"  # else not ECS-validated

    # every sensor a test started: the session stops those a failing test
    # left running (a leaked sensor would skew every later test and bench)
    started: list[SensorProc] = []

    def start(self, timeout: float = 30, args: tuple[str, ...] = ()) -> None:
        self.stderr = open(self.dir / "stderr.log", "wb")
        self.proc = subprocess.Popen(
            [SLUICE, "run", "--events", "-c", str(self.config), "-o", str(self.out), *args],
            stdout=self.stderr,
            stderr=self.stderr,
        )
        SensorProc.started.append(self)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sensor exited with {self.proc.returncode}: {self.stderr_text()}")
            if self.status(check=False).returncode == 0:
                return
            time.sleep(0.2)
        raise RuntimeError(f"sensor not ready in {timeout} s: {self.stderr_text()}")

    def stderr_text(self) -> str:
        p = self.dir / "stderr.log"
        return p.read_text(errors="replace")[-3000:] if p.exists() else ""

    def status(self, *extra: str, check: bool = True, patience: float = 15.0) -> subprocess.CompletedProcess[str]:
        """`sluice status`. With check, a sensor whose main loop did not
        answer within status's 1 s (it says "stalled": a flood test's
        flooders can starve it of CPU on two cores) is asked again for up to
        `patience` s; any other failure raises at once. Tests that assert
        responsiveness time it themselves."""
        deadline = time.monotonic() + patience
        while True:
            r = subprocess.run(
                [SLUICE, "status", "-c", str(self.config), *extra], capture_output=True, text=True, timeout=15
            )
            if not check or r.returncode == 0:
                return r
            stalled = '"status": "stalled"' in r.stdout or "status: stalled" in r.stdout
            if not stalled or time.monotonic() > deadline:
                raise RuntimeError(f"sluice status failed: {r.stdout}{r.stderr}")
            time.sleep(0.5)

    def docs(self) -> list[dict[str, Any]]:
        if self.out.exists():
            with open(self.out, "rb") as f:
                f.seek(self._pos)
                data = f.read()
            end = data.rfind(b"\n") + 1
            self._pos += end
            new = len(self._docs)
            for line in data[:end].splitlines():
                self._docs.append(json.loads(line))
            if self.ecs:  # every document a test reads is valid ECS 9.4.0
                bad = [(d, p) for d in self._docs[new:] if (p := validate(d))]
                if bad:
                    pytest.fail(
                        f"sensor {self.dir.name} wrote {len(bad)} document(s) that are not valid ECS"
                        f" (the first {min(len(bad), 5)}):\n\n" + "\n\n".join(explain(d, p) for d, p in bad[:5])
                    )
        return self._docs

    def wait_for(
        self, pred: Callable[[dict[str, Any]], bool], timeout: float = 15, what: str = "document"
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            for d in self.docs():
                if pred(d):
                    return d
            if time.monotonic() > deadline:
                raise AssertionError(f"no {what} within {timeout} s; sensor stderr: {self.stderr_text()}")
            if self.proc and self.proc.poll() is not None:
                raise AssertionError(f"sensor died ({self.proc.returncode}) waiting for {what}: {self.stderr_text()}")
            time.sleep(0.2)

    def matching(self, pred: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
        return [d for d in self.docs() if pred(d)]

    def settle(self, windows: float = 2.5, timeout: float = 30.0) -> None:
        """Wait until the windows covering past activity have closed and their
        documents are written: at least `windows` seconds, then until the
        sensor says (status) that a window ending a full window after now has
        closed and its output queue is empty. A fixed sleep alone was not
        enough on a loaded machine: a sensor behind by a window left the last
        summary unwritten when the test counted."""
        t0 = time.time()
        time.sleep(windows)

        def closed() -> bool:
            if self.proc and self.proc.poll() is not None:
                raise AssertionError(f"sensor died ({self.proc.returncode}) while settling: {self.stderr_text()}")
            return window_closed_after(self.config, t0)

        if not wait_until(closed, timeout):
            last = self.status("--json", check=False)
            raise AssertionError(
                f"the sensor closed no window after {t0:.1f} within {timeout} s: {(last.stdout + last.stderr)[-300:]}"
            )
        time.sleep(0.2)  # the line the writer thread holds

    def stop(self, sig: int = signal.SIGINT, timeout: float = 20) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def window_closed_after(config: Path, t: float) -> bool:
    """Has the sensor of `config` closed a window ending a full window after
    wall-clock time t, and written what it queued? (`sluice status`.)"""
    r = subprocess.run([SLUICE, "status", "--json", "-c", str(config)], capture_output=True, text=True, timeout=15)
    if r.returncode != 0:
        return False
    st = json.loads(r.stdout)
    return bool(st["last_window_end"] >= t + st["window_seconds"] and st["output"]["queued"] == 0)


@contextmanager
def host_sensor(base: Path, name: str) -> Iterator[SensorProc]:
    """A real `sluice run` without a container engine (its Docker socket
    does not exist): for tests of host processes' traffic."""
    s = SensorProc(base, str(base / "no-docker.sock"), name=name)
    s.start()
    try:
        yield s
    finally:
        s.stop()


def _output_format(config_text: str) -> str:
    try:
        return str(tomllib.loads(config_text).get("output", {}).get("format", "ecs"))
    except tomllib.TOMLDecodeError:
        return "ecs"


def udp_port() -> int:
    """A loopback UDP port nothing listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def sluice_cli(s: SensorProc, *args: str) -> str:
    """`sluice ARGS -c <the sensor's config>`; its stdout (it must succeed)."""
    r = subprocess.run([SLUICE, *args, "-c", str(s.config)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


def only_containment_entry(s: SensorProc) -> dict[str, Any]:
    """`sluice containment --json` when it lists exactly one entry."""
    e: dict[str, Any]
    (e,) = [json.loads(x) for x in sluice_cli(s, "containment", "--json").splitlines() if x.strip()]
    return e


def forgers_at_start(base: Path, docker_sock: str, name: str) -> int:
    """Start a sensor, read its forgers_at_start counter (containers
    distrusted for DNS at start), stop it."""
    s = SensorProc(base, docker_sock, name=name)
    s.start()
    try:
        return int(json.loads(s.status("--json").stdout)["counters"]["forgers_at_start"])
    finally:
        s.stop()


def action(d: dict[str, Any]) -> str:
    a: str = d.get("event", {}).get("action", "")
    return a


def cid_of(d: dict[str, Any]) -> str | None:
    cid: str | None = d.get("container", {}).get("id")
    return cid


def iter_actions(docs: list[dict[str, Any]], act: str, cid: str) -> Iterator[dict[str, Any]]:
    return (d for d in docs if action(d) == act and cid_of(d) == cid)
