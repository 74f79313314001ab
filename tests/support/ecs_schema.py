"""Validate Sluice's JSON documents against the ECS 9.4.0 field definitions.

    from tests.support.ecs_schema import validate
    assert validate(doc) == [], problems

`validate(doc)` returns a list of problems, one string each, naming the
dotted field; an empty list means the document is valid. The rules:

* nested objects are flattened to dotted names ("@timestamp" is a top-level
  field); every field outside `sluice.*` (Sluice's custom fields) must be an
  ECS field, except below a parent that ECS types object / flattened /
  nested (e.g. container.labels), which accepts any sub-keys;
* values are type-checked by ECS type (keyword -> str, long -> int but not
  bool, float -> int or float, boolean -> bool, date -> ISO 8601 string
  ending in Z, ip -> IPv4/IPv6 text, object -> dict or list of dicts); null
  is not a value (omit the field instead);
* a list is allowed for any field (Elasticsearch semantics) and required where
  ECS says `normalize: [array]`; each element is type-checked;
* fields with ECS allowed_values (event.kind, event.category, event.type,
  event.outcome, ...) only take those values, and each event.type must be an
  expected type of at least one of the document's event.category values;
* ecs.version must be present and equal ECS_VERSION (any 9.x with
  strict_version=False); @timestamp is required;
* everything (also under sluice.*) must be plain JSON: str keys, no sets,
  bytes or other objects that the writer would turn into str(), no NaN/inf.

The definitions (tests/data/ecs/, see its README) are parsed once per
process (i.e. per test session) and cached.
"""

from __future__ import annotations

import datetime as _dt
import functools
import ipaddress
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ECS_VERSION = "9.4.0"
ECS_DIR = Path(__file__).resolve().parent.parent / "data" / "ecs"
ECS_FLAT = ECS_DIR / f"ecs_flat-{ECS_VERSION}.yml"
CUSTOM_ROOT = "sluice"

STRING_TYPES = frozenset({"keyword", "constant_keyword", "wildcard", "text", "match_only_text"})
INT_RANGES = {
    "long": (-(2**63), 2**63 - 1),
    "integer": (-(2**31), 2**31 - 1),
    "short": (-(2**15), 2**15 - 1),
    "byte": (-(2**7), 2**7 - 1),
    "unsigned_long": (0, 2**64 - 1),
}
FLOAT_TYPES = frozenset({"float", "double", "half_float", "scaled_float"})
OBJECT_TYPES = frozenset({"object", "flattened", "nested"})
ISO_Z = re.compile(r"^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(\.\d{1,9})?Z$")
JSON_SCALARS = (str, int, float, bool, type(None))


@dataclass(frozen=True)
class EcsField:
    name: str
    type: str
    array: bool  # normalize contains "array"
    allowed: frozenset[str] | None  # allowed_values names
    object_type: str | None  # type of the values below an object field


@dataclass(frozen=True)
class Schema:
    version: str
    fields: dict[str, EcsField]
    parents: frozenset[str]  # every proper prefix of a field name
    expected_types: dict[str, frozenset[str]]  # event.category value -> expected event.type values

    def open_ancestor(self, name: str) -> EcsField | None:
        """The nearest ancestor of `name` that ECS types object/flattened/nested."""
        parts = name.split(".")
        for i in range(len(parts) - 1, 0, -1):
            f = self.fields.get(".".join(parts[:i]))
            if f is not None and f.type in OBJECT_TYPES:
                return f
        return None


@functools.cache
def load_schema(path: str | Path = ECS_FLAT) -> Schema:
    """Parse an ecs_flat.yml (cached: once per process for each path)."""
    import yaml  # the `test` extra: pyyaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with open(path, encoding="utf-8") as f:
        raw: dict[str, dict[str, Any]] = yaml.load(f, Loader=loader)
    fields: dict[str, EcsField] = {}
    parents: set[str] = set()
    for name, d in raw.items():
        allowed = d.get("allowed_values")
        fields[name] = EcsField(
            name=name,
            type=d["type"],
            array="array" in (d.get("normalize") or []),
            allowed=frozenset(a["name"] for a in allowed) if allowed else None,
            object_type=d.get("object_type"),
        )
        parts = name.split(".")
        parents.update(".".join(parts[:i]) for i in range(1, len(parts)))
    expected = {
        a["name"]: frozenset(a.get("expected_event_types") or ()) for a in raw["event.category"]["allowed_values"]
    }
    m = re.search(r"ecs_flat-(.+)\.yml$", str(path))
    return Schema(m.group(1) if m else "?", fields, frozenset(parents), expected)


def _tname(v: Any) -> str:
    return "null" if v is None else type(v).__name__


def _short(v: Any, n: int = 80) -> str:
    r = repr(v)
    return r if len(r) <= n else r[: n - 3] + "..."


