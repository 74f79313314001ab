"""[detection], [rules.<id>] and [[allow]]: what loads, and refusals that
name the file and the line."""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
import tomllib
from pathlib import Path
from typing import get_type_hints

import pytest

import sensor.detect.rules as rules_pkg
from sensor.config import DEFAULT_CONFIG_TEXT, AllowEntry, default_config, load_config
from sensor.detect.catalog import BY_ID, RULES
from sensor.detect.rules import c2002_beaconing as c2002
from sensor.detect.rules import exf002_nonstandard_port as exf002
from sensor.detect.rules import exf004_new_destination as exf004
from sensor.errors import ConfigError
from tests.support.views import ALL_RULES


def write(tmp_path: Path, text: str) -> str:
    p = tmp_path / "sluice.toml"
    p.write_text(text)
    return str(p)


def refused(tmp_path: Path, text: str) -> tuple[ConfigError, str]:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as ei:
        load_config(path)
    return ei.value, path


def test_catalog() -> None:
    assert [r.id for r in RULES][:10] == ALL_RULES
    assert len({x.slug for x in RULES}) == len(RULES) and len(BY_ID) == len(RULES)
    for r in RULES:
        assert 0 <= r.severity <= 100
    for rid in ALL_RULES:
        r = BY_ID[rid]
        assert r.attack["technique"][0] == ("T1048" if rid.startswith("SL-EXF") else "T1104")
        assert (r.attack["subtechnique"] is None) is rid.startswith("SL-C2")


def test_defaults_for_every_rule() -> None:
    c = default_config()
    assert set(c.rules) == set(BY_ID)
    for rid, info in BY_ID.items():
        assert c.rules[rid].enabled is True
        assert c.rules[rid].severity == info.severity
        assert type(c.rules[rid]) is info.settings
        assert c.rules[rid] == info.defaults()
    assert c.allow == ()
    d = c.detection
    assert (
        d.min_baseline_windows,
        d.high_entropy_bits,
        d.destination_prefix_v4,
        d.destination_prefix_v6,
        d.suppress_seconds,
        d.alert_on_unknown_workload,
        d.timezone,
    ) == (30, 7.0, 24, 64, 600.0, True, "local")


def test_default_toml_documents_every_rule_as_its_settings_declare() -> None:
    """sensor/default.toml is the documented config: every rule has its
    [rules.<id>] table there, with every Settings field, in field order,
    at the dataclass default."""
    documented = tomllib.loads(DEFAULT_CONFIG_TEXT)["rules"]
    assert list(documented) == list(BY_ID)
    for rid, info in BY_ID.items():
        want = {k: list(v) if isinstance(v, tuple) else v for k, v in info.default_values().items()}
        assert list(documented[rid].items()) == list(want.items()), rid


def test_every_rule_module_is_in_the_catalog_with_typed_frozen_settings() -> None:
    allowed = {bool, int, float, str, tuple[int, ...], tuple[str, ...]}
    modules = [m.name for m in pkgutil.iter_modules(rules_pkg.__path__) if not m.name.startswith("_")]
    infos = [importlib.import_module(f"sensor.detect.rules.{m}").INFO for m in modules]
    assert sorted(i.id for i in infos) == sorted(BY_ID)
    for info in infos:
        assert BY_ID[info.id] is info
        assert info.settings.__dataclass_params__.frozen  # type: ignore[attr-defined]
        hints = get_type_hints(info.settings)
        assert set(hints.values()) <= allowed, info.id
        assert [f.name for f in dataclasses.fields(info.settings)][:2] == ["enabled", "severity"]


def test_rule_overrides_and_allow_entries_load(tmp_path: Path) -> None:
    c = load_config(
        write(
            tmp_path,
            """\
[detection]
trusted_networks = ["10.0.0.0/8", "fd00::/8"]
timezone = "UTC"

[rules.SL-EXF-004]
min_bytes = 4194304
severity = 80

[rules.SL-C2-002]
max_jitter = 0
min_interval_seconds = 2
enabled = false

[[allow]]
workload = "restic*"
destination = "10.20.0.0/16"
port = 443
schedule = "0 2 * * *"
duration_minutes = 90
comment = "nightly backup"

[[allow]]
executable = "/usr/bin/rsync"
rules = ["SL-EXF-004", "SL-EXF-006"]
""",
        )
    )
    exf4, c2 = c.rule("SL-EXF-004", exf004.Settings), c.rule("SL-C2-002", c2002.Settings)
    assert exf4.min_bytes == 4194304 and exf4.severity == 80
    assert c2.max_jitter == 0.0 and isinstance(c2.max_jitter, float)
    assert c2.min_interval_seconds == 2.0 and c2.enabled is False
    assert c2.min_connections == 6
    assert c.rules["SL-EXF-001"] == default_config().rules["SL-EXF-001"]
    assert c.allow == (
        AllowEntry(
            workload="restic*",
            destination="10.20.0.0/16",
            port=443,
            schedule="0 2 * * *",
            duration_minutes=90.0,
            comment="nightly backup",
        ),
        AllowEntry(executable="/usr/bin/rsync", rules=("SL-EXF-004", "SL-EXF-006")),
    )
    assert c.detection.trusted_networks == ["10.0.0.0/8", "fd00::/8"]


