"""`sluice top`: live per-container egress, on rich."""

from __future__ import annotations

import datetime as _dt
import time
from dataclasses import dataclass, field
from typing import Any

import typer
from rich import box
from rich.console import Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from sensor.errors import SluiceError

from ..client import request
from ..ui import console, rate, text
from ._common import ConfigOpt, control_socket, fail

# A container is marked while it has an alert this recent.
OPEN_ALERT_SECONDS = 900.0
ENTROPY_CELLS = 8  # one cell per bit
HIGH_ENTROPY = 7.0  # detection.high_entropy_bits default: encrypted-looking
MID_ENTROPY = 6.0


@dataclass
class Marks:
    """What top knows besides the snapshot: recent alerts per container (kept
    across refreshes, asked for incrementally) and containment."""

    seq: int = 0
    alerts: dict[str, tuple[float, str]] = field(default_factory=dict)  # container id[:12] -> (time, rule)

    def add(self, docs: list[dict[str, Any]]) -> None:
        for d in docs:
            cid = str((d.get("container") or {}).get("id", "host"))[:12] or "host"
            if (d.get("sluice") or {}).get("attribution") == "host":
                cid = "host"
            try:
                ts = _dt.datetime.fromisoformat(str(d.get("@timestamp"))).timestamp()
            except ValueError:
                ts = time.time()
            rule = str((d.get("rule") or {}).get("id", "?"))
            if ts >= self.alerts.get(cid, (0.0, ""))[0]:
                self.alerts[cid] = (ts, rule)

    def open_alert(self, cid: str, now: float) -> str | None:
        hit = self.alerts.get(cid)
        return hit[1] if hit and now - hit[0] <= OPEN_ALERT_SECONDS else None

    def poll(self, path: str) -> None:
        r = request(path, "alerts", since=self.seq)
        if r["last"] < self.seq:  # the sensor restarted
            self.seq = 0
            r = request(path, "alerts", since=0)
        self.seq = r["last"]
        self.add(r["alerts"])


def entropy_bar(bits: float | None) -> Text:
    """Bits per byte (0-8) as a bar and a number: green, yellow from 6,
    red from 7 (encrypted-looking)."""
    if bits is None:
        return Text("-".rjust(ENTROPY_CELLS + 5), style="dim")
    style = "bold red" if bits >= HIGH_ENTROPY else "yellow" if bits >= MID_ENTROPY else "green"
    full = max(0, min(ENTROPY_CELLS, round(bits / 8 * ENTROPY_CELLS)))
    t = Text("\u2588" * full, style=style)
    t.append("\u2591" * (ENTROPY_CELLS - full), style="dim")
    t.append(f" {bits:4.2f}", style=style)
    return t


def _containment_by_container(s: dict[str, Any]) -> dict[str, str]:
    out: dict[str, list[str]] = {}
    for e in (s.get("containment") or {}).get("entries", []):
        cid = str(e.get("container_id") or "")[:12]
        if not cid:
            continue
        out.setdefault(cid, []).append("ISOLATED" if e.get("kind") == "isolate" else "BLOCKED")
    return {k: "+".join(sorted(set(v))) for k, v in out.items()}


def render_top(s: dict[str, Any], marks: Marks | None = None, now: float | None = None) -> Group:
    """The table for one snapshot (`top` request), with alert and containment
    marks. Every container-controlled value goes through ui.text()."""
    now = time.time() if now is None else now
    marks = marks or Marks()
    contained = _containment_by_container(s)
    rows = sorted(s.get("top", []), key=lambda r: r.get("bytes_per_s", 0.0), reverse=True)
    node_wide = [e for e in (s.get("containment") or {}).get("entries", []) if not e.get("container_id")]
    title = Text.assemble(
        ("sluice top", "bold"),
        "  host ",
        text(s.get("host"), 64),
        f"  window {s.get('window_seconds')}s  (last completed window)  ",
        time.strftime("%H:%M:%S", time.localtime(now)),
    )
    if node_wide:
        title.append(f"  {len(node_wide)} node-wide block(s)", style="bold magenta")
    t = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, expand=False, header_style="bold")
    t.add_column("STATE", no_wrap=True)
    t.add_column("CONTAINER", no_wrap=True)
    t.add_column("NAME", no_wrap=True, max_width=24, overflow="ellipsis")
    t.add_column("IMAGE", no_wrap=True, max_width=28, overflow="ellipsis")
    t.add_column("EGRESS", justify="right", no_wrap=True)
    t.add_column("ENTROPY", no_wrap=True)
    t.add_column("CONN", justify="right")
    t.add_column("EXEC", justify="right")
    t.add_column("DESTINATIONS", overflow="fold")
    for r in rows:
        cid = str(r.get("container", ""))[:12]
        state = Text()
        rule = marks.open_alert(cid, now)
        if rule:
            state.append(rule, style="bold red")
        if cid in contained:
            if state:
                state.append(" ")
            state.append(contained[cid], style="bold magenta")
        dests = ", ".join(str(d) for d in r.get("destinations", []))
        more = r.get("n_destinations", 0) - len(r.get("destinations", []))
        if more > 0:
            dests += f" (+{more})"
        t.add_row(
            state or Text("-", style="dim"),
            text(cid, 12),
            text(r.get("name", ""), 64),
            text(r.get("image", ""), 96),
            rate(float(r.get("bytes_per_s", 0.0))),
            entropy_bar(r.get("entropy")),
            str(r.get("connects", 0)),
            str(r.get("execs", 0)),
            text(dests, 400),
        )
    if not rows:
        return Group(title, Text("(no egress, connects or execs in the last window)", style="dim"))
    return Group(title, t)


def top(
    config: str | None = ConfigOpt,
    interval: float = typer.Option(2.0, "--interval", "-n", min=0.2, help="Seconds between refreshes."),
    once: bool = typer.Option(False, "--once", help="Print one table and exit."),
) -> None:
    """Live per-container table, sorted by egress rate: entropy as a bar,
    containers with a recent alert or under containment marked."""
    path = control_socket(config)
    con = console()
    marks = Marks()

    def frame() -> Group:
        snap = request(path, "top")
        marks.poll(path)
        return render_top(snap, marks)

    try:
        if once or not con.is_terminal:  # a pipe: one table per refresh, no screen control
            while True:
                con.print(frame())
                if once:
                    return
                time.sleep(interval)
        with Live(frame(), console=con, screen=True, auto_refresh=False) as live:
            while True:
                time.sleep(interval)
                live.update(frame(), refresh=True)
    except SluiceError as e:
        fail(e)
    except KeyboardInterrupt:
        return
