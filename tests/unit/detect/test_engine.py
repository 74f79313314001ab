"""The detector around the rules: alert documents, suppression, allow lists
with cron schedules, trusted networks, unknown workloads, learning while
detecting."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sensor.detect.catalog import BY_ID
from sensor.detect.engine import cron_matches, in_schedule
from sensor.detect.learn import Learner
from tests.support.views import (
    ALL_RULES,
    KIB,
    MIB,
    T0,
    WINDOW,
    check_alert,
    config,
    container,
    detector,
    exec_,
    flow,
    host,
    learn,
    only,
    scenario,
    utc,
    window,
)

DET = T0 + 600.0
EXFIL = container("exfil", image="evil/exfil:latest")
API = container("api-1", image="acme/api:1.0")


def api_baseline(n: int = 5, start: float = T0):
    """acme/api: 1 MiB of TLS to 203.0.113.10:443 per window, at 14:xx UTC."""
    return learn(window(start + i * WINDOW, flows=[flow(API, "203.0.113.10", 443, MIB, proto="tls")]) for i in range(n))


def rules_of(alerts):
    return [a["rule"]["id"] for a in alerts]


# --- every rule, one alert document each ------------------------------------------------


@pytest.mark.parametrize("rule_id", ALL_RULES)
def test_each_rule_scenario_fires_alone_with_a_complete_document(tmp_path: Path, rule_id: str) -> None:
    attr = API if rule_id == "SL-EXF-001" else EXFIL
    h = detector(config(tmp_path), api_baseline())
    views, ip = scenario(rule_id, attr, DET)
    alerts = h.run(*views)
    assert rules_of(alerts) == [rule_id]
    a = alerts[0]
    check_alert(a, rule_id, attr, ip)
    info = BY_ID[rule_id]
    assert a["event"]["severity"] == info.severity and a["event"]["risk_score"] == float(info.severity)
    assert a["event"]["created"] == "2024-01-09T14:10:00.000Z"  # the detector's clock
    assert a["sluice"]["alert"]["suppressed_since_last"] == 0
    assert a["sluice"]["evidence"]["baseline"]["known_workload"] is (attr is API)
    assert attr.container is not None
    assert a["message"] and (attr.container.name in a["message"])
    if rule_id == "SL-EXF-001":  # a per-workload volume: destinations are in the evidence
        assert f"{ip}:443" in a["sluice"]["evidence"]["destinations"]
    else:
        assert ip in a["message"]
    assert json.loads(json.dumps(a)) == a
    assert h.counts == {"alerts": 1, "suppressed": 0, "escalated": 0, "allowed": 0, "rule_errors": 0}
    assert h.detector.by_rule == {rule_id: 1}


@pytest.mark.parametrize("rule_id", ALL_RULES)
def test_disabled_rule_is_not_run(tmp_path: Path, rule_id: str) -> None:
    attr = API if rule_id == "SL-EXF-001" else EXFIL
    h = detector(config(tmp_path, f"[rules.{rule_id}]\nenabled = false\n"), api_baseline())
    assert rules_of(h.run(*scenario(rule_id, attr, DET)[0])) == []


def test_severity_from_config(tmp_path: Path) -> None:
    h = detector(config(tmp_path, "[rules.SL-EXF-004]\nseverity = 90\n"))
    a = h.run(*scenario("SL-EXF-004", EXFIL, DET)[0])[0]
    assert a["event"]["severity"] == 90 and a["event"]["risk_score"] == 90.0


def test_severity_is_clamped_to_100(tmp_path: Path) -> None:
    b = api_baseline()
    h = detector(config(tmp_path, "[rules.SL-EXF-004]\nseverity = 100\n"), b)
    night = utc(2024, 1, 10, 3, 0)
    a = only(h.run(window(night, flows=[flow(API, "198.51.100.7", 443, 2 * MIB, proto="tls")])), "SL-EXF-004")[0]
    assert a["event"]["severity"] == 100


# --- time of day ------------------------------------------------------------------------


def test_activity_outside_the_baselines_hours_adds_ten(tmp_path: Path) -> None:
    h = detector(config(tmp_path), api_baseline())  # learned at 14h UTC
    night = utc(2024, 1, 10, 3, 0)
    alerts = h.run(window(night, flows=[flow(API, "198.51.100.7", 443, 2 * MIB, proto="tls")]))
    a = only(alerts, "SL-EXF-004")[0]
    assert a["event"]["severity"] == 68 + 10 and a["event"]["risk_score"] == 78.0
    assert a["sluice"]["evidence"]["time"] == {"hour": 3, "usual_hour": False}
    assert a["@timestamp"] == "2024-01-10T03:00:00.000Z"


def test_activity_inside_the_baselines_hours_adds_nothing(tmp_path: Path) -> None:
    h = detector(config(tmp_path), api_baseline())
    a = only(h.run(window(DET, flows=[flow(API, "198.51.100.7", 443, 2 * MIB, proto="tls")])), "SL-EXF-004")[0]
    assert a["event"]["severity"] == 68
    assert a["sluice"]["evidence"]["time"] == {"hour": 14, "usual_hour": True}


def test_no_hour_penalty_before_min_baseline_windows(tmp_path: Path) -> None:
    h = detector(config(tmp_path), api_baseline(n=2))
    night = utc(2024, 1, 10, 3, 0)
    a = only(h.run(window(night, flows=[flow(API, "198.51.100.7", 443, 2 * MIB, proto="tls")])), "SL-EXF-004")[0]
    assert a["event"]["severity"] == 68
    assert a["sluice"]["evidence"]["time"] == {"hour": 3}
    assert a["sluice"]["evidence"]["baseline"] == {"known_workload": True, "windows": 2}


def test_no_hour_penalty_for_unknown_workload(tmp_path: Path) -> None:
    h = detector(config(tmp_path), api_baseline())
    night = utc(2024, 1, 10, 3, 0)
    a = h.run(*scenario("SL-EXF-004", EXFIL, night)[0])[0]
    assert a["event"]["severity"] == 68
    assert a["sluice"]["evidence"]["time"] == {"hour": 3}


def test_host_process_alert(tmp_path: Path) -> None:
    h = detector(config(tmp_path))
    alerts = h.run(window(DET, flows=[flow(host(), "203.0.113.77", 443, 2 * MIB, proto="tls")]))
    assert rules_of(alerts) == ["SL-EXF-004"]
    a = alerts[0]
    json.dumps(a)
    assert "container" not in a and a["sluice"]["attribution"] == "host"
    assert a["sluice"]["workload"] == "host"
    assert a["message"].startswith("Host process")
    assert "isolate" not in a["sluice"]["response"]
    assert any("203.0.113.77" in c for c in a["sluice"]["response"]["block"])


def test_kubernetes_pod_gets_a_quarantine_hint(tmp_path: Path) -> None:
    pod = container(
        "k8s_app",
        image="acme/app:1",
        labels={
            "io.kubernetes.pod.name": "app-5d8f7c9b6d-x7k2p",
            "io.kubernetes.pod.namespace": "prod",
            "io.kubernetes.container.name": "app",
        },
    )
    h = detector(config(tmp_path))
    a = h.run(*scenario("SL-EXF-004", pod, DET)[0])[0]
    assert a["sluice"]["workload"] == "k8s:prod/app/app"
    assert any("kubectl -n prod label pod app-5d8f7c9b6d-x7k2p" in c for c in a["sluice"]["response"]["isolate"])
    assert a["orchestrator"]["namespace"] == "prod"


# --- suppression ------------------------------------------------------------------------------


def http(attr, port=80, ip="198.51.100.20"):
    return flow(attr, ip, port, 300 * KIB, proto="http", entropy=6.2, body_entropy=7.97, body_sampled_bytes=2048)


def test_suppression_per_rule_workload_destination(tmp_path: Path) -> None:
    h = detector(config(tmp_path))  # suppress_seconds = 600
    assert len(h.run(window(DET, flows=[http(EXFIL)]))) == 1
    assert h.run(window(DET + 100, flows=[http(EXFIL)])) == []
    assert h.run(window(DET + 599, flows=[http(EXFIL)])) == []
    assert h.counts["suppressed"] == 2
    # a different port is a different key
    other = h.run(window(DET + 200, flows=[http(EXFIL, port=8080)]))
    assert len(other) == 1 and other[0]["destination"]["port"] == 8080
    assert other[0]["sluice"]["alert"]["suppressed_since_last"] == 0
    # after the interval: one alert carrying the count of those suppressed
    again = h.run(window(DET + 600, flows=[http(EXFIL)]))
    assert len(again) == 1
    assert again[0]["sluice"]["alert"]["suppressed_since_last"] == 2
    # and the count starts over
    assert h.run(window(DET + 700, flows=[http(EXFIL)])) == []
    last = h.run(window(DET + 1300, flows=[http(EXFIL)]))
    assert last[0]["sluice"]["alert"]["suppressed_since_last"] == 1
    assert h.counts == {"alerts": 4, "suppressed": 3, "escalated": 0, "allowed": 0, "rule_errors": 0}


def test_suppression_distinguishes_workloads_and_ips(tmp_path: Path) -> None:
    h = detector(config(tmp_path))
    other = container("other", image="evil/other:1")
    alerts = h.run(window(DET, flows=[http(EXFIL), http(other), http(EXFIL, ip="198.51.100.21")]))
    assert len(alerts) == 3
    # same workload from another container of it: the same key
    twin = container("exfil-2", image="evil/exfil:latest")
    assert h.run(window(DET + 10, flows=[http(twin)])) == []


def test_suppression_distinguishes_executables(tmp_path: Path) -> None:
    """A decoy's alert (same rule, workload and target, another binary)
    kept the real one's alert, and its path, out for the interval (review)."""
    from sensor.attribution.workload import workload_of
    from sensor.detect.view import ProcessRef

    h = detector(config(tmp_path))
    w = workload_of(EXFIL)
    path = "/etc/docker/daemon.json"
    h.detector.on_fim(path, ["change"], DET, EXFIL, w, ProcessRef(1, "sh", "/tmp/hc/decoy"))
    h.detector.on_fim(path, ["change"], DET + 1, EXFIL, w, ProcessRef(2, "sh", "/tmp/hc/decoy"))
    h.detector.on_fim(path, ["change"], DET + 2, EXFIL, w, ProcessRef(3, "implant", "/var/tmp/implant/nc"))
    assert [a["process"]["executable"] for a in h.alerts] == ["/tmp/hc/decoy", "/var/tmp/implant/nc"]
    assert h.detector.counts["suppressed"] == 1


