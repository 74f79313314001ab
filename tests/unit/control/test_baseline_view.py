"""`sluice baseline show`: the workload table and the per-workload view,
from a baseline learned from windows, with a hostile workload name."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from control.baseline_view import _groups, detail
from control.cli import app
from sensor.config import default_config
from sensor.detect.baseline import LogHist, save
from tests.support.views import KIB, MIB, T0, WINDOW, container, exec_, flow, learn, window

runner = CliRunner()
EVIL = "shop/\x1b]0;PWNED\x07web\u202e"
CONTROL = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u202a-\u202e]")


@pytest.fixture
def baseline_file(tmp_path: Path) -> Path:
    web = container("web-1", image="acme/web:1", labels={"io.sluice.workload": EVIL})
    db = container("db-1", image="acme/db:5")
    views = []
    for i in range(20):
        end = T0 + i * WINDOW
        views.append(
            window(
                end,
                flows=[
                    flow(web, "198.18.0.10", 443, (64 + 16 * (i % 4)) * KIB, proto="tls"),
                    flow(web, "198.18.0.11", 80, 2 * KIB, entropy=4.0),
                    flow(db, "198.18.0.20", 5432, 512, entropy=None),
                ],
                execs=[exec_(web, end - 1, "/usr/bin/curl", ["curl", "-s"])] if i % 5 == 0 else [],
            )
        )
    b = learn(views)
    p = tmp_path / "b.msgpack"
    save(b, p)
    return p


def test_table_lists_workloads_with_the_exf001_threshold(baseline_file: Path) -> None:
    r = runner.invoke(app, ["baseline", "show", "--baseline", str(baseline_file)])
    assert r.exit_code == 0, r.output
    out = r.output
    assert not CONTROL.search(out.replace("\n", "")) and "\x1b" not in out
    assert "\\x1b]0;PWNED\\x07web\\u202e" in out  # the label, escaped
    head = next(ln for ln in out.splitlines() if "WORKLOAD" in ln)
    assert head.split()[:6] == ["WORKLOAD", "WINDOWS", "EGRESS", "p50", "p99", "ENCRYPTED"]
    row = next(ln for ln in out.splitlines() if "PWNED" in ln)
    assert " 20 " in row
    # 4 x p99 of ~112 KiB per window is under the 1 MiB floor
    assert "1.0 MiB" in row
    assert "acme/db" in out
    r = runner.invoke(app, ["baseline", "show", "--baseline", str(baseline_file), "-w", "acme/*"])
    assert "acme/db" in r.output and "PWNED" not in r.output


def test_detail_view(baseline_file: Path) -> None:
    r = runner.invoke(app, ["baseline", "show", EVIL, "--baseline", str(baseline_file)])
    assert r.exit_code == 0, r.output
    out = r.output
    assert not CONTROL.search(out.replace("\n", "")) and "\x1b" not in out
    assert out.startswith("workload shop/\\x1b]0;PWNED\\x07web\\u202e  20 windows of")
    assert "encrypted bytes per window  (20 windows)" in out
    assert "\u2500\u2500 SL-EXF-001 alerts above: 1.0 MiB" in out
    assert "\u2500\u2500 p99:" in out
    # the histogram's counts add up to the windows
    enc = out.split("encrypted bytes per window")[1].split("egress bytes per window")[0]
    counts = [int(ln.split()[-1]) for ln in enc.splitlines() if ln.strip().startswith("<=")]
    assert sum(counts) == 20
    for rid in ("SL-EXF-001", "SL-EXF-004", "SL-EXF-002", "SL-EXF-005", "SL-EXF-006", "SL-C2-003"):
        assert re.search(rf"^{rid}\s", out, re.M), rid
    dest = next(ln for ln in out.splitlines() if ln.startswith("198.18.0.10"))
    assert dest.split()[1:4] == ["443", "tcp", "20"] and "tls" in dest
    assert "/usr/bin/curl" in out and "seen 4x" in out


def test_detail_unknown_workload_suggests(baseline_file: Path) -> None:
    r = runner.invoke(app, ["baseline", "show", "web", "--baseline", str(baseline_file)])
    assert r.exit_code != 0
    assert "no workload 'web'" in r.output and "did you mean" in r.output and "\x1b]" not in r.output


def test_detail_on_a_forced_terminal_is_coloured_and_safe(baseline_file: Path) -> None:
    from sensor.detect.baseline import load

    b = load(baseline_file)
    con = Console(record=True, force_terminal=True, width=160, markup=False)
    con.print(detail(b, EVIL, default_config()))
    raw = con.export_text(styles=True)
    assert "\x1b[" in raw
    assert not CONTROL.search(re.sub(r"\x1b\[[0-9;]*m", "", raw).replace("\n", ""))


def test_histogram_groups_are_octaves_and_keep_every_count() -> None:
    h = LogHist()
    for v in (0, 1, 3, 100, 1000, 1000, MIB):
        h.add(v)
    g = _groups(h)
    assert sum(c for _lo, _hi, c in g) == 7
    assert all(lo < hi or hi == 0 for lo, hi, _c in g)
    assert [hi for _lo, hi, _c in g] == sorted(hi for _lo, hi, _c in g)
    # each value falls at or below its row's upper edge
    assert g[-1][1] >= MIB
