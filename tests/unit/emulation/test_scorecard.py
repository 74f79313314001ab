"""The emulation scorecard and its JSON lines."""

from __future__ import annotations

import json

from emulation.run import Score, as_json_lines, scorecard

SCORES = [
    Score(
        "seed-openssl-exfil",
        "T1048.001",
        ["SL-EXF-004", "SL-EXF-005"],
        "detected",
        True,
        2.4,
        ["0123456789abcdef", "fedcba9876543210"],
        ["SL-EXF-004", "SL-EXF-005"],
        ["abc123def456"],
        "Container x sent ...",
        5.0,
    ),
    Score("dns-tunnel", "T1048.001", ["SL-EXF-003"], "missed", False, None, [], [], ["aaa"], "missing SL-EXF-003"),
    Score("beacon", "T1104", ["SL-C2-002"], "detected", True, 6.0, ["11112222333344445555"], ["SL-C2-002"]),
    Score("nightly-backup", "benign", [], "silent", True),
    Score(
        "log-shipper",
        "benign",
        [],
        "false-positive",
        False,
        None,
        ["99998888"],
        ["SL-EXF-002"],
        [],
        "Container logs ...",
    ),
    Score("icmp-tunnel", "T1048", [], "blind-spot", True, message="not detected, as the strategy's blind spot says"),
]


def test_scorecard_rows() -> None:
    lines = scorecard(SCORES).splitlines()
    assert lines[0].split() == ["SCENARIO", "ATT&CK", "EXPECTED", "RESULT", "LATENCY", "ALERT"]
    assert len(lines) == 1 + len(SCORES) + 1
    rows = dict(zip([s.scenario for s in SCORES], lines[1:-1], strict=False))
    for s, row in zip(SCORES, lines[1:-1], strict=False):
        assert row.startswith(s.scenario) and s.result in row
    r = rows["seed-openssl-exfil"].split()
    assert r[1:6] == ["T1048.001", "SL-EXF-004,SL-EXF-005", "detected", "2.4s", "01234567"]
    assert r[6] == "+1"
    assert rows["beacon"].split()[4:6] == ["6.0s", "11112222"]
    assert rows["nightly-backup"].split()[2:5] == ["(silent)", "silent", "-"]
    assert rows["icmp-tunnel"].split()[2] == "(blind", rows["icmp-tunnel"]
    assert "(blind spot)" in rows["icmp-tunnel"]


def test_scorecard_marks_failures() -> None:
    lines = scorecard(SCORES).splitlines()[1:-1]
    failed = {s.scenario for s in SCORES if not s.passed}
    for s, row in zip(SCORES, lines, strict=False):
        assert row.endswith("<-- FAIL") is (s.scenario in failed), row
    assert sum("FAIL" in row for row in lines) == 2


def test_scorecard_summary_line() -> None:
    last = scorecard(SCORES).splitlines()[-1]
    assert last.startswith("detected 2/3 attacks, 1 false positives in 2 benign scenarios")
    assert last.endswith("max 6.0s")


def test_scorecard_latency_median_odd() -> None:
    extra = Score("chain", "T1104", ["SL-C2-001"], "detected", True, 1.0, ["aaaabbbb"], ["SL-C2-001"])
    last = scorecard(SCORES + [extra]).splitlines()[-1]
    assert last == ("detected 3/4 attacks, 1 false positives in 2 benign scenarios, latency median 2.4s max 6.0s")


def test_scorecard_latency_median_even() -> None:
    """Two detected attacks, 2.4 s and 6.0 s: the median is 4.2 s."""
    last = scorecard(SCORES).splitlines()[-1]
    assert "latency median 4.2s max 6.0s" in last, last


def test_scorecard_without_latencies() -> None:
    last = scorecard([SCORES[1], SCORES[3]]).splitlines()[-1]
    assert last == "detected 0/1 attacks, 0 false positives in 1 benign scenarios"


def test_as_json_lines() -> None:
    out = as_json_lines(SCORES)
    lines = out.split("\n")
    assert len(lines) == len(SCORES)
    for s, line in zip(SCORES, lines, strict=False):
        d = json.loads(line)
        assert d["scenario"] == s.scenario and d["result"] == s.result and d["passed"] is s.passed
        assert d["expected"] == s.expected and d["latency_seconds"] == s.latency_seconds
        assert set(d) == {
            "scenario",
            "attack",
            "expected",
            "result",
            "passed",
            "latency_seconds",
            "alert_ids",
            "rules_fired",
            "containers",
            "message",
            "duration_seconds",
            "mode",
            "rules_by_container",
        }
    assert as_json_lines([]) == ""