def test_a_repeat_ten_times_larger_is_alerted_within_the_interval(tmp_path: Path) -> None:
    """Review: a small spike alerted first kept the real transfer's size out
    of view for the whole interval (the next alert, 10 min later, carried
    only a count). Repeats whose sizes add up to escalation_factor (10)
    times the last alert's are alerted, saying so (also when sent in
    chunks each under the factor); the escalated size is the reference
    from then on."""

    def body(n: int):
        return flow(
            EXFIL, "198.51.100.20", 80, n, proto="http", entropy=6.2, body_entropy=7.97, body_sampled_bytes=2048
        )

    h = detector(config(tmp_path))
    assert len(h.run(window(DET, flows=[body(300 * KIB)]))) == 1
    assert h.run(window(DET + 10, flows=[body(2000 * KIB)])) == []  # 6.7x so far: a repeat
    big = h.run(window(DET + 20, flows=[body(1000 * KIB)]))  # 10x added up
    assert len(big) == 1, big
    check_alert(big[0], "SL-EXF-003", EXFIL, "198.51.100.20")
    esc = big[0]["sluice"]["evidence"]["escalated"]
    assert esc == {
        "previous_magnitude": 300 * KIB,
        "magnitude": 1000 * KIB,
        "magnitude_since_previous": 3000 * KIB,
        "seconds_since_previous": 20.0,
        "escalation_factor": 10.0,
    }
    assert "10x as much as this alert's last one said, in the 20 s since" in big[0]["message"]
    assert big[0]["sluice"]["alert"]["suppressed_since_last"] == 1
    # the escalated alert's 3000 KiB is the new reference: 20000 KiB is under 10x
    assert h.run(window(DET + 30, flows=[body(20000 * KIB)])) == []
    assert h.counts["escalated"] == 1 and h.counts["suppressed"] == 2


