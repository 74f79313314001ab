"""The ECS validator (tests/support/ecs_schema.py) itself: it accepts realistic Sluice
documents and rejects each kind of schema violation."""

from __future__ import annotations

import copy
import json
import time
from typing import Any

import pytest

from sensor import __version__
from tests.support.ecs_schema import ECS_VERSION, load_schema, validate

CID = "a0" * 32


def flow_summary() -> dict[str, Any]:
    return {
        "@timestamp": "2024-01-09T14:00:10.000Z",
        "ecs": {"version": "9.4.0"},
        "event": {
            "kind": "event",
            "category": ["network"],
            "type": ["info"],
            "action": "flow_summary",
            "module": "sluice",
            "dataset": "sluice.flow",
            "start": "2024-01-09T14:00:00.000Z",
            "end": "2024-01-09T14:00:10.000Z",
        },
        "host": {"name": "node-7"},
        "agent": {"type": "sluice", "version": __version__},
        "sluice": {
            "cgroup": {"id": 4242, "path": f"/docker/{CID}"},
            "attribution": "container",
            "window": {"start": "2024-01-09T14:00:00.000Z", "end": "2024-01-09T14:00:10.000Z"},
            "payload": {"bytes": 1_200_000, "samples": 9, "sampled_bytes": 1160, "entropy": 7.93},
            "flow": {"connections": 1},
        },
        "container": {
            "id": CID,
            "runtime": "docker",
            "name": "exfil-test",
            "image": {"name": "alpine:3.20", "hash": {"all": ["sha256:" + "a" * 64]}},
        },
        "orchestrator": {"type": "kubernetes", "resource": {"type": "pod", "name": "db-0"}, "namespace": "data"},
        "process": {
            "pid": 5_000_123,
            "name": "curl",
            "executable": "/usr/bin/curl",
            "args": ["curl", "https://198.51.100.7/"],
            "args_count": 2,
            "command_line": "curl https://198.51.100.7/",
            "parent": {"pid": 1},
        },
        "destination": {"ip": "198.51.100.7", "port": 443, "address": "198.51.100.7"},
        "network": {"transport": "tcp", "direction": "egress", "type": "ipv4", "protocol": "tls"},
        "source": {"bytes": 1_234_567, "packets": 900},
    }


def alert() -> dict[str, Any]:
    return {
        "@timestamp": "2024-01-09T14:00:10.000Z",
        "ecs": {"version": "9.4.0"},
        "event": {
            "kind": "alert",
            "category": ["intrusion_detection", "network"],
            "type": ["info"],
            "action": "new_destination_encrypted",
            "module": "sluice",
            "dataset": "sluice.alert",
            "severity": 68,
            "risk_score": 68.0,
            "id": "6f1c2f0e-7c0b-4b8e-9a53-1c2d3e4f5a6b",
            "created": "2024-01-09T14:00:10.125Z",
            "reference": "https://attack.mitre.org/techniques/T1048/",
        },
        "host": {"name": "node-7"},
        "agent": {"type": "sluice", "version": __version__},
        "message": "Container exfil-test (acme/app) sent 2.0 MiB of encrypted-looking data to 203.0.113.9:4444",
        "rule": {
            "id": "SL-EXF-004",
            "name": "Large encrypted transfer to a new destination",
            "description": "A destination not in the workload's baseline received ...",
            "ruleset": "sluice",
            "category": "Exfiltration",
            "version": "1",
        },
        "threat": {
            "framework": "MITRE ATT&CK",
            "technique": {
                "id": ["T1048"],
                "name": ["Exfiltration Over Alternative Protocol"],
                "reference": ["https://attack.mitre.org/techniques/T1048/"],
                "subtechnique": {
                    "id": ["T1048.001"],
                    "name": ["Exfiltration Over Symmetric Encrypted Non-C2 Protocol"],
                    "reference": ["https://attack.mitre.org/techniques/T1048/001/"],
                },
            },
            "tactic": {
                "id": ["TA0010"],
                "name": ["Exfiltration"],
                "reference": ["https://attack.mitre.org/tactics/TA0010/"],
            },
        },
        "container": {
            "id": CID,
            "runtime": "docker",
            "name": "exfil-test",
            "image": {"name": "acme/app:1.0"},
            "labels": {"com.example.team": "data"},
        },
        "process": {"pid": 4242, "name": "curl"},
        "destination": {"ip": "2001:db8::9", "port": 4444, "address": "2001:db8::9"},
        "network": {"transport": "tcp", "direction": "egress", "type": "ipv6"},
        "sluice": {
            "cgroup": {"id": 10_000},
            "attribution": "container",
            "workload": "acme/app",
            "evidence": {
                "bytes": 2 * 1024 * 1024,
                "since": 1704808800.0,
                "entropy": None,
                "time": {"hour": 14},
                "baseline": {"known_workload": False, "windows": 0},
            },
            "alert": {"suppressed_since_last": 0},
            "response": {"block": ["ip6tables -I DOCKER-USER -d 2001:db8::9 -j DROP"]},
        },
    }


