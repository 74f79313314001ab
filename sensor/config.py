"""The one frozen configuration object, validated at the edge.

Defaults live in sensor/default.toml (shipped in the package, documented
there). A file given with --config overrides any subset of keys; unknown
sections or keys, wrong types and out-of-range values are refused with the
file and line. Rule settings are each rule module's typed Settings.

Size (~530 lines): the sections, every key's check and the file:line
locator stay in one module so a key and its refusal message are read
together; [[allow]] and cron checks are the part to move if it grows.
"""

from __future__ import annotations

import dataclasses
import functools
import ipaddress
import re
import tomllib
from dataclasses import dataclass, fields
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, get_args, get_origin, get_type_hints

from sensor.errors import ConfigError

if TYPE_CHECKING:
    from sensor.detect.rule import RuleSettings

S = TypeVar("S", bound="RuleSettings")

DEFAULT_CONFIG_TEXT = resources.files("sensor").joinpath("default.toml").read_text()


@dataclass(frozen=True)
class SensorSection:
    window_seconds: float
    health_interval_seconds: float
    control_socket: str
    host_name: str
    containment_state: str
    max_cmdline_bytes: int


@dataclass(frozen=True)
class KernelSection:
    ring_buffer_pages: int
    ring_buffer_reader: str
    force_perf_buffer: bool
    flow_map_entries: int
    pid_map_entries: int
    sample_bytes: int
    sample_first_packets: int
    sample_every: int
    sample_every_bytes: int
    max_samples_per_flow_window: int
    max_dns_samples_per_flow_window: int
    udp_send_dedup_ms: int
    count_received: bool
    flow_quota_per_cgroup: int
    event_quota_per_cgroup: int
    exec_args: str
    packet_send_reports: bool
    packet_send_hook: str
    mount_tracefs: bool
    bpf_stats: bool


@dataclass(frozen=True)
class RuntimeSection:
    docker_socket: str
    timeout_seconds: float
    negative_cache_seconds: float
    oci_bundles: list[str]


@dataclass(frozen=True)
class OutputSection:
    path: str
    events: bool
    format: str
    max_bytes: int
    backups: int
    socket: str
    socket_type: str
    syslog: str
    syslog_facility: str
    queue_size: int
    metrics: str


@dataclass(frozen=True)
class DetectionSection:
    enabled: bool
    min_baseline_windows: int
    high_entropy_bits: float
    destination_prefix_v4: int
    destination_prefix_v6: int
    trusted_networks: list[str]
    suppress_seconds: float
    escalation_factor: float
    alert_on_unknown_workload: bool
    learn_while_detecting: bool
    learn_quarantine_windows: int
    timezone: str
    baseline_key_file: str


@dataclass(frozen=True)
class AllowEntry:
    """One [[allow]] entry: every key given must match."""

    workload: str | None = None
    executable: str | None = None
    destination: str | None = None
    # glob over the destination's name (case-insensitive): "*.example.com"
    # matches its subdomains, "example.com" only itself
    domain: str | None = None
    port: int | None = None
    rules: tuple[str, ...] = ()
    schedule: str | None = None
    duration_minutes: float = 60.0
    comment: str = ""


@dataclass(frozen=True)
class Config:
    sensor: SensorSection
    kernel: KernelSection
    runtime: RuntimeSection
    output: OutputSection
    detection: DetectionSection
    rules: dict[str, RuleSettings] = dataclasses.field(default_factory=dict)  # rule id -> typed settings
    allow: tuple[AllowEntry, ...] = ()
    source: str = "<embedded defaults>"

    def rule(self, rule_id: str, kind: type[S]) -> S:
        """A rule's settings as its module's Settings class (kind)."""
        s = self.rules[rule_id]
        if not isinstance(s, kind):
            raise TypeError(f"settings of {rule_id} are {type(s).__name__}, not {kind.__name__}")
        return s

    def replace(self, section: str, **changes: Any) -> Config:
        """A copy with some keys of one section changed (CLI overrides)."""
        sec = dataclasses.replace(getattr(self, section), **changes)
        return dataclasses.replace(self, **{section: sec})


