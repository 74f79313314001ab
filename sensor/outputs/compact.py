"""The compact output format: one readable line per document, for people.

    22:18:40 HIGH SL-C2-001  web-1 (shop/web)  Container web-1 (shop/web) connected to ...
    22:18:41 info flow       web-1 (shop/web)  curl -> 198.18.0.1:443/tcp 1.2 MiB in 900 pkts, entropy 7.98, tls
    22:18:50 ok   health     -                 sluice health: ok

Time (local), severity, rule id (alerts) or event action, container name
and workload, then the alert's message or a summary of the telemetry or
health document. Every value that came from a container goes through
terminal.safe(). The machine formats (ECS, OCSF) stay JSON; this one is
chosen by `--format compact`, or by default when stdout is a terminal.
"""

from __future__ import annotations

import datetime as _dt
from typing import Any

from sensor.outputs.terminal import safe

# SGR colours by hand: a few fixed codes on the output thread's path.
# Rendering each line through rich costs about 145 us against 10 us for
# render() (and 12 us for the JSON line) on the build machine; everything
# container-controlled is escaped before it is placed between them.
RESET = "\x1b[0m"
STYLE = {
    "CRIT": "\x1b[1;97;41m",  # bold white on red
    "HIGH": "\x1b[1;31m",  # bold red
    "MED": "\x1b[33m",  # yellow
    "LOW": "\x1b[36m",  # cyan
    "WARN": "\x1b[1;33m",  # bold yellow
    "RESP": "\x1b[1;35m",  # bold magenta
    "ok": "\x1b[32m",  # green
    "info": "\x1b[2m",  # dim
}
DIM = "\x1b[2m"
BOLD = "\x1b[1m"

SHORT_ACTION = {
    "connection_attempted": "connect",
    "flow_summary": "flow",
    "container_summary": "summary",
    "container_start": "start",
    "container_stop": "stop",
    "sensor_start": "started",
    "sensor_health": "health",
    "sensor_stop": "stopped",
    "runtime_status": "runtime",
    "container_isolated": "isolated",
    "destination_blocked": "blocked",
    "containment_released": "released",
}


def severity_label(score: int) -> str:
    """Alert severity 0-100 as a word (same steps as the syslog severity)."""
    return "CRIT" if score >= 80 else "HIGH" if score >= 60 else "MED" if score >= 40 else "LOW"


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"  # pragma: no cover


def _seconds(ns: int | float) -> str:
    s = ns / 1e9
    return f"{s * 1000:.0f} ms" if s < 1 else f"{s:.1f} s"


def when(doc: dict[str, Any], date: bool = False) -> str:
    ts = doc.get("@timestamp")
    try:
        t = _dt.datetime.fromisoformat(str(ts)).astimezone()
    except ValueError:
        return safe(ts, 24)
    return t.strftime("%Y-%m-%d %H:%M:%S" if date else "%H:%M:%S")


def who(doc: dict[str, Any]) -> str:
    """Container name (or short id) and workload; host; or - (the sensor)."""
    c = doc.get("container") or {}
    sl = doc.get("sluice") or {}
    workload = sl.get("workload")
    if c:
        name = safe(c.get("name") or str(c.get("id", ""))[:12], 40)
        return f"{name} ({safe(workload, 48)})" if workload and workload != c.get("name") else name
    if sl.get("attribution") == "host" or workload:
        return "host" if not workload or workload == "host" else f"host ({safe(workload, 48)})"
    return "-"


def _proc(doc: dict[str, Any]) -> str:
    p = doc.get("process") or {}
    return safe(p.get("name") or p.get("executable") or (f"pid {p['pid']}" if "pid" in p else "?"), 32)


def _dest(doc: dict[str, Any]) -> str:
    d = doc.get("destination") or {}
    n = doc.get("network") or {}
    ip = str(d.get("ip", "?"))
    host = f"[{ip}]" if ":" in ip else ip
    port = f":{d['port']}" if "port" in d else ""
    tr = f"/{n['transport']}" if n.get("transport") else ""
    return safe(f"{host}{port}{tr}", 80)


