"""Terminal safety and the compact output format: hostile text from
containers never reaches a terminal as a control sequence."""

from __future__ import annotations

import hashlib
import json
import os
import pty
import re
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sensor.outputs import compact, ecs
from sensor.outputs.sinks import JsonLineWriter, Output, build_output, resolve_format
from sensor.outputs.terminal import safe
from tests.support.views import T0, config, container, detector, scenario

# What a container can put in its name, labels, image, command line or a
# destination name, aimed at the operator's terminal.
HOSTILE = {
    "csi_clear": "web\x1b[2J\x1b[H",
    "osc_title": "\x1b]0;you have been pwned\x07api",
    "osc52_clipboard": "\x1b]52;c;Y3VybCBldmlsLnNofHNo\x1b\\db",
    "osc8_link": "\x1b]8;;http://198.18.0.1/\x1b\\click\x1b]8;;\x1b\\",
    "c1_csi": "job\x9b31mred\x9b0m",
    "c1_osc": "\x9d0;title\x9c",
    "cr_overwrite": "innocent\rEVIL",
    "backspace": "safe\x08\x08\x08\x08evil",
    "newline": "one\ntwo\r\nthree",
    "bidi_override": "invoice\u202egnp.exe",
    "bidi_isolate": "a\u2066b\u2069c",
    "zero_width": "ad\u200bmin\u200d",
    "line_separator": "a\u2028b\u2029c",
    "tag_characters": "ok\U000e0041\U000e0042",
    "lone_surrogate": "bad\udcffbyte",
    "nul_del": "a\x00b\x7fc",
    "bell_vt_ff": "\x07\x0b\x0c",
}

# every escape sequence introducer and C0/C1 control a terminal acts on
CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2066-\u2069\U000e0000-\U000e007f\ud800-\udfff]")


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_safe_escapes_hostile_text(name: str) -> None:
    text = HOSTILE[name]
    out = safe(text)
    assert not CONTROL.search(out), repr(out)
    assert out.isprintable()
    assert "\\x" in out or "\\u" in out or "\\U" in out  # shown, not hidden
    out.encode("utf-8")  # lone surrogates are escaped: the line can always be written


def test_safe_shows_what_was_escaped() -> None:
    assert safe("web\x1b[2J") == "web\\x1b[2J"
    assert safe("a\x9bb") == "a\\x9bb"
    assert safe("x\u202ey") == "x\\u202ey"
    assert safe("t\U000e0041") == "t\\U000e0041"


@pytest.mark.parametrize("text", ["web-1", "acme/api:1.0", "café", "数据库", "🐳 whale", "a b", ""])
def test_safe_keeps_ordinary_text(text: str) -> None:
    assert safe(text) == text


def test_safe_limit_cuts_before_escaping() -> None:
    assert safe("x" * 100, 10) == "x" * 9 + "\u2026"
    assert safe("abc", 10) == "abc"
    # the cut never leaves half an escape: escaping happens after the cut
    assert safe("\x1b" * 20, 5) == "\\x1b" * 4 + "\u2026"


@settings(max_examples=500)
@given(st.text(alphabet=st.characters(codec=None, exclude_categories=()), max_size=60))
def test_safe_output_is_always_printable(text: str) -> None:
    out = safe(text)
    assert out.isprintable()
    assert not CONTROL.search(out)
    assert (out == text) is text.isprintable()


# --- the compact format ----------------------------------------------------------------------


def _alert(tmp_path: Path, name: str, image: str = "evil/exfil:latest") -> dict[str, Any]:
    cid = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()
    attr = container(name, image=image, labels={"io.sluice.workload": f"shop/{name}"}, cid=cid)
    views, _ = scenario("SL-C2-001", attr, T0 + 600)
    h = detector(config(tmp_path))
    alerts = h.run(*views)
    assert alerts, "the scenario must raise SL-C2-001"
    return alerts[0]