def test_rule_defaults_are_not_shared_between_configs(tmp_path: Path) -> None:
    c = load_config(write(tmp_path, "[rules.SL-EXF-002]\ntls_ports = [443]\n"))
    assert c.rule("SL-EXF-002", exf002.Settings).tls_ports == (443,)
    assert 8443 in default_config().rule("SL-EXF-002", exf002.Settings).tls_ports
    assert 8443 in exf002.Settings().tls_ports


@pytest.mark.parametrize(
    "text,line,what",
    [
        # unknown rule id
        ('[detection]\ntimezone = "UTC"\n\n[rules.SL-EXF-999]\nmin_bytes = 5\n', 4, "unknown rule SL-EXF-999"),
        # unknown key
        ("[rules.SL-EXF-004]\nseverity = 70\nmin_bytez = 5\n", 3, "unknown key rules.SL-EXF-004.min_bytez"),
        # wrong types
        ('[rules.SL-EXF-004]\n\nmin_bytes = "1MiB"\n', 3, "rules.SL-EXF-004.min_bytes must be an integer"),
        ("[rules.SL-EXF-004]\nmin_bytes = 1.5e6\n", 2, "must be an integer"),
        ('[rules.SL-C2-002]\nenabled = "yes"\n', 2, "rules.SL-C2-002.enabled must be true or false"),
        ("[rules.SL-EXF-001]\nmultiplier = true\n", 2, "rules.SL-EXF-001.multiplier must be a number"),
        ('[rules.SL-EXF-002]\ntls_ports = ["443"]\n', 2, "rules.SL-EXF-002.tls_ports: every item must be an integer"),
        ("[rules.SL-EXF-002]\ntls_ports = 443\n", 2, "must be a list"),
        # negative thresholds
        (
            "[rules.SL-C2-002]\nmin_connections = 6\nmax_jitter = -0.1\n",
            3,
            "rules.SL-C2-002.max_jitter = -0.1: must not be negative",
        ),
        ("[rules.SL-EXF-005]\nmax_lifetime_seconds = -1\n", 2, "must not be negative"),
        # severity out of range
        ("[rules.SL-EXF-001]\nseverity = 101\n", 2, "rules.SL-EXF-001.severity = 101: must be between 0 and 100"),
        ("[rules.SL-EXF-001]\nseverity = -1\n", 2, "must be between 0 and 100"),
        # a later rule section: the line of its own key
        (
            "[rules.SL-EXF-001]\nseverity = 50\n\n[rules.SL-EXF-003]\nseverity = 50\ndns_min_label_length = -4\n",
            6,
            "rules.SL-EXF-003.dns_min_label_length",
        ),
        ("[rules.SL-EXF-004]\nmin_bytes = 1\n[rules.SL-EXF-005]\nmin_bytes = -1\n", 4, "rules.SL-EXF-005.min_bytes"),
    ],
)
def test_rule_errors_name_file_and_line(tmp_path: Path, text: str, line: int, what: str) -> None:
    e, path = refused(tmp_path, text)
    assert e.path == path and e.line == line, (str(e), e.line)
    assert str(e).startswith(f"{path}:{line}: ")
    assert what in str(e)


def test_quoted_rule_section_still_names_the_line(tmp_path: Path) -> None:
    """`[rules."SL-EXF-004"]` is the same table in TOML as the bare form."""
    e, path = refused(tmp_path, '[detection]\ntimezone = "UTC"\n\n[rules."SL-EXF-004"]\nmin_bytes = -5\n')
    assert "must not be negative" in str(e)
    assert e.line == 5 and str(e).startswith(f"{path}:5: "), str(e)


def test_unknown_rule_hint_lists_rule_ids(tmp_path: Path) -> None:
    e, _ = refused(tmp_path, "[rules.SL-EXF-999]\nseverity = 1\n")
    assert "SL-EXF-001" in e.hint and "SL-C2-004" in e.hint


def test_unknown_key_hint_lists_keys(tmp_path: Path) -> None:
    e, _ = refused(tmp_path, "[rules.SL-EXF-004]\nmin_bytez = 5\n")
    assert "min_bytes" in e.hint and "severity" in e.hint


ALLOW_OK = '[[allow]]\nworkload = "ok"\n\n'