def check_date(v: str) -> str | None:
    m = ISO_Z.match(v)
    if m is None:
        return "not an ISO 8601 date-time ending in Z (e.g. 2024-01-09T14:00:00.000Z)"
    frac = (m.group(2) or ".0")[1:7].ljust(6, "0")
    try:
        _dt.datetime.fromisoformat(f"{m.group(1)}.{frac}")
    except ValueError as e:
        return f"not a valid date-time ({e})"
    return None


def check_scalar(ecs_type: str, v: Any) -> str | None:
    """Why `v` is not a value of an ECS type (None when it is)."""
    if v is None:
        return "null is not a value (omit the field instead)"
    if ecs_type in STRING_TYPES:
        return None if isinstance(v, str) else f"{ecs_type} needs a string, got {_tname(v)}"
    if ecs_type in INT_RANGES:
        if isinstance(v, bool) or not isinstance(v, int):
            return f"{ecs_type} needs an integer, got {_tname(v)}"
        lo, hi = INT_RANGES[ecs_type]
        return None if lo <= v <= hi else f"{ecs_type} out of range [{lo}, {hi}]"
    if ecs_type in FLOAT_TYPES:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            return f"{ecs_type} needs a number, got {_tname(v)}"
        return None if math.isfinite(v) else f"{ecs_type} needs a finite number"
    if ecs_type == "boolean":
        return None if isinstance(v, bool) else f"boolean needs true/false, got {_tname(v)}"
    if ecs_type == "date":
        return check_date(v) if isinstance(v, str) else f"date needs an ISO 8601 string, got {_tname(v)}"
    if ecs_type == "ip":
        if not isinstance(v, str):
            return f"ip needs a string, got {_tname(v)}"
        if "%" in v:
            return "ip must not carry a zone index (%...)"
        try:
            ipaddress.ip_address(v)
        except ValueError:
            return "not a valid IPv4 or IPv6 address"
        return None
    if ecs_type in OBJECT_TYPES:
        return None if isinstance(v, dict) else f"{ecs_type} needs an object, got {_tname(v)}"
    if ecs_type == "geo_point":
        if isinstance(v, str):
            return None
        if isinstance(v, dict) and all(
            isinstance(v.get(k), (int, float)) and not isinstance(v.get(k), bool) for k in ("lat", "lon")
        ):
            return None
        return "geo_point needs {lat, lon} or a string"
    return f"unsupported ECS type {ecs_type!r}"


