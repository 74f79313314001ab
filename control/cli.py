"""`sluice`: run the sensor, ask it for its status, watch it.

Thin: each command group lives in control/commands/<group>.py; this module
only assembles them, so the whole command set reads in one place."""

from __future__ import annotations

import typer

from sensor import __version__

from .commands import alerts, baseline, containment, doctor, emulate, rules, run, status, top

app = typer.Typer(
    add_completion=False, no_args_is_help=True, help="Sluice: an eBPF sensor for data leaving containers."
)

app.command("run")(run.run)
app.add_typer(baseline.app, name="baseline")
app.command("rules")(rules.rules)
app.command("status")(status.status)
app.command("isolate")(containment.isolate)
app.command("block")(containment.block)
app.command("release")(containment.release)
app.command("containment")(containment.containment)
app.command("top")(top.top)
app.command("alerts")(alerts.alerts)
app.add_typer(emulate.app, name="emulate")
app.command("doctor")(doctor.doctor)


@app.command()
def version() -> None:
    """Print the version."""
    typer.echo(f"sluice {__version__}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