def summary(doc: dict[str, Any]) -> str:
    """What a document says, in one line (unescaped parts are ours)."""
    if doc.get("message"):
        return safe(doc["message"], 400)
    ev = doc.get("event") or {}
    action = ev.get("action", "")
    sl = doc.get("sluice") or {}
    if action == "exec":
        p = doc.get("process") or {}
        cmd = p.get("command_line") or p.get("executable") or p.get("name", "?")
        return f"ran {safe(cmd, 200)}"
    if action == "exit":
        dur = ev.get("duration")
        return f"{_proc(doc)} exited" + (f" after {_seconds(dur)}" if isinstance(dur, int | float) else "")
    if action in ("connection_attempted", "udp_send"):
        verb = "connect" if action == "connection_attempted" else "udp send"
        return f"{_proc(doc)} {verb} -> {_dest(doc)}"
    if action == "flow_summary":
        src = doc.get("source") or {}
        pay = sl.get("payload") or {}
        parts = [f"{_proc(doc)} -> {_dest(doc)} {human_bytes(src.get('bytes', 0))} in {src.get('packets', 0)} pkts"]
        if pay.get("entropy") is not None:
            parts.append(f"entropy {pay['entropy']:.2f}")
        proto = (doc.get("network") or {}).get("protocol")
        if proto:
            parts.append(safe(proto, 16))
        return ", ".join(parts)
    if action == "container_summary":
        src = doc.get("source") or {}
        w = sl.get("window") or {}
        pay = sl.get("payload") or {}
        s = (
            f"{human_bytes(src.get('bytes', 0))} egress, {w.get('flows', 0)} flows to "
            f"{w.get('destinations', 0)} destinations, {w.get('connections', 0)} connects, {w.get('execs', 0)} execs"
        )
        if pay.get("entropy") is not None:
            s += f", entropy {pay['entropy']:.2f}"
        return s
    if action == "container_start":
        img = ((doc.get("container") or {}).get("image") or {}).get("name")
        return "container started" + (f" ({safe(img, 80)})" if img else "")
    if action == "container_stop":
        life = (sl.get("container") or {}).get("lifetime_seconds")
        return "container stopped" + (f" after {life:.1f} s" if isinstance(life, int | float) else "")
    return safe(action or ev.get("dataset") or "event", 64)


def level(doc: dict[str, Any]) -> str:
    ev = doc.get("event") or {}
    if ev.get("kind") == "alert":
        return severity_label(int(ev.get("severity", 0)))
    if ev.get("dataset") == "sluice.response":
        return "RESP"
    health = (doc.get("sluice") or {}).get("health")
    if health is not None:
        return "ok" if health.get("status") == "ok" else "WARN"
    return "info"


def tag(doc: dict[str, Any]) -> str:
    ev = doc.get("event") or {}
    rule = (doc.get("rule") or {}).get("id")
    if ev.get("kind") == "alert" and rule:
        return safe(rule, 16)
    action = str(ev.get("action", ""))
    return safe(SHORT_ACTION.get(action, action), 16)


def render(doc: dict[str, Any], color: bool = False, date: bool = False) -> str:
    """One line for a document (ECS, as the sensor builds them)."""
    lv = level(doc)
    t, w, msg = when(doc, date), who(doc), summary(doc)
    if not color:
        return f"{t} {lv:<4} {tag(doc):<10} {w}  {msg}"
    alert = (doc.get("event") or {}).get("kind") == "alert"
    lv_s = f"{STYLE[lv]}{lv:<4}{RESET}"
    tag_s = f"{BOLD if alert else DIM}{tag(doc):<10}{RESET}"
    return f"{DIM}{t}{RESET} {lv_s} {tag_s} {w}  {msg}"
