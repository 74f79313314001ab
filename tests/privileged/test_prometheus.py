"""A real Prometheus (Debian's, on loopback, in a temporary directory)
scrapes a real `sluice run --metrics` and loads packaging/prometheus's
alert rules: every rule and every dashboard expression evaluates without
error and returns series, and a real containment makes
SluiceContainmentActive fire."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from emulation.lab import wait_until

from .harness import SLUICE, Docker, SensorProc, run_container

ROOT = Path(__file__).resolve().parents[2]
PROM = ROOT / "packaging" / "prometheus"
# a rule's trailing comparison with a scalar, made a `bool` comparison: the
# expression then returns its series whatever their values
CMP = re.compile(r"\s*(==|!=|>=|<=|>|<)\s*([0-9.]+)\s*$")


def _free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return int(port)


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


class Prometheus:
    def __init__(self, work: Path, target: str) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        work.mkdir(parents=True, exist_ok=True)
        cfg = work / "prometheus.yml"
        cfg.write_text(
            yaml.safe_dump(
                {
                    # /metrics waits up to 1 s for the sensor's main loop: a 2 s
                    # timeout (the interval's, said) keeps a loaded machine's
                    # slow scrape from reading as `up 0`
                    "global": {"scrape_interval": "2s", "scrape_timeout": "2s", "evaluation_interval": "1s"},
                    "rule_files": [str(PROM / "sluice-alerts.yml")],
                    "scrape_configs": [{"job_name": "sluice", "static_configs": [{"targets": [target]}]}],
                }
            )
        )
        self.log = open(work / "prometheus.log", "wb")
        self.proc = subprocess.Popen(
            [
                "prometheus",
                f"--config.file={cfg}",
                f"--storage.tsdb.path={work / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ],
            stdout=self.log,
            stderr=self.log,
        )
        self.work = work

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"prometheus exited: {(self.work / 'prometheus.log').read_text()[-2000:]}")
            try:
                urllib.request.urlopen(self.url + "/-/ready", timeout=2).read()
                return
            except OSError:
                time.sleep(0.2)
        raise AssertionError("prometheus not ready")

    def query(self, expr: str) -> list[dict[str, Any]]:
        r = _get(self.url + "/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
        assert r["status"] == "success", (expr, r)
        return list(r["data"]["result"])

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def test_prometheus_evaluates_every_rule_and_panel_against_a_real_sensor(base: Path, docker: Docker) -> None:
    if shutil.which("prometheus") is None:
        pytest.fail("prometheus not installed (Debian package prometheus; `make setup` installs it)")
    mport = _free_port()
    s = SensorProc(base, docker.sock, name="prometheus")
    # `sluice run --metrics`, as the DaemonSet runs it
    s.stderr = open(s.dir / "stderr.log", "wb")
    s.proc = subprocess.Popen(
        [SLUICE, "run", "--metrics", f"127.0.0.1:{mport}", "-c", str(s.config), "-o", str(s.out)],
        stdout=s.stderr,
        stderr=s.stderr,
    )
    SensorProc.started.append(s)
    prom = None
    cid = None
    try:
        deadline = time.monotonic() + 30
        while s.status(check=False).returncode != 0:
            assert s.proc.poll() is None, s.stderr_text()
            assert time.monotonic() < deadline, "sensor not ready"
            time.sleep(0.2)
        prom = Prometheus(base / "prometheus", f"127.0.0.1:{mport}")
        prom.wait_ready()
        # enough scrapes for rate() over the dashboard's 1m and the rules' 5m
        deadline = time.monotonic() + 30
        while not [x for x in prom.query('count_over_time(up{job="sluice"}[1m])') if float(x["value"][1]) >= 5]:
            assert time.monotonic() < deadline, "prometheus did not scrape the sensor"
            time.sleep(0.5)
        assert wait_until(
            lambda: (
                prom.query('up{job="sluice"}')[0]["value"][1] == "1"
                and prom.query("sluice_ready")[0]["value"][1] == "1"
            ),
            max(deadline - time.monotonic(), 0),
            0.5,
        ), (prom.query('up{job="sluice"}'), prom.query("sluice_ready"))

        # every rule: evaluates, and its signal (the comparison made `bool`) has series
        rules = yaml.safe_load((PROM / "sluice-alerts.yml").read_text())
        for r in (r for g in rules["groups"] for r in g["rules"]):
            prom.query(r["expr"])  # no error
            signal = CMP.sub(lambda m: f" {m.group(1)} bool {m.group(2)}", r["expr"])
            assert signal != r["expr"], f"{r['alert']}: no trailing comparison to test"
            assert prom.query(signal), f"{r['alert']}: {signal} returns no series"
        # Prometheus itself evaluated the loaded rules without error
        groups = _get(prom.url + "/api/v1/rules")["data"]["groups"]
        loaded = [r for g in groups for r in g["rules"]]
        assert len(loaded) == sum(len(g["rules"]) for g in rules["groups"])
        deadline = time.monotonic() + 10
        while any(r.get("health") != "ok" for r in loaded) and time.monotonic() < deadline:
            time.sleep(0.5)
            loaded = [r for g in _get(prom.url + "/api/v1/rules")["data"]["groups"] for r in g["rules"]]
        assert all(r["health"] == "ok" and not r.get("lastError") for r in loaded), loaded

        # every dashboard expression, with Grafana's variables filled in
        dash = json.loads((PROM / "grafana-dashboard.json").read_text())
        for p in dash["panels"]:
            for t in p["targets"]:
                expr = t["expr"].replace("$__rate_interval", "1m").replace("$instance", ".*")
                assert prom.query(expr), f"panel {p['title']!r}: {expr} returns no series"

        # a real containment: the alert fires
        assert not [a for a in _get(prom.url + "/api/v1/alerts")["data"]["alerts"] if a["state"] == "firing"]
        cid = run_container(docker, None, "sleep 120", wait=False)
        deadline = time.monotonic() + 20
        while True:
            r = subprocess.run(
                [SLUICE, "isolate", cid[:12], "-c", str(s.config)], capture_output=True, text=True, timeout=15
            )
            if r.returncode == 0:
                break
            assert time.monotonic() < deadline, r.stdout + r.stderr
            time.sleep(0.5)
        deadline = time.monotonic() + 20
        firing: list[dict[str, Any]] = []
        while not firing:
            assert time.monotonic() < deadline, "SluiceContainmentActive did not fire"
            time.sleep(0.5)
            firing = [
                a
                for a in _get(prom.url + "/api/v1/alerts")["data"]["alerts"]
                if a["labels"]["alertname"] == "SluiceContainmentActive" and a["state"] == "firing"
            ]
        assert firing[0]["labels"]["instance"] == f"127.0.0.1:{mport}"
        assert firing[0]["annotations"]["summary"].endswith(": 1 entries")
        # nothing else fires on a healthy sensor
        others = [
            a["labels"]["alertname"]
            for a in _get(prom.url + "/api/v1/alerts")["data"]["alerts"]
            if a["labels"]["alertname"] != "SluiceContainmentActive" and a["state"] == "firing"
        ]
        assert others == [], others
    finally:
        if cid is not None:
            subprocess.run([SLUICE, "release", cid[:12], "-c", str(s.config)], capture_output=True, timeout=15)
            docker.docker("rm", "-f", cid)
        if prom is not None:
            prom.stop()
        s.stop()
