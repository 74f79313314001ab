"""Every document Sluice writes is built here, from the typed records of the
other layers (Attribution, ProcessRef, FlowSummary, ContainerSummary,
ContainerLife, Finding, containment Entry, the health dict): the pipeline,
the detector and the runner say what happened, this module says how it
reads in ECS. Field order is part of the output (JSON lines keep it).

Each builder returns a Document: the ECS dict that is written, which also
keeps the wall-clock times it was built from, so that sensor/outputs/ocsf.py
renders OCSF times from the same numbers instead of parsing ECS text.
"""

from __future__ import annotations

import ipaddress
import re
import shlex
from typing import TYPE_CHECKING, Any

from sensor.outputs.ecs import add_attribution, base, destination_fields, iso
from sensor.telemetry.protocol import transport_name

if TYPE_CHECKING:
    from sensor.attribution.containers import Attribution
    from sensor.detect.rule import Finding, RuleInfo
    from sensor.detect.view import ProcessRef
    from sensor.response.containment import Entry
    from sensor.telemetry.counters import ContainerSummary, FlowSummary


# Names that may appear in a response command (Kubernetes: RFC 1123
# subdomain for pods, RFC 1123 label for namespaces).
_HEX_ID = re.compile(r"\A[0-9a-f]{12,64}\Z")
_K8S_NAME = re.compile(r"\A(?=.{1,253}\Z)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\Z")
_K8S_LABEL = re.compile(r"\A[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\Z")


def _is_ip(s: str) -> bool:
    try:
        ipaddress.ip_address(s)
        return True
    except ValueError:
        return False


class Document(dict[str, Any]):
    """An ECS document; `times` holds the epoch seconds of its time fields
    by ECS name ("@timestamp", "event.start", "event.end", "event.created")."""

    __slots__ = ("times",)

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.times: dict[str, float] = {}

    def set_time(self, field: str, ts: float) -> None:
        """event.<field> = ISO text of ts, remembering ts."""
        self["event"][field] = iso(ts)
        self.times[f"event.{field}"] = ts


def event(
    ts: float,
    host_name: str,
    kind: str,
    category: list[str],
    types: list[str],
    action: str,
    dataset: str,
    attr: Attribution | None = None,
) -> Document:
    """The common head: @timestamp, ecs, event.*, host, agent (and the
    container, orchestrator and cgroup of an attribution)."""
    d = Document(base(ts, host_name, kind, category, types, action, dataset))
    d.times["@timestamp"] = ts
    if attr is not None:
        add_attribution(d, attr)
    return d


# --- processes ------------------------------------------------------------------


def process_fields(p: ProcessRef) -> dict[str, Any]:
    """process.* of a process from the exec table (executable always, args
    with their count)."""
    f: dict[str, Any] = {"pid": p.pid, "name": p.name, "executable": p.executable}
    if p.args is not None:
        f["args"] = p.args
        f["args_count"] = len(p.args)
        f["command_line"] = " ".join(p.args)
    if p.ppid:
        f["parent"] = {"pid": p.ppid}
    return f


def process_brief(p: ProcessRef) -> dict[str, Any]:
    """process.* of what is known of a process (alerts, processes the exec
    table never saw): only the fields that are set."""
    d: dict[str, Any] = {"pid": p.pid, "name": p.name}
    if p.executable:
        d["executable"] = p.executable
    if p.args is not None:
        d["args"] = p.args
        d["command_line"] = " ".join(p.args)
    if p.ppid:
        d["parent"] = {"pid": p.ppid}
    return d


def process_start(host: str, ts: float, attr: Attribution, p: ProcessRef, args_source: str) -> Document:
    d = event(ts, host, "event", ["process"], ["start"], "exec", "sluice.process", attr)
    d["process"] = process_fields(p)
    d["process"]["start"] = iso(ts)
    d["sluice"]["process"] = {"args_source": args_source}
    return d


def process_end(
    host: str, ts: float, attr: Attribution, p: ProcessRef | None, started: float | None, pid: int, comm: str
) -> Document:
    """An exit; p and started when the exec table knew the process."""
    d = event(ts, host, "event", ["process"], ["end"], "exit", "sluice.process", attr)
    if p is not None and started is not None:
        d["process"] = process_fields(p)
        d["process"]["start"] = iso(started)
        d["event"]["duration"] = int((ts - started) * 1e9)
    else:
        d["process"] = {"pid": pid, "name": comm}
    d["process"]["end"] = iso(ts)
    return d


