"""--format ocsf: every document kind, produced by the real pipeline and
detector, rendered to OCSF 1.7.0 and validated against the pydantic-ocsf
models generated from the official schema, plus a strict check that every
attribute name exists in the schema (profiles add their attributes)."""

from __future__ import annotations

import json
import typing
from pathlib import Path
from typing import Any

import pytest

# explicit imports: the package builds its models on import (attribute
# access on the namespace modules leaves BaseEvent's references unresolved)
from ocsf.v1_7_0.events import BaseEvent, DetectionFinding, NetworkActivity, ProcessActivity
from ocsf.v1_7_0.objects import Actor, Container, Device
from pydantic import BaseModel

from emulation.records import (
    accept_rec,
    cgroup_rec,
    connect_rec,
    exec_rec,
    exit_rec,
    listen_rec,
    sample_rec,
    tls_client_hello,
    to_wall,
    unix_rec,
)
from sensor.attribution.cgroups import CgroupResolver
from sensor.attribution.containers import Attribution, Attributor, ContainerInfo
from sensor.attribution.docker_api import DockerClient
from sensor.config import default_config
from sensor.detect.engine import Detector, Finding
from sensor.detect.view import ProcessRef
from sensor.outputs.documents import Document
from sensor.outputs.ecs import iso, ms
from sensor.outputs.ocsf import severity_id, to_ocsf
from sensor.telemetry.counters import FlowCounters
from sensor.telemetry.pipeline import Pipeline

CID = "c3" * 32
CLASSES: dict[int, type[BaseModel]] = {
    2004: DetectionFinding,
    4001: NetworkActivity,
    1007: ProcessActivity,
    0: BaseEvent,
}
PROFILE_ATTRS: dict[str, dict[str, Any]] = {
    "container": {"container": Container, "namespace_pid": None},
    "host": {"device": Device, "actor": Actor},
}


def _models(annotation: Any) -> list[type[BaseModel]]:
    out = []
    for a in typing.get_args(annotation) or (annotation,):
        out += _models(a) if typing.get_args(a) else ([a] if isinstance(a, type) and issubclass(a, BaseModel) else [])
    return out


def strict(model: type[BaseModel], data: Any, path: str, extra: dict[str, Any] | None = None) -> list[str]:
    """Attribute names unknown to the schema, recursively."""
    if isinstance(data, list):
        return [p for i, x in enumerate(data) for p in strict(model, x, f"{path}[{i}]")]
    if not isinstance(data, dict):
        return []
    names = {(f.alias or k): f for k, f in model.model_fields.items()}
    problems = []
    for k, v in data.items():
        if k in names:
            sub = _models(names[k].annotation)
            if sub and k not in ("unmapped", "data"):
                problems += strict(sub[0], v, f"{path}.{k}")
        elif extra and k in extra:
            if extra[k] is not None:
                problems += strict(extra[k], v, f"{path}.{k}")
        else:
            problems.append(f"{path}.{k}")
    return problems


def _raw_schema() -> dict[str, Any]:
    import ocsf

    schema: dict[str, Any] = json.loads((Path(ocsf.__file__).parent / "schemas" / "v1_7_0.json").read_text())
    return schema


ENDPOINT_TYPES = set(_raw_schema()["objects"]["endpoint"]["attributes"]["type_id"]["enum"])


def validate(doc: dict[str, Any]) -> None:
    model = CLASSES[doc["class_uid"]]
    # pydantic-ocsf 3.0.0 does not carry device.type_id's enum over from the
    # `endpoint` object that `device` extends (it accepts only 0 and 99):
    # check that attribute against the bundled official schema instead.
    checked = json.loads(json.dumps(doc))
    for holder in (checked, *(e for e in checked.get("evidences", []))):
        if "device" in holder:
            assert str(holder["device"]["type_id"]) in ENDPOINT_TYPES
            holder["device"]["type_id"] = 0
    model.model_validate(checked)  # types, enums, required attributes
    extra: dict[str, Any] = {}
    for p in doc["metadata"].get("profiles", []):
        extra.update(PROFILE_ATTRS[p])
    assert strict(model, doc, doc.get("class_name", str(doc["class_uid"])), extra) == []
    assert doc["type_uid"] == (doc["class_uid"] * 100 + doc["activity_id"] if doc["class_uid"] else 99)
    json.dumps(doc)


