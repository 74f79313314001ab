"""What every command shares: option declarations, config loading, errors,
the control-socket request."""

from __future__ import annotations

from typing import Any, NoReturn

import typer

from sensor.config import OUTPUT_FORMATS, Config, default_config, load_config
from sensor.errors import SluiceError

from ..client import request


def fail(e: SluiceError) -> NoReturn:
    typer.echo(f"sluice: error: {e}", err=True)
    raise typer.Exit(e.exit_code)


def control_socket(config: str | None) -> str:
    try:
        return (load_config(config) if config else default_config()).sensor.control_socket
    except SluiceError as e:
        fail(e)


def ask(config: str | None, cmd: str, **args: Any) -> dict[str, Any]:
    try:
        return request(control_socket(config), cmd, timeout=10.0, **args)
    except SluiceError as e:
        fail(e)


ConfigOpt = typer.Option(None, "--config", "-c", help="TOML config file (defaults are embedded).")


OutputOpt = typer.Option(
    None, "--output", "-o", help="Append JSON lines to this file (reopened on SIGHUP); default stdout."
)
EventsOpt = typer.Option(
    False,
    "--events",
    help="Emit telemetry (exec, connect, flow and container summaries, container start/stop), not only alerts and health.",
)


FormatOpt = typer.Option(
    None,
    "--format",
    help="ecs, ocsf, compact (one readable line per document) or auto: compact when stdout is a terminal, "
    "else ecs (the default).",
)
MetricsOpt = typer.Option(None, "--metrics", help="Serve Prometheus metrics on host:port, e.g. 0.0.0.0:9464.")


def run_config(
    config: str | None,
    output: str | None,
    events: bool,
    fmt: str | None = None,
    metrics: str | None = None,
) -> Config:
    cfg = load_config(config)
    if output is not None:
        cfg = cfg.replace("output", path=output)
    if events:
        cfg = cfg.replace("output", events=True)
    if fmt is not None:
        if fmt not in OUTPUT_FORMATS:
            raise SluiceError(f"--format {fmt!r}: must be one of {', '.join(OUTPUT_FORMATS)}")
        cfg = cfg.replace("output", format=fmt)
    if metrics is not None:
        host, sep, port = metrics.rpartition(":")
        if not sep or not port.isdigit():
            raise SluiceError(f"--metrics {metrics!r}: must be host:port, e.g. 0.0.0.0:9464")
        cfg = cfg.replace("output", metrics=metrics)
    return cfg