# --- network ------------------------------------------------------------------


def _network(ip: str, transport: str, direction: str = "egress") -> dict[str, Any]:
    return {"transport": transport, "direction": direction, "type": "ipv6" if ":" in ip else "ipv4"}


def connection(
    host: str,
    ts: float,
    attr: Attribution,
    action: str,
    process: dict[str, Any],
    ip: str,
    port: int,
    transport: str,
    sock_cookie: int,
    domain: str | None = None,
    name_resolver: str = "",
) -> Document:
    """A connect (action connection_attempted) or a UDP send (udp_send);
    domain: the container's latest DNS answer for ip, when any, and the
    resolver that gave it ("" when its container could have forged it), as
    on flow summaries."""
    d = event(ts, host, "event", ["network"], ["connection", "start"], action, "sluice.network", attr)
    d["process"] = process
    d["destination"] = destination_fields(ip, port, domain)
    d["network"] = _network(ip, transport)
    d["sluice"]["socket"] = {"cookie": sock_cookie}
    if domain:
        d["sluice"]["name_vouched"] = bool(name_resolver)
        if name_resolver:
            d["sluice"]["name_resolver"] = name_resolver
    return d


def raw_socket(
    host: str,
    ts: float,
    attr: Attribution,
    process: dict[str, Any],
    family: str,
    sock_type: str,
    protocol: int,
    denied: bool,
    hook: str,
    message: str,
) -> Document:
    """A raw or packet socket created (raw_socket_created) or refused in a
    contained container (raw_socket_denied)."""
    action = "raw_socket_denied" if denied else "raw_socket_created"
    d = event(ts, host, "event", ["network"], ["denied" if denied else "start"], action, "sluice.socket", attr)
    d["process"] = process
    d["sluice"]["socket"] = {"family": family, "type": sock_type, "protocol": protocol, "denied": denied, "hook": hook}
    d["message"] = message
    return d


def listening(
    host: str,
    ts: float,
    attr: Attribution,
    op: str,
    process: dict[str, Any],
    ip: str,
    port: int,
    transport: str,
    sock_cookie: int,
) -> Document:
    """A socket listening (op "listen") or bound to a port (op "bind"):
    destination.* is the local address."""
    action = "listening" if op == "listen" else "socket_bound"
    d = event(ts, host, "event", ["network"], ["start"], action, "sluice.network", attr)
    d["process"] = process
    d["destination"] = {"ip": ip, "port": port, "address": ip}
    d["network"] = _network(ip, transport, "ingress")
    d["sluice"]["socket"] = {"cookie": sock_cookie}
    d["sluice"]["listen"] = {"operation": op}
    return d


def connection_accepted(
    host: str,
    ts: float,
    attr: Attribution,
    peer_ip: str,
    peer_port: int,
    local_ip: str,
    local_port: int,
    listener_known: bool,
    suppressed: int,
    netns_cookie: int,
) -> Document:
    """An inbound TCP connection: source.* is the peer, destination.* the
    listener; suppressed counts the connections from the same peer folded
    into this one by the kernel."""
    d = event(ts, host, "event", ["network"], ["connection", "start"], "connection_accepted", "sluice.network", attr)
    d["source"] = {"ip": peer_ip, "port": peer_port, "address": peer_ip}
    d["destination"] = {"ip": local_ip, "port": local_port, "address": local_ip}
    d["network"] = _network(peer_ip, "tcp", "ingress")
    d["sluice"]["inbound"] = {
        "listener_known": listener_known,
        "connections": 1 + suppressed,
        "suppressed_since_last": suppressed,
        "netns_cookie": netns_cookie,
    }
    return d


def unix_connect(
    host: str,
    ts: float,
    attr: Attribution,
    process: dict[str, Any],
    path: str,
    sock_cookie: int,
    denied: bool = False,
) -> Document:
    """connect(2) to a unix socket: destination.address is its path. denied:
    the kernel refused it (the caller's container is isolated)."""
    types = ["connection", "denied"] if denied else ["connection", "start"]
    d = event(ts, host, "event", ["network"], types, "unix_socket_connect", "sluice.network", attr)
    if denied:
        d["event"]["outcome"] = "failure"
    d["process"] = process
    d["destination"] = {"address": path}
    d["network"] = {"transport": "unix", "direction": "egress"}
    d["sluice"]["socket"] = {"cookie": sock_cookie}
    d["sluice"]["unix"] = {"path": path, "denied": denied}
    return d


