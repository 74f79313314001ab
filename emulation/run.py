"""`sluice emulate run`: stand up the lab, learn the benign workloads, run
the scenarios against a sensor, score what it caught, tear everything down.
"""

from __future__ import annotations

import json
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

from emulation.lab import VAULT_IP, DockerCLI, Lab, SinkNet, build_image, run
from emulation.scenarios import BARE_TAGS, LAB_CONFIG, STAGE2, TAGS, Ctx, Scenario, learn_phase
from sensor.errors import SluiceError

SLUICE = str(Path(sys.executable).parent / "sluice")


@dataclass
class Score:
    scenario: str
    attack: str
    expected: list[str]
    result: str  # detected | missed | silent | false-positive | blind-spot | detected-bonus | error
    passed: bool
    latency_seconds: float | None = None
    alert_ids: list[str] = field(default_factory=list)
    rules_fired: list[str] = field(default_factory=list)
    containers: list[str] = field(default_factory=list)
    message: str = ""
    duration_seconds: float = 0.0
    mode: str = "container"  # or "compromised": by docker exec inside the learned web application
    rules_by_container: dict[str, list[str]] = field(default_factory=dict)  # container id[:12] -> rules that fired


class SensorHandle:
    """A sensor to score against: started here, or one already running."""

    def __init__(self, ctl: str, proc: subprocess.Popen[bytes] | None = None) -> None:
        self.ctl = ctl
        self.proc = proc
        self.seq = 0

    def request(self, cmd: str, **kw: Any) -> dict[str, Any]:
        from control.client import request

        return request(self.ctl, cmd, **kw)

    def ready(self) -> bool:
        try:
            return bool(self.request("status").get("ready"))
        except SluiceError:
            return False

    def new_alerts(self) -> list[dict[str, Any]]:
        r = self.request("alerts", since=self.seq)
        self.seq = r["last"]
        return cast(list[dict[str, Any]], r["alerts"])

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def _start_sensor(
    args: list[str], ctl: str, log: Path, started: list[SensorHandle], timeout: float = 60
) -> SensorHandle:
    """Start a lab sensor and wait until it is ready. The handle joins
    `started` at once, so an interrupt while it starts still stops it."""
    proc = subprocess.Popen([SLUICE, *args], stdout=open(log, "ab"), stderr=subprocess.STDOUT)
    h = SensorHandle(ctl, proc)
    started.append(h)
    deadline = time.monotonic() + timeout
    while not h.ready():
        if proc.poll() is not None:
            raise SluiceError(f"the lab sensor exited ({proc.returncode}): {log.read_text()[-800:]}")
        if time.monotonic() > deadline:
            h.stop()
            raise SluiceError(f"the lab sensor was not ready in {timeout:.0f} s")
        time.sleep(0.2)
    return h


