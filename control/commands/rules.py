"""`sluice rules`: the detection rules and their settings."""

from __future__ import annotations

import typer

from sensor.config import load_config
from sensor.errors import SluiceError

from ._common import ConfigOpt, fail


def rules(config: str | None = ConfigOpt) -> None:
    """The detection rules: id, ATT&CK technique, severity, enabled."""
    from sensor.detect.catalog import RULES

    try:
        cfg = load_config(config)
    except SluiceError as e:
        fail(e)
    typer.echo(f"{'ID':<11} {'TECHNIQUE':<10} {'SEV':>3} {'ON':<3} NAME")
    for r in RULES:
        st = cfg.rules[r.id]
        tech = (r.attack["subtechnique"] or r.attack["technique"])[0]
        typer.echo(f"{r.id:<11} {tech:<10} {st.severity:>3} {'yes' if st.enabled else 'no':<3} {r.name}")
