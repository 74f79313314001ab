"""Elastic Common Schema documents: one nested JSON object per line.

Sluice's own fields live under `sluice.*`. Field names and allowed values
follow ECS 9.4 (event.kind / category / type pairs from its definitions).
"""

from __future__ import annotations

import datetime as _dt
from typing import Any

from sensor import __version__
from sensor.attribution.containers import Attribution, ContainerInfo

ECS_VERSION = "9.4.0"


def iso(ts: float) -> str:
    """UTC ISO 8601 with milliseconds and Z."""
    d = _dt.datetime.fromtimestamp(ts, _dt.UTC)
    return d.strftime("%Y-%m-%dT%H:%M:%S.") + f"{d.microsecond // 1000:03d}Z"


def ms(ts: float) -> int:
    """Epoch milliseconds of ts as iso(ts) writes it (truncated to the ms)."""
    d = _dt.datetime.fromtimestamp(ts, _dt.UTC)
    return int(d.replace(microsecond=d.microsecond // 1000 * 1000).timestamp() * 1000)


def base(
    ts: float, host_name: str, kind: str, category: list[str], types: list[str], action: str, dataset: str
) -> dict[str, Any]:
    return {
        "@timestamp": iso(ts),
        "ecs": {"version": ECS_VERSION},
        "event": {
            "kind": kind,
            "category": category,
            "type": types,
            "action": action,
            "module": "sluice",
            "dataset": dataset,
        },
        "host": {"name": host_name},
        "agent": {"type": "sluice", "version": __version__},
    }


def container_fields(info: ContainerInfo) -> dict[str, Any]:
    c: dict[str, Any] = {"id": info.id, "runtime": info.runtime}
    if info.name:
        c["name"] = info.name
    image: dict[str, Any] = {}
    if info.image_name:
        image["name"] = info.image_name
    if info.image_id:
        image["hash"] = {"all": [info.image_id]}
    if image:
        c["image"] = image
    return c


def add_attribution(doc: dict[str, Any], attr: Attribution) -> dict[str, Any]:
    """container.* / orchestrator.* and sluice.cgroup for an attribution."""
    sl = doc.setdefault("sluice", {})
    sl["cgroup"] = {"id": attr.cgroup_id}
    if attr.cgroup_path:
        sl["cgroup"]["path"] = attr.cgroup_path
    info = attr.container
    if info is None:
        sl["attribution"] = "host"
        return doc
    sl["attribution"] = "container"
    doc["container"] = container_fields(info)
    if info.pod_name or info.pod_uid:
        orch: dict[str, Any] = {"type": "kubernetes", "resource": {"type": "pod"}}
        if info.pod_name:
            orch["resource"]["name"] = info.pod_name
        if info.pod_uid:
            orch["resource"]["id"] = info.pod_uid
        if info.pod_namespace:
            orch["namespace"] = info.pod_namespace
        doc["orchestrator"] = orch
    return doc


def destination_fields(ip: str, port: int, domain: str | None = None) -> dict[str, Any]:
    """ECS destination.* of an address, with its name when known:
    destination.domain, .registered_domain, .subdomain, .top_level_domain
    (public suffix list, sensor/telemetry/names.py)."""
    d: dict[str, Any] = {"ip": ip, "port": port, "address": ip}
    if domain:
        from sensor.telemetry.names import public_suffix, split_domain

        rd, sub = split_domain(domain)
        d["domain"] = domain
        d["registered_domain"] = rd
        if sub:
            d["subdomain"] = sub
        tld = public_suffix(domain)
        if tld:
            d["top_level_domain"] = tld
    return d