def with_(doc: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    d = copy.deepcopy(doc)
    *parents, last = path.split(".")
    o = d
    for p in parents:
        o = o.setdefault(p, {})
    o[last] = value
    return d


def without(doc: dict[str, Any], path: str) -> dict[str, Any]:
    d = copy.deepcopy(doc)
    *parents, last = path.split(".")
    o = d
    for p in parents:
        o = o[p]
    del o[last]
    return d


def only_problem(doc: dict[str, Any], field: str, *words: str) -> str:
    problems = validate(doc)
    assert len(problems) == 1, problems
    (p,) = problems
    assert p.startswith(field + ":"), p
    for w in words:
        assert w in p, p
    return p


# --- accepted ----------------------------------------------------------------------


@pytest.mark.parametrize("make", [flow_summary, alert])
def test_realistic_sluice_documents_are_valid(make: Any) -> None:
    doc = make()
    assert validate(doc) == []
    assert validate(json.loads(json.dumps(doc))) == []


def test_any_field_may_be_an_array_and_dotted_keys_flatten() -> None:
    d = with_(flow_summary(), "destination.port", [443, 8443])
    assert validate(d) == []
    d = flow_summary()
    d["event.outcome"] = "success"  # a dotted key is the same field
    d["tags"] = ["a", "b"]
    assert validate(d) == []


def test_object_fields_take_any_sub_keys_of_their_object_type() -> None:
    d = with_(flow_summary(), "container.labels", {"io.kubernetes.pod.name": "db-0", "x": {"y": "z"}})
    assert validate(d) == []
    p = only_problem(
        with_(flow_summary(), "container.labels", {"replicas": 3}),
        "container.labels.replicas",
        "keyword needs a string",
    )
    assert "container.labels" in p


def test_custom_fields_under_sluice_take_any_shape_but_must_be_json() -> None:
    d = with_(flow_summary(), "sluice.anything", {"n": None, "l": [1, "a", {"b": True}]})
    assert validate(d) == []
    only_problem(with_(flow_summary(), "sluice.anything", {1, 2}), "sluice.anything", "not a JSON type")
    only_problem(with_(flow_summary(), "sluice.ratio", float("nan")), "sluice.ratio", "NaN")


def test_ecs_version_nine_x_when_not_strict() -> None:
    d = with_(flow_summary(), "ecs.version", "9.3.0")
    assert validate(d, strict_version=False) == []
    only_problem(d, "ecs.version", "9.4.0")
    assert validate(with_(flow_summary(), "ecs.version", "8.17.0"), strict_version=False)


# --- rejected ---------------------------------------------------------------------------


def test_rejects_unknown_top_level_field() -> None:
    only_problem(with_(flow_summary(), "workload", "acme/app"), "workload", "not an ECS 9.4.0 field", "sluice.*")


def test_rejects_unknown_nested_field() -> None:
    only_problem(with_(flow_summary(), "destination.bytes_sent", 3), "destination.bytes_sent", "not an ECS")
    only_problem(with_(flow_summary(), "process.cookie", 3), "process.cookie", "not an ECS")


def test_rejects_a_scalar_where_ecs_has_an_object() -> None:
    only_problem(with_(flow_summary(), "destination", "198.51.100.7"), "destination", "is an ECS object")


@pytest.mark.parametrize(
    "path,value,words",
    [
        ("destination.port", "443", ("long needs an integer", "str")),
        ("process.pid", True, ("long needs an integer", "bool")),
        ("source.bytes", 12.5, ("long needs an integer",)),
        ("destination.port", 2**63, ("out of range",)),
        ("host.name", 7, ("keyword needs a string",)),
        ("message", ["fine", 3], ("match_only_text needs a string",)),
        ("event.risk_score", "68", ("float needs a number",)),
        ("event.risk_score", float("inf"), ("finite",)),
        ("event.start", 1704808800.0, ("date needs an ISO 8601 string",)),
        ("event.start", "2024-01-09T14:00:00+00:00", ("ending in Z",)),
        ("event.start", "2024-01-09 14:00:00Z", ("ending in Z",)),
        ("event.end", "2024-13-09T14:00:00.000Z", ("not a valid date-time",)),
        ("process.interactive", "yes", ("boolean needs true/false",)),
        ("process.name", None, ("null",)),
        ("container.labels", "a=b", ("object needs an object",)),
        ("process.args", ["curl", ["-k"]], ("array elements must be keyword",)),
    ],
)
def test_rejects_wrong_types(path: str, value: Any, words: tuple[str, ...]) -> None:
    only_problem(with_(flow_summary(), path, value), path, *words)


@pytest.mark.parametrize(
    "path,value",
    [
        ("event.category", "network"),
        ("event.type", "info"),
        ("process.args", "curl https://x/"),
        ("threat.technique.id", "T1048"),
        ("threat.tactic.name", "Exfiltration"),
        ("container.image.hash.all", "sha256:abc"),
        ("related.ip", "198.51.100.7"),
    ],
)
def test_rejects_scalar_where_ecs_requires_an_array(path: str, value: Any) -> None:
    doc = alert() if path.startswith("threat") else flow_summary()
    only_problem(with_(doc, path, value), path, "must be an array")


def test_array_of_objects_satisfies_array_fields() -> None:
    d = alert()
    d["threat"] = [
        {"framework": "MITRE ATT&CK", "technique": {"id": "T1048"}},
        {"framework": "MITRE ATT&CK", "technique": {"id": "T1104"}},
    ]
    assert validate(d) == []


@pytest.mark.parametrize(
    "path,value",
    [
        ("event.kind", "detection"),
        ("event.category", ["network", "exfiltration"]),
        ("event.type", ["flow"]),
        ("event.outcome", "ok"),
    ],
)
def test_rejects_values_outside_ecs_allowed_values(path: str, value: Any) -> None:
    p = only_problem(with_(flow_summary(), path, value), path, "not an ECS allowed value")
    assert "allowed:" in p


@pytest.mark.parametrize(
    "category,types,bad",
    [
        (["host"], ["connection"], "connection"),  # host: access change end info start
        (["process"], ["start", "protocol"], "protocol"),
        (["intrusion_detection"], ["start"], "start"),
    ],
)
def test_rejects_event_type_not_expected_for_the_categories(category: list[str], types: list[str], bad: str) -> None:
    d = with_(with_(flow_summary(), "event.category", category), "event.type", types)
    only_problem(d, "event.type", f"{bad!r} is not an expected event type")


def test_event_type_needs_only_one_matching_category() -> None:
    # "connection" is not expected for intrusion_detection, but it is for network
    d = with_(
        with_(alert(), "event.type", ["connection", "start"]), "event.category", ["intrusion_detection", "network"]
    )
    assert validate(d) == []
    only_problem(without(flow_summary(), "event.category"), "event.type", "without event.category")


@pytest.mark.parametrize("ip", ["198.51.100.256", "not-an-ip", "", "fe80::1%eth0", "198.51.100.7:443", "2001:db8::zz"])
def test_rejects_bad_ip(ip: str) -> None:
    only_problem(with_(flow_summary(), "destination.ip", ip), "destination.ip")


@pytest.mark.parametrize("ip", ["0.0.0.0", "::", "::ffff:198.51.100.7", "2001:db8::1", "127.0.0.1"])
def test_accepts_good_ip(ip: str) -> None:
    assert validate(with_(flow_summary(), "destination.ip", ip)) == []


def test_required_fields_and_version() -> None:
    only_problem(without(flow_summary(), "@timestamp"), "@timestamp", "required")
    only_problem(without(flow_summary(), "ecs"), "ecs.version", "required")
    only_problem(with_(flow_summary(), "ecs.version", "8.11.0"), "ecs.version", ECS_VERSION)
    assert validate([flow_summary()]) == ["document is a list, not a JSON object"]


def test_several_problems_are_all_reported() -> None:
    d = with_(with_(alert(), "event.kind", "bogus"), "destination.ip", "x")
    d["bytes_out"] = 1
    assert len(validate(d)) == 3


def test_definitions_are_parsed_once() -> None:
    s = load_schema()
    assert s.version == "9.4.0"
    assert s.fields["process.args"].array and not s.fields["process.name"].array
    assert "connection" in s.expected_types["network"]
    t = time.perf_counter()
    for _ in range(100):
        assert load_schema() is s
    assert time.perf_counter() - t < 0.1