_SECTIONS: dict[str, type] = {
    "sensor": SensorSection,
    "kernel": KernelSection,
    "runtime": RuntimeSection,
    "output": OutputSection,
    "detection": DetectionSection,
}


_FACILITIES = {"kern", "user", "daemon", "auth", "syslog", "authpriv", *(f"local{i}" for i in range(8))}
OUTPUT_FORMATS = ("auto", "ecs", "ocsf", "compact")


def _valid_hostport(v: str) -> bool:
    host, sep, port = v.rpartition(":")
    return bool(sep) and port.isdigit() and 0 < int(port) < 65536


def _valid_syslog(v: str) -> bool:
    scheme, sep, rest = v.partition("://")
    if not sep:
        return False
    if scheme == "unix":
        return rest.startswith("/")
    return scheme in ("udp", "tcp") and _valid_hostport(rest)


def _is_cidr(v: Any) -> bool:
    try:
        ipaddress.ip_network(v, strict=False)
        return True
    except (ValueError, TypeError):
        return False


def _is_pow2(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


# (section, key) -> (check, what is expected)
_CHECKS: dict[tuple[str, str], tuple[Any, str]] = {
    ("sensor", "window_seconds"): (lambda v: 0.5 <= v <= 3600, "between 0.5 and 3600"),
    ("sensor", "health_interval_seconds"): (lambda v: 1 <= v <= 86400, "between 1 and 86400"),
    ("sensor", "control_socket"): (lambda v: v.startswith("/"), "an absolute path"),
    ("sensor", "containment_state"): (lambda v: v.startswith("/"), "an absolute path"),
    ("sensor", "max_cmdline_bytes"): (lambda v: 64 <= v <= 1 << 20, "between 64 and 1048576"),
    ("kernel", "ring_buffer_pages"): (lambda v: _is_pow2(v) and v <= 65536, "a power of two up to 65536"),
    ("kernel", "ring_buffer_reader"): (lambda v: v in ("mmap", "bcc"), '"mmap" or "bcc"'),
    ("kernel", "flow_map_entries"): (lambda v: 1024 <= v <= 4_194_304, "between 1024 and 4194304"),
    ("kernel", "flow_quota_per_cgroup"): (lambda v: 16 <= v <= 4_194_304, "between 16 and 4194304"),
    ("kernel", "event_quota_per_cgroup"): (lambda v: 16 <= v <= 10_000_000, "between 16 and 10000000"),
    ("kernel", "pid_map_entries"): (lambda v: 1024 <= v <= 4_194_304, "between 1024 and 4194304"),
    ("kernel", "sample_bytes"): (lambda v: 1 <= v <= 256, "between 1 and 256"),
    ("kernel", "max_dns_samples_per_flow_window"): (lambda v: 0 <= v <= 100_000, "between 0 and 100000"),
    ("kernel", "sample_first_packets"): (lambda v: 0 <= v <= 1024, "between 0 and 1024"),
    ("kernel", "sample_every"): (lambda v: 1 <= v <= 1_000_000, "between 1 and 1000000"),
    ("kernel", "sample_every_bytes"): (lambda v: 1024 <= v <= 1 << 30, "between 1024 and 1073741824"),
    ("kernel", "max_samples_per_flow_window"): (lambda v: 0 <= v <= 100_000, "between 0 and 100000"),
    ("kernel", "udp_send_dedup_ms"): (lambda v: 0 <= v <= 3_600_000, "between 0 and 3600000"),
    ("kernel", "exec_args"): (lambda v: v in ("procfs", "tracepoint"), '"procfs" or "tracepoint"'),
    ("kernel", "packet_send_hook"): (lambda v: v in ("auto", "tracepoint"), '"auto" or "tracepoint"'),
    ("runtime", "timeout_seconds"): (lambda v: 0 < v <= 30, "between 0 and 30"),
    ("output", "format"): (lambda v: v in OUTPUT_FORMATS, '"auto", "ecs", "ocsf" or "compact"'),
    ("output", "max_bytes"): (lambda v: v == 0 or v >= 4096, "0 (no rotation) or at least 4096"),
    ("output", "backups"): (lambda v: 0 <= v <= 1000, "between 0 and 1000"),
    ("output", "socket"): (lambda v: v == "" or v.startswith("/"), "empty or an absolute path"),
    ("output", "socket_type"): (lambda v: v in ("dgram", "stream"), '"dgram" or "stream"'),
    ("output", "syslog"): (
        lambda v: v == "" or _valid_syslog(v),
        '"", "unix:///dev/log", "udp://host:port" or "tcp://host:port"',
    ),
    ("output", "syslog_facility"): (
        lambda v: v in _FACILITIES,
        "a syslog facility name (local0..local7, daemon, user, ...)",
    ),
    ("output", "queue_size"): (lambda v: 16 <= v <= 10_000_000, "between 16 and 10000000"),
    ("output", "metrics"): (lambda v: v == "" or _valid_hostport(v), '"" or "host:port"'),
    ("detection", "min_baseline_windows"): (lambda v: 1 <= v <= 1_000_000, "between 1 and 1000000"),
    ("detection", "high_entropy_bits"): (lambda v: 0 < v <= 8, "between 0 and 8"),
    ("detection", "destination_prefix_v4"): (lambda v: 0 <= v <= 32, "between 0 and 32"),
    ("detection", "destination_prefix_v6"): (lambda v: 0 <= v <= 128, "between 0 and 128"),
    ("detection", "trusted_networks"): (lambda v: all(_is_cidr(x) for x in v), "a list of CIDR strings"),
    ("detection", "suppress_seconds"): (lambda v: 0 <= v <= 86400 * 7, "between 0 and 604800"),
    ("detection", "escalation_factor"): (lambda v: v == 0 or 1 < v <= 1e6, "0 (off) or above 1, up to 1000000"),
    ("detection", "timezone"): (lambda v: v in ("local", "UTC"), '"local" or "UTC"'),
    ("detection", "baseline_key_file"): (lambda v: v == "" or v.startswith("/"), '"" or an absolute path'),
    ("detection", "learn_quarantine_windows"): (lambda v: 0 <= v <= 10_000, "between 0 and 10000"),
    ("runtime", "negative_cache_seconds"): (lambda v: 0 <= v <= 86400, "between 0 and 86400"),
    ("runtime", "oci_bundles"): (
        lambda v: all(isinstance(x, str) and x.startswith("/") and "{id}" in x for x in v),
        'a list of absolute path patterns, each with "{id}"',
    ),
}


_HEADER = re.compile(r"^\[\[?\s*([^\]]+?)\s*\]\]?")
_KEY = re.compile(r'^"?([^"\s=]+)"?\s*=')


@functools.lru_cache(maxsize=8)
def _line_index(text: str) -> dict[tuple[str, int, str | None], int]:
    """(table, occurrence, key or None for the header) -> line number, for
    the first of each, in one pass: every key's line is wanted for the error
    it might raise, and a pass per key cost 0.14 s of each start."""
    out: dict[tuple[str, int, str | None], int] = {}
    current, seen = "", {"": 0}  # keys before any header: top level, occurrence 0
    for no, line in enumerate(text.splitlines(), 1):
        s = line.strip()
        m = _HEADER.match(s)
        if m:
            # [rules."SL-EXF-004"] and [rules.SL-EXF-004] name the same table
            current = ".".join(part.strip().strip('"').strip("'") for part in m.group(1).split("."))
            seen[current] = seen.get(current, -1) + 1
            out.setdefault((current, seen[current], None), no)
            continue
        k = _KEY.match(s)
        if k:
            out.setdefault((current, seen.get(current, 0), k.group(1)), no)
    return out


def _line_of(text: str, section: str, key: str | None, index: int = 0) -> int | None:
    """Line number of `[section]` (key None) or of `key =` inside it; for
    arrays of tables (`[[allow]]`) the index-th occurrence."""
    return _line_index(text).get((section, index, key))


def _typename(t: Any) -> str:
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string", list: "a list"}.get(t, str(t))


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
    if typ is list:
        if isinstance(value, list):
            return value
    raise TypeError


def _parse(text: str, path: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        m = re.search(r"at line (\d+)", str(e))
        raise ConfigError(
            f"not valid TOML: {e}",
            path,
            int(m.group(1)) if m else None,
            hint="fix the syntax at that line (see sensor/default.toml for the format)",
        ) from None


def _build(data: dict[str, Any], base: dict[str, Any], text: str, path: str) -> dict[str, Any]:
    merged: dict[str, Any] = {s: dict(v) for s, v in base.items() if s in _SECTIONS}
    merged["rules"] = {k: dict(v) for k, v in base.get("rules", {}).items()}
    merged["allow"] = list(base.get("allow", []))
    for section, body in data.items():
        if section == "rules":
            _build_rules(body, merged["rules"], text, path)
            continue
        if section == "allow":
            merged["allow"] += _build_allow(body, text, path)
            continue
        if section not in _SECTIONS:
            raise ConfigError(
                f"unknown section [{section}]",
                path,
                _line_of(text, section, None),
                hint=f"known sections: {', '.join(_SECTIONS)}",
            )
        if not isinstance(body, dict):
            raise ConfigError(f"{section} must be a table", path, _line_of(text, section, None))
        types = {f.name: f.type for f in fields(_SECTIONS[section])}
        for key, value in body.items():
            line = _line_of(text, section, key)
            if key not in types:
                raise ConfigError(
                    f"unknown key {section}.{key}",
                    path,
                    line,
                    hint=f"keys of [{section}]: {', '.join(types)}",
                )
            typ = {"bool": bool, "int": int, "float": float, "str": str, "list": list}[
                str(types[key]).partition("[")[0]
            ]
            try:
                value = _coerce(value, typ)
            except TypeError:
                raise ConfigError(f"{section}.{key} must be {_typename(typ)}, not {value!r}", path, line) from None
            check = _CHECKS.get((section, key))
            if check and not check[0](value):
                raise ConfigError(f"{section}.{key} = {value!r}: must be {check[1]}", path, line)
            merged[section][key] = value
    return merged


def _build_rules(body: Any, rules: dict[str, dict[str, Any]], text: str, path: str) -> None:
    from sensor.detect.catalog import BY_ID

    if not isinstance(body, dict):
        raise ConfigError("rules must be a table of [rules.<id>] tables", path, _line_of(text, "rules", None))
    for rid, settings in body.items():
        sec = f"rules.{rid}"
        if rid not in BY_ID:
            raise ConfigError(
                f"unknown rule {rid}", path, _line_of(text, sec, None), hint=f"rule ids: {', '.join(BY_ID)}"
            )
        if not isinstance(settings, dict):
            raise ConfigError(f"{sec} must be a table", path, _line_of(text, sec, None))
        current = rules.setdefault(rid, _rule_defaults(rid))
        types = _rule_types(rid)
        for key, value in settings.items():
            line = _line_of(text, sec, key)
            if key not in types:
                raise ConfigError(f"unknown key {sec}.{key}", path, line, hint=f"keys of [{sec}]: {', '.join(types)}")
            typ, item = types[key]
            try:
                value = _coerce(value, typ)
            except TypeError:
                raise ConfigError(f"{sec}.{key} must be {_typename(typ)}, not {value!r}", path, line) from None
            if key == "severity" and not 0 <= value <= 100:
                raise ConfigError(f"{sec}.severity = {value}: must be between 0 and 100", path, line)
            if isinstance(value, (int, float)) and not isinstance(value, bool) and value < 0:
                raise ConfigError(f"{sec}.{key} = {value}: must not be negative", path, line)
            bad = _rule_value_ok(key, value)
            if bad is not None:
                raise ConfigError(f"{sec}.{key} = {value}: must be {bad}", path, line)
            if item is not None:
                if not all(isinstance(x, item) for x in value):
                    raise ConfigError(f"{sec}.{key}: every item must be {_typename(item)}", path, line)
                value = tuple(value)
            current[key] = value


# Rule thresholds by key name, wherever they appear: (lowest, highest,
# why). A value outside fails validation with its file and line, instead
# of failing (or silently never firing) at run time.
_RULE_BOUNDS: dict[str, tuple[float, float, str]] = {
    "min_connections": (3, 1_000_000, "at least 3 (two intervals to compare)"),
    "min_events": (1, 1_000_000, "at least 1"),
    "max_jitter": (0.0, 10.0, "between 0 and 10"),
    "quantile": (0.5, 1.0, "between 0.5 and 1"),
    "multiplier": (1.0, 1_000_000.0, "at least 1"),
    "min_interval_seconds": (0.001, 86400.0, "between 0.001 and 86400"),
    "horizon_seconds": (1.0, 7 * 86400.0, "between 1 and 604800"),
    "within_seconds": (1.0, 7 * 86400.0, "between 1 and 604800"),
    "max_lifetime_seconds": (1.0, 7 * 86400.0, "between 1 and 604800"),
    "rescan_seconds": (1.0, 86400.0, "between 1 and 86400"),
    "dns_label_entropy_bits": (0.1, 8.0, "between 0.1 and 8"),
    "dns_unique_subdomains": (2, 1_000_000, "at least 2"),
    "dns_min_label_length": (1, 63, "between 1 and 63 (a DNS label)"),
    "dns_min_encoded_length": (1, 253, "between 1 and 253 (a DNS name)"),
}


def _rule_value_ok(key: str, value: Any) -> str | None:
    """What is wrong with a rule setting's value, or None."""
    b = _RULE_BOUNDS.get(key)
    if b is None or not isinstance(value, (int, float)) or isinstance(value, bool):
        return None
    lo, hi, what = b
    return None if lo <= value <= hi else what


def _rule_defaults(rid: str) -> dict[str, Any]:
    from sensor.detect.catalog import BY_ID

    return BY_ID[rid].default_values()


def _rule_types(rid: str) -> dict[str, tuple[type, type | None]]:
    """Key -> (TOML type, item type for arrays), from the rule's Settings
    fields in order; tuple fields are given as TOML arrays."""
    from sensor.detect.catalog import BY_ID

    out: dict[str, tuple[type, type | None]] = {}
    for key, hint in get_type_hints(BY_ID[rid].settings).items():
        if get_origin(hint) is tuple:
            out[key] = (list, get_args(hint)[0])
        else:
            out[key] = (hint, None)
    return out


_CRON_FIELD = re.compile(r"^(\*|\d+(-\d+)?)(/\d+)?(,(\*|\d+(-\d+)?)(/\d+)?)*$")


_CRON_RANGES = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 7))  # minute hour day month weekday


