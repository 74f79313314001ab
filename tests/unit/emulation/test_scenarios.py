"""The scenario list: every container-mode attack has a compromised twin
that runs inside the learned web application and must be caught without
the two shortcuts (SL-EXF-005 short-lived unknown container, SL-EXF-006
encryption tool)."""

from __future__ import annotations

from emulation.scenarios import BY_NAME, SCENARIOS, TWINS

SHORTCUTS = {"SL-EXF-005", "SL-EXF-006"}


def test_names_are_unique() -> None:
    assert len(BY_NAME) == len(SCENARIOS)


def test_every_container_mode_attack_has_one_compromised_twin() -> None:
    attacks = {s.name for s in SCENARIOS if not s.compromised and not s.benign}
    twins = [s.twin for s in SCENARIOS if s.twin]
    assert sorted(twins) == sorted(attacks)
    assert all(s.compromised and s.name.startswith("cw-") for s in TWINS)


def test_twins_keep_their_originals_goal() -> None:
    for t in TWINS:
        orig = BY_NAME[t.twin]
        assert t.attack == orig.attack and t.blind_spot == orig.blind_spot, t.name
        # the same rules, minus the shortcuts the compromised mode cannot use
        assert set(t.expect) >= set(orig.expect) - SHORTCUTS, t.name
        assert bool(t.expect) == bool(orig.expect), t.name


def test_no_compromised_scenario_rides_on_a_shortcut() -> None:
    for s in SCENARIOS:
        if s.compromised:
            assert not set(s.expect) & SHORTCUTS, s.name
            assert s.expect or s.benign or s.blind_spot, s.name
