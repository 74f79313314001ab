"""`sluice isolate|block|release|containment`: contain containers and destinations."""

from __future__ import annotations

import json
import time
from typing import Any

import typer

from sensor.errors import SluiceError
from sensor.outputs.terminal import safe

from ._common import ConfigOpt, ask, fail


def isolate(
    container: str = typer.Argument(..., help="Container id, id prefix or name."),
    reason: str = typer.Option("", "--reason", help="Why (kept with the entry and in the event)."),
    config: str | None = ConfigOpt,
) -> None:
    """Contain a container: drop all its egress but loopback, in the kernel,
    until `sluice release`. Works for any runtime; kept across sensor restarts."""
    typer.echo(safe(ask(config, "isolate", container=container, reason=reason)["message"]))


def block(
    destination: str = typer.Argument(..., help="IP address to block (IPv4 or IPv6)."),
    container: str | None = typer.Option(
        None, "--container", help="Only for this container (default: every container and host process)."
    ),
    reason: str = typer.Option("", "--reason", help="Why (kept with the entry and in the event)."),
    config: str | None = ConfigOpt,
) -> None:
    """Drop egress to a destination, for one container or node-wide, until `sluice release`."""
    typer.echo(safe(ask(config, "block", destination=destination, container=container, reason=reason)["message"]))


def release(
    container: str | None = typer.Argument(None, help="Container whose isolation (and blocks) to lift."),
    destination: str | None = typer.Option(
        None, "--destination", help="Lift the block of this address (node-wide, or for CONTAINER when given)."
    ),
    config: str | None = ConfigOpt,
) -> None:
    """Lift an isolation or a block."""
    if not container and not destination:
        fail(SluiceError("say which container or --destination to release", hint="`sluice containment` lists them"))
    typer.echo(safe(ask(config, "release", container=container, destination=destination)["message"]))


def containment(
    config: str | None = ConfigOpt,
    as_json: bool = typer.Option(False, "--json", help="One JSON object per entry."),
) -> None:
    """What is isolated or blocked now, since when, and the packets dropped."""
    r = ask(config, "containment")
    entries, lingering = r["entries"], r.get("lingering", [])
    if as_json:
        for e in entries + lingering:
            typer.echo(json.dumps(e))  # ASCII JSON: control characters are escaped
        return
    if not entries and not lingering:
        typer.echo("nothing is contained")
        return
    if not entries:
        typer.echo("nothing is contained but what gone containers left (below)")
    for e in entries:
        typer.echo(_line(e))
    if lingering:
        typer.echo(
            "gone containers whose cgroups stay contained (their sockets can outlive them; "
            "`sluice release ID` lets them go):"
        )
        for e in lingering:
            typer.echo("  " + _line(e))


def _line(e: dict[str, Any]) -> str:
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e["since"]))
    why = f"  reason: {safe(e['reason'])}" if e.get("reason") else ""
    return f"{safe(e['description']):<48} since {since}  dropped {e['dropped']} packets{why}"