@pytest.mark.parametrize(
    "text,line,what",
    [
        # bad CIDR
        (
            '[[allow]]\nworkload = "x"\ndestination = "10.0.0.300/8"\n',
            3,
            "allow.destination = '10.0.0.300/8': not an address or CIDR",
        ),
        ('[[allow]]\ndestination = "backup.internal"\n', 2, "not an address or CIDR"),
        # bad cron
        ('[[allow]]\nworkload = "x"\nschedule = "0 2 * *"\n', 3, "allow.schedule = '0 2 * *': not a cron expression"),
        ('[[allow]]\nworkload = "x"\nschedule = "every night"\n', 3, "not a cron expression"),
        ('[[allow]]\nworkload = "x"\nschedule = "0 2 * * mon"\n', 3, "not a cron expression"),
        ('[[allow]]\nworkload = "x"\nschedule = "0 2 * * * *"\n', 3, "not a cron expression"),
        # no matcher at all: the line of that [[allow]]
        ('[[allow]]\nrules = ["SL-EXF-004"]\ncomment = "everything"\n', 1, "allow entry matches everything"),
        (ALLOW_OK + '[[allow]]\nschedule = "0 2 * * *"\n', 4, "allow entry matches everything"),
        (ALLOW_OK + ALLOW_OK + '# third\n[[allow]]\ncomment = "oops"\n', 8, "allow entry matches everything"),
        # unknown key, wrong types, out of range: the line of the key in that entry
        ('[[allow]]\nworkload = "x"\nworkloads = "y"\n', 3, "unknown key allow.workloads"),
        (ALLOW_OK + '[[allow]]\nworkload = "x"\nport = 70000\n', 6, "allow.port = 70000: must be a port number"),
        ('[[allow]]\nworkload = "x"\nport = "443"\n', 3, "must be a port number"),
        ('[[allow]]\nworkload = "x"\nport = true\n', 3, "must be a port number"),
        ("[[allow]]\nworkload = 7\n", 2, "allow.workload must be a string"),
        ('[[allow]]\nworkload = "x"\nrules = ["SL-EXF-404"]\n', 3, "must list rule ids"),
        ('[[allow]]\nworkload = "x"\nrules = "SL-EXF-004"\n', 3, "must list rule ids"),
        ('[[allow]]\nworkload = "x"\nschedule = "0 2 * * *"\nduration_minutes = 0\n', 4, "duration_minutes"),
        ('[[allow]]\nworkload = "x"\nschedule = "0 2 * * *"\nduration_minutes = 20000\n', 4, "duration_minutes"),
        # allow entries after other sections
        (
            '[detection]\ntimezone = "UTC"\n[rules.SL-EXF-004]\nmin_bytes = 1\n'
            + ALLOW_OK
            + '[[allow]]\nport = 443\ndestination = "nope"\n',
            10,
            "not an address or CIDR",
        ),
    ],
)
def test_allow_errors_name_file_and_line(tmp_path: Path, text: str, line: int, what: str) -> None:
    e, path = refused(tmp_path, text)
    assert e.path == path and e.line == line, (str(e), e.line)
    assert str(e).startswith(f"{path}:{line}: ")
    assert what in str(e)


def test_allow_must_be_an_array_of_tables(tmp_path: Path) -> None:
    e, path = refused(tmp_path, '[detection]\ntimezone = "UTC"\n[allow]\nworkload = "x"\n')
    assert e.line == 3 and "[[allow]]" in str(e)


@pytest.mark.parametrize("schedule", ["*/0 * * * *", "0 2 * * */0"])
def test_cron_step_zero_is_refused(tmp_path: Path, schedule: str) -> None:
    """A zero step matches nothing and divides by zero when the detector
    evaluates the entry: the config must refuse it."""
    e, path = refused(tmp_path, f'[[allow]]\nworkload = "x"\nschedule = "{schedule}"\n')
    assert e.line == 3 and "schedule" in str(e)


@pytest.mark.parametrize("schedule", ["0 24 * * *", "0 2 * * 8", "0 0 30 2 *", "0 0 31 4,6 *"])
def test_cron_values_out_of_range_are_refused(tmp_path: Path, schedule: str) -> None:
    """The config module refuses out-of-range values with file and line; a
    schedule that can never start would silently never allow anything."""
    e, path = refused(tmp_path, f'[[allow]]\nworkload = "x"\nschedule = "{schedule}"\n')
    assert e.line == 3 and "schedule" in str(e)


@pytest.mark.parametrize(
    "text,line,what",
    [
        ('[detection]\ntrusted_networks = ["10.0.0.0/8", "nope"]\n', 2, "a list of CIDR strings"),
        ('[detection]\ntimezone = "Europe/Paris"\n', 2, '"local" or "UTC"'),
        ("[detection]\nmin_baseline_windows = 0\n", 2, "between 1 and 1000000"),
        ("[detection]\nhigh_entropy_bits = 9\n", 2, "between 0 and 8"),
        ("[detection]\ndestination_prefix_v4 = 33\n", 2, "between 0 and 32"),
        ("[detection]\nsuppress_seconds = -1\n", 2, "between 0 and 604800"),
        ('[detection]\nalert_on_unknown_workload = "no"\n', 2, "true or false"),
    ],
)
def test_detection_section_errors(tmp_path: Path, text: str, line: int, what: str) -> None:
    e, path = refused(tmp_path, text)
    assert e.line == line and what in str(e) and str(e).startswith(f"{path}:{line}: ")
