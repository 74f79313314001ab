"""OCSF 1.7.0 rendering of Sluice's documents (`--format ocsf`).

The input is the Document a builder in sensor/outputs/documents.py made:
times come from the numbers it was built from (Document.times); only a
plain dict assembled elsewhere (by hand, by a tool) has its ECS time text
parsed.

- alerts -> Detection Finding (2004), with the ATT&CK `attacks[]` and the
  rule as the finding's analytic;
- flow summaries and connects -> Network Activity (4001; Traffic / Open);
- exec and exit -> Process Activity (1007; Launch / Terminate);
- everything else (sensor health, container lifecycle and summaries) ->
  Base Event (0), Sluice's fields under `unmapped`.
Container context uses the container profile, the node the host profile.
"""

from __future__ import annotations

import datetime as _dt
from typing import Any

from sensor import __version__
from sensor.outputs.ecs import ms

OCSF_VERSION = "1.7.0"
PROTOCOL_NUM = {"tcp": 6, "udp": 17, "icmp": 1, "ipv6-icmp": 58}


def _ms(doc: dict[str, Any], field: str) -> int:
    """Epoch ms of an ECS time field ("@timestamp", "event.start", ...)."""
    ts = getattr(doc, "times", {}).get(field)
    if ts is not None:
        return ms(ts)
    text = doc["@timestamp"] if field == "@timestamp" else doc["event"][field.split(".", 1)[1]]
    d = _dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=_dt.UTC)
    return int(d.timestamp() * 1000)


def severity_id(score: int) -> int:
    """ECS 0-100 risk to OCSF severity_id: 1 informational .. 5 critical."""
    return 1 if score < 20 else 2 if score < 40 else 3 if score < 60 else 4 if score < 80 else 5


def _metadata(doc: dict[str, Any], profiles: list[str]) -> dict[str, Any]:
    m: dict[str, Any] = {
        "version": OCSF_VERSION,
        "product": {"name": "Sluice", "vendor_name": "Sluice", "version": __version__},
        "log_name": doc["event"].get("dataset", "sluice"),
        "profiles": profiles,
    }
    if doc["event"].get("id"):
        m["uid"] = doc["event"]["id"]
    return m


def _container(doc: dict[str, Any]) -> dict[str, Any] | None:
    c = doc.get("container")
    if not c:
        return None
    out: dict[str, Any] = {"uid": c["id"], "runtime": c.get("runtime")}
    if c.get("name"):
        out["name"] = c["name"]
    img = c.get("image", {})
    if img:
        out["image"] = {"uid": (img.get("hash", {}).get("all") or [img.get("name", "")])[0], "name": img.get("name")}
    orch = doc.get("orchestrator")
    if orch and orch.get("resource", {}).get("id"):
        out["pod_uuid"] = orch["resource"]["id"]
    return {k: v for k, v in out.items() if v is not None}


def _process(p: dict[str, Any] | None) -> dict[str, Any] | None:
    if not p:
        return None
    out: dict[str, Any] = {"pid": p["pid"], "name": p.get("name")}
    if p.get("executable"):
        out["file"] = {"path": p["executable"], "name": p["executable"].rsplit("/", 1)[-1], "type_id": 1}
    if p.get("command_line"):
        out["cmd_line"] = p["command_line"]
    if p.get("parent", {}).get("pid"):
        out["parent_process"] = {"pid": p["parent"]["pid"]}
    return {k: v for k, v in out.items() if v is not None}


def _common(doc: dict[str, Any], class_uid: int, category_uid: int, activity_id: int, sev: int = 1) -> dict[str, Any]:
    container = _container(doc)
    profiles = ["host"] + (["container"] if container else [])
    out: dict[str, Any] = {
        "class_uid": class_uid,
        "category_uid": category_uid,
        "activity_id": activity_id,
        "type_uid": class_uid * 100 + activity_id,
        "time": _ms(doc, "@timestamp"),
        "severity_id": sev,
        "metadata": _metadata(doc, profiles),
        "device": {"hostname": doc["host"]["name"], "type_id": 1},
    }
    if container:
        out["container"] = container
    if doc.get("message"):
        out["message"] = doc["message"]
    if doc["event"].get("start"):
        out["start_time"] = _ms(doc, "event.start")
    if doc["event"].get("end"):
        out["end_time"] = _ms(doc, "event.end")
    return out


def _endpoint(doc: dict[str, Any]) -> dict[str, Any]:
    d = doc["destination"]
    e: dict[str, Any] = {"ip": d["ip"], "port": d["port"]}
    if d.get("domain"):  # the name (SNI, Host, DNS answer) and its registered domain
        e["hostname"] = d["domain"]
        e["domain"] = d.get("registered_domain", d["domain"])
    return e


def _connection(doc: dict[str, Any]) -> dict[str, Any]:
    transport = doc.get("network", {}).get("transport", "")
    inbound = doc.get("network", {}).get("direction") == "ingress"
    c: dict[str, Any] = {"direction_id": 1 if inbound else 2, "protocol_name": transport}
    if transport in PROTOCOL_NUM:
        c["protocol_num"] = PROTOCOL_NUM[transport]
    c["protocol_ver_id"] = 6 if doc.get("network", {}).get("type") == "ipv6" else 4
    return c