def unix_isolation_refused(
    host: str,
    ts: float,
    action: str,
    isolated: Attribution,
    process: dict[str, Any],
    peer: Attribution,
    op: str,
    direction: str,
    message: str,
) -> Document:
    """A unix connect or datagram across an isolated container's boundary,
    refused by the kernel (the BPF LSM unix hooks): container.* is the
    isolated container, process.* the caller (the sender), sluice.unix.peer
    the other end (the host, or a container's id and name). direction:
    "ingress" into the container, "egress" out of it."""
    d = event(ts, host, "event", ["network"], ["connection", "denied"], action, "sluice.network")
    add_attribution(d, isolated)
    d["event"]["outcome"] = "failure"
    d["process"] = process
    d["network"] = {"transport": "unix", "direction": direction}
    other: dict[str, Any] = {"host": peer.container is None}
    if peer.container is not None:
        other["container"] = {"id": peer.container.id, "name": peer.container.name}
    d["sluice"]["unix"] = {"op": op, "denied": True, "peer": other}
    d["message"] = message
    return d


def _window(d: Document, start: float, end: float) -> None:
    d.set_time("start", start)
    d.set_time("end", end)
    d["sluice"]["window"] = {"start": iso(start), "end": iso(end)}


def flow_summary(
    host: str,
    s: FlowSummary,
    attr: Attribution,
    process: dict[str, Any] | None,
    start: float,
    end: float,
    received: bool = True,
) -> Document:
    """received: the source counted what destinations sent back (else those
    fields are left out: unknown, not zero)."""
    _cg, ip, port, proto = s.key
    d = event(end, host, "event", ["network"], ["info"], "flow_summary", "sluice.flow", attr)
    _window(d, start, end)
    if process is not None:
        d["process"] = process
    # the destination's name (SNI, Host or DNS answer) and what it sent back
    d["destination"] = destination_fields(ip, port, s.domain)
    if received:
        d["destination"].update({"bytes": s.rx_bytes, "packets": s.rx_packets})
    if s.sni:
        d["tls"] = {"client": {"server_name": s.sni}}
    if s.http_host:
        d["url"] = {"domain": s.http_host}
    net = _network(ip, transport_name(proto))
    if s.protocol_hint:
        net["protocol"] = s.protocol_hint
    d["network"] = net
    d["source"] = {"bytes": s.bytes, "packets": s.packets}
    d["sluice"]["payload"] = {"bytes": s.payload_bytes, "samples": s.samples, "sampled_bytes": s.sampled_bytes}
    if s.entropy is not None:
        d["sluice"]["payload"]["entropy"] = s.entropy
    if received:
        d["sluice"]["payload"]["received_bytes"] = s.rx_payload_bytes
    if s.byte_classes is not None:
        # bytes per class (sensor/telemetry/classify.py) and what was recognised
        d["sluice"]["payload"]["encrypted_bytes"] = s.encrypted_bytes
        d["sluice"]["payload"]["classes"] = s.byte_classes.as_dict()
        for k in ("encoding", "compression", "fake_compression"):
            if getattr(s.byte_classes, k):
                d["sluice"]["payload"][k] = getattr(s.byte_classes, k)
    split = s.protocol_split()
    if split:  # network.protocol names the one that sent the most
        d["sluice"]["payload"]["protocols"] = split
    d["sluice"]["flow"] = {"connections": s.connects}
    if len(s.senders) > 1 or s.unattributed_bytes:
        # more than one process (or an unknown socket) sent on the flow:
        # process.* is the one that sent the most
        d["sluice"]["flow"]["senders"] = [{"pid": pid, "name": comm, "bytes": n} for pid, comm, n in s.senders]
        d["sluice"]["flow"]["unattributed_bytes"] = s.unattributed_bytes
    if s.upload_ratio is not None:
        d["sluice"]["flow"]["upload_download_ratio"] = round(s.upload_ratio, 3)
    if s.domain_source:
        d["sluice"]["flow"]["name_source"] = s.domain_source
        d["sluice"]["flow"]["name_vouched"] = s.name_vouched
        if s.name_resolver:
            d["sluice"]["flow"]["name_resolver"] = s.name_resolver
    return d


