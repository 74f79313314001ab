"""`sluice run`'s early compile: which config it guesses from the command
line (control/entry.py), and what the loader does with a result that
matches its own plan or not (sensor/kernel/precompile.py). The compile
itself, and the sensor using it, run in tests/privileged/test_lifecycle_and_modes.py."""

from __future__ import annotations

import threading

import pytest

from control.entry import config_arg
from sensor.kernel import precompile


@pytest.mark.parametrize(
    "argv, want",
    [
        ([], None),
        (["-c", "/etc/a.toml"], "/etc/a.toml"),
        (["--config", "/etc/a.toml", "-o", "out"], "/etc/a.toml"),
        (["--config=/etc/a.toml"], "/etc/a.toml"),
        (["-c/etc/a.toml"], "/etc/a.toml"),
        (["-o", "-c", "-c", "/b"], "/b"),  # -o's value is "-c", then -c /b: as click reads it
        (["--baseline", "-c"], None),
        (["-c", "/a", "--events", "-c", "/b"], "/b"),  # the last one wins, as in click
        (["-c"], None),  # click refuses this; the guess is simply none
        (["--", "-c", "/a"], None),
        (["--events", "--baseline", "/x"], None),
    ],
)
def test_config_guess_from_the_command_line(argv: list[str], want: str | None) -> None:
    assert config_arg(argv) == want


class _Compiled:
    def __init__(self) -> None:
        self.closed = False

    def cleanup(self) -> None:
        self.closed = True


def _finished(result: tuple[precompile.Plan, object, float] | None, monkeypatch: pytest.MonkeyPatch) -> None:
    t = threading.Thread(target=lambda: None)
    t.start()
    t.join()
    monkeypatch.setattr(precompile, "_thread", t)
    monkeypatch.setattr(precompile, "_result", result)


PLAN: precompile.Plan = ("int x;", ("-DA=1",))


def test_a_matching_plan_takes_the_early_object(monkeypatch: pytest.MonkeyPatch) -> None:
    b = _Compiled()
    _finished((PLAN, b, 2.5), monkeypatch)
    assert precompile.take(PLAN) == (b, 2.5)
    assert not b.closed
    assert precompile.take(PLAN) is None  # taken once


@pytest.mark.parametrize("other", [("int x;", ("-DA=2",)), ("int y;", ("-DA=1",)), ("int x;", ())])
def test_another_plan_closes_the_early_object(other: precompile.Plan, monkeypatch: pytest.MonkeyPatch) -> None:
    b = _Compiled()
    _finished((PLAN, b, 2.5), monkeypatch)
    assert precompile.take(other) is None
    assert b.closed  # its tracepoints detached and maps freed, not left attached


def test_no_early_compile_or_a_failed_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(precompile, "_thread", None)
    assert precompile.take(PLAN) is None
    _finished(None, monkeypatch)  # the early work raised: the main path compiles
    assert precompile.take(PLAN) is None


def test_a_hung_early_compile_is_abandoned_and_closed_when_it_ends(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    release = threading.Event()
    t = threading.Thread(target=release.wait, daemon=True)
    t.start()
    monkeypatch.setattr(precompile, "_thread", t)
    monkeypatch.setattr(precompile, "_result", None)
    monkeypatch.setattr(precompile, "_abandoned", False)
    assert precompile.take(PLAN, timeout=0.05) is None
    assert "did not finish in 0 s; compiling again" in capsys.readouterr().err
    release.set()
    b = _Compiled()
    precompile._deliver(PLAN, b, 200.0)  # what the thread does when LLVM returns
    assert b.closed and precompile._result is None


def test_the_guess_knows_every_option_of_run_that_takes_a_value() -> None:
    """A new option of `sluice run` with a value must be skipped by the
    guess too, or its value could be read as -c."""
    import typer.main

    from control.cli import app
    from control.entry import _VALUED

    run = typer.main.get_command(app).commands["run"]  # type: ignore[attr-defined]
    valued = {o for p in run.params if p.param_type_name == "option" and not p.is_flag for o in p.opts}
    assert valued - {"-c", "--config"} == set(_VALUED)