class Emulation:
    def __init__(
        self,
        docker_socket: str,
        scenarios: list[Scenario],
        *,
        learn_seconds: float = 20.0,
        attach_socket: str | None = None,
        keep: bool = False,
        events: bool = False,
        progress: Callable[[str], None] = lambda m: print(m, file=sys.stderr, flush=True),
        phase: Callable[[int, int, str, str], None] | None = None,
    ) -> None:
        self.docker = DockerCLI(docker_socket)
        self.docker_socket = docker_socket
        self.scenarios = scenarios
        self.learn_seconds = learn_seconds
        self.attach_socket = attach_socket
        self.keep = keep
        self.events = events
        self.progress = progress
        # (scenarios done, scenarios, current scenario or "lab", what it is doing): a live view
        self.phase = phase or (lambda done, total, name, what: None)
        self.run_id = uuid.uuid4().hex[:8]
        self.work = Path(tempfile.mkdtemp(prefix=f"sluice-emulate-{self.run_id}-"))
        self.window = 1.0

    def _config(self) -> Path:
        p = self.work / "lab.toml"
        p.write_text(
            LAB_CONFIG.format(
                ctl=self.work / "ctl.sock",
                containment=self.work / "containment.json",
                docker=self.docker_socket,
                vault=VAULT_IP,
                events="true" if self.events else "false",
            )
        )
        return p

    def run(self) -> list[Score]:
        if not self.docker.reachable():
            raise SluiceError(
                f"no Docker engine answers at {self.docker_socket}",
                hint="start dockerd, or set runtime.docker_socket in the config given with -c",
            )
        net = SinkNet(self.work, STAGE2)
        lab = Lab(self.docker, net, self.run_id)
        sensor: SensorHandle | None = None
        self._started: list[SensorHandle] = []  # every lab sensor, stopped by the cleanup
        old_term = signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
        try:
            self.progress(f"lab: building image, sink netns {net.ns} (198.18.0.0/16), run {self.run_id}")
            self.phase(0, len(self.scenarios), "lab", "building the image and the sink network")
            build_image(self.docker, self.work, tags=TAGS, bare_tags=BARE_TAGS)
            net.start()
            if self.attach_socket:
                sensor = SensorHandle(self.attach_socket)
                if not sensor.ready():
                    raise SluiceError(f"no ready sensor at {self.attach_socket}", hint="start `sluice run` first")
                st = sensor.request("status")
                self.window = float(st.get("window_seconds", 10.0))
                self.progress(
                    f"lab: scoring against the running sensor (pid {st.get('pid')}, window {self.window:g}s); "
                    "benign scenarios are judged by its own baseline"
                )
            else:
                sensor = self._learn_then_detect(lab)
            sensor.new_alerts()  # start from now
            scores = []
            n = len(self.scenarios)
            for i, sc in enumerate(self.scenarios, 1):
                self.progress(f"[{i:2}/{n}] {sc.name} ({sc.attack}) ...")
                score = self._score(sc, lab, sensor, self._phase_of(i - 1, n, sc.name))
                scores.append(score)
                self.phase(i, n, sc.name, score.result)
                self.progress(f"        {self._line(score)}")
            return scores
        finally:
            signal.signal(signal.SIGTERM, old_term)
            self.progress("lab: cleaning up")
            self.phase(len(self.scenarios), len(self.scenarios), "lab", "cleaning up")
            for handle in self._started:
                handle.stop()
            left = lab.cleanup(kept=True)
            if left:
                self.progress(f"lab: could not remove containers {', '.join(c[:12] for c in left)}")
            problem = net.stop()
            if problem:
                self.progress(f"lab: {problem}")
            for tag in TAGS + BARE_TAGS:
                self.docker("rmi", tag, check=False)
            if not self.keep:
                shutil.rmtree(self.work, ignore_errors=True)

    def _learn_then_detect(self, lab: Lab) -> SensorHandle:
        cfg = self._config()
        baseline = self.work / "lab-baseline.msgpack"
        ctl = str(self.work / "ctl.sock")
        self.progress(f"lab: learning benign workloads for {self.learn_seconds:.0f} s")
        self.phase(0, len(self.scenarios), "lab", f"learning benign workloads for {self.learn_seconds:.0f} s")
        learner = _start_sensor(
            [
                "baseline",
                "learn",
                "-c",
                str(cfg),
                "--duration",
                str(self.learn_seconds + 3),
                "--baseline",
                str(baseline),
                "-o",
                str(self.work / "learn.jsonl"),
            ],
            ctl,
            self.work / "learn.log",
            self._started,
        )
        learn_phase(Ctx(lab, self.work), self.learn_seconds)
        assert learner.proc is not None
        learner.proc.wait(self.learn_seconds + 60)
        if learner.proc.returncode != 0 or not baseline.exists():
            raise SluiceError(f"learning failed: {(self.work / 'learn.log').read_text()[-800:]}")
        lab.cleanup()
        self.progress("lab: detecting against the learned baseline")
        self.phase(0, len(self.scenarios), "lab", "starting the detecting sensor")
        return _start_sensor(
            ["run", "-c", str(cfg), "--baseline", str(baseline), "-o", str(self.work / "alerts.jsonl")],
            ctl,
            self.work / "sensor.log",
            self._started,
        )

    def _phase_of(self, done: int, total: int, name: str) -> Callable[[str], None]:
        return lambda what: self.phase(done, total, name, what)

    def _score(
        self, sc: Scenario, lab: Lab, sensor: SensorHandle, phase: Callable[[str], None] = lambda what: None
    ) -> Score:
        ctx = Ctx(lab, self.work)
        t0 = time.monotonic()
        phase("running")
        try:
            sc.run(ctx)
        except SluiceError as e:
            return Score(sc.name, sc.attack, list(sc.expect), "error", False, message=str(e), mode=_mode(sc))
        done_wall, done = time.time(), time.monotonic()
        mine = set(ctx.containers)
        alerts: list[dict[str, Any]] = []
        wait = 3 * self.window + (6.0 if sc.expect else 3.0)
        deadline = done + wait
        phase(f"waiting for {'its alerts' if sc.expect else 'silence'} (up to {wait:.0f} s)")
        while time.monotonic() < deadline:
            alerts += [a for a in sensor.new_alerts() if a.get("container", {}).get("id") in mine]
            if sc.expect and set(sc.expect) <= {a["rule"]["id"] for a in alerts}:
                break
            time.sleep(0.2)
        fired = sorted({a["rule"]["id"] for a in alerts})
        by_container: dict[str, set[str]] = {}
        for a in alerts:
            by_container.setdefault(a["container"]["id"][:12], set()).add(a["rule"]["id"])
        s = Score(
            sc.name,
            sc.attack,
            list(sc.expect),
            "",
            True,
            rules_fired=fired,
            alert_ids=[a["event"]["id"] for a in alerts],
            containers=[c[:12] for c in mine],
            duration_seconds=round(done - t0, 2),
            mode=_mode(sc),
            rules_by_container={c: sorted(r) for c, r in sorted(by_container.items())},
        )
        if sc.expect:
            hit = [a for a in alerts if a["rule"]["id"] in sc.expect]
            got = {a["rule"]["id"] for a in hit}
            if set(sc.expect) <= got:
                s.result = "detected"
                created = max(min(_created(a) for a in hit if a["rule"]["id"] == r) for r in sc.expect)
                s.latency_seconds = round(max(0.0, created - done_wall), 2)
                s.message = hit[0]["message"]
            else:
                s.result, s.passed = "missed", False
                s.message = f"missing {', '.join(sorted(set(sc.expect) - got))}"
        elif sc.benign:
            s.result = "silent" if not alerts else "false-positive"
            s.passed = not alerts
            s.message = alerts[0]["message"] if alerts else ""
        else:  # a documented blind spot: detecting it is a bonus, missing it is expected
            s.result = "detected-bonus" if alerts else "blind-spot"
            if alerts:
                s.latency_seconds = round(max(0.0, min(_created(a) for a in alerts) - done_wall), 2)
                s.message = alerts[0]["message"]
            else:
                s.message = "not detected, as the strategy's blind spot says"
        return s

    @staticmethod
    def _line(s: Score) -> str:
        lat = f" in {s.latency_seconds:.1f}s" if s.latency_seconds is not None else ""
        rules = f" [{', '.join(s.rules_fired)}]" if s.rules_fired else ""
        return f"{s.result}{lat}{rules}" + (f": {s.message}" if s.message and not s.passed else "")