@pytest.fixture
def ecs_docs(tmp_path: Path, fake_docker: Any) -> list[dict[str, Any]]:
    fake_docker.add(
        CID,
        "web-1",
        "nginx:1.27",
        "sha256:" + "d" * 64,
        {"io.kubernetes.pod.name": "web-7d4b9c8f5-x2k9p", "io.kubernetes.pod.namespace": "shop"},
    )
    root = tmp_path / "cg"
    (root / "docker" / CID).mkdir(parents=True)
    resolver = CgroupResolver(str(root), rescan_interval=0)
    resolver.scan()
    cg = resolver.id_of(f"/docker/{CID}")
    docs: list[dict[str, Any]] = []
    att = Attributor(resolver, DockerClient(fake_docker.socket_path))
    pipe = Pipeline(att, docs.append, "node-1", True, to_wall)
    path = f"/docker/{CID}".encode()
    for rec in (
        cgroup_rec(1, cg, path, 10),
        exec_rec(4242, cg, 20, filename=b"/usr/bin/curl", comm=b"curl"),
        connect_rec(4242, cg, "203.0.113.9", 443, ktime_ns=30),
        sample_rec(cg, "203.0.113.9", 443, tls_client_hello(), flags=1, sock_pkt_index=0, ktime_ns=40),
        exit_rec(4242, cg, 50),
        cgroup_rec(2, cg, path, 60),
    ):
        pipe.handle_raw(rec)
    pipe.close_window([FlowCounters(cg, "203.0.113.9", 443, 6, 5000, 9, 4000, 1, 1, 2, 1)], 1.0e9, 1.0e9 + 10)
    for rec in (
        listen_rec(4242, cg, "0.0.0.0", 4444, ktime_ns=70),
        accept_rec(cg, "203.0.113.5", 50000, "172.17.0.2", 4444, ktime_ns=71),
        unix_rec(4242, cg, b"/var/run/docker.sock", ktime_ns=72),
    ):
        pipe.handle_raw(rec)
    info = ContainerInfo(CID, "docker", "web-1", "nginx:1.27", "sha256:" + "d" * 64, {}, None, True)
    det = Detector(default_config(), None, [], docs.append, "node-1")
    # inbound (source.* is the peer) and unix-socket findings
    attr = Attribution(cg, f"/docker/{CID}", info)
    for f in (
        Finding(
            "SL-C2-006",
            attr,
            "nginx",
            1.0e9 + 5,
            "inbound",
            {"bytes": 1},
            ("172.17.0.2", 4444, "tcp"),
            None,
            source=("203.0.113.5", 50000),
            direction="ingress",
        ),
        Finding("SL-C2-007", attr, "nginx", 1.0e9 + 5, "socket", {}, None, None, unix_path="/var/run/docker.sock"),
    ):
        docs.append(det.alert_doc(f, 0))
    for rule in ("SL-EXF-002", "SL-C2-001"):
        docs.append(
            det.alert_doc(
                Finding(
                    rule,
                    Attribution(cg, f"/docker/{CID}", info),
                    "nginx",
                    1.0e9 + 5,
                    "Container web-1 did a thing",
                    {"bytes": 1},
                    ("203.0.113.9", 4444, "tcp"),
                    ProcessRef(4242, "curl", "/usr/bin/curl", ["curl"]),
                ),
                0,
            )
        )
    docs.append(
        {
            "@timestamp": "2026-11-22T10:00:00.000Z",
            "ecs": {"version": "9.4.0"},
            "host": {"name": "node-1"},
            "event": {
                "kind": "state",
                "category": ["host"],
                "type": ["info"],
                "action": "sensor_health",
                "module": "sluice",
                "dataset": "sluice.health",
            },
            "sluice": {"health": {"status": "ok"}},
            "message": "sluice health: ok",
        }
    )
    return docs


def test_every_document_kind_is_valid_ocsf(ecs_docs: list[dict[str, Any]]) -> None:
    actions = {d["event"]["action"] for d in ecs_docs}
    assert {
        "exec",
        "exit",
        "connection_attempted",
        "flow_summary",
        "container_summary",
        "container_start",
        "container_stop",
        "encrypted_nonstandard_port",
        "multi_stage_chain",
        "sensor_health",
    } <= actions
    seen = set()
    for d in ecs_docs:
        o = to_ocsf(d)
        validate(o)
        seen.add(o["class_uid"])
    assert seen == {0, 1007, 2004, 4001}