def test_escalation_factor_zero_turns_it_off(tmp_path: Path) -> None:
    h = detector(config(tmp_path, detection="escalation_factor = 0\n"))
    assert len(h.run(window(DET, flows=[http(EXFIL)]))) == 1
    huge = flow(
        EXFIL, "198.51.100.20", 80, 1000 * MIB, proto="http", entropy=6.2, body_entropy=7.97, body_sampled_bytes=2048
    )
    assert h.run(window(DET + 10, flows=[huge])) == []


def test_expired_suppression_keys_are_forgotten(tmp_path: Path) -> None:
    """A container alerting on ever new destinations grew the suppression
    table for the sensor's life."""
    h = detector(config(tmp_path))
    for i in range(50):
        h.run(window(DET + i, flows=[http(EXFIL, ip=f"198.51.100.{i + 1}")]))
    assert len(h.detector._last) == 50
    h.run(window(DET + 700, flows=[http(EXFIL, ip="198.51.100.200")]))
    assert list(h.detector._last) == [("SL-EXF-003", "evil/exfil", "198.51.100.200:80", "", "")]
    assert h.counts["alerts"] == 51


def test_suppress_seconds_zero_alerts_every_time(tmp_path: Path) -> None:
    h = detector(config(tmp_path, detection="suppress_seconds = 0\n"))
    assert len(h.run(window(DET, flows=[http(EXFIL)]), window(DET + 10, flows=[http(EXFIL)]))) == 2


