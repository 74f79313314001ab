"""`sluice baseline show`: all workloads in a table, or one workload in
detail (learned destinations, executables and peers, histograms of bytes
per window with the thresholds each rule would apply)."""

from __future__ import annotations

import fnmatch
import time

from rich import box
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from sensor.config import Config
from sensor.detect.baseline import Baseline, LogHist, WorkloadBaseline
from sensor.detect.rules import c2003_inter_container as c2003
from sensor.detect.rules import exf001_volume_spike as exf001
from sensor.detect.rules import exf002_nonstandard_port as exf002
from sensor.detect.rules import exf004_new_destination as exf004
from sensor.detect.rules import exf005_short_lived_container as exf005
from sensor.detect.rules import exf006_encrypt_then_egress as exf006
from sensor.detect.rules.exf001_volume_spike import volume_threshold

from .ui import size, text

BAR = 28  # histogram bar width, characters


def hours_strip(hours: list[int]) -> Text:
    """24 cells, hour 0 first: # active, . never seen."""
    t = Text()
    for n in hours:
        t.append("#" if n else ".", style="green" if n else "dim")
    return t


def _q(h: LogHist, x: float) -> str:
    return size(h.quantile(x)) if h.n else "-"


def table(b: Baseline, path: str, cfg: Config, pattern: str = "*") -> Group:
    title = Text.assemble(
        (f"{len(b.workloads)} workloads", "bold"),
        "  ",
        text(path),
        f"  window {b.window_seconds:g}s  nodes: ",
        text(", ".join(sorted(b.nodes)) or "-"),
    )
    t = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, header_style="bold")
    for name, kw in (
        ("WORKLOAD", {"overflow": "fold", "max_width": 48}),
        ("WINDOWS", {"justify": "right"}),
        ("EGRESS p50", {"justify": "right"}),
        ("p99", {"justify": "right"}),
        ("ENCRYPTED p99", {"justify": "right"}),
        ("EXF-001 AT", {"justify": "right"}),
        ("DESTS", {"justify": "right"}),
        ("EXECS", {"justify": "right"}),
        ("PEERS", {"justify": "right"}),
        ("LIFETIME p50", {"justify": "right"}),
        ("HOURS 0-23", {"no_wrap": True}),
    ):
        t.add_column(name, **kw)
    v1 = cfg.rule("SL-EXF-001", exf001.Settings)
    for name in sorted(b.workloads):
        if not fnmatch.fnmatchcase(name, pattern):
            continue
        w = b.workloads[name]
        at, _base = volume_threshold(w, v1)
        t.add_row(
            text(name, 200),
            str(w.windows),
            _q(w.egress_bytes, 0.5),
            _q(w.egress_bytes, 0.99),
            _q(w.encrypted_bytes, 0.99),
            size(at),
            str(len(w.destinations)),
            str(len(w.executables)),
            str(len(w.peers)),
            f"{w.lifetimes.quantile(0.5):.1f}s" if w.lifetimes.n else "-",
            hours_strip(w.hours),
        )
    return Group(title, t)


MAX_ROWS = 12


