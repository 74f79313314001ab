"""sensor/response/freeze.py's bookkeeping on a directory laid out like a
cgroup v2 one (the real freezer is exercised by
tests/adversarial/test_containment_unix.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sensor.response.freeze import frozen


def _cgroup(tmp_path: Path, freeze: str, events_frozen: str) -> Path:
    (tmp_path / "cgroup.freeze").write_text(freeze + "\n")
    (tmp_path / "cgroup.events").write_text(f"populated 1\nfrozen {events_frozen}\n")
    return tmp_path


def test_it_freezes_and_thaws_what_it_froze(tmp_path: Path) -> None:
    cg = _cgroup(tmp_path, "0", "1")  # (the kernel would set "frozen 1" once all are)
    with frozen(str(cg)) as why:
        assert why == ""
        assert (cg / "cgroup.freeze").read_text() == "1"
    assert (cg / "cgroup.freeze").read_text() == "0"


def test_it_thaws_on_an_error_too(tmp_path: Path) -> None:
    cg = _cgroup(tmp_path, "0", "1")
    with pytest.raises(RuntimeError), frozen(str(cg)):
        raise RuntimeError("the sweep failed")
    assert (cg / "cgroup.freeze").read_text() == "0"


def test_a_cgroup_frozen_before_stays_frozen(tmp_path: Path) -> None:
    cg = _cgroup(tmp_path, "1", "1")  # paused by its runtime
    with frozen(str(cg)) as why:
        assert why == ""
    assert (cg / "cgroup.freeze").read_text().strip() == "1"


def test_a_freeze_that_does_not_complete_says_so_and_thaws(tmp_path: Path) -> None:
    cg = _cgroup(tmp_path, "0", "0")  # a task in an uninterruptible sleep
    with frozen(str(cg), wait_s=0.05) as why:
        assert why == "its cgroup did not freeze within 0.05 s"
    assert (cg / "cgroup.freeze").read_text() == "0"


def test_no_freezer_says_why(tmp_path: Path) -> None:
    with frozen(str(tmp_path / "gone")) as why:
        assert why.startswith("its cgroup could not be frozen (")
    with frozen(None) as why:
        assert why == "its cgroup is not known"


def test_a_freeze_left_by_a_killed_sensor_is_thawed_at_the_next_start(tmp_path: Path) -> None:
    """Review: a sensor killed mid-sweep left the container frozen, and the
    next start took the freeze for a runtime's pause (never thawed). A
    marker names a cgroup while this code has it frozen."""
    from sensor.response.freeze import thaw_leftovers

    (tmp_path / "cg").mkdir()
    cg = _cgroup(tmp_path / "cg", "0", "1")
    markers = str(tmp_path / "markers")
    with frozen(str(cg), marker_dir=markers):
        assert len(list((tmp_path / "markers").iterdir())) == 1
        # the sensor dies here: simulate by reading the state as it is now
        left = [p.read_text() for p in (tmp_path / "markers").iterdir()]
    assert not list((tmp_path / "markers").iterdir())  # a normal end removes it
    # a killed one: the marker and the freeze stay
    (tmp_path / "markers" / "x").write_text(left[0])
    (cg / "cgroup.freeze").write_text("1")
    assert thaw_leftovers(markers) == [str(cg)]
    assert (cg / "cgroup.freeze").read_text() == "0" and not list((tmp_path / "markers").iterdir())
    # a runtime's pause has no marker: left alone
    (cg / "cgroup.freeze").write_text("1")
    assert thaw_leftovers(markers) == [] and (cg / "cgroup.freeze").read_text() == "1"
