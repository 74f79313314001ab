"""`sluice alerts`: the running sensor's recent alerts, readable or JSON."""

from __future__ import annotations

import datetime as _dt
import json
import re
import sys
import time
from typing import Any

import typer

from sensor.errors import SluiceError
from sensor.outputs import compact

from ..client import request
from ..ui import color_ok, is_tty
from ._common import ConfigOpt, control_socket, fail

# "90", "90s", "15m", "2h", "1d": three lines, not worth a dependency
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_UNIT = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    m = _DURATION.match(text)
    if not m:
        raise SluiceError(f"--since {text!r}: not a duration", hint="e.g. 90s, 15m, 2h, 1d")
    return float(m.group(1)) * _UNIT[m.group(2)]


def _epoch(doc: dict[str, Any]) -> float:
    try:
        return _dt.datetime.fromisoformat(str(doc.get("@timestamp"))).timestamp()
    except ValueError:
        return 0.0


def alerts(
    config: str | None = ConfigOpt,
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing new alerts until Ctrl-C."),
    since: str | None = typer.Option(
        None, "--since", help="Only alerts from the last DURATION (90s, 15m, 2h, 1d); default: all the sensor keeps."
    ),
    as_json: bool = typer.Option(False, "--json", help="One ECS document per line, as the sensor emitted it."),
    interval: float = typer.Option(1.0, "--interval", "-n", min=0.1, help="Seconds between polls with --follow."),
) -> None:
    """The running sensor's recent alerts (it keeps the last 1000), one line
    each: time, severity, rule, container (workload), message."""
    path = control_socket(config)
    try:
        cutoff = time.time() - parse_duration(since) if since else None
    except SluiceError as e:
        fail(e)
    color, date = color_ok(), not is_tty()
    seq = 0
    try:
        while True:
            r = request(path, "alerts", since=seq)
            if r["last"] < seq:  # the sensor restarted: its numbering too
                seq = 0
                continue
            seq = r["last"]
            for doc in r["alerts"]:
                if cutoff is not None and _epoch(doc) < cutoff:
                    continue
                # ASCII JSON: no control character (C1 included) reaches a terminal raw
                line = json.dumps(doc, separators=(",", ":"), ensure_ascii=True) if as_json else None
                sys.stdout.write((line or compact.render(doc, color=color, date=date)) + "\n")
            sys.stdout.flush()
            if not follow:
                return
            time.sleep(interval)
    except SluiceError as e:
        fail(e)
    except KeyboardInterrupt:
        return
    except BrokenPipeError:  # `sluice alerts | head`
        return