# --- allow lists --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "entry,silenced",
    [
        ('workload = "evil/*"', True),
        ('workload = "evil/exfil"', True),
        ('workload = "acme/*"', False),
        ('destination = "203.0.113.0/24"', True),
        ('destination = "203.0.113.77"', True),
        ('destination = "198.51.100.0/24"', False),
        ("port = 443", True),
        ("port = 8443", False),
        ('workload = "evil/*"\nport = 443\ndestination = "203.0.113.0/24"', True),
        ('workload = "evil/*"\nport = 8443', False),  # every key must match
        ('workload = "evil/*"\nrules = ["SL-EXF-004", "SL-C2-002"]', True),
        ('workload = "evil/*"\nrules = ["SL-EXF-002"]', False),
    ],
)
def test_allow_entry_matchers(tmp_path: Path, entry: str, silenced: bool) -> None:
    h = detector(config(tmp_path, f"[[allow]]\n{entry}\n"))
    alerts = h.run(*scenario("SL-EXF-004", EXFIL, DET)[0])
    if silenced:
        assert alerts == [] and h.counts["allowed"] == 1 and h.counts["alerts"] == 0
    else:
        assert rules_of(alerts) == ["SL-EXF-004"] and h.counts["allowed"] == 0


@pytest.mark.parametrize("rule_id", ALL_RULES)
def test_allow_by_workload_glob_silences_every_rule(tmp_path: Path, rule_id: str) -> None:
    attr = API if rule_id == "SL-EXF-001" else EXFIL
    h = detector(config(tmp_path, '[[allow]]\nworkload = "*/*"\ncomment = "everything"\n'), api_baseline())
    assert h.run(*scenario(rule_id, attr, DET)[0]) == []
    assert h.counts["allowed"] == 1 and h.counts["alerts"] == 0


@pytest.mark.parametrize("rule_id", ALL_RULES)
def test_allow_by_destination_cidr_and_port_silences_every_rule(tmp_path: Path, rule_id: str) -> None:
    attr = API if rule_id == "SL-EXF-001" else EXFIL
    views, ip = scenario(rule_id, attr, DET)
    h = detector(config(tmp_path, f'[[allow]]\ndestination = "{ip}/32"\nrules = ["{rule_id}"]\n'), api_baseline())
    assert h.run(*views) == []
    assert h.counts["allowed"] == 1


def test_allow_by_executable_matches_flow_findings(tmp_path: Path) -> None:
    """An operator allows a backup tool by its executable. Its flow-based
    finding (SL-EXF-004) comes from pid 4242, which the same window shows
    exec'ing /usr/bin/restic: the allow entry should apply."""
    backup = container("restic-1", image="acme/restic:0.16")
    h = detector(config(tmp_path, '[[allow]]\nexecutable = "/usr/bin/restic"\n'))
    v = window(
        DET,
        execs=[exec_(backup, DET - 9, "/usr/bin/restic", ["restic", "backup", "/data"], pid=4242)],
        flows=[flow(backup, "203.0.113.77", 443, 8 * MIB, proto="tls", pid=4242, comm="restic")],
    )
    alerts = h.run(v)
    assert alerts == [], [(a["rule"]["id"], a.get("process")) for a in alerts]
    assert h.counts["allowed"] == 1


# --- schedules --------------------------------------------------------------------------------


