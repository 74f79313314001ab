"""Listeners, inbound connections and unix-socket connects: kernel events ->
window views for the rules and (with --events) ECS documents.

Kept apart from pipeline.py, which only dispatches these event types here.
"""

from __future__ import annotations

import ipaddress
import time
from typing import TYPE_CHECKING, Any

from sensor.attribution.containers import Attribution
from sensor.attribution.netmap import cgroup_tasks
from sensor.attribution.runtimesock import RUNTIME_SOCKETS
from sensor.attribution.unixdiag import connected_peers
from sensor.attribution.workload import workload_of
from sensor.detect.view import AcceptView, ListenView, OpenClient, ProcessRef, UnixConnectView, WindowView
from sensor.kernel.events import (
    LISTEN_OP_LISTEN,
    UNIX_INTO_CONNECT,
    UNIX_INTO_SEND,
    UNIX_OUT_SEND,
    AcceptEvent,
    ListenEvent,
    UnixConnectEvent,
    UnixIntoEvent,
)
from sensor.outputs import documents
from sensor.telemetry.protocol import transport_name

if TYPE_CHECKING:
    from sensor.telemetry.pipeline import Pipeline

# Per cgroup and window (Pipeline.view_keep: each cgroup its own share, so
# one cannot crowd out another's; over it is SL-EVA-001):
MAX_LISTEN_VIEWS = 64  # listening ports: listeners are rare; a flood must not stall the reader
MAX_ACCEPTS_PER_PORT = 64  # inbound peers per listening port, after the kernel's per-peer deduplication
MAX_ACCEPT_PORTS = 1024  # inbound connections' views over all its ports
MAX_UNIX_VIEWS = 256  # unix paths, container callers only
MAX_UNIX_VIEWS_PER_PATH = 8  # connects to one path (SL-C2-007 counts them)
# containers remembered as callers of a runtime socket (the latest connect
# each), and how many of the latest are checked for a connection still open
# when another container starts (SL-C2-009: create long after the connect)
MAX_RUNTIME_CALLERS = 64  # (until their container stops: waiting longer is no way around it)
MAX_CALLERS_CHECKED = 16
MAX_CALLER_TASKS = 32  # threads read per caller, the connecting one first: ~0.08 ms each (bench/RESULTS.md)


def _ref(p: Pipeline, pid: int, comm: str) -> ProcessRef:
    proc = p.procs.get(pid) or p.exited.get(pid)
    return p._process_ref(proc) if proc is not None else ProcessRef(pid, comm)


def on_listen(p: Pipeline, ev: ListenEvent) -> None:
    p.counts["listen"] = p.counts.get("listen", 0) + 1
    ts = p.to_wall(ev.hdr.ktime_ns)
    attr = p.attributor.attribute(ev.hdr.cgroup_id)
    op = "listen" if ev.op == LISTEN_OP_LISTEN else "bind"
    transport = transport_name(ev.protocol)
    if ev.lport == 53:
        # a socket on port 53 can answer the cgroup's own queries, from any
        # address it can bind (loopback, 127.0.0.11): sensor/telemetry/names.py
        p.names.distrust(ev.hdr.cgroup_id, f"binds port 53 ({transport})")
    if p.view_keep(("l", ev.hdr.cgroup_id, ev.laddr, ev.lport, transport, op), 1, MAX_LISTEN_VIEWS):
        p._view.listens.append(
            ListenView(ts, attr, workload_of(attr), ev.laddr, ev.lport, transport, op, _ref(p, ev.hdr.pid, ev.comm))
        )
    if not p.events:
        return
    proc = p._known_process(ev.hdr.pid, ev.comm)
    p._out(documents.listening(p.host_name, ts, attr, op, proc, ev.laddr, ev.lport, transport, ev.sock_cookie))


def on_accept(p: Pipeline, ev: AcceptEvent) -> None:
    p.counts["accept"] = p.counts.get("accept", 0) + 1
    ts = p.to_wall(ev.hdr.ktime_ns)
    known = ev.hdr.cgroup_id != 0
    attr = p.attributor.attribute(ev.hdr.cgroup_id) if known else Attribution(0, None, None)
    # per local port: a public service's many clients fill their own port's
    # share, never a bind shell's on another port (review: 1,024 client
    # addresses crowded one out, and blamed the service with SL-EVA-001)
    if known and p.view_keep(("a", ev.hdr.cgroup_id, ev.lport), MAX_ACCEPTS_PER_PORT, MAX_ACCEPT_PORTS):
        av = AcceptView(ts, attr, workload_of(attr), ev.raddr, ev.rport, ev.laddr, ev.lport, 1 + ev.suppressed)
        if not (ev.peer_cgroup_id and _peer_container(p, av, ev.peer_cgroup_id)):
            # now, while a short-lived peer container still exists to be mapped;
            # the kernel's per-peer deduplication bounds how often this reads /proc
            _resolve(p, av, refresh=True)
        p._view.accepts.append(av)
    if not p.events:
        return
    p._out(
        documents.connection_accepted(
            p.host_name, ts, attr, ev.raddr, ev.rport, ev.laddr, ev.lport, known, ev.suppressed, ev.netns_cookie
        )
    )