def test_compact_alert_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    doc = _alert(tmp_path, "web-1")
    line = compact.render(doc)
    assert "\n" not in line
    fields = line.split(maxsplit=4)
    assert fields[:3] == [doc["@timestamp"][11:19], compact.severity_label(doc["event"]["severity"]), "SL-C2-001"]
    assert fields[3] == "web-1"
    assert f"({doc['sluice']['workload']})" in line
    assert line.endswith(doc["message"])


def test_compact_severity_words() -> None:
    assert [compact.severity_label(s) for s in (95, 80, 79, 60, 59, 40, 39, 0)] == [
        "CRIT",
        "CRIT",
        "HIGH",
        "HIGH",
        "MED",
        "MED",
        "LOW",
        "LOW",
    ]


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_compact_escapes_hostile_names_and_messages(tmp_path: Path, name: str) -> None:
    doc = _alert(tmp_path, HOSTILE[name], image=HOSTILE[name])
    # the alert's message quotes the container name: the hostile text is in it
    assert HOSTILE[name] in doc["message"]
    plain = compact.render(doc)
    assert not CONTROL.search(plain), repr(plain)
    coloured = compact.render(doc, color=True)
    # the only escape sequences left are our own colours
    assert not CONTROL.search(re.sub(r"\x1b\[[0-9;]*m", "", coloured)), repr(coloured)
    assert re.sub(r"\x1b\[[0-9;]*m", "", coloured) == plain


def _doc(action: str, dataset: str, **fields: Any) -> dict[str, Any]:
    d = ecs.base(T0, "node-1", "event", ["network"], ["info"], action, dataset)
    d["sluice"] = {"attribution": "container"}
    d["container"] = {"id": "ab" * 32, "name": "api-1", "runtime": "docker", "image": {"name": "acme/api:1"}}
    for k, v in fields.items():
        if k == "sluice":
            d["sluice"].update(v)
        else:
            d[k] = v
    return d


EVIL_ARG = "\x1b]0;owned\x07\x1b[2J"

TELEMETRY = [
    (
        _doc("exec", "sluice.process", process={"pid": 7, "name": "sh", "command_line": f"sh -c {EVIL_ARG}"}),
        "exec",
        r"ran sh -c \x1b]0;owned\x07\x1b[2J",
    ),
    (
        _doc("exit", "sluice.process", process={"pid": 7, "name": "sh"}),
        "exit",
        "sh exited",
    ),
    (
        _doc(
            "connection_attempted",
            "sluice.network",
            process={"pid": 7, "name": "curl"},
            destination={"ip": "198.18.0.1", "port": 443},
            network={"transport": "tcp"},
        ),
        "connect",
        "curl connect -> 198.18.0.1:443/tcp",
    ),
    (
        _doc(
            "udp_send",
            "sluice.network",
            process={"pid": 7, "name": "dig"},
            destination={"ip": "2001:db8::53", "port": 53},
            network={"transport": "udp"},
        ),
        "udp_send",
        "dig udp send -> [2001:db8::53]:53/udp",
    ),
    (
        _doc(
            "flow_summary",
            "sluice.flow",
            process={"pid": 7, "name": "curl"},
            destination={"ip": "198.18.0.1", "port": 443},
            network={"transport": "tcp", "protocol": "tls"},
            source={"bytes": 3 * 1024 * 1024, "packets": 2300},
            sluice={"payload": {"entropy": 7.981}},
        ),
        "flow",
        "curl -> 198.18.0.1:443/tcp 3.0 MiB in 2300 pkts, entropy 7.98, tls",
    ),
    (
        _doc(
            "container_summary",
            "sluice.container",
            source={"bytes": 2048, "packets": 4},
            sluice={
                "window": {"flows": 2, "destinations": 1, "connections": 3, "execs": 1},
                "payload": {"entropy": 4.5},
            },
        ),
        "summary",
        "2.0 KiB egress, 2 flows to 1 destinations, 3 connects, 1 execs, entropy 4.50",
    ),
    (_doc("container_start", "sluice.container"), "start", "container started (acme/api:1)"),
    (
        _doc("container_stop", "sluice.container", sluice={"container": {"lifetime_seconds": 2.5}}),
        "stop",
        "container stopped after 2.5 s",
    ),
]