def test_detection_finding_carries_attack_and_container(ecs_docs: list[dict[str, Any]]) -> None:
    alert = next(d for d in ecs_docs if d["event"]["kind"] == "alert" and d["rule"]["id"] == "SL-EXF-002")
    f = to_ocsf(alert)
    assert f["class_uid"] == 2004 and f["category_uid"] == 2 and f["type_uid"] == 200401
    a = f["finding_info"]["attacks"][0]
    assert a["technique"]["uid"] == "T1048" and a["sub_technique"]["uid"] == "T1048.001"
    assert a["tactic"]["uid"] == "TA0010"
    assert f["finding_info"]["analytic"]["uid"] == "SL-EXF-002" and f["finding_info"]["uid"] == alert["event"]["id"]
    assert f["container"]["uid"] == CID and f["container"]["image"]["name"] == "nginx:1.27"
    assert "container" in f["metadata"]["profiles"]
    assert f["severity_id"] == severity_id(alert["event"]["severity"]) and f["risk_score"] == alert["event"]["severity"]
    assert f["evidences"][0]["dst_endpoint"] == {"ip": "203.0.113.9", "port": 4444}
    c2 = to_ocsf(next(d for d in ecs_docs if d["event"]["kind"] == "alert" and d["rule"]["id"] == "SL-C2-001"))
    assert c2["finding_info"]["attacks"][0]["technique"]["uid"] == "T1104"
    assert "sub_technique" not in c2["finding_info"]["attacks"][0]


def test_network_activity_carries_traffic(ecs_docs: list[dict[str, Any]]) -> None:
    flow = next(d for d in ecs_docs if d["event"]["action"] == "flow_summary")
    n = to_ocsf(flow)
    assert n["class_uid"] == 4001 and n["activity_id"] == 6
    assert n["traffic"] == {"bytes_out": 5000, "packets_out": 9, "bytes_in": 0, "packets_in": 0}
    assert n["dst_endpoint"] == {"ip": "203.0.113.9", "port": 443}
    assert n["connection_info"]["direction_id"] == 2 and n["connection_info"]["protocol_num"] == 6
    assert n["app_name"] == "tls"
    assert n["start_time"] < n["end_time"]


def test_severity_mapping() -> None:
    assert [severity_id(s) for s in (0, 19, 20, 55, 63, 85, 100)] == [1, 1, 2, 3, 4, 5, 5]


def test_strict_check_rejects_unknown_attributes(ecs_docs: list[dict[str, Any]]) -> None:
    f = to_ocsf(next(d for d in ecs_docs if d["event"]["kind"] == "alert"))
    f["finding_info"]["not_an_ocsf_field"] = 1
    with pytest.raises(AssertionError):
        validate(f)


def test_times_come_from_the_document_not_its_text(ecs_docs: list[dict[str, Any]]) -> None:
    """Builders' documents carry the numbers their ECS times were written
    from; OCSF uses them (and agrees with the text to the millisecond)."""
    flow = next(d for d in ecs_docs if d["event"]["action"] == "flow_summary")
    assert isinstance(flow, Document) and set(flow.times) == {"@timestamp", "event.start", "event.end"}
    n = to_ocsf(flow)
    assert (n["time"], n["start_time"], n["end_time"]) == tuple(
        ms(flow.times[k]) for k in ("@timestamp", "event.start", "event.end")
    )
    plain = dict(flow)  # the same document without its numbers: the text is parsed, same answer
    assert to_ocsf(plain)["start_time"] == n["start_time"] and to_ocsf(plain)["time"] == n["time"]
    flow.times["event.start"] += 3600  # proof the numbers, not the text, were used
    assert to_ocsf(flow)["start_time"] == n["start_time"] + 3_600_000
    alert = next(d for d in ecs_docs if d["event"]["kind"] == "alert")
    assert isinstance(alert, Document) and "event.created" in alert.times


def test_ms_matches_iso_to_the_millisecond() -> None:
    import datetime as dt

    for ts in (0.0, 1.0e9 + 0.0005, 1_700_000_000.9999, 1_732_000_000.123456):
        text = iso(ts)
        parsed = dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.UTC)
        assert ms(ts) == int(parsed.timestamp() * 1000), ts


def test_a_source_without_received_counts_leaves_them_out(tmp_path: Path) -> None:
    """kernel.count_received = false (or no ingress program): a flow's
    received bytes are unknown, so neither the ECS document nor its OCSF
    form reports them, rather than a zero that reads as "nothing back"."""
    root = tmp_path / "cg"
    root.mkdir()
    resolver = CgroupResolver(str(root), rescan_interval=0)
    resolver.scan()
    docs: list[dict[str, Any]] = []
    pipe = Pipeline(
        Attributor(resolver, DockerClient(str(tmp_path / "no-docker.sock"))), docs.append, "n", True, to_wall
    )
    flow = FlowCounters(1, "203.0.113.9", 443, 6, 5000, 9, 4000, 1, 1, 2, 1)
    for counted in (True, False):
        pipe.counts_received = counted
        docs.clear()
        pipe.close_window([flow], 1.0e9, 1.0e9 + 10)
        d = next(d for d in docs if d["event"]["action"] == "flow_summary")
        assert ("bytes" in d["destination"]) is counted
        assert ("received_bytes" in d["sluice"]["payload"]) is counted
        assert ("bytes_in" in to_ocsf(d)["traffic"]) is counted
        validate(to_ocsf(d))