def _valid_cron(expr: str) -> bool:
    """Five fields; numbers within each field's range; steps of at least 1."""
    parts = expr.split()
    if len(parts) != 5 or not all(_CRON_FIELD.match(p) for p in parts):
        return False
    for part, (lo, hi) in zip(parts, _CRON_RANGES, strict=False):
        for item in part.split(","):
            rng, _, step = item.partition("/")
            if step and int(step) < 1:
                return False
            if rng != "*":
                nums = [int(x) for x in rng.split("-")]
                if any(not lo <= n <= hi for n in nums) or (len(nums) == 2 and nums[0] > nums[1]):
                    return False
    # imported here: 35 ms that only [[allow]] schedules need
    from croniter import CroniterBadDateError, croniter

    try:  # a day that never comes (30 February): the window would never start
        croniter(expr).get_next()
    except CroniterBadDateError:
        return False
    return True


def _build_allow(body: Any, text: str, path: str) -> list[AllowEntry]:
    from sensor.detect.catalog import BY_ID

    if not isinstance(body, list):
        raise ConfigError("allow must be an array of tables: write [[allow]]", path, _line_of(text, "allow", None))
    out = []
    fields_ = {f.name: f.type for f in fields(AllowEntry)}
    for i, entry in enumerate(body):
        line = _line_of(text, "allow", None, i)
        if not isinstance(entry, dict):
            raise ConfigError(
                f"allow entries must be tables, not {entry!r}: write [[allow]]",
                path,
                line or _line_of(text, "", "allow"),
            )
        kw: dict[str, Any] = {}
        for key, value in entry.items():
            kline = _line_of(text, "allow", key, i) or line
            if key not in fields_:
                raise ConfigError(
                    f"unknown key allow.{key}", path, kline, hint=f"keys of [[allow]]: {', '.join(fields_)}"
                )
            if key in ("workload", "executable", "comment", "destination", "schedule", "domain") and not isinstance(
                value, str
            ):
                raise ConfigError(f"allow.{key} must be a string", path, kline)
            if key == "destination" and not _is_cidr(value):
                raise ConfigError(f"allow.destination = {value!r}: not an address or CIDR", path, kline)
            if key == "port" and (not isinstance(value, int) or isinstance(value, bool) or not 0 < value < 65536):
                raise ConfigError(f"allow.port = {value!r}: must be a port number", path, kline)
            if key == "rules":
                if not isinstance(value, list) or any(r not in BY_ID for r in value):
                    raise ConfigError(
                        f"allow.rules = {value!r}: must list rule ids",
                        path,
                        kline,
                        hint=f"rule ids: {', '.join(BY_ID)}",
                    )
                value = tuple(value)
            if key == "schedule" and not _valid_cron(value):
                raise ConfigError(
                    f'allow.schedule = {value!r}: not a cron expression "minute hour day month weekday"', path, kline
                )
            if key == "duration_minutes":
                if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 < value <= 10080:
                    raise ConfigError("allow.duration_minutes must be between 0 and 10080", path, kline)
                value = float(value)
            kw[key] = value
        if not any(k in kw for k in ("workload", "executable", "destination", "domain", "port")):
            raise ConfigError(
                "allow entry matches everything: give workload, executable, destination, domain or port", path, line
            )
        out.append(AllowEntry(**kw))
    return out