def on_unix_connect(p: Pipeline, ev: UnixConnectEvent) -> None:
    """Only container callers become views and documents: host processes
    talk to unix sockets all the time (journald, dbus, the runtime itself)."""
    p.counts["unix_connect"] = p.counts.get("unix_connect", 0) + 1
    attr = p.attributor.attribute(ev.hdr.cgroup_id)
    if attr.container is None:
        p.counts["unix_connect_host"] = p.counts.get("unix_connect_host", 0) + 1
        return
    ts = p.to_wall(ev.hdr.ktime_ns)
    ref = _ref(p, ev.hdr.pid, ev.comm)
    if p.view_keep(("u", ev.hdr.cgroup_id, ev.path), MAX_UNIX_VIEWS_PER_PATH, MAX_UNIX_VIEWS):
        u = UnixConnectView(ts, attr, workload_of(attr), ev.path, ref, denied=ev.denied)
        # the socket the path leads to, when it is the node's runtime's
        # (a symlink or another mount name for docker.sock; review)
        u.runtime = p.runtime_sockets.identify(ev.hdr.pid, ev.path, lambda: _container_pids(p, attr))
        p._view.unix_connects.append(u)
        _remember_runtime_caller(p, u)
    if not p.events:
        return
    proc = p._known_process(ev.hdr.pid, ev.comm)
    p._out(documents.unix_connect(p.host_name, ts, attr, proc, ev.path, ev.sock_cookie, ev.denied))


# UnixIntoEvent.op -> (document action, sluice.unix.op, network.direction, verb)
_UNIX_INTO = {
    UNIX_INTO_CONNECT: ("unix_socket_connect_into", "connect", "ingress", "connected to a unix socket of"),
    UNIX_INTO_SEND: ("unix_socket_send_into", "send", "ingress", "sent a datagram to a unix socket of"),
    UNIX_OUT_SEND: ("unix_socket_send_out", "send", "egress", "sent a datagram out of"),
}


def on_unix_into(p: Pipeline, ev: UnixIntoEvent) -> None:
    """A unix connect or datagram across an isolated container's boundary,
    refused (bpf/socket.bpf.c): into it from outside (a listener of the
    container reached over a shared volume), or a datagram out of it over a
    socket connected before the isolation. Said always, whoever the caller
    (the host's processes too: the kernel reports a key once a second, and
    the caller's event share bounds the rest)."""
    # (the kernel's own count, of every refusal reported or not, is unix_into_refused)
    p.counts["unix_into_events"] = p.counts.get("unix_into_events", 0) + 1
    action, op, direction, verb = _UNIX_INTO.get(ev.op, _UNIX_INTO[UNIX_INTO_CONNECT])
    caller = p.attributor.attribute(ev.hdr.cgroup_id)
    target = p.attributor.attribute(ev.target_cgroup_id)
    isolated, peer = (caller, target) if ev.op == UNIX_OUT_SEND else (target, caller)

    def name(a: Attribution, cgroup_id: int) -> str:
        if a.container is not None:
            return f"container {a.container.name or a.container.id[:12]}"
        return "the host" + (f" ({a.cgroup_path})" if a.cgroup_path else f" (cgroup {cgroup_id})")

    who = f"{ev.comm or 'a process'} (pid {ev.hdr.pid}, in {name(caller, ev.hdr.cgroup_id)})"
    if ev.op == UNIX_OUT_SEND:
        what = f"{who} {verb} its isolated container to a unix socket of {name(target, ev.target_cgroup_id)}"
    else:
        what = f"{who} {verb} {name(target, ev.target_cgroup_id)}, which is isolated"
    proc = p._known_process(ev.hdr.pid, ev.comm)
    p._out(
        documents.unix_isolation_refused(
            p.host_name, p.to_wall(ev.hdr.ktime_ns), action, isolated, proc, peer, op, direction, f"refused: {what}"
        )
    )


def _is_runtime(name: str, runtime: str = "") -> bool:
    base = name.rsplit("/", 1)[-1]
    return base in RUNTIME_SOCKETS or (bool(runtime) and base == runtime)


def _remember_runtime_caller(p: Pipeline, u: UnixConnectView) -> None:
    if u.denied or u.attr.container is None or not _is_runtime(u.path, u.runtime):
        return
    calls = p.runtime_callers
    calls.pop(u.attr.container.id, None)  # (the latest last)
    calls[u.attr.container.id] = u
    while len(calls) > MAX_RUNTIME_CALLERS:
        del calls[next(iter(calls))]