# --- containers -----------------------------------------------------------------


def container_summary(host: str, c: ContainerSummary, attr: Attribution, start: float, end: float) -> Document:
    d = event(end, host, "event", ["network"], ["info"], "container_summary", "sluice.container", attr)
    _window(d, start, end)
    d["source"] = {"bytes": c.bytes, "packets": c.packets}
    d["sluice"]["payload"] = {
        "bytes": c.payload_bytes,
        "high_entropy_bytes": c.high_entropy_bytes,
        "sampled_bytes": c.histogram.total,
    }
    if c.entropy is not None:
        d["sluice"]["payload"]["entropy"] = c.entropy
    d["sluice"]["window"].update(
        {"connections": c.connects, "execs": c.execs, "flows": c.flows, "destinations": len(c.destinations)}
    )
    return d


def container_start(host: str, ts: float, attr: Attribution) -> Document:
    return event(ts, host, "event", ["host"], ["start"], "container_start", "sluice.container", attr)


def container_stop(host: str, ts: float, attr: Attribution, started: float | None) -> Document:
    """started: when the container started, None if before the sensor."""
    d = event(ts, host, "event", ["host"], ["end"], "container_stop", "sluice.container", attr)
    if started is not None:
        d.set_time("start", started)
        d.set_time("end", ts)
        d["event"]["duration"] = int((ts - started) * 1e9)
        d["sluice"]["container"] = {"lifetime_seconds": round(ts - started, 3)}
    return d


# --- the sensor itself ------------------------------------------------------------


def health(host: str, ts: float, action: str, h: dict[str, Any], message: str) -> Document:
    """sensor_start, sensor_health, sensor_stop, runtime_status."""
    d = event(ts, host, "state", ["host"], ["info"], action, "sluice.health")
    d["sluice"] = {"health": h}
    d["message"] = message
    return d


def containment(
    host: str, ts: float, e: Entry, action: str, message: str, attr: Attribution | None, dropped: int
) -> Document:
    """An isolation or block applied or released; attr None when the
    container is gone (then the entry's id and name stand in)."""
    types = ["allowed"] if action == "containment_released" else ["denied"]
    d = event(ts, host, "event", ["network"], types, action, "sluice.response", attr)
    if attr is None and e.container_id is not None:
        d["container"] = {"id": e.container_id, **({"name": e.container_name} if e.container_name else {})}
    if e.destination:
        d["destination"] = {"ip": e.destination, "address": e.destination}
    d["message"] = message
    d.setdefault("sluice", {})["containment"] = {
        "kind": e.kind,
        "container_id": e.container_id,
        "destination": e.destination,
        "cgroup_ids": e.cgroup_ids,
        **({"loopback_dropped": True} if e.loopback_dropped else {}),
        "since": iso(e.since),
        "reason": e.reason,
        "dropped_packets": dropped,
    }
    return d


# --- alerts -----------------------------------------------------------------------


def alert(
    host: str,
    f: Finding,
    info: RuleInfo,
    score: int,
    created: float,
    alert_id: str,
    evidence: dict[str, Any],
    suppressed: int,
) -> Document:
    """A rule's finding as an alert; evidence is the finding's with the
    engine's context (time of day, baseline) added."""
    cats, types = f.categories or (["intrusion_detection", "network"], ["info"])
    d = event(f.ts, host, "alert", cats, types, info.slug, "sluice.alert")
    d["event"].update(
        {
            "severity": score,
            "risk_score": float(score),
            "id": alert_id,
            "created": iso(created),
            "reference": info.attack["technique"][2],
        }
    )
    d.times["event.created"] = created
    add_attribution(d, f.attr)
    d["message"] = f.message
    d["rule"] = {
        "id": info.id,
        "name": info.name,
        "description": info.description,
        "ruleset": "sluice",
        "category": info.attack["tactic"][1],
        "version": "1",
    }
    d["threat"] = threat(info)
    if f.process is not None:
        d["process"] = process_brief(f.process)
    if f.file is not None:
        d["file"] = f.file
    if f.destination is not None:
        ip, port, transport = f.destination
        d["destination"] = destination_fields(ip, port, f.domain)
        d["network"] = _network(ip, transport, f.direction)
        if f.network_protocol:
            d["network"]["protocol"] = f.network_protocol
        if f.domain and f.name_source == "sni":
            d["tls"] = {"client": {"server_name": f.domain}}
        elif f.domain and f.name_source == "http_host":
            d["url"] = {"domain": f.domain}
        if f.domain and f.name_vouched is not None:
            # false: the name is the client's claim (SNI, Host) only
            d["sluice"]["name_vouched"] = f.name_vouched
            if f.name_resolver:
                d["sluice"]["name_resolver"] = f.name_resolver
    elif f.unix_path is not None:
        d["destination"] = {"address": f.unix_path}
        d["network"] = {"transport": "unix", "direction": f.direction}
    if f.source is not None:
        d["source"] = {"ip": f.source[0], "port": f.source[1], "address": f.source[0]}
    d["sluice"].update(
        {
            "workload": f.workload,
            "evidence": evidence,
            "alert": {"suppressed_since_last": suppressed},
            "response": response(f),
        }
    )
    return d


