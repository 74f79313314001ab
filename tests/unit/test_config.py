"""Configuration: embedded defaults, overrides, and errors with file:line."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

import pytest

from sensor.config import DEFAULT_CONFIG_TEXT, Config, default_config, load_config
from sensor.errors import ConfigError, SluiceError


def write(tmp_path: Path, text: str, name: str = "sluice.toml") -> str:
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def test_defaults_load() -> None:
    c = default_config()
    assert isinstance(c, Config)
    assert c.source == "<embedded defaults>"
    assert c.sensor.window_seconds == 10.0
    assert c.sensor.control_socket == "/run/sluice/sluice.sock"
    assert c.kernel.ring_buffer_pages == 1024
    assert c.kernel.sample_bytes == 64
    assert c.kernel.exec_args == "procfs"
    assert c.runtime.docker_socket == "/var/run/docker.sock"
    assert c.runtime.negative_cache_seconds == 30.0
    assert c.output.path == "" and c.output.events is False
    assert load_config(None) == c


def test_defaults_cover_every_field_of_the_toml() -> None:
    data = tomllib.loads(DEFAULT_CONFIG_TEXT)
    c = default_config()
    for section, body in data.items():
        if section == "rules":  # test_detect_config: default.toml agrees with each rule's Settings
            continue
        for key, value in body.items():
            assert getattr(getattr(c, section), key) == value, f"{section}.{key}"


def test_high_entropy_threshold_is_defined_once() -> None:
    from sensor.telemetry.counters import HIGH_ENTROPY_BITS

    assert tomllib.loads(DEFAULT_CONFIG_TEXT)["detection"]["high_entropy_bits"] == HIGH_ENTROPY_BITS
    assert default_config().detection.high_entropy_bits == HIGH_ENTROPY_BITS


def test_config_is_frozen() -> None:
    c = default_config()
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.sensor.window_seconds = 1.0  # type: ignore[misc]


def test_override_file_merges_with_defaults(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
[sensor]
window_seconds = 2.5
host_name = "node-7"

[kernel]
sample_bytes = 128
exec_args = "tracepoint"

[output]
events = true
""",
    )
    c = load_config(path)
    assert c.source == path
    assert c.sensor.window_seconds == 2.5
    assert c.sensor.host_name == "node-7"
    assert c.kernel.sample_bytes == 128
    assert c.kernel.exec_args == "tracepoint"
    assert c.output.events is True
    d = default_config()
    # untouched keys keep their defaults
    assert c.sensor.control_socket == d.sensor.control_socket
    assert c.kernel.ring_buffer_pages == d.kernel.ring_buffer_pages
    assert c.runtime == d.runtime
    assert c.output.path == d.output.path
    # loading a file does not change the defaults
    assert default_config() == d


def test_empty_file_is_the_defaults(tmp_path: Path) -> None:
    c = load_config(write(tmp_path, "# nothing\n"))
    assert dataclasses.replace(c, source=default_config().source) == default_config()


def test_replace_changes_one_section() -> None:
    c = default_config().replace("output", path="/tmp/x.json", events=True)
    assert c.output.path == "/tmp/x.json" and c.output.events is True
    assert c.sensor == default_config().sensor


def test_int_accepted_for_float(tmp_path: Path) -> None:
    c = load_config(write(tmp_path, "[sensor]\nwindow_seconds = 5\n[runtime]\ntimeout_seconds = 2\n"))
    assert c.sensor.window_seconds == 5.0 and isinstance(c.sensor.window_seconds, float)
    assert c.runtime.timeout_seconds == 2.0 and isinstance(c.runtime.timeout_seconds, float)


def _error(tmp_path: Path, text: str) -> tuple[ConfigError, str]:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as ei:
        load_config(path)
    return ei.value, path


def test_unknown_section_has_file_and_line(tmp_path: Path) -> None:
    e, path = _error(tmp_path, "# a comment\n[sensor]\nwindow_seconds = 5\n\n[snesor]\nx = 1\n")
    assert f"{path}:5:" in str(e)
    assert "unknown section [snesor]" in str(e)
    assert e.line == 5 and e.path == path
    assert "known sections" in e.hint


def test_unknown_key_has_file_and_line(tmp_path: Path) -> None:
    e, path = _error(tmp_path, "[sensor]\nwindow_seconds = 5\n\n[kernel]\nsample_bytes = 64\nsampel_every = 3\n")
    assert f"{path}:6:" in str(e)
    assert "unknown key kernel.sampel_every" in str(e)
    assert "sample_every" in e.hint