def _groups(h: LogHist, per: int | None = None) -> list[tuple[float, float, int]]:
    """The quarter-octave bins merged `per` at a time: (low, high, count).
    Without `per`, the finest of quarter, half or whole octaves that fits
    in MAX_ROWS rows."""
    if not h.n:
        return []
    if per is None:
        span = max(h.bins) - min(h.bins) + 1
        per = next((p for p in (1, 2) if span // p + 1 <= MAX_ROWS), 4)
    out: dict[int, int] = {}
    for b, c in h.bins.items():
        out[(b + per - 1) // per] = out.get((b + per - 1) // per, 0) + c
    lo, hi = min(out), max(out)
    return [
        (LogHist.upper((g - 1) * per) if g > 0 else 0.0, LogHist.upper(g * per), out.get(g, 0))
        for g in range(lo, hi + 1)
    ]


def histogram(title: str, h: LogHist, marks: list[tuple[float, str]]) -> Group:
    """Bytes per window, one row per octave, with threshold lines where they fall."""
    head = Text(f"{title}  ({h.n} windows)", style="bold")
    rows = _groups(h)
    if not rows:
        return Group(head, Text("  (nothing learned)", style="dim"))
    top = max(c for _lo, _hi, c in rows) or 1
    lines: list[RenderableType] = [head]
    pending = sorted(marks)
    for lo, hi, c in rows:
        while pending and pending[0][0] <= lo:
            v, label = pending.pop(0)
            lines.append(Text(f"  {'':>12}  \u2500\u2500 {label}: {size(v)}", style="bold yellow"))
        n = round(c / top * BAR)
        line = Text(f"  {'<= ' + size(hi):>12}  ")
        line.append("\u2588" * n, style="cyan")
        line.append(" " * (BAR - n) + f" {c}")
        lines.append(line)
    for v, label in pending:
        lines.append(Text(f"  {'':>12}  \u2500\u2500 {label}: {size(v)}", style="bold yellow"))
    return Group(*lines)


def rule_thresholds(w: WorkloadBaseline, cfg: Config) -> list[tuple[str, str]]:
    """What each byte-counting rule would need to see from this workload."""
    v1 = cfg.rule("SL-EXF-001", exf001.Settings)
    v2 = cfg.rule("SL-EXF-002", exf002.Settings)
    v4 = cfg.rule("SL-EXF-004", exf004.Settings)
    v5 = cfg.rule("SL-EXF-005", exf005.Settings)
    v6 = cfg.rule("SL-EXF-006", exf006.Settings)
    c3 = cfg.rule("SL-C2-003", c2003.Settings)
    at, base = volume_threshold(w, v1)
    life = f" (this workload's median lifetime {w.lifetimes.quantile(0.5):.1f} s)" if w.lifetimes.n else ""
    out = [
        (
            "SL-EXF-001",
            v1.enabled,
            f"more than {size(at)} encrypted in one window ({v1.multiplier:g} x p{int(v1.quantile * 100)} "
            f"{size(base)}, at least {size(v1.min_bytes)})",
        ),
        ("SL-EXF-004", v4.enabled, f"{size(v4.min_bytes)} encrypted to a destination not listed below"),
        (
            "SL-EXF-002",
            v2.enabled,
            f"{size(v2.min_bytes)} over TLS/SSH on a non-standard port, or a raw encrypted stream, "
            "to a destination not listed below",
        ),
        (
            "SL-EXF-005",
            v5.enabled,
            f"{size(v5.min_bytes)} encrypted from a container living under {v5.max_lifetime_seconds:g} s{life}",
        ),
        ("SL-EXF-006", v6.enabled, f"{size(v6.min_bytes)} out within {v6.within_seconds:g} s of an encryption tool"),
        ("SL-C2-003", c3.enabled, f"{size(c3.min_bytes)} to a peer workload not listed below"),
    ]
    return [(rid, why) for rid, on, why in out if on]


def _dest_label(key: str) -> tuple[str, str, str]:
    ip, port, transport = (key.split("|") + ["", ""])[:3]
    return ip, port, transport


def detail(b: Baseline, name: str, cfg: Config, limit: int = 25) -> Group:
    w = b.workloads[name]
    when = (
        f"first seen {time.strftime('%Y-%m-%d %H:%M', time.localtime(w.first_seen))}, "
        f"last {time.strftime('%Y-%m-%d %H:%M', time.localtime(w.last_seen))}"
        if w.first_seen
        else "never seen"
    )
    head = Text.assemble(
        ("workload ", "bold"),
        text(name, 200, "bold"),
        f"  {w.windows} windows of {b.window_seconds:g}s, {when}",
        (f"  ({w.dropped} observations not kept: tables full)" if w.dropped else ""),
    )
    parts: list[RenderableType] = [head, Text.assemble("active hours 0-23: ", hours_strip(w.hours)), Text("")]
    v1 = cfg.rule("SL-EXF-001", exf001.Settings)
    at, base = volume_threshold(w, v1)
    q = int(v1.quantile * 100)
    marks_enc = [(base, f"p{q}"), (at, "SL-EXF-001 alerts above")] if v1.enabled else []
    parts.append(histogram("encrypted bytes per window", w.encrypted_bytes, marks_enc))
    parts.append(Text(""))
    parts.append(histogram("egress bytes per window", w.egress_bytes, [(w.egress_bytes.quantile(0.99), "p99")]))
    parts.append(Text(""))
    th = Table(title=None, box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, header_style="bold")
    th.add_column("RULE", no_wrap=True)
    th.add_column("WOULD ALERT ON")
    for rid, why in rule_thresholds(w, cfg):
        th.add_row(rid, why)
    parts.append(th)
    parts.append(Text(""))

    dt = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, header_style="bold")
    for col, just in (
        ("DESTINATION", "left"),
        ("PORT", "right"),
        ("PROTO", "left"),
        ("WINDOWS", "right"),
        ("BYTES", "right"),
        ("ENCRYPTED", "right"),
        ("MAX ENTROPY", "right"),
        ("SEEN AS", "left"),
    ):
        dt.add_column(col, justify=just)  # type: ignore[arg-type]
    dests = sorted(w.destinations.items(), key=lambda kv: (-kv[1].bytes, kv[0]))
    for key, d in dests[:limit]:
        ip, port, transport = _dest_label(key)
        dt.add_row(
            text(ip, 64),
            text(port, 8),
            text(transport, 8),
            str(d.windows),
            size(d.bytes),
            size(d.encrypted_bytes),
            f"{d.max_entropy:.2f}",
            text(", ".join(sorted(d.protocols)) or "-", 64),
        )
    parts.append(Text(f"learned destinations ({len(w.destinations)})", style="bold"))
    parts.append(dt)
    if len(dests) > limit:
        parts.append(Text(f"  ... {len(dests) - limit} more (`sluice baseline export`)", style="dim"))
    for title, table_ in (("executables", w.executables), ("peer workloads", w.peers)):
        parts.append(Text(""))
        parts.append(Text(f"{title} ({len(table_)})", style="bold"))
        items = sorted(table_.items(), key=lambda kv: (-kv[1], kv[0]))
        for k, n in items[:limit]:
            parts.append(Text.assemble("  ", text(k, 200), (f"  seen {n}x", "dim")))
        if len(items) > limit:
            parts.append(Text(f"  ... {len(items) - limit} more", style="dim"))
        if not items:
            parts.append(Text("  (none)", style="dim"))
    return Group(*parts)
