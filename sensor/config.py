"""The one frozen configuration object, validated at the edge.

Defaults live in sensor/default.toml (shipped in the package, documented
there). A file given with --config overrides any subset of keys; unknown
sections or keys, wrong types and out-of-range values are refused with the
file and line.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
from dataclasses import dataclass, fields
from importlib import resources
from pathlib import Path
from typing import Any

from .errors import ConfigError

DEFAULT_CONFIG_TEXT = resources.files("sensor").joinpath("default.toml").read_text()


@dataclass(frozen=True)
class SensorSection:
    window_seconds: float
    health_interval_seconds: float
    control_socket: str
    host_name: str


@dataclass(frozen=True)
class KernelSection:
    ring_buffer_pages: int
    force_perf_buffer: bool
    flow_map_entries: int
    pid_map_entries: int
    sample_bytes: int
    sample_first_packets: int
    sample_every: int
    max_samples_per_flow_window: int
    max_dns_samples_per_flow_window: int
    udp_send_dedup_ms: int
    exec_args: str
    mount_tracefs: bool


@dataclass(frozen=True)
class RuntimeSection:
    docker_socket: str
    timeout_seconds: float
    negative_cache_seconds: float


@dataclass(frozen=True)
class OutputSection:
    path: str
    events: bool


@dataclass(frozen=True)
class Config:
    sensor: SensorSection
    kernel: KernelSection
    runtime: RuntimeSection
    output: OutputSection
    source: str = "<embedded defaults>"

    def replace(self, section: str, **changes: Any) -> "Config":
        """A copy with some keys of one section changed (CLI overrides)."""
        sec = dataclasses.replace(getattr(self, section), **changes)
        return dataclasses.replace(self, **{section: sec})


_SECTIONS: dict[str, type] = {
    "sensor": SensorSection,
    "kernel": KernelSection,
    "runtime": RuntimeSection,
    "output": OutputSection,
}


def _is_pow2(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


# (section, key) -> (check, what is expected)
_CHECKS: dict[tuple[str, str], tuple[Any, str]] = {
    ("sensor", "window_seconds"): (lambda v: 0.5 <= v <= 3600, "between 0.5 and 3600"),
    ("sensor", "health_interval_seconds"): (lambda v: 1 <= v <= 86400, "between 1 and 86400"),
    ("sensor", "control_socket"): (lambda v: v.startswith("/"), "an absolute path"),
    ("kernel", "ring_buffer_pages"): (lambda v: _is_pow2(v) and v <= 65536, "a power of two up to 65536"),
    ("kernel", "flow_map_entries"): (lambda v: 1024 <= v <= 4_194_304, "between 1024 and 4194304"),
    ("kernel", "pid_map_entries"): (lambda v: 1024 <= v <= 4_194_304, "between 1024 and 4194304"),
    ("kernel", "sample_bytes"): (lambda v: 1 <= v <= 256, "between 1 and 256"),
    ("kernel", "max_dns_samples_per_flow_window"): (lambda v: 0 <= v <= 100_000, "between 0 and 100000"),
    ("kernel", "sample_first_packets"): (lambda v: 0 <= v <= 1024, "between 0 and 1024"),
    ("kernel", "sample_every"): (lambda v: 1 <= v <= 1_000_000, "between 1 and 1000000"),
    ("kernel", "max_samples_per_flow_window"): (lambda v: 0 <= v <= 100_000, "between 0 and 100000"),
    ("kernel", "udp_send_dedup_ms"): (lambda v: 0 <= v <= 3_600_000, "between 0 and 3600000"),
    ("kernel", "exec_args"): (lambda v: v in ("procfs", "tracepoint"), '"procfs" or "tracepoint"'),
    ("runtime", "timeout_seconds"): (lambda v: 0 < v <= 30, "between 0 and 30"),
    ("runtime", "negative_cache_seconds"): (lambda v: 0 <= v <= 86400, "between 0 and 86400"),
}


def _line_of(text: str, section: str, key: str | None) -> int | None:
    """Line number of `[section]` (key None) or of `key =` inside it."""
    current = ""
    for no, line in enumerate(text.splitlines(), 1):
        s = line.strip()
        m = re.match(r"^\[\s*([^\]]+?)\s*\]", s)
        if m:
            current = m.group(1).strip('"')
            if key is None and current == section:
                return no
            continue
        if key is not None and current == section and re.match(
            rf'^"?{re.escape(key)}"?\s*=', s
        ):
            return no
    return None


def _typename(t: Any) -> str:
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(t, str(t))


def _coerce(value: Any, typ: Any) -> Any:
    """Value converted to the field type, or raise TypeError."""
    if typ is bool:
        if isinstance(value, bool):
            return value
    elif typ is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif typ is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif typ is str:
        if isinstance(value, str):
            return value
    raise TypeError


def _parse(text: str, path: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        m = re.search(r"at line (\d+)", str(e))
        raise ConfigError(
            f"not valid TOML: {e}", path, int(m.group(1)) if m else None,
            hint="fix the syntax at that line (see sensor/default.toml for the format)",
        ) from None


def _build(data: dict[str, Any], base: dict[str, Any], text: str, path: str) -> dict[str, Any]:
    merged = {s: dict(v) for s, v in base.items()}
    for section, body in data.items():
        if section not in _SECTIONS:
            raise ConfigError(
                f"unknown section [{section}]", path, _line_of(text, section, None),
                hint=f"known sections: {', '.join(_SECTIONS)}",
            )
        if not isinstance(body, dict):
            raise ConfigError(f"{section} must be a table", path, _line_of(text, section, None))
        types = {f.name: f.type for f in fields(_SECTIONS[section])}
        for key, value in body.items():
            line = _line_of(text, section, key)
            if key not in types:
                raise ConfigError(
                    f"unknown key {section}.{key}", path, line,
                    hint=f"keys of [{section}]: {', '.join(types)}",
                )
            typ = {"bool": bool, "int": int, "float": float, "str": str}[types[key]]
            try:
                value = _coerce(value, typ)
            except TypeError:
                raise ConfigError(
                    f"{section}.{key} must be {_typename(typ)}, not {value!r}", path, line
                ) from None
            check = _CHECKS.get((section, key))
            if check and not check[0](value):
                raise ConfigError(f"{section}.{key} = {value!r}: must be {check[1]}", path, line)
            merged[section][key] = value
    return merged


_DEFAULTS = _build(_parse(DEFAULT_CONFIG_TEXT, "default.toml"),
                   {s: {} for s in _SECTIONS}, DEFAULT_CONFIG_TEXT, "default.toml")


def _make(merged: dict[str, Any], source: str) -> Config:
    return Config(**{s: cls(**merged[s]) for s, cls in _SECTIONS.items()}, source=source)


def default_config() -> Config:
    return _make(_DEFAULTS, "<embedded defaults>")


def load_config(path: str | Path | None) -> Config:
    """The embedded defaults, overridden by the file at `path` if given."""
    if path is None:
        return default_config()
    p = str(path)
    try:
        text = Path(p).read_text()
    except FileNotFoundError:
        raise ConfigError("file not found", p, hint="give an existing file to --config") from None
    except OSError as e:
        raise ConfigError(f"cannot read: {e.strerror}", p) from None
    return _make(_build(_parse(text, p), _DEFAULTS, text, p), p)