def gm(*a: int) -> time.struct_time:
    return time.gmtime(utc(*a))


@pytest.mark.parametrize(
    "expr,when,expected",
    [
        ("30 2 * * *", (2024, 1, 9, 2, 30), True),
        ("30 2 * * *", (2024, 1, 9, 2, 31), False),
        ("30 2 * * *", (2024, 1, 9, 3, 30), False),
        ("0-15 * * * *", (2024, 1, 9, 5, 15), True),
        ("0-15 * * * *", (2024, 1, 9, 5, 16), False),
        ("0,30,45 * * * *", (2024, 1, 9, 5, 30), True),
        ("0,30,45 * * * *", (2024, 1, 9, 5, 31), False),
        ("*/15 * * * *", (2024, 1, 9, 5, 45), True),
        ("*/15 * * * *", (2024, 1, 9, 5, 40), False),
        ("5/20 * * * *", (2024, 1, 9, 5, 45), True),
        ("5/20 * * * *", (2024, 1, 9, 5, 15), False),
        ("5/20 * * * *", (2024, 1, 9, 5, 0), False),
        ("10-30/10 * * * *", (2024, 1, 9, 5, 20), True),
        ("10-30/10 * * * *", (2024, 1, 9, 5, 25), False),
        ("10-30/10 * * * *", (2024, 1, 9, 5, 40), False),
        ("0 22-23,0-5 * * *", (2024, 1, 9, 23, 0), True),
        ("0 22-23,0-5 * * *", (2024, 1, 9, 12, 0), False),
        ("0 0 9 1 *", (2024, 1, 9, 0, 0), True),
        ("0 0 9 2 *", (2024, 1, 9, 0, 0), False),
        ("0 0 10 * *", (2024, 1, 9, 0, 0), False),
        # 2024-01-07 is a Sunday, 01-06 a Saturday, 01-08 a Monday, 01-04 a Thursday
        ("0 0 * * 0", (2024, 1, 7, 0, 0), True),
        ("0 0 * * 7", (2024, 1, 7, 0, 0), True),
        ("0 0 * * 7", (2024, 1, 8, 0, 0), False),
        ("0 0 * * 0", (2024, 1, 6, 0, 0), False),
        ("0 0 * * 1", (2024, 1, 8, 0, 0), True),
        ("0 0 * * 6", (2024, 1, 6, 0, 0), True),
        ("0 0 * * 5-7", (2024, 1, 7, 0, 0), True),
        ("0 0 * * 5-7", (2024, 1, 6, 0, 0), True),
        ("0 0 * * 5-7", (2024, 1, 4, 0, 0), False),
        ("* * * * 1-5", (2024, 1, 6, 12, 0), False),
        ("* * * * 1-5", (2024, 1, 9, 12, 0), True),
        ("* * * * 0,6", (2024, 1, 6, 12, 0), True),
        ("* * * * *", (2024, 2, 29, 23, 59), True),
        # both day fields restricted: either may match (2024-01-09 is a Tuesday)
        ("0 0 10 * 2", (2024, 1, 9, 0, 0), True),
        ("0 0 10 * 2", (2024, 1, 10, 0, 0), True),
        ("0 0 10 * 2", (2024, 1, 11, 0, 0), False),
        # a restricted day of month with * weekday: only that day
        ("0 0 9 * *", (2024, 1, 9, 0, 0), True),
        ("0 0 9 * *", (2024, 1, 10, 0, 0), False),
    ],
)
def test_cron_matches(expr: str, when: tuple[int, ...], expected: bool) -> None:
    assert cron_matches(expr, gm(*when)) is expected