class _Validator:
    def __init__(self, schema: Schema) -> None:
        self.s = schema
        self.problems: list[str] = []
        self.values: dict[str, list[Any]] = {}  # ECS field -> its scalar values

    def add(self, name: str, msg: str, value: Any = ...) -> None:
        self.problems.append(f"{name}: {msg}" + ("" if value is ... else f" (value {_short(value)})"))

    # --- plain JSON everywhere (also under sluice.*) ----------------------------

    def json_only(self, name: str, v: Any) -> None:
        if isinstance(v, dict):
            for k, x in v.items():
                if not isinstance(k, str):
                    self.add(name or "<document>", f"non-string key {k!r}")
                    continue
                self.json_only(f"{name}.{k}" if name else k, x)
        elif isinstance(v, (list, tuple)):
            for x in v:
                self.json_only(name, x)
        elif isinstance(v, float) and not math.isfinite(v):
            self.add(name, "NaN/Infinity is not JSON", v)
        elif not isinstance(v, JSON_SCALARS):
            self.add(name, f"{_tname(v)} is not a JSON type (the writer would write str() of it)", v)

    # --- the walk -------------------------------------------------------------------

    def walk(self, obj: dict[str, Any], prefix: str, in_array: bool) -> None:
        for key, v in obj.items():
            if not isinstance(key, str):
                continue  # reported by json_only
            name = prefix + key
            if not key or "" in key.split("."):
                self.add(name or "''", "empty field name segment")
                continue
            if name == CUSTOM_ROOT or name.startswith(CUSTOM_ROOT + "."):
                if not isinstance(v, dict) and name == CUSTOM_ROOT:
                    self.add(name, f"{CUSTOM_ROOT} must be an object, got {_tname(v)}")
                continue  # custom fields: any shape
            self.field(name, v, in_array)

    def field(self, name: str, v: Any, in_array: bool) -> None:
        f = self.s.fields.get(name)
        if f is not None:
            self.ecs_field(f, v, in_array)
            return
        if isinstance(v, dict):
            self.walk(v, name + ".", in_array)
            return
        if isinstance(v, (list, tuple)) and v and all(isinstance(x, dict) for x in v):
            for x in v:  # an array of objects: its leaves are arrays
                self.walk(x, name + ".", True)
            return
        anc = self.s.open_ancestor(name)
        if anc is not None:
            if anc.object_type:  # e.g. container.labels: keyword values
                for x in v if isinstance(v, (list, tuple)) else [v]:
                    why = check_scalar(anc.object_type, x)
                    if why:
                        self.add(name, f"below {anc.name} ({anc.type} of {anc.object_type}): {why}", x)
            return
        if name in self.s.parents:
            self.add(name, f"is an ECS object (it has fields {name}.*), got {_tname(v)}", v)
        else:
            self.add(name, f"not an ECS {self.s.version} field (custom fields must live under {CUSTOM_ROOT}.*)", v)

    def ecs_field(self, f: EcsField, v: Any, in_array: bool) -> None:
        name = f.name
        if name in self.values and not in_array:
            self.add(name, "given more than once (a dotted key and a nested object?)")
        if f.type in OBJECT_TYPES:
            items = v if isinstance(v, (list, tuple)) else [v]
            bad = [x for x in items if not isinstance(x, dict)]
            if bad:
                self.add(name, f"{f.type} needs an object or a list of objects, got {_tname(bad[0])}", v)
            self.values.setdefault(name, []).extend(items)
            if f.type != "flattened":  # known sub-fields are still checked
                for x in items:
                    if isinstance(x, dict):
                        self.walk(x, name + ".", in_array or isinstance(v, (list, tuple)))
            return
        if isinstance(v, (list, tuple)):
            items = list(v)
            nested = [x for x in items if isinstance(x, (list, tuple, dict))]
            if nested:
                self.add(name, f"array elements must be {f.type} values, got {_tname(nested[0])}", v)
                items = [x for x in items if not isinstance(x, (list, tuple, dict))]
        else:
            items = [v]
            if f.array and not in_array and v is not None:
                self.add(name, "must be an array (ECS normalize: array)", v)
        for x in items:
            why = check_scalar(f.type, x)
            if why:
                self.add(name, why, x)
            elif f.allowed is not None and x not in f.allowed:
                self.add(name, f"not an ECS allowed value (allowed: {', '.join(sorted(f.allowed))})", x)
        self.values.setdefault(name, []).extend(items)

    # --- document-level rules -----------------------------------------------------

    def finish(self, strict_version: bool) -> None:
        vals = self.values
        for req in ("@timestamp", "ecs.version"):
            if not [x for x in vals.get(req, []) if x is not None]:
                self.add(req, "required field missing")
        version = vals.get("ecs.version", [])
        if version and version[0] is not None:
            v = version[0]
            if strict_version and v != ECS_VERSION:
                self.add("ecs.version", f"must be {ECS_VERSION!r} (the definitions validated against)", v)
            elif not strict_version and not (isinstance(v, str) and v.startswith(ECS_VERSION.split(".")[0] + ".")):
                self.add("ecs.version", f"must be an ECS {ECS_VERSION.split('.')[0]}.x version", v)
        cats = [c for c in vals.get("event.category", []) if isinstance(c, str)]
        types = [t for t in vals.get("event.type", []) if isinstance(t, str)]
        if types and not cats:
            self.add("event.type", "given without event.category (ECS categorization)", types)
        known_cats = [c for c in cats if c in self.s.expected_types]
        allowed_types = self.s.fields["event.type"].allowed or frozenset()
        types = [t for t in types if t in allowed_types]  # others: already not allowed
        if types and known_cats:
            expected = frozenset().union(*(self.s.expected_types[c] for c in known_cats))
            for t in types:
                if t not in expected:
                    self.add(
                        "event.type",
                        f"{t!r} is not an expected event type of event.category "
                        f"{known_cats} (expected: {', '.join(sorted(expected))})",
                    )


def validate(doc: Any, *, strict_version: bool = True, schema: Schema | None = None) -> list[str]:
    """Problems of one document against the ECS definitions ([] = valid)."""
    if not isinstance(doc, dict):
        return [f"document is a {_tname(doc)}, not a JSON object"]
    v = _Validator(schema or load_schema())
    v.json_only("", doc)
    plain, v.problems = v.problems, []
    v.walk(doc, "", False)
    v.finish(strict_version)
    # a non-JSON value of an ECS field is already a type problem: say it once
    reported = {p.split(":", 1)[0] for p in v.problems}
    return [p for p in plain if p.split(":", 1)[0] not in reported] + v.problems


def explain(doc: Any, problems: list[str]) -> str:
    """A failure message: the problems, then the document."""
    ev = doc.get("event") if isinstance(doc, dict) else None
    kind = ev.get("action", "?") if isinstance(ev, dict) else "?"
    body = json.dumps(doc, indent=1, default=repr)
    return f"document (event.action={kind}) breaks ECS {ECS_VERSION}:\n  - " + "\n  - ".join(problems) + f"\n{body}"


def assert_valid(doc: Any, **kw: Any) -> None:
    problems = validate(doc, **kw)
    assert problems == [], explain(doc, problems)
