"""The CLI's terminal views against a fake sensor on a real control socket:
`top` (rich), `alerts` (compact lines, JSON, follow), with hostile text
from containers, on a forced terminal and in a real one (tmux)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from typer.testing import CliRunner

from control.cli import app
from control.commands import alerts as alerts_cmd
from control.commands.top import Marks, entropy_bar, render_top
from sensor.daemon.control_server import ControlServer
from sensor.outputs import ecs

runner = CliRunner()

EVIL_NAME = "\x1b]0;PWNED\x07ev\x9bm"
EVIL_IMAGE = "img\x1b]52;c;cm0gLXJmIH4=\x07:1"
EVIL_DEST = "198.18.0.9:443\r\x1b[1A"
A, B, H = "a0a0a0a0a0a0" + "0" * 52, "b1b1b1b1b1b1" + "1" * 52, "host"
# no control sequence a terminal acts on, once our own SGR colours are removed
SGR = re.compile(r"\x1b\[[0-9;]*m")
CONTROL = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e]")


def _row(cid: str, name: str, image: str, bps: float, ent: float | None, dests: list[str], n: int) -> dict[str, Any]:
    return {
        "container": cid[:12],
        "name": name,
        "image": image,
        "bytes_per_s": bps,
        "entropy": ent,
        "connects": 3,
        "execs": 1,
        "destinations": dests,
        "n_destinations": n,
    }


def snapshot() -> dict[str, Any]:
    return {
        "ok": True,
        "ready": True,
        "host": "node-1",
        "window_seconds": 10.0,
        "top": [
            _row(H, "", "", 90.0, None, [], 0),
            _row(A, "exfil-test", "alpine:3.20", 3.5 * 1024 * 1024, 7.93, ["203.0.113.9:4444", "192.0.2.80:80"], 7),
            _row(B, EVIL_NAME, EVIL_IMAGE, 2048.0, 4.4, [EVIL_DEST], 1),
        ],
        "containment": {
            "entries": [
                {"kind": "isolate", "container_id": B, "container_name": EVIL_NAME, "destination": None},
                {"kind": "block", "container_id": None, "container_name": None, "destination": "198.18.7.7"},
            ]
        },
    }


def alert(cid: str, name: str, rule: str, ts: float, sev: int = 85, workload: str = "acme/x") -> dict[str, Any]:
    d = ecs.base(ts, "node-1", "alert", ["intrusion_detection", "network"], ["info"], "x", "sluice.alert")
    d["event"]["severity"] = sev
    d["container"] = {"id": cid, "name": name, "runtime": "docker"}
    d["sluice"] = {"attribution": "container", "workload": workload}
    d["rule"] = {"id": rule}
    d["message"] = f"Container {name} ({workload}) did something"
    return d


class FakeSensor:
    """Answers status/top/alerts like the runner: alerts numbered from 1,
    `since` returns the newer ones."""

    def __init__(self) -> None:
        self.snapshot = snapshot()
        self.contained: dict[str, Any] = {"entries": [], "lingering": []}
        self.alerts: list[dict[str, Any]] = []
        self.base = 0  # a restart renumbers

    def add(self, doc: dict[str, Any]) -> None:
        self.alerts.append(doc)

    def __call__(self, req: dict[str, Any]) -> dict[str, Any]:
        cmd = req.get("cmd")
        if cmd in ("status", "top"):
            return self.snapshot
        if cmd == "containment":
            return {"ok": True, **self.contained}
        if cmd == "alerts":
            since = int(req.get("since", 0))
            items = [d for n, d in enumerate(self.alerts[self.base :], 1) if n > since]
            return {"ok": True, "last": len(self.alerts) - self.base, "alerts": items}
        return {"ok": False, "error": f"unknown command {cmd!r}"}


@pytest.fixture
def sensor(tmp_path: Path):
    fake = FakeSensor()
    sock = str(tmp_path / "run" / "sluice.sock")
    srv = ControlServer(sock, fake)
    srv.start()
    cfg = tmp_path / "sluice.toml"
    cfg.write_text(f'[sensor]\ncontrol_socket = "{sock}"\n')
    try:
        yield fake, str(cfg)
    finally:
        srv.stop()


def _clean(out: str) -> str:
    return SGR.sub("", out)


# --- top -------------------------------------------------------------------------------------


def test_top_once_is_sorted_marked_and_escaped(sensor) -> None:
    fake, cfg = sensor
    fake.add(alert(A, "exfil-test", "SL-EXF-001", time.time() - 30))
    fake.add(alert(H, "", "SL-C2-002", time.time() - 3 * 3600))  # old: no mark
    r = runner.invoke(app, ["top", "--once", "-c", cfg])
    assert r.exit_code == 0, r.output
    out = r.output
    assert not CONTROL.search(out.replace("\n", "")), repr(out)
    assert "\x1b" not in out  # not a terminal: no colour, no screen control
    lines = out.splitlines()
    assert lines[0].startswith("sluice top  host node-1  window 10.0s") and "1 node-wide block(s)" in lines[0]
    head = next(ln for ln in lines if "CONTAINER" in ln)
    assert head.split()[:5] == ["STATE", "CONTAINER", "NAME", "IMAGE", "EGRESS"]
    body = [ln for ln in lines[lines.index(head) + 1 :] if ln.strip() and not set(ln.strip()) <= {"-", "\u2500"}]
    # sorted by egress rate: exfil-test, the hostile one, host
    assert body[0].split()[1] == "a0a0a0a0a0a0"
    exfil = next(ln for ln in body if "a0a0a0a0a0a0" in ln)
    assert exfil.split()[0] == "SL-EXF-001"
    assert "3.5 MiB/s" in exfil and "7.93" in exfil and "203.0.113.9:4444, 192.0.2.80:80 (+5)" in exfil
    evil = next(ln for ln in body if "b1b1b1b1b1b1" in ln)
    assert evil.split()[0] == "ISOLATED"
    assert "\\x1b]0;PWNED\\x07ev\\x9bm" in out  # shown, escaped
    assert "\\x0d\\x1b[1A" in out
    host = next(ln for ln in body if " host " in f" {ln} ")
    assert host.split()[0] == "-" and "90 B/s" in host
    assert body.index(exfil) < body.index(evil) < body.index(host)


def test_top_on_a_forced_terminal_escapes_and_colours() -> None:
    """rich on a terminal: colours are ours; the hostile name is text."""
    marks = Marks()
    marks.add([alert(B, EVIL_NAME, "SL-C2-001", 1000.0)])
    con = Console(record=True, force_terminal=True, width=200, color_system="truecolor", markup=False)
    con.print(render_top(snapshot(), marks, now=1010.0))
    raw = con.export_text(styles=True)
    assert "\x1b[" in raw  # coloured
    assert not CONTROL.search(_clean(raw).replace("\n", "")), repr(raw)
    assert "]0;PWNED" in raw and "\x1b]0" not in raw and "\x07" not in raw and "\x9b" not in raw
    plain = _clean(raw)
    row = next(ln for ln in plain.splitlines() if "b1b1b1b1b1b1" in ln)
    assert row.split()[:2] == ["SL-C2-001", "ISOLATED"]


def test_top_markup_in_names_is_not_interpreted() -> None:
    s = snapshot()
    s["top"][1]["name"] = "[bold red]not markup[/]"
    con = Console(record=True, force_terminal=True, width=200)
    con.print(render_top(s, Marks(), now=0))
    assert "[bold red]not markup[/]" in con.export_text()


def test_entropy_bar() -> None:
    assert entropy_bar(8.0).plain == "\u2588" * 8 + " 8.00"
    assert entropy_bar(4.0).plain == "\u2588" * 4 + "\u2591" * 4 + " 4.00"
    assert entropy_bar(None).plain.strip() == "-"
    assert "red" in str(entropy_bar(7.5).style)
    assert "green" in str(entropy_bar(3.0).style) and "yellow" in str(entropy_bar(6.5).style)


def test_top_empty_and_no_sensor(tmp_path: Path) -> None:
    con = Console(record=True, width=120)
    con.print(render_top({"host": "h", "window_seconds": 5, "top": []}))
    assert "(no egress, connects or execs in the last window)" in con.export_text()
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[sensor]\ncontrol_socket = "{tmp_path / "x.sock"}"\n')
    r = runner.invoke(app, ["top", "--once", "-c", str(cfg)])
    assert r.exit_code != 0 and "no sensor is running" in r.output


def test_marks_follow_a_sensor_restart(sensor) -> None:
    fake, cfg = sensor
    fake.add(alert(A, "a", "SL-EXF-001", time.time()))
    fake.add(alert(A, "a", "SL-EXF-004", time.time()))
    sock = cfg.replace("sluice.toml", "run/sluice.sock")
    m = Marks()
    m.poll(sock)
    assert m.seq == 2 and m.open_alert(A[:12], time.time()) == "SL-EXF-004"
    fake.base = 2  # restarted: numbering starts again
    fake.add(alert(B, "b", "SL-C2-003", time.time()))
    m.poll(sock)
    assert m.seq == 1 and m.open_alert(B[:12], time.time()) == "SL-C2-003"


# --- alerts ----------------------------------------------------------------------------------


def test_alerts_compact_lines(sensor) -> None:
    fake, cfg = sensor
    now = time.time()
    fake.add(alert(A, "exfil-test", "SL-EXF-001", now - 7200, sev=80))
    fake.add(alert(B, EVIL_NAME, "SL-C2-001", now - 60, sev=55, workload=EVIL_IMAGE))
    r = runner.invoke(app, ["alerts", "-c", cfg])
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert len(lines) == 2
    assert lines[0].split()[2:5] == ["CRIT", "SL-EXF-001", "exfil-test"]  # date and time: not a terminal
    assert lines[1].split()[2:4] == ["MED", "SL-C2-001"]
    assert not CONTROL.search(r.output.replace("\n", "")) and "\x1b" not in r.output
    assert "\\x1b]0;PWNED\\x07" in lines[1]
    # --since drops the older one
    r = runner.invoke(app, ["alerts", "--since", "30m", "-c", cfg])
    assert [ln.split()[3] for ln in r.output.splitlines()] == ["SL-C2-001"]


def test_alerts_json_is_ascii_and_whole(sensor) -> None:
    fake, cfg = sensor
    fake.add(alert(B, EVIL_NAME, "SL-C2-001", time.time()))
    r = runner.invoke(app, ["alerts", "--json", "-c", cfg])
    assert r.exit_code == 0
    assert r.output.isascii() and not CONTROL.search(r.output.replace("\n", ""))
    assert json.loads(r.output)["container"]["name"] == EVIL_NAME


def test_alerts_bad_since(sensor) -> None:
    _, cfg = sensor
    r = runner.invoke(app, ["alerts", "--since", "yesterday", "-c", cfg])
    assert r.exit_code != 0 and "not a duration" in r.output


def test_parse_duration() -> None:
    assert [alerts_cmd.parse_duration(x) for x in ("90", "90s", "15m", "2h", "1d", "1.5h")] == [
        90,
        90,
        900,
        7200,
        86400,
        5400,
    ]


def test_alerts_follow_prints_new_ones_and_survives_a_restart(sensor, monkeypatch: pytest.MonkeyPatch) -> None:
    fake, cfg = sensor
    fake.add(alert(A, "first", "SL-EXF-001", time.time()))

    def restart() -> None:
        fake.base = 2
        fake.add(alert(A, "after-restart", "SL-C2-002", time.time()))

    steps = iter(
        [
            lambda: fake.add(alert(A, "second", "SL-EXF-004", time.time())),
            lambda: None,
            restart,
        ]
    )

    def fake_sleep(_s: float) -> None:
        step = next(steps, None)
        if step is None:
            raise KeyboardInterrupt
        step()

    monkeypatch.setattr("control.commands.alerts.time.sleep", fake_sleep)
    r = runner.invoke(app, ["alerts", "--follow", "-c", cfg])
    assert r.exit_code == 0, r.output
    assert [ln.split()[4] for ln in r.output.splitlines()] == ["first", "second", "after-restart"]


# --- a real terminal: tmux ----------------------------------------------------------------------


def _tmux(sock: str, *args: str) -> str:
    return subprocess.run(["tmux", "-S", sock, *args], capture_output=True, text=True, check=True).stdout


@pytest.mark.skipif(shutil.which("tmux") is None and os.environ.get("CI") != "true", reason="tmux not installed")
def test_top_and_alerts_in_a_real_terminal(sensor, tmp_path: Path) -> None:
    """`sluice top` and `sluice alerts` in a tmux pane: what the screen shows,
    and that no hostile OSC reached the terminal (the pane title is ours)."""
    fake, cfg = sensor
    fake.add(alert(B, EVIL_NAME, "SL-C2-001", time.time()))
    sluice = str(Path(sys.executable).parent / "sluice")
    sock = str(tmp_path / "tmux.sock")
    env = {"TERM": "xterm-256color", "LANG": "C.UTF-8"}
    _tmux(sock, "-f", "/dev/null", "new-session", "-d", "-x", "220", "-y", "30", "-s", "t")
    try:
        _tmux(sock, "set-option", "-g", "allow-rename", "on")
        _tmux(sock, "select-pane", "-t", "t", "-T", "clean-title")
        shell = " ".join(f"{k}={v}" for k, v in env.items())
        _tmux(sock, "send-keys", "-t", "t", f"{shell} {sluice} top -n 0.5 -c {cfg}", "Enter")
        screen = ""
        for _ in range(100):
            time.sleep(0.1)
            screen = _tmux(sock, "capture-pane", "-p", "-t", "t")
            if "exfil-test" in screen:
                break
        assert "sluice top" in screen and "exfil-test" in screen, screen
        row = next(ln for ln in screen.splitlines() if "b1b1b1b1b1b1" in ln)
        assert "SL-C2-001" in row and "ISOLATED" in row
        assert "\\x1b]0;PWNED\\x07ev" in screen
        assert _tmux(sock, "display-message", "-p", "-t", "t", "#{pane_title}").strip() == "clean-title"
        _tmux(sock, "send-keys", "-t", "t", "C-c", "")
        time.sleep(0.5)
        _tmux(sock, "send-keys", "-t", "t", f"clear; {shell} {sluice} alerts -c {cfg}", "Enter")
        for _ in range(50):
            time.sleep(0.1)
            screen = _tmux(sock, "capture-pane", "-p", "-t", "t")
            if "SL-C2-001" in screen:
                break
        line = next(ln for ln in screen.splitlines() if "SL-C2-001" in ln)
        assert re.match(r"^\d\d:\d\d:\d\d CRIT SL-C2-001 ", line), line  # a terminal: time only
        assert "\\x1b]0;PWNED\\x07ev" in line
        assert _tmux(sock, "display-message", "-p", "-t", "t", "#{pane_title}").strip() == "clean-title"
        # colour reached the terminal: tmux keeps it with -e
        coloured = _tmux(sock, "capture-pane", "-p", "-e", "-t", "t")
        assert "\x1b[" in coloured
    finally:
        subprocess.run(["tmux", "-S", sock, "kill-server"], capture_output=True)


# --- containment -----------------------------------------------------------------------------


def _entry(cid: str, name: str, state: str, dropped: int) -> dict[str, Any]:
    gone = " (gone; its cgroups stay contained)" if state == "lingering" else ""
    return {
        "kind": "isolate",
        "container_id": cid,
        "container_name": name,
        "destination": None,
        "since": time.time() - 60,
        "reason": "SL-EXF-002\x1b[2J",
        "dropped": dropped,
        "description": f"isolate {name}{gone}",
        "state": state,
    }


def test_containment_lists_what_gone_containers_left(sensor) -> None:
    fake, cfg = sensor
    r = runner.invoke(app, ["containment", "-c", cfg])
    assert r.exit_code == 0 and r.output.strip() == "nothing is contained", r.output
    fake.contained = {"entries": [], "lingering": [_entry(B, EVIL_NAME, "lingering", 12)]}
    r = runner.invoke(app, ["containment", "-c", cfg])
    assert r.exit_code == 0, r.output
    assert not CONTROL.search(r.output.replace("\n", "")), repr(r.output)
    lines = r.output.splitlines()
    assert lines[0] == "nothing is contained but what gone containers left (below)"
    assert lines[1].startswith("gone containers whose cgroups stay contained")
    assert "(gone; its cgroups stay contained)" in lines[2] and "dropped 12 packets" in lines[2]
    fake.contained["entries"] = [_entry(A, "web", "active", 3)]
    lines = runner.invoke(app, ["containment", "-c", cfg]).output.splitlines()
    assert lines[0].startswith("isolate web ") and "dropped 3 packets" in lines[0]
    r = runner.invoke(app, ["containment", "--json", "-c", cfg])
    states = [json.loads(x)["state"] for x in r.output.splitlines()]
    assert states == ["active", "lingering"]