def open_runtime_clients(p: Pipeline, new: Attribution) -> tuple[OpenClient, ...]:
    """The containers that connected to a runtime socket (the latest
    MAX_CALLERS_CHECKED still running) and hold a connection to one
    open as `new` starts: sock_diag of their namespaces, their descriptors.
    The runtime does not say who asked for a container; a creator that
    connected long before (one connection kept open, the request sent
    later) is no longer linked by time alone."""
    out: list[OpenClient] = []
    recent = [u for cid, u in reversed(p.runtime_callers.items()) if new.container is None or cid != new.container.id]
    for u in recent[:MAX_CALLERS_CHECKED]:
        d = p.attributor.cgroup_dir(u.attr)
        tasks = (cgroup_tasks(d) or []) if d is not None else []
        # the connecting process first (review: a cap on the cgroup's count
        # gave nothing for a container of 65 sleepers, any JVM)
        pid = u.process.pid
        tasks = ([pid] if pid in tasks else []) + [t for t in tasks if t != pid]
        held = [(t, peer) for t, peer in connected_peers(tasks[:MAX_CALLER_TASKS]) if _is_runtime(peer, u.runtime)]
        if held:
            t, peer = held[0]
            out.append(OpenClient(u.attr, u.workload, u.path, u.ts, _ref(p, t, ""), peer))
    return tuple(out)


def forget_runtime_caller(p: Pipeline, container_id: str) -> None:
    p.runtime_callers.pop(container_id, None)


def _container_pids(p: Pipeline, attr: Attribution) -> list[int]:
    """Processes of the caller's container (its mount namespace): for a
    caller that exited before its path was read."""
    d = p.attributor.cgroup_dir(attr)
    return (cgroup_tasks(d, 16) or []) if d is not None else []


def _peer_container(p: Pipeline, a: AcceptView, cgroup_id: int) -> bool:
    """The kernel saw a client on this node connect from the peer's
    (address, port): when its cgroup is a container's, that container is the
    peer, even when it exited before this event was read (its address can
    then no longer be read from /proc, and the peer would look external).
    A host process is judged by its address as before: a process in a
    network namespace of its own is not this node's address (the lab's sink
    plays the outside that way)."""
    peer = p.attributor.attribute(cgroup_id)
    if peer.container is None:
        return False
    a.peer = peer
    a.peer_workload = workload_of(peer)
    return True


def _is_node(ip: str, host: set[str]) -> bool:
    if ip in host:
        return True
    a = ipaddress.ip_address(ip)
    if isinstance(a, ipaddress.IPv6Address) and a.ipv4_mapped is not None:
        a = a.ipv4_mapped
    return a.is_loopback or a.is_unspecified


def _resolve(p: Pipeline, a: AcceptView, refresh: bool) -> bool:
    """Class one inbound peer: this node, a container on it (by workload),
    or external (the rules split trusted from outside). With refresh, the
    addresses of containers missing from the map are read first when the
    peer is unknown. Returns whether the peer is still unresolved."""
    host = p.netmap.host if p.netmap is not None else set()
    if _is_node(a.peer_ip, host):
        a.peer_node = True
        return False
    if p.netmap is None:
        return False
    peer_id = p.netmap.container_of(a.peer_ip)
    if peer_id is None and refresh:
        _refresh_unmapped(p)
        peer_id = p.netmap.container_of(a.peer_ip)
    life = p.registry.get(peer_id) if peer_id else None
    if life is None:
        return True
    a.peer = life.attribution()
    a.peer_workload = workload_of(a.peer)
    return False


def resolve_accept_peers(p: Pipeline, view: WindowView) -> None:
    """At window close: peers not resolved when their connection arrived."""
    refreshed = False
    for a in view.accepts:
        if a.peer_workload is None and not a.peer_node and _resolve(p, a, not refreshed):
            refreshed = True


MAX_REFRESH = 64  # containers read from /proc per refresh at most
REFRESH_EVERY_S = 1.0  # unknown peers (outside hosts) trigger at most this often


def _refresh_unmapped(p: Pipeline) -> None:
    assert p.netmap is not None
    now = time.monotonic()
    if now - getattr(p, "_inbound_refreshed", 0.0) < REFRESH_EVERY_S:
        return
    p._inbound_refreshed = now  # type: ignore[attr-defined]
    n = 0
    for cid, life in list(p.registry.running.items()):
        if n >= MAX_REFRESH:
            break
        if p.netmap.has(cid):
            continue
        # attribute(): the attribution with the cgroup's path (life.attribution() has none)
        cgroup_dir = p.attributor.cgroup_dir(p.attributor.attribute(life.cgroup_id))
        if cgroup_dir is not None:
            p.netmap.refresh(cid, cgroup_dir)
            n += 1


def describe(view: WindowView) -> dict[str, Any]:
    """Counts for debugging and tests."""
    return {"listens": len(view.listens), "accepts": len(view.accepts), "unix": len(view.unix_connects)}
