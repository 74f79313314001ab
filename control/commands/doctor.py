"""`sluice doctor`: preflight checks."""

from __future__ import annotations

import json

import typer

from sensor.config import load_config
from sensor.errors import SluiceError

from ._common import ConfigOpt, fail


def doctor(
    config: str | None = ConfigOpt,
    as_json: bool = typer.Option(False, "--json", help="One JSON object per check."),
    no_load: bool = typer.Option(False, "--no-load", help="Do not load the BPF programs (faster, less certain)."),
) -> None:
    """Preflight: kernel, BTF, build tree, tracefs, cgroups, every hook, runtime
    sockets. Exits non-zero when the sensor cannot run here."""
    from sensor.ops.doctor import FAIL, as_dicts, render, run_checks, verdict

    try:
        checks = run_checks(load_config(config), load_programs=not no_load)
    except SluiceError as e:
        fail(e)
    typer.echo("\n".join(json.dumps(c) for c in as_dicts(checks)) if as_json else render(checks))
    raise typer.Exit(1 if verdict(checks) == FAIL else 0)