@functools.cache
def _defaults() -> dict[str, Any]:
    """The embedded defaults, built (and their rules checked against the
    catalog) on first use, not at import: the BPF compile's early start
    (sensor/kernel/precompile.py) needs the [kernel] table without them."""
    return _build(
        _parse(DEFAULT_CONFIG_TEXT, "default.toml"), {s: {} for s in _SECTIONS}, DEFAULT_CONFIG_TEXT, "default.toml"
    )


def _make(merged: dict[str, Any], source: str) -> Config:
    from sensor.detect.catalog import BY_ID

    rules = {
        rid: info.settings(**{**_rule_defaults(rid), **merged["rules"].get(rid, {})}) for rid, info in BY_ID.items()
    }
    return Config(
        **{s: cls(**merged[s]) for s, cls in _SECTIONS.items()},
        rules=rules,
        allow=tuple(merged["allow"]),
        source=source,
    )


def default_config() -> Config:
    return _make(_defaults(), "<embedded defaults>")


def _read(path: str | Path) -> tuple[str, str]:
    """(path as text, the file's text), or the ConfigError that says why not."""
    p = str(path)
    try:
        return p, Path(p).read_text()
    except FileNotFoundError:
        raise ConfigError("file not found", p, hint="give an existing file to --config") from None
    except OSError as e:
        raise ConfigError(f"cannot read: {e.strerror}", p) from None


def load_config(path: str | Path | None) -> Config:
    """The embedded defaults, overridden by the file at `path` if given."""
    if path is None:
        return default_config()
    p, text = _read(path)
    return _make(_build(_parse(text, p), _defaults(), text, p), p)


def load_kernel_section(path: str | Path | None) -> KernelSection:
    """The [kernel] table alone, as load_config would give it (the embedded
    defaults, overridden and checked by the file's [kernel]), without reading
    the rest or importing the rule catalog: what the BPF compile needs, read
    before the CLI has loaded (sensor/kernel/precompile.py). Raises
    ConfigError where load_config would for the same table."""
    base = _build(
        {"kernel": _parse(DEFAULT_CONFIG_TEXT, "default.toml")["kernel"]},
        {s: {} for s in _SECTIONS},
        DEFAULT_CONFIG_TEXT,
        "default.toml",
    )
    if path is not None:
        p, text = _read(path)
        data = _parse(text, p)
        if "kernel" in data:
            base = _build({"kernel": data["kernel"]}, base, text, p)
    return KernelSection(**base["kernel"])