@pytest.mark.parametrize("doc,tag,summary", TELEMETRY, ids=[t[1] for t in TELEMETRY])
def test_compact_telemetry_lines(doc: dict[str, Any], tag: str, summary: str) -> None:
    line = compact.render(doc)
    parts = line.split(maxsplit=4)
    assert parts[1:4] == ["info", tag, "api-1"]
    assert parts[4] == summary
    assert not CONTROL.search(line)


def test_compact_health_and_host() -> None:
    d = ecs.base(T0, "node-1", "state", ["host"], ["info"], "sensor_health", "sluice.health")
    d["sluice"] = {"health": {"status": "degraded"}}
    d["message"] = "sluice health: degraded; 12 records lost since start"
    assert compact.render(d).split(maxsplit=4)[1:] == ["WARN", "health", "-", d["message"]]
    d["sluice"]["health"]["status"] = "ok"
    assert compact.render(d).split()[1] == "ok"
    h = _doc("exec", "sluice.process", process={"pid": 1, "name": "cron", "command_line": "cron"})
    del h["container"]
    h["sluice"]["attribution"] = "host"
    assert compact.render(h).split()[3] == "host"


def test_compact_line_in_a_file_has_the_date(tmp_path: Path) -> None:
    out = tmp_path / "out.log"
    w = JsonLineWriter(str(out), compact=True)
    doc = TELEMETRY[0][0]
    w.write_line(json.dumps(doc), doc)
    w.close()
    text = out.read_text()
    assert re.match(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d info exec ", text), text
    assert "\x1b" not in text  # no colour in a file
    assert text.count("\n") == 1


def test_auto_format_follows_the_terminal(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """auto: compact on a real terminal (a pty), ECS on a pipe or a file."""
    master, slave = pty.openpty()
    tty = os.fdopen(slave, "w", buffering=1)
    try:
        monkeypatch.setattr("sys.stdout", tty)
        monkeypatch.delenv("NO_COLOR", raising=False)
        assert resolve_format("auto", "") == "compact"
        assert resolve_format("auto", str(tmp_path / "f")) == "ecs"
        assert resolve_format("ocsf", "") == "ocsf"
        cfg = config(tmp_path).output  # format "auto", path stdout
        out = build_output(cfg, "node-1")
        doc = TELEMETRY[0][0]
        out.emit(doc)
        out.close()
        got = os.read(master, 65536).decode()
        assert got.startswith("\x1b[2m")  # coloured on a terminal
        plain = re.sub(r"\x1b\[[0-9;]*m", "", got)
        assert " info exec " in plain and "ran sh -c \\x1b]0;owned" in plain
        assert "\x1b]" not in got and "\x07" not in got  # the hostile OSC did not pass
        monkeypatch.setenv("NO_COLOR", "1")
        out = build_output(cfg, "node-1")
        out.emit(doc)
        out.close()
        assert "\x1b" not in os.read(master, 65536).decode()
    finally:
        tty.close()
        os.close(master)
    r, w = os.pipe()
    with os.fdopen(w, "w") as pipe:
        monkeypatch.setattr("sys.stdout", pipe)
        assert resolve_format("auto", "") == "ecs"
    os.close(r)


def test_compact_writer_falls_back_to_json_for_a_document_it_cannot_render(tmp_path: Path) -> None:
    out = tmp_path / "out.log"
    w = JsonLineWriter(str(out), compact=True)
    bad = {"@timestamp": "x", "event": {"kind": "alert", "severity": "high"}, "rule": {"id": "SL-EXF-001"}}
    w.write_line(json.dumps(bad), bad)
    good = TELEMETRY[0][0]
    w.write_line(json.dumps(good), good)
    w.close()
    lines = out.read_text().splitlines()
    assert json.loads(lines[0]) == bad  # kept, as JSON
    assert " info exec " in lines[1]
    assert w.render_fallbacks == 1 and "ValueError" in w.last_error
    o = Output([w])
    assert o.stats()["compact_fallbacks"] == 1  # reported in health and status
    o.close()
