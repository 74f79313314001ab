"""`sluice baseline ...`: learn, inspect, merge and reset baselines."""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING

import typer

from sensor.config import load_config
from sensor.detect.baseline import DEFAULT_PATH as DEFAULT_BASELINE
from sensor.errors import SluiceError
from sensor.outputs.terminal import safe

from ..progress import LearnProgress
from ..ui import console
from ._common import ConfigOpt, EventsOpt, OutputOpt, fail, run_config

if TYPE_CHECKING:
    from sensor.detect.baseline import Baseline

app = typer.Typer(no_args_is_help=True, help="Learn, inspect, merge and reset per-workload baselines.")
BaselineOpt = typer.Option(DEFAULT_BASELINE, "--baseline", "-b", help="Baseline file.")


@app.command("learn")
def baseline_learn(
    duration: float = typer.Option(..., "--duration", "-d", min=1, help="Seconds to learn for."),
    baseline: str = BaselineOpt,
    config: str | None = ConfigOpt,
    output: str | None = OutputOpt,
    events: bool = EventsOpt,
    replace: bool = typer.Option(
        False, "--replace", help="Start from an empty baseline instead of adding to the file."
    ),
) -> None:
    """Run the sensor in learning mode for DURATION seconds, then write the baseline.

    Learning adds to an existing baseline file unless --replace. `sluice
    status` shows the sensor as ready while it learns, as for `run`.
    """
    from sensor.daemon.runner import Sensor

    made: list[Sensor] = []
    try:
        cfg = run_config(config, output, events)
        # the sensor is made inside: its stdout lines go above a live bar
        with LearnProgress(lambda: made[0] if made else None, duration):
            s = Sensor(cfg, baseline_path=baseline, learn_seconds=duration, replace_baseline=replace)
            made.append(s)
            code = s.run()
    except SluiceError as e:
        fail(e)
    assert s.baseline is not None
    typer.echo(
        f"sluice: learned {s.learner.windows if s.learner else 0} windows; baseline {baseline} "
        f"has {len(s.baseline.workloads)} workloads",
        err=True,
    )
    raise typer.Exit(code)


def _load(path: str, key: bytes | None = None) -> Baseline:
    from sensor.detect.baseline import load

    try:
        return load(path, key)
    except SluiceError as e:
        fail(e)


def _key(path: str | None) -> bytes | None:
    from sensor.detect.baseline import read_key

    try:
        return read_key(path) if path else None
    except SluiceError as e:
        fail(e)


@app.command("show")
def baseline_show(
    name: str | None = typer.Argument(
        None, help="One workload in detail: destinations, histograms and each rule's threshold."
    ),
    baseline: str = BaselineOpt,
    workload: str = typer.Option("*", "--workload", "-w", help="Only workloads matching this glob."),
    config: str | None = ConfigOpt,
) -> None:
    """One row per workload (windows, egress per window, the SL-EXF-001
    threshold, destinations, executables, active hours), or one workload in
    detail."""
    from ..baseline_view import detail, table

    b = _load(baseline)
    try:
        cfg = load_config(config)
    except SluiceError as e:
        fail(e)
    con = console()
    if name is None:
        con.print(table(b, baseline, cfg, workload))
        return
    if name not in b.workloads:
        near = sorted(w for w in b.workloads if name.lower() in w.lower())[:5]
        fail(
            SluiceError(
                f"no workload {safe(name)!r} in {baseline}",
                hint=("did you mean " + ", ".join(safe(w) for w in near))
                if near
                else "`sluice baseline show` lists them",
            )
        )
    con.print(detail(b, name, cfg))


@app.command("export")
def baseline_export(baseline: str = BaselineOpt) -> None:
    """The whole baseline as JSON on stdout."""
    typer.echo(json.dumps(_load(baseline).to_wire(), indent=2, sort_keys=True, default=str))


@app.command("merge")
def baseline_merge(
    out: str = typer.Argument(..., help="Merged baseline to write (atomically)."),
    inputs: list[str] = typer.Argument(..., help="Baselines to merge, e.g. one per node."),
    key_file: str | None = typer.Option(
        None, "--key", help="HMAC key file: every input must be signed with it; the output is signed."
    ),
) -> None:
    """Merge several nodes' baselines into one (fleet learning)."""
    from sensor.detect.baseline import merge_all, save

    key = _key(key_file)
    merged = merge_all(_load(p, key) for p in inputs)
    if os.path.exists(out) and out not in inputs:
        _load(out)  # refuse to overwrite a file that is not a readable baseline
    try:
        save(merged, out, key)
    except OSError as e:
        fail(SluiceError(f"cannot write {out}: {e.strerror}"))
    typer.echo(
        f"sluice: merged {len(inputs)} baselines into {out}: {len(merged.workloads)} workloads, "
        f"nodes {', '.join(sorted(merged.nodes)) or '-'}"
    )


@app.command("reset")
def baseline_reset(
    workload: str = typer.Argument(..., help="Workload to forget (exact name, see `baseline show`)."),
    baseline: str = BaselineOpt,
) -> None:
    """Forget one workload: it is learned anew."""
    from sensor.detect.baseline import save

    b = _load(baseline)
    if workload not in b.workloads:
        typer.echo(f"sluice: error: no workload {workload!r} in {baseline}", err=True)
        raise typer.Exit(1)
    del b.workloads[workload]
    save(b, baseline)
    typer.echo(f"sluice: reset {workload} in {baseline}")
