"""`sluice`: run the sensor, ask it for its status, watch it."""

from __future__ import annotations

import json
import sys
import time
from typing import Any, Optional

import typer

from sensor import __version__
from sensor.config import default_config, load_config
from sensor.errors import SluiceError

from .client import request

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Sluice: an eBPF sensor for data leaving containers.")


def _fail(e: SluiceError) -> None:
    typer.echo(f"sluice: error: {e}", err=True)
    raise typer.Exit(e.exit_code)


def _socket(config: Optional[str]) -> str:
    try:
        return (load_config(config) if config else default_config()).sensor.control_socket
    except SluiceError as e:
        _fail(e)
        raise  # unreachable


ConfigOpt = typer.Option(None, "--config", "-c", help="TOML config file (defaults are embedded).")


@app.command()
def run(
    config: Optional[str] = ConfigOpt,
    output: Optional[str] = typer.Option(None, "--output", "-o", help="Append JSON lines to this file (reopened on SIGHUP); default stdout."),
    events: bool = typer.Option(False, "--events", help="Emit telemetry (exec, connect, flow and container summaries, container start/stop), not only alerts and health."),
) -> None:
    """Run the sensor in the foreground until SIGINT or SIGTERM."""
    from sensor.runner import Sensor
    try:
        cfg = load_config(config)
        if output is not None:
            cfg = cfg.replace("output", path=output)
        if events:
            cfg = cfg.replace("output", events=True)
        code = Sensor(cfg).run()
    except SluiceError as e:
        _fail(e)
        return
    raise typer.Exit(code)


def _fmt_status(s: dict[str, Any]) -> str:
    lines = [
        f"sluice {'ready' if s.get('ready') else 'starting'}  pid {s.get('pid')}  host {s.get('host')}  "
        f"uptime {s.get('uptime_seconds', 0):.0f}s  startup {s.get('startup_seconds')}s",
        f"status: {s.get('status', '?')}   output: {s.get('output')}   events: {s.get('events')}   "
        f"window: {s.get('window_seconds')}s",
        "hooks:",
    ]
    for k, v in sorted(s.get("hooks", {}).items()):
        lines.append(f"  {k:<28} {v}")
    c = s.get("counters", {})
    lines.append("counters: " + ", ".join(f"{k}={c[k]}" for k in ("events", "exec", "connect", "sample", "cgroup", "windows", "output_lines") if k in c))
    d = s.get("drops", {})
    lines.append(f"drops: total={d.get('total', 0)} " + ", ".join(f"{k}={v}" for k, v in d.items() if v and k != "total"))
    rt = s.get("runtime", {})
    lines.append(f"runtime: docker {rt.get('status')} ({rt.get('docker_socket')}); containers tracked: {s.get('containers_tracked')}")
    return "\n".join(lines)


@app.command()
def status(
    config: Optional[str] = ConfigOpt,
    as_json: bool = typer.Option(False, "--json", help="Print the raw status object."),
) -> None:
    """Ask the running sensor for its state; exit 0 only if it is ready."""
    try:
        s = request(_socket(config), "status")
    except SluiceError as e:
        _fail(e)
        return
    typer.echo(json.dumps(s, indent=2, default=str) if as_json else _fmt_status(s))
    if not s.get("ready"):
        raise typer.Exit(1)


def _fmt_rate(b: float) -> str:
    for unit in ("B/s", "KiB/s", "MiB/s", "GiB/s"):
        if b < 1024:
            return f"{b:7.1f} {unit}"
        b /= 1024
    return f"{b:7.1f} TiB/s"


def render_top(s: dict[str, Any]) -> str:
    rows = s.get("top", [])
    head = f"{'CONTAINER':<13} {'NAME':<20} {'IMAGE':<22} {'EGRESS':>13} {'ENTROPY':>7} {'CONN':>5} {'EXEC':>5}  DESTINATIONS"
    out = [f"sluice top  host {s.get('host')}  window {s.get('window_seconds')}s  "
           f"(last completed window)", head]
    for r in rows:
        ent = f"{r['entropy']:.2f}" if r.get("entropy") is not None else "-"
        dests = ", ".join(r.get("destinations", []))
        if r.get("n_destinations", 0) > len(r.get("destinations", [])):
            dests += f" (+{r['n_destinations'] - len(r['destinations'])})"
        out.append(f"{r['container']:<13} {r['name'][:20]:<20} {r['image'][:22]:<22} {_fmt_rate(r['bytes_per_s']):>13} "
                   f"{ent:>7} {r['connects']:>5} {r['execs']:>5}  {dests}")
    if not rows:
        out.append("(no egress, connects or execs in the last window)")
    return "\n".join(out)


@app.command()
def top(
    config: Optional[str] = ConfigOpt,
    interval: float = typer.Option(2.0, "--interval", "-n", help="Seconds between refreshes."),
    once: bool = typer.Option(False, "--once", help="Print one table and exit."),
) -> None:
    """Live per-container table: egress bytes/s, entropy, destinations."""
    path = _socket(config)
    try:
        while True:
            table = render_top(request(path, "top"))
            if once:
                typer.echo(table)
                return
            sys.stdout.write("\x1b[H\x1b[2J" + table + "\n")
            sys.stdout.flush()
            time.sleep(interval)
    except SluiceError as e:
        _fail(e)
    except KeyboardInterrupt:
        return


@app.command()
def version() -> None:
    """Print the version."""
    typer.echo(f"sluice {__version__}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
