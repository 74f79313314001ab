"""`sluice status`: the running sensor's state."""

from __future__ import annotations

import json
from typing import Any

import typer

from sensor.errors import SluiceError

from ..client import request
from ._common import ConfigOpt, control_socket, fail


def _compile(s: dict[str, Any]) -> str:
    c = s.get("bpf_compile") or {}
    if not c.get("seconds"):
        return ""
    return f" (BPF compile {c['seconds']:.1f}s{', begun before the CLI loaded' if c.get('early') else ''})"


def _fmt_status(s: dict[str, Any]) -> str:
    state = "ready" if s.get("ready") else ("stalled" if s.get("status") == "stalled" else "starting")
    lines = [
        f"sluice {state}  pid {s.get('pid')}  host {s.get('host')}  "
        f"uptime {s.get('uptime_seconds', 0):.0f}s  startup {s.get('startup_seconds')}s{_compile(s)}",
        f"status: {s.get('status', '?')}   output: {s.get('output')}   events: {s.get('events')}   "
        f"window: {s.get('window_seconds')}s",
        *([f"not ready: {s['not_ready']}"] if s.get("not_ready") else []),
        "hooks:",
    ]
    for k, v in sorted(s.get("hooks", {}).items()):
        lines.append(f"  {k:<28} {v}")
    c = s.get("counters", {})
    lines.append(
        "counters: "
        + ", ".join(
            f"{k}={c[k]}"
            for k in ("events", "exec", "connect", "sample", "cgroup", "windows", "output_lines")
            if k in c
        )
    )
    d = s.get("drops", {})
    lines.append(
        f"drops: total={d.get('total', 0)} " + ", ".join(f"{k}={v}" for k, v in d.items() if v and k != "total")
    )
    rt = s.get("runtime", {})
    line = f"runtime: docker {rt.get('status')} ({rt.get('docker_socket')}); containers tracked: {s.get('containers_tracked')}"
    if rt.get("lookup_failures") or rt.get("containers_without_metadata"):
        line += (
            f"; metadata lookups failed: {rt.get('lookup_failures', 0)} of {rt.get('lookups', 0)}, "
            f"containers known by id only: {rt.get('containers_without_metadata', 0)}"
        )
    lines.append(line)
    cont = s.get("containment", {})
    if cont.get("entries") or cont.get("lingering") or cont.get("problem"):
        n, gone = len(cont.get("entries", [])), len(cont.get("lingering", []))
        lines.append(
            f"containment: {n} entr{'y' if n == 1 else 'ies'}, "
            f"{sum(e.get('dropped', 0) for e in cont.get('entries', []))} packets dropped"
            + (f", {gone} of gone containers still applied" if gone else "")
            + " (`sluice containment`)"
            + (f"; {cont['problem']}" if cont.get("problem") else "")
        )
    if s.get("bpf_programs"):
        from sensor.kernel.progstats import format_lines

        lines.extend(format_lines(s["bpf_programs"]))
    return "\n".join(lines)


def status(
    config: str | None = ConfigOpt,
    as_json: bool = typer.Option(False, "--json", help="Print the raw status object."),
) -> None:
    """Ask the running sensor for its state; exit 0 only if it is ready."""
    try:
        s = request(control_socket(config), "status")
    except SluiceError as e:
        fail(e)
    typer.echo(json.dumps(s, indent=2, default=str) if as_json else _fmt_status(s))
    if not s.get("ready"):
        raise typer.Exit(1)