@pytest.mark.parametrize(
    "expr,minutes,when,expected",
    [
        ("0 2 * * *", 90, (2024, 1, 9, 2, 0), True),
        ("0 2 * * *", 90, (2024, 1, 9, 3, 30, 59), True),
        ("0 2 * * *", 90, (2024, 1, 9, 3, 31), False),
        ("0 2 * * *", 90, (2024, 1, 9, 1, 59, 59), False),
        # spanning midnight
        ("30 23 * * *", 60, (2024, 1, 9, 23, 30), True),
        ("30 23 * * *", 60, (2024, 1, 10, 0, 15), True),
        ("30 23 * * *", 60, (2024, 1, 10, 0, 30), True),
        ("30 23 * * *", 60, (2024, 1, 10, 0, 31), False),
        ("30 23 * * *", 60, (2024, 1, 9, 23, 29), False),
        # the start's day counts, not the day the window reaches
        ("30 23 * * 6", 60, (2024, 1, 7, 0, 15), True),  # Saturday 23:30 -> Sunday 00:15
        ("30 23 * * 6", 60, (2024, 1, 8, 0, 15), False),  # Sunday 23:30 is not a start
        ("30 23 * * 7", 60, (2024, 1, 8, 0, 15), True),  # Sunday as 7
        ("0 0 * * *", 2880, (2024, 1, 10, 12, 0), True),
    ],
)
def test_in_schedule_utc(expr: str, minutes: float, when: tuple[int, ...], expected: bool) -> None:
    assert in_schedule(expr, minutes, utc(*when), "UTC") is expected


@settings(max_examples=300, deadline=None)
@given(
    expr=st.sampled_from(["0 2 * * *", "*/15 * * * *", "30 23 * * 6", "0 0 1 * *", "5/20 3-5 * * 1-5", "0 0 10 * 2"]),
    minutes=st.integers(min_value=1, max_value=600),
    ts=st.integers(min_value=1_704_067_200, max_value=1_735_689_600),  # 2024
)
def test_in_schedule_agrees_with_minute_by_minute_matching(expr: str, minutes: int, ts: int) -> None:
    """in_schedule asks croniter for the latest start; the definition is
    "some minute within the duration before ts matched": they must agree."""
    start = ts // 60 * 60
    brute = any(cron_matches(expr, time.gmtime(start - 60 * i)) for i in range(minutes + 1))
    assert in_schedule(expr, minutes, ts, "UTC") is brute


def test_in_schedule_local_time_counts_real_minutes_across_dst(monkeypatch: pytest.MonkeyPatch) -> None:
    """Paris, 2024-03-31: clocks jump from 02:00 to 03:00. A window starting
    01:30 local (00:30 UTC) lasting 120 minutes ends at 02:30 UTC, 04:30 local."""
    monkeypatch.setenv("TZ", "Europe/Paris")
    time.tzset()
    try:
        assert in_schedule("30 1 * * *", 120, utc(2024, 3, 31, 2, 15), "local")  # 04:15 local
        assert not in_schedule("30 1 * * *", 120, utc(2024, 3, 31, 2, 45), "local")  # 04:45 local
        assert not in_schedule("30 1 * * *", 120, utc(2024, 3, 31, 0, 15), "local")  # 01:15 local
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()


def test_in_schedule_that_never_starts_is_never_in_the_window() -> None:
    # the config refuses it; the engine must not raise if one gets through
    assert not in_schedule("0 0 30 2 *", 60, utc(2024, 3, 1, 0, 10), "UTC")


def test_in_schedule_local_time_follows_time_localtime() -> None:
    ts = utc(2024, 1, 9, 12, 0)
    lt = time.localtime(ts)
    assert in_schedule(f"{lt.tm_min} {lt.tm_hour} * * *", 1, ts, "local")


SCHEDULED = """\
[[allow]]
workload = "evil/*"
destination = "203.0.113.0/24"
schedule = "0 2 * * *"
duration_minutes = 90
comment = "nightly transfer"
"""


@pytest.mark.parametrize(
    "when,silenced",
    [
        ((2024, 1, 9, 2, 30), True),
        ((2024, 1, 9, 3, 30), True),
        ((2024, 1, 9, 4, 0), False),
        ((2024, 1, 9, 1, 50), False),
    ],
)
def test_allow_with_schedule_only_inside_the_window(tmp_path: Path, when, silenced: bool) -> None:
    h = detector(config(tmp_path, SCHEDULED))
    alerts = h.run(*scenario("SL-EXF-004", EXFIL, utc(*when))[0])
    assert (alerts == []) is silenced
    assert h.counts["allowed"] == (1 if silenced else 0)


def test_allow_with_schedule_spanning_midnight(tmp_path: Path) -> None:
    text = '[[allow]]\nworkload = "evil/*"\nschedule = "30 23 * * *"\nduration_minutes = 60\n'
    h = detector(config(tmp_path, text))
    assert h.run(*scenario("SL-EXF-004", EXFIL, utc(2024, 1, 10, 0, 10))[0]) == []
    h = detector(config(tmp_path, text, name="b.toml"))
    assert len(h.run(*scenario("SL-EXF-004", EXFIL, utc(2024, 1, 10, 0, 45))[0])) == 1


