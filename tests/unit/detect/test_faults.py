"""Every fault gets a clear message and loses nothing (issue 10, finding
8): a rule that raises is counted and skipped, baselines are checked before
they are believed (ranges, size, signature), config thresholds that cannot
work are refused with file:line, the lab keeps its own containment file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgpack
import pytest
from typer.testing import CliRunner

from control.cli import app
from emulation.scenarios import LAB_CONFIG
from sensor.config import load_config
from sensor.detect import baseline as B
from sensor.detect.catalog import BY_ID
from sensor.detect.engine import Detector
from sensor.detect.rule import Rule
from sensor.detect.rules import all_rules
from sensor.errors import ConfigError
from tests.support.views import MIB, T0, container, flow, window

EXFIL = container("exfil", image="evil/exfil:latest")


class Boom:
    info = BY_ID["SL-C2-003"]

    def __init__(self) -> None:
        self.calls = 0

    def evaluate(self, view: Any, ctx: Any) -> list[Any]:
        self.calls += 1
        raise ValueError("a value this rule cannot handle")

    def forget_containers(self, ids: set[str]) -> None:
        """The Rule protocol's; no per-container state to drop."""


def test_a_rule_that_raises_is_counted_and_the_others_still_alert(tmp_path: Path) -> None:
    cfg = tmp_path / "s.toml"
    cfg.write_text('[detection]\ntimezone = "UTC"\n')
    boom = Boom()
    rules: list[Rule] = [boom, *(r for r in all_rules() if r.info.id != "SL-C2-003")]
    alerts: list[dict[str, Any]] = []
    det = Detector(load_config(cfg), None, rules, alerts.append, "h", clock=lambda: T0)
    for i in range(2):  # the loop goes on, window after window
        det.on_window(window(T0 + 10 * i, flows=[flow(EXFIL, f"203.0.113.{7 + i}", 443, 2 * MIB, proto="tls")]))
    assert boom.calls == 2
    assert det.counts["rule_errors"] == 2 and det.rule_errors == {"SL-C2-003": 2}
    assert "ValueError" in det.last_rule_error
    assert {a["rule"]["id"] for a in alerts} >= {"SL-EXF-004"}


def _baseline_file(tmp_path: Path, mutate: Any = None) -> Path:
    b = B.Baseline()
    wb = b.workload("acme/app")
    wb.windows = 3
    wb.add_destination(B.dest_key("198.51.100.1", 443, "tcp"), 1000, 10, 7.9, "tls")
    w = b.to_wire()
    if mutate:
        mutate(w["workloads"]["acme/app"])
    p = tmp_path / "b.msgpack"
    p.write_bytes(msgpack.packb(w, use_bin_type=True))
    return p


@pytest.mark.parametrize(
    "mutate",
    [
        lambda w: w["destinations"].update({"not-a-destination": [1, 1, 1, 1.0, []]}),
        lambda w: w["destinations"].update({"198.51.100.2|99999|tcp": [1, 1, 1, 1.0, []]}),
        lambda w: w["destinations"]["198.51.100.1|443|tcp"].__setitem__(3, float("nan")),
        lambda w: w["destinations"]["198.51.100.1|443|tcp"].__setitem__(1, -5),
        lambda w: w.__setitem__("windows", -1),
        lambda w: w["egress_bytes"].update({10_000: 1}),
        lambda w: w.__setitem__("hours", [-1] * 24),
        lambda w: w.__setitem__("executables", {f"/x{i}": 1 for i in range(B.MAX_EXECUTABLES + 1)}),
    ],
)
def test_out_of_range_baseline_values_are_refused_at_load(tmp_path: Path, mutate: Any) -> None:
    p = _baseline_file(tmp_path, mutate)
    with pytest.raises(B.BaselineError, match="corrupt"):
        B.load(p)


def test_a_sane_baseline_still_loads(tmp_path: Path) -> None:
    assert B.load(_baseline_file(tmp_path)).get("acme/app") is not None


def test_baseline_files_have_a_size_cap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = _baseline_file(tmp_path)
    monkeypatch.setattr(B, "MAX_FILE_BYTES", p.stat().st_size - 1)
    with pytest.raises(B.BaselineError, match="larger than"):
        B.load(p)


def _key(tmp_path: Path, name: str = "k") -> Path:
    k = tmp_path / name
    k.write_bytes(b"0123456789abcdef0123456789abcdef")
    return k


def test_signed_baselines_verify_and_tampering_is_refused(tmp_path: Path) -> None:
    key = B.read_key(_key(tmp_path))
    b = B.load(_baseline_file(tmp_path))
    p = tmp_path / "signed.msgpack"
    B.save(b, p, key)
    assert B.load(p, key).get("acme/app") is not None
    env = msgpack.unpackb(p.read_bytes(), raw=False)
    body = msgpack.unpackb(env["body"], raw=False)
    body["workloads"]["evil/x"] = body["workloads"]["acme/app"]  # smuggle a workload in
    env["body"] = msgpack.packb(body, use_bin_type=True)
    p.write_bytes(msgpack.packb(env, use_bin_type=True))
    with pytest.raises(B.BaselineError, match="signature does not match"):
        B.load(p, key)
    with pytest.raises(B.BaselineError, match="not signed"):
        B.load(_baseline_file(tmp_path), key)


def test_fleet_merge_checks_signatures(tmp_path: Path) -> None:
    key_file = _key(tmp_path)
    key = B.read_key(key_file)
    good = tmp_path / "node-1.msgpack"
    B.save(B.load(_baseline_file(tmp_path)), good, key)
    other = tmp_path / "node-2.msgpack"
    B.save(B.load(_baseline_file(tmp_path)), other, b"another key, not the fleet's!")
    out = tmp_path / "fleet.msgpack"
    r = CliRunner().invoke(app, ["baseline", "merge", str(out), str(good), str(other), "--key", str(key_file)])
    assert r.exit_code != 0 and "signature does not match" in r.output
    assert not out.exists()
    r = CliRunner().invoke(app, ["baseline", "merge", str(out), str(good), "--key", str(key_file)])
    assert r.exit_code == 0, r.output
    assert B.load(out, key).get("acme/app") is not None


@pytest.mark.parametrize(
    ("setting", "why"),
    [
        ("[rules.SL-C2-002]\nmin_connections = 0\n", "at least 3"),
        ("[rules.SL-EXF-001]\nquantile = 1.5\n", "between 0.5 and 1"),
        ("[rules.SL-EXF-003]\ndns_unique_subdomains = 0\n", "at least 2"),
    ],
)
def test_thresholds_that_cannot_work_are_refused_with_file_and_line(tmp_path: Path, setting: str, why: str) -> None:
    p = tmp_path / "sluice.toml"
    p.write_text("# a comment\n\n" + setting)
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert why in str(e.value) and e.value.line == 4, str(e.value)


def test_the_lab_sensor_keeps_its_own_containment_file(tmp_path: Path) -> None:
    text = LAB_CONFIG.format(
        ctl=tmp_path / "ctl.sock",
        containment=tmp_path / "containment.json",
        docker="/x.sock",
        vault="198.18.0.9",
        events="false",
    )
    p = tmp_path / "lab.toml"
    p.write_text(text)
    cfg = load_config(p)
    assert cfg.sensor.containment_state == str(tmp_path / "containment.json")
    assert cfg.sensor.containment_state != load_config(None).sensor.containment_state