def test_wrong_type_has_file_and_line(tmp_path: Path) -> None:
    e, path = _error(tmp_path, '[output]\npath = "/tmp/x"\nevents = "yes"\n')
    assert f"{path}:3:" in str(e)
    assert "output.events must be true or false" in str(e)


def test_string_for_number_is_refused(tmp_path: Path) -> None:
    e, path = _error(tmp_path, '[sensor]\n\n\nwindow_seconds = "10"\n')
    assert f"{path}:4:" in str(e)
    assert "must be a number" in str(e)


def test_bool_not_accepted_for_int(tmp_path: Path) -> None:
    e, path = _error(tmp_path, "[kernel]\nsample_bytes = 64\nring_buffer_pages = true\n")
    assert f"{path}:3:" in str(e)
    assert "kernel.ring_buffer_pages must be an integer" in str(e)


def test_bool_not_accepted_for_float(tmp_path: Path) -> None:
    e, path = _error(tmp_path, "[runtime]\ntimeout_seconds = false\n")
    assert f"{path}:2:" in str(e)


def test_float_not_accepted_for_int(tmp_path: Path) -> None:
    e, path = _error(tmp_path, "[kernel]\n\nsample_bytes = 64.0\n")
    assert f"{path}:3:" in str(e)


@pytest.mark.parametrize(
    "text, line, what",
    [
        ("[kernel]\nsample_bytes = 64\nring_buffer_pages = 3\n", 3, "power of two"),
        ("[kernel]\nsample_bytes = 257\n", 2, "between 1 and 256"),
        ('[sensor]\nhost_name = "h"\nwindow_seconds = 0.1\n', 3, "between 0.5 and 3600"),
        ('[sensor]\ncontrol_socket = "run/sluice.sock"\n', 2, "an absolute path"),
        ('[kernel]\n# exec_args = "procfs"\nexec_args = "ebpf"\n', 3, '"procfs" or "tracepoint"'),
        ("[runtime]\ntimeout_seconds = 0\n", 2, "between 0 and 30"),
        ("[kernel]\nflow_map_entries = 1023\n", 2, "between 1024 and 4194304"),
    ],
)
def test_out_of_range_has_file_and_line(tmp_path: Path, text: str, line: int, what: str) -> None:
    e, path = _error(tmp_path, text)
    assert f"{path}:{line}:" in str(e)
    assert what in str(e)


def test_toml_syntax_error_has_file_and_line(tmp_path: Path) -> None:
    e, path = _error(tmp_path, '[sensor]\nwindow_seconds = 5\nhost_name = "unterminated\n[kernel]\n')
    assert f"{path}:3:" in str(e)
    assert "not valid TOML" in str(e)
    assert e.line == 3


def test_toml_syntax_error_missing_equals(tmp_path: Path) -> None:
    e, path = _error(tmp_path, "[sensor]\n\n\n\nwindow_seconds 5\n")
    assert f"{path}:5:" in str(e)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found") as ei:
        load_config(tmp_path / "nope.toml")
    assert isinstance(ei.value, SluiceError)
    assert ei.value.hint


def test_error_str_carries_hint() -> None:
    e = ConfigError("bad", "/etc/sluice.toml", 4, hint="fix it")
    assert str(e) == "/etc/sluice.toml:4: bad\n  hint: fix it"
    assert e.exit_code == 2


def test_packet_send_reports_default_on_and_switchable(tmp_path: Path) -> None:
    assert default_config().kernel.packet_send_reports is True
    p = tmp_path / "s.toml"
    p.write_text("[kernel]\npacket_send_reports = false\n")
    assert load_config(p).kernel.packet_send_reports is False
    p.write_text('[kernel]\npacket_send_reports = "no"\n')
    with pytest.raises(ConfigError, match="packet_send_reports"):
        load_config(p)


def test_packet_send_hook_auto_by_default_and_checked(tmp_path: Path) -> None:
    assert default_config().kernel.packet_send_hook == "auto"
    p = tmp_path / "c.toml"
    p.write_text('[kernel]\npacket_send_hook = "tracepoint"\n')
    assert load_config(p).kernel.packet_send_hook == "tracepoint"
    p.write_text('[kernel]\npacket_send_hook = "kprobe"\n')
    with pytest.raises(ConfigError, match='packet_send_hook.*"auto" or "tracepoint"'):
        load_config(p)