# --- trusted networks and unknown workloads -------------------------------------------------


@pytest.mark.parametrize("rule_id", ["SL-EXF-002", "SL-EXF-004", "SL-C2-001", "SL-C2-002", "SL-C2-004"])
def test_trusted_networks_are_never_new(tmp_path: Path, rule_id: str) -> None:
    views, ip = scenario(rule_id, EXFIL, DET)
    h = detector(config(tmp_path, detection=f'trusted_networks = ["{ip}/24"]\n'))
    assert h.run(*views) == []
    h = detector(config(tmp_path, detection='trusted_networks = ["10.0.0.0/8"]\n', name="b.toml"))
    assert rules_of(h.run(*scenario(rule_id, EXFIL, DET)[0])) == [rule_id]


@pytest.mark.parametrize("rule_id", ALL_RULES)
def test_alert_on_unknown_workload_false_silences_unknown_workloads(tmp_path: Path, rule_id: str) -> None:
    """Every rule compares with the baseline (destinations, peers,
    executables, lifetimes, routine tools, volumes): with the option off,
    a workload absent from the baseline raises nothing."""
    h = detector(config(tmp_path, detection="alert_on_unknown_workload = false\n"), api_baseline())
    alerts = h.run(*scenario(rule_id, EXFIL, DET)[0])
    assert alerts == [], [a["message"] for a in alerts]


def test_without_a_baseline_every_workload_is_unknown(tmp_path: Path) -> None:
    h = detector(config(tmp_path), None)
    a = h.run(*scenario("SL-EXF-004", API, DET)[0])
    assert rules_of(a) == ["SL-EXF-004"]
    assert a[0]["sluice"]["evidence"]["baseline"] == {"known_workload": False, "windows": 0}


# --- learning while detecting ---------------------------------------------------------------


def test_learning_while_detecting_skips_alerting_workloads(tmp_path: Path) -> None:
    b = api_baseline()
    learner = Learner(b, "UTC")
    h = detector(config(tmp_path), b, learner)
    views, _ip = scenario("SL-EXF-004", EXFIL, DET)
    v = views[0]
    v.flows.append(flow(API, "203.0.113.10", 443, MIB, proto="tls"))
    assert rules_of(h.run(v)) == ["SL-EXF-004"]
    assert b.get("acme/api").windows == 6
    assert b.get("evil/exfil") is None
    assert learner.windows == 1
    # a quiet window of the same workload is learned
    h.run(window(DET + 10, flows=[flow(EXFIL, "203.0.113.77", 443, 10, entropy=None)]))
    assert b.get("evil/exfil").windows == 1


def test_allow_by_executable_needs_every_sender_of_the_flow(tmp_path: Path) -> None:
    """Issue 11 (attribution): restic is allowed by its executable. An
    intruder's /tmp/x sends on the same flow: the finding names both senders
    and the allow entry no longer covers it."""
    from tests.support.views import proc

    backup = container("restic-1", image="acme/restic:0.16")
    h = detector(config(tmp_path, '[[allow]]\nexecutable = "/usr/bin/restic"\n'))
    f = flow(backup, "203.0.113.77", 443, 8 * MIB, proto="tls", pid=4242, comm="restic")
    f.senders = [proc("/usr/bin/restic", pid=4242), proc(None, pid=4343, name="x")]
    v = window(DET, execs=[exec_(backup, DET - 9, "/tmp/x", ["x"], pid=4343)], flows=[f])
    alerts = h.run(v)
    assert alerts and h.counts["allowed"] == 0
    ev = alerts[0]["sluice"]["evidence"]
    assert [(s["pid"], s["executable"]) for s in ev["senders"]] == [(4242, "/usr/bin/restic"), (4343, "/tmp/x")]
    # the same flow sent by restic alone stays allowed
    h2 = detector(config(tmp_path, '[[allow]]\nexecutable = "/usr/bin/restic"\n'))
    f2 = flow(backup, "203.0.113.77", 443, 8 * MIB, proto="tls", pid=4242, comm="restic")
    f2.senders = [proc("/usr/bin/restic", pid=4242)]
    assert h2.run(window(DET, flows=[f2])) == [] and h2.counts["allowed"] >= 1