def threat(info: RuleInfo) -> dict[str, Any]:
    tech_id, tech_name, tech_ref = info.attack["technique"]
    tac_id, tac_name, tac_ref = info.attack["tactic"]
    t: dict[str, Any] = {
        "framework": "MITRE ATT&CK",
        "technique": {"id": [tech_id], "name": [tech_name], "reference": [tech_ref]},
        "tactic": {"id": [tac_id], "name": [tac_name], "reference": [tac_ref]},
    }
    if info.attack["subtechnique"]:
        sid, sname, sref = info.attack["subtechnique"]
        t["technique"]["subtechnique"] = {"id": [sid], "name": [sname], "reference": [sref]}
    return t


def response(f: Finding) -> dict[str, Any]:
    """The strategies' response path, as commands for this alert.

    Pod names and namespaces come from labels a workload can influence:
    they are offered only when they are valid Kubernetes names and are
    quoted all the same (shlex.quote); container ids and addresses are
    checked for what they must be. Nothing else reaches a command."""
    r: dict[str, Any] = {}
    c = f.attr.container
    if c is not None and _HEX_ID.match(c.id):
        short = shlex.quote(c.id[:12])
        r["isolate"] = [
            f"sluice isolate {short}  # in the kernel, any runtime; `sluice release {short}` undoes it",
            f"docker network disconnect --force <network> {short}",
            f"docker pause {short}",
        ]
        if c.pod_name and c.pod_namespace:
            if _K8S_NAME.match(c.pod_name) and _K8S_LABEL.match(c.pod_namespace):
                r["isolate"].append(
                    f"kubectl -n {shlex.quote(c.pod_namespace)} label pod {shlex.quote(c.pod_name)} "
                    "sluice.io/quarantine=true  # with a deny-all NetworkPolicy on that label"
                )
            else:
                r["note"] = "the pod's name or namespace is not a valid Kubernetes name: no kubectl command offered"
        r["investigate"] = [f"docker inspect {short}", f"docker logs --since 30m {short}", f"docker diff {short}"]
    if f.source is not None and _is_ip(f.source[0]) and c is not None:
        # an inbound peer: block what it sends, not what the container sends
        ip = shlex.quote(str(ipaddress.ip_address(f.source[0])))
        fam = "ip6" if ":" in ip else "ip"
        r["block"] = [
            f"iptables -I DOCKER-USER -s {ip} -j DROP" if fam == "ip" else f"ip6tables -I DOCKER-USER -s {ip} -j DROP",
            f"nft add rule inet filter forward {fam} saddr {ip} drop",
        ]
    elif f.destination is not None and f.direction == "egress" and _is_ip(f.destination[0]):
        ip = shlex.quote(str(ipaddress.ip_address(f.destination[0])))
        fam = "ip6" if ":" in ip else "ip"
        r["block"] = [
            f"sluice block {ip}" + (f" --container {c.id[:12]}" if c is not None and _HEX_ID.match(c.id) else ""),
            f"iptables -I DOCKER-USER -d {ip} -j DROP" if fam == "ip" else f"ip6tables -I DOCKER-USER -d {ip} -j DROP",
            f"nft add rule inet filter forward {fam} daddr {ip} drop",
        ]
    return r