def _mode(sc: Scenario) -> str:
    return "compromised" if sc.compromised else "container"


def _created(alert: dict[str, Any]) -> float:
    from datetime import datetime

    return (
        datetime.strptime(alert["event"]["created"], "%Y-%m-%dT%H:%M:%S.%fZ")
        .replace(tzinfo=__import__("datetime").timezone.utc)
        .timestamp()
    )


def scorecard(scores: list[Score]) -> str:
    head = f"{'SCENARIO':<26} {'ATT&CK':<10} {'EXPECTED':<23} {'RESULT':<15} {'LATENCY':>7}  ALERT"
    lines = [head]
    for s in scores:
        lat = f"{s.latency_seconds:.1f}s" if s.latency_seconds is not None else "-"
        exp = ",".join(s.expected) or ("(blind spot)" if s.result in ("blind-spot", "detected-bonus") else "(silent)")
        alert = (
            (s.alert_ids[0][:8] + (f" +{len(s.alert_ids) - 1}" if len(s.alert_ids) > 1 else "")) if s.alert_ids else "-"
        )
        mark = "" if s.passed else "  <-- FAIL"
        lines.append(f"{s.scenario:<26} {s.attack:<10} {exp:<23} {s.result:<15} {lat:>7}  {alert}{mark}")
    attacks = [s for s in scores if s.expected]
    benign = [s for s in scores if s.attack == "benign"]
    lats = sorted(s.latency_seconds for s in attacks if s.latency_seconds is not None)
    lines.append(
        f"detected {sum(s.result == 'detected' for s in attacks)}/{len(attacks)} attacks, "
        f"{sum(s.result == 'false-positive' for s in benign)} false positives in {len(benign)} benign scenarios"
        + (f", latency median {statistics.median(lats):.1f}s max {lats[-1]:.1f}s" if lats else "")
    )
    return "\n".join(lines)


def as_json_lines(scores: list[Score]) -> str:
    return "\n".join(json.dumps(asdict(s), sort_keys=True) for s in scores)


__all__ = ["Emulation", "Score", "scorecard", "as_json_lines", "run"]
