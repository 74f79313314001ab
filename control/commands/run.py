"""`sluice run`: the sensor in the foreground."""

from __future__ import annotations

import os

import typer

from sensor.detect.baseline import DEFAULT_PATH as DEFAULT_BASELINE
from sensor.errors import SluiceError

from ._common import ConfigOpt, EventsOpt, FormatOpt, MetricsOpt, OutputOpt, fail, run_config


def run(
    config: str | None = ConfigOpt,
    output: str | None = OutputOpt,
    events: bool = EventsOpt,
    fmt: str | None = FormatOpt,
    metrics: str | None = MetricsOpt,
    baseline: str | None = typer.Option(
        None,
        "--baseline",
        "-b",
        help=f"Detect against this baseline (default: {DEFAULT_BASELINE} when it exists; without one every workload is new).",
    ),
) -> None:
    """Run the sensor in the foreground until SIGINT or SIGTERM."""
    from sensor.daemon.runner import Sensor

    try:
        cfg = run_config(config, output, events, fmt, metrics)
        if baseline is None and os.path.exists(DEFAULT_BASELINE):
            baseline = DEFAULT_BASELINE
        code = Sensor(cfg, baseline_path=baseline).run()
    except SluiceError as e:
        fail(e)
    raise typer.Exit(code)
