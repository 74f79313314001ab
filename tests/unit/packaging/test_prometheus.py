"""packaging/prometheus: promtool checks and tests the alert rules; the
dashboard and rules use only metrics the sensor exports; the PodMonitor
selects the DaemonSet's pods. (A real Prometheus scraping a real sensor:
tests/privileged/test_prometheus.py.)"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import generate_latest
from prometheus_client.core import CollectorRegistry

from sensor.outputs.metrics import SensorCollector

ROOT = Path(__file__).resolve().parents[3]
PROM = ROOT / "packaging" / "prometheus"
RULES = PROM / "sluice-alerts.yml"
DASHBOARD = PROM / "grafana-dashboard.json"

needs_promtool = pytest.mark.skipif(
    shutil.which("promtool") is None and os.environ.get("CI") != "true",
    reason="promtool not installed (Debian package prometheus; `make setup` installs it)",
)


def rule_exprs() -> dict[str, str]:
    doc = yaml.safe_load(RULES.read_text())
    return {r["alert"]: r["expr"] for g in doc["groups"] for r in g["rules"]}


def dashboard_exprs() -> list[tuple[str, str]]:
    d = json.loads(DASHBOARD.read_text())
    return [(p["title"], t["expr"]) for p in d["panels"] for t in p.get("targets", [])]


def exported_metric_names() -> set[str]:
    """What a sensor's /metrics shows, from a full snapshot."""
    snap: dict[str, Any] = {
        "ready": True,
        "uptime_seconds": 1,
        "counters": {"exec": 1, "submitted_exec": 1},
        "drops": {"dropped_exec": 0, "user_lost_records": 0},
        "detection": {"by_rule": {}},
        "output": {},
        "containment": {"entries": []},
        "runtime": {},
        "flow_table": {"entries": 1, "capacity": 65536},
    }
    reg = CollectorRegistry(auto_describe=False)
    reg.register(SensorCollector(lambda: snap, {"SL-EXF-001": 70}))
    text = generate_latest(reg).decode()
    return {ln.split("{")[0].split()[0] for ln in text.splitlines() if ln and not ln.startswith("#")}


METRIC = re.compile(r"\b(sluice_[a-z_]+|up)\b")


@needs_promtool
def test_promtool_check_rules() -> None:
    r = subprocess.run(["promtool", "check", "rules", str(RULES)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"SUCCESS: {len(rule_exprs())} rules found" in r.stdout


@needs_promtool
def test_promtool_test_rules_with_fixture_series() -> None:
    r = subprocess.run(
        ["promtool", "test", "rules", "sluice-alerts.test.yml"], capture_output=True, text=True, cwd=PROM
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS" in r.stdout


@needs_promtool
def test_promtool_test_rules_fails_when_an_alert_is_wrong(tmp_path: Path) -> None:
    """The fixture tests can fail: a rule that never fires breaks them."""
    (tmp_path / "sluice-alerts.yml").write_text(RULES.read_text().replace("> 0.8", "> 0.99"))
    shutil.copy(PROM / "sluice-alerts.test.yml", tmp_path)
    r = subprocess.run(
        ["promtool", "test", "rules", "sluice-alerts.test.yml"], capture_output=True, text=True, cwd=tmp_path
    )
    assert r.returncode != 0 and "SluiceFlowTableNearFull" in r.stdout + r.stderr


def test_every_alert_the_issue_names_is_there_with_a_fixture_test() -> None:
    alerts = set(rule_exprs())
    assert alerts == {
        "SluiceSensorDown",
        "SluiceSensorNotReady",
        "SluiceKernelEventsDropped",
        "SluiceUserSpaceRecordsLost",
        "SluiceOutputErrors",
        "SluiceFlowTableNearFull",
        "SluiceFlowTableFull",
        "SluiceContainmentActive",
    }
    tests = yaml.safe_load((PROM / "sluice-alerts.test.yml").read_text())["tests"]
    firing = {t["alertname"] for g in tests for t in g.get("alert_rule_test", []) if t.get("exp_alerts")}
    assert firing == alerts, f"no firing fixture for {alerts - firing}"


def test_rules_and_dashboard_use_only_exported_metrics() -> None:
    names = exported_metric_names() | {"up"}
    used = {m for e in rule_exprs().values() for m in METRIC.findall(e)}
    used |= {m for _t, e in dashboard_exprs() for m in METRIC.findall(e)}
    assert used <= names, f"not exported by the sensor: {sorted(used - names)}"
    # and the dashboard shows every metric the sensor exports
    dash = {m for _t, e in dashboard_exprs() for m in METRIC.findall(e)}
    assert names - {"up"} <= dash, f"exported but not on the dashboard: {sorted(names - dash)}"


def test_dashboard_is_importable_grafana_json() -> None:
    d = json.loads(DASHBOARD.read_text())
    assert d["uid"] == "sluice-sensors" and d["schemaVersion"] >= 30
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids))
    for p in d["panels"]:
        assert p["targets"], p["title"]
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24, p["title"]
        for t in p["targets"]:
            assert t["datasource"]["uid"] == "${datasource}"
    names = {v["name"] for v in d["templating"]["list"]}
    assert names == {"datasource", "instance"}


def test_podmonitor_selects_the_daemonset_pods() -> None:
    pm = yaml.safe_load((PROM / "podmonitor.yaml").read_text())
    assert pm["apiVersion"] == "monitoring.coreos.com/v1" and pm["kind"] == "PodMonitor"
    ds = next(
        d
        for d in yaml.safe_load_all((ROOT / "packaging" / "kubernetes" / "03-daemonset.yaml").read_text())
        if d and d.get("kind") == "DaemonSet"
    )
    pod_labels = ds["spec"]["template"]["metadata"]["labels"]
    assert pm["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert pm["spec"]["namespaceSelector"]["matchNames"] == [ds["metadata"]["namespace"]]
    ports = {p["name"] for c in ds["spec"]["template"]["spec"]["containers"] for p in c.get("ports", [])}
    assert {e["port"] for e in pm["spec"]["podMetricsEndpoints"]} <= ports
    assert re.search(r"job=~\"\.\*sluice\.\*\"", rule_exprs()["SluiceSensorDown"])


def test_alerts_by_rule_start_at_zero_and_flow_table_is_exported() -> None:
    snap: dict[str, Any] = {"detection": {"by_rule": {"SL-C2-001": 3}}, "flow_table": {"entries": 7, "capacity": 1024}}
    reg = CollectorRegistry(auto_describe=False)
    reg.register(SensorCollector(lambda: snap, {"SL-EXF-001": 70, "SL-C2-001": 80}))
    text = generate_latest(reg).decode()
    assert 'sluice_alerts_total{rule="SL-EXF-001",severity="70"} 0.0' in text
    assert 'sluice_alerts_total{rule="SL-C2-001",severity="80"} 3.0' in text
    assert "sluice_flow_table_entries 7.0" in text and "sluice_flow_table_capacity 1024.0" in text
