"""`sluice top`: live per-container egress."""

from __future__ import annotations

import sys
import time
from typing import Any

import typer

from sensor.errors import SluiceError

from ..client import request
from ._common import ConfigOpt, control_socket, fail


def _fmt_rate(b: float) -> str:
    for unit in ("B/s", "KiB/s", "MiB/s", "GiB/s"):
        if b < 1024:
            return f"{b:7.1f} {unit}"
        b /= 1024
    return f"{b:7.1f} TiB/s"


def render_top(s: dict[str, Any]) -> str:
    rows = s.get("top", [])
    head = f"{'CONTAINER':<13} {'NAME':<20} {'IMAGE':<22} {'EGRESS':>13} {'ENTROPY':>7} {'CONN':>5} {'EXEC':>5}  DESTINATIONS"
    out = [f"sluice top  host {s.get('host')}  window {s.get('window_seconds')}s  (last completed window)", head]
    for r in rows:
        ent = f"{r['entropy']:.2f}" if r.get("entropy") is not None else "-"
        dests = ", ".join(r.get("destinations", []))
        if r.get("n_destinations", 0) > len(r.get("destinations", [])):
            dests += f" (+{r['n_destinations'] - len(r['destinations'])})"
        out.append(
            f"{r['container']:<13} {r['name'][:20]:<20} {r['image'][:22]:<22} {_fmt_rate(r['bytes_per_s']):>13} "
            f"{ent:>7} {r['connects']:>5} {r['execs']:>5}  {dests}"
        )
    if not rows:
        out.append("(no egress, connects or execs in the last window)")
    return "\n".join(out)


def top(
    config: str | None = ConfigOpt,
    interval: float = typer.Option(2.0, "--interval", "-n", help="Seconds between refreshes."),
    once: bool = typer.Option(False, "--once", help="Print one table and exit."),
) -> None:
    """Live per-container table: egress bytes/s, entropy, destinations."""
    path = control_socket(config)
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
        fail(e)
    except KeyboardInterrupt:
        return