def _finding(doc: dict[str, Any]) -> dict[str, Any]:
    score = int(doc["event"]["severity"])
    out = _common(doc, 2004, 2, 1, severity_id(score))
    rule, threat = doc["rule"], doc["threat"]
    t = threat["technique"]
    attack: dict[str, Any] = {
        "technique": {"uid": t["id"][0], "name": t["name"][0], "src_url": t["reference"][0]},
        "tactic": {
            "uid": threat["tactic"]["id"][0],
            "name": threat["tactic"]["name"][0],
            "src_url": threat["tactic"]["reference"][0],
        },
    }
    if "subtechnique" in t:
        st = t["subtechnique"]
        attack["sub_technique"] = {"uid": st["id"][0], "name": st["name"][0], "src_url": st["reference"][0]}
    out["finding_info"] = {
        "uid": doc["event"]["id"],
        "title": rule["name"],
        "desc": rule["description"],
        "types": [rule["category"]],
        "created_time": _ms(doc, "event.created"),
        "analytic": {"uid": rule["id"], "name": rule["name"], "type_id": 1, "category": rule["category"]},
        "attacks": [attack],
        "product": {"name": "Sluice", "vendor_name": "Sluice", "version": __version__},
    }
    out["is_alert"] = True
    out["risk_score"] = score
    out["status_id"] = 1
    ev: dict[str, Any] = {"data": doc["sluice"]["evidence"]}
    if doc.get("destination", {}).get("ip"):
        ev["dst_endpoint"] = _endpoint(doc)
        ev["connection_info"] = _connection(doc)
    if doc.get("source", {}).get("ip"):
        ev["src_endpoint"] = {"ip": doc["source"]["ip"], "port": doc["source"]["port"]}
    if doc.get("process"):
        ev["process"] = _process(doc["process"])
    if out.get("container"):
        ev["container"] = out["container"]
    out["evidences"] = [ev]
    resp = doc["sluice"].get("response", {})
    steps = [f"{k}: {cmd}" for k, cmds in resp.items() for cmd in cmds]
    if steps:
        out["remediation"] = {"desc": "; ".join(steps)}
    out["unmapped"] = {"sluice": {"workload": doc["sluice"].get("workload"), "rule_id": rule["id"]}}
    return out


def _network(doc: dict[str, Any]) -> dict[str, Any]:
    action = doc["event"]["action"]
    activity = 6 if action in ("flow_summary", "udp_send") else 1  # Traffic / Open
    out = _common(doc, 4001, 4, activity)
    out["dst_endpoint"] = _endpoint(doc)
    out["connection_info"] = _connection(doc)
    src: dict[str, Any] = {"hostname": doc["host"]["name"]}
    if doc.get("process"):
        out["actor"] = {"process": _process(doc["process"])}
    out["src_endpoint"] = src
    if "source" in doc:
        out["traffic"] = {"bytes_out": doc["source"]["bytes"], "packets_out": doc["source"]["packets"]}
        if "bytes" in doc.get("destination", {}):
            out["traffic"]["bytes_in"] = doc["destination"]["bytes"]
            out["traffic"]["packets_in"] = doc["destination"].get("packets", 0)
    host = doc.get("url", {}).get("domain")
    if host:
        out["url"] = {"hostname": host}
    sl = doc.get("sluice", {})
    if doc.get("network", {}).get("protocol"):
        out["app_name"] = doc["network"]["protocol"]
    out["unmapped"] = {"sluice": {k: sl[k] for k in ("payload", "window", "flow", "cgroup", "socket") if k in sl}}
    # OCSF's tls object requires the negotiated version, which a ClientHello
    # does not tell: the SNI stays unmapped (dst_endpoint.hostname has the name)
    sni = doc.get("tls", {}).get("client", {}).get("server_name")
    if sni:
        out["unmapped"]["tls"] = {"client": {"server_name": sni}}
    return out


def _process_activity(doc: dict[str, Any]) -> dict[str, Any]:
    out = _common(doc, 1007, 1, 1 if doc["event"]["action"] == "exec" else 2)
    out["process"] = _process(doc.get("process"))
    out["actor"] = {"process": _process(doc.get("process"))}
    out["unmapped"] = {"sluice": {k: v for k, v in doc.get("sluice", {}).items() if k in ("cgroup", "process")}}
    return out


def _base(doc: dict[str, Any]) -> dict[str, Any]:
    out = _common(doc, 0, 0, 99)
    out["type_uid"] = 99
    out["activity_name"] = doc["event"]["action"]
    out["unmapped"] = {"ecs_event": doc["event"], "sluice": doc.get("sluice", {})}
    if doc["event"]["kind"] == "state":
        out["status"] = doc["sluice"].get("health", {}).get("status", "")
    return out


def to_ocsf(doc: dict[str, Any]) -> dict[str, Any]:
    kind, action = doc["event"]["kind"], doc["event"]["action"]
    if kind == "alert":
        return _finding(doc)
    if action in ("flow_summary", "connection_attempted", "udp_send"):
        return _network(doc)
    if action in ("exec", "exit"):
        return _process_activity(doc)
    return _base(doc)
