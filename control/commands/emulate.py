"""`sluice emulate ...`: adversary emulation on this node."""

from __future__ import annotations

import typer

from sensor.config import load_config
from sensor.errors import SluiceError

from ..progress import EmulateProgress
from ._common import ConfigOpt, fail

app = typer.Typer(no_args_is_help=True, help="Adversary emulation: prove the detections on this node.")


@app.command("list")
def emulate_list() -> None:
    """The scenarios, what they emulate and which rules must fire."""
    from emulation.scenarios import SCENARIOS

    typer.echo(f"{'SCENARIO':<26} {'ATT&CK':<10} {'MUST RAISE':<23} WHAT")
    for s in SCENARIOS:
        exp = ",".join(s.expect) or ("(blind spot)" if s.blind_spot else "(nothing)")
        typer.echo(f"{s.name:<26} {s.attack:<10} {exp:<23} {s.description}")


@app.command("run")
def emulate_run(
    scenario: str = typer.Argument(
        ..., help="A scenario name (see `emulate list`), several separated by commas, or all."
    ),
    config: str | None = ConfigOpt,
    as_json: bool = typer.Option(False, "--json", help="One JSON object per scenario on stdout."),
    attach: bool = typer.Option(False, "--attach", help="Score against the running sensor instead of a lab sensor."),
    learn_seconds: float = typer.Option(
        20.0, "--learn-seconds", min=5, help="How long the lab sensor learns benign workloads."
    ),
    keep: bool = typer.Option(False, "--keep", help="Keep the lab's work directory (sensor outputs, sink log)."),
    events: bool = typer.Option(
        False, "--events", help="The lab sensor also writes telemetry (with --keep, for debugging)."
    ),
) -> None:
    """Run scenarios in containers and network namespaces made (and removed)
    here, and print a scorecard. Nothing leaves the machine: the lab's
    "internet" is 198.18.0.0/16 inside a network namespace. Without --attach
    a lab sensor learns the benign workloads first, then detects. Exits
    non-zero if an expected detection is missing or a benign scenario alerts.
    """
    from emulation.run import Emulation, as_json_lines, scorecard
    from emulation.scenarios import BY_NAME, SCENARIOS
    from sensor.kernel.probe import require_root

    try:
        require_root()
        cfg = load_config(config)
        if scenario == "all":
            chosen = list(SCENARIOS)
        else:
            names = [n.strip() for n in scenario.split(",") if n.strip()]
            unknown = [n for n in names if n not in BY_NAME]
            if unknown or not names:
                raise SluiceError(
                    f"no scenario {', '.join(map(repr, unknown or [scenario]))}", hint="see `sluice emulate list`"
                )
            chosen = [BY_NAME[n] for n in names]
        with EmulateProgress(len(chosen)) as prog:
            emu = Emulation(
                cfg.runtime.docker_socket,
                chosen,
                learn_seconds=learn_seconds,
                attach_socket=cfg.sensor.control_socket if attach else None,
                keep=keep,
                events=events,
                progress=prog.line,
                phase=prog.phase,
            )
            scores = emu.run()
    except SluiceError as e:
        fail(e)
    except KeyboardInterrupt:
        typer.echo("sluice: interrupted; the lab was cleaned up", err=True)
        raise typer.Exit(130) from None
    typer.echo(as_json_lines(scores) if as_json else scorecard(scores))
    raise typer.Exit(0 if all(s.passed for s in scores) else 1)
