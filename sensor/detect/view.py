"""What one window looked like, for the learner and the rules.

Built by the pipeline at each window close: attributed flow summaries, and
the exec, connect and container lifecycle events of the window with their
timestamps (in order).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from sensor.attribution.containers import Attribution
from sensor.telemetry.counters import FlowSummary, QuotaOverflow


@dataclass(slots=True)
class ProcessRef:
    pid: int
    name: str
    executable: str | None = None
    args: list[str] | None = None
    ppid: int | None = None
    # its grandparent and its parent's name (comm; FORKED: a parent that
    # exec'd nothing, a copy of the grandparent), when the pipeline looked
    # them up (for the views of execs and connects: stage chains through a
    # subshell or a wrapper); 0 and "" when unknown
    gppid: int | None = None
    parent: str = ""


# ProcessRef.parent of a process whose parent is a fork of a shell that
# exec'd nothing (a subshell, a busybox applet run in a fork); a fork of any
# other program (a prefork server's worker) is not marked
FORKED = "(fork)"
# a shell, by its process name (comm: busybox's is its applet's, "sh")
SHELLS = frozenset({"sh", "ash", "bash", "dash", "ksh", "mksh", "zsh", "yash", "posh"})


@dataclass(slots=True)
class ExecView:
    ts: float
    attr: Attribution
    workload: str
    process: ProcessRef
    # sensor.telemetry.stage: how the program got its content, when that is a
    # stage-two pattern (memfd, fd_exec, stdin_pipe, stdin_socket), or the
    # script file an interpreter runs (script_file: the rule judges its path)
    origin: str | None = None
    writers: tuple[int, ...] = ()  # stdin_pipe: pids writing the script
    script: str = ""  # script_file: the script an interpreter runs


@dataclass(slots=True)
class ConnectView:
    ts: float
    attr: Attribution
    workload: str
    ip: str
    port: int
    transport: str
    process: ProcessRef
    domain: str | None = None  # the container's latest DNS answer for ip, when any
    name_resolver: str = ""  # the resolver that gave it, "" when it vouches for nothing
    # the workload knows that resolver (set by the detector, as for flows)
    resolver_known: bool = False

    @property
    def name_vouched(self) -> bool:
        """As FlowView.name_vouched: an answer its container could not have
        forged, from a resolver the workload learned."""
        return bool(self.name_resolver) and self.resolver_known


@dataclass(slots=True)
class OpenClient:
    """A running container that held a connection open to a daemon's unix
    socket when another container started (SL-C2-009's link when the start
    came long after the connect: one connection, kept open, creating later)."""

    attr: Attribution
    workload: str
    path: str  # what the caller connected to, as it called it
    connected: float  # when (its latest connect to a runtime socket)
    process: ProcessRef  # the holder of the open connection
    peer: str  # the daemon's socket path, as the daemon bound it


@dataclass(slots=True)
class LifecycleView:
    ts: float
    attr: Attribution
    workload: str
    kind: str  # "start" | "stop"
    lifetime: float | None  # stop only; None if the start predates the sensor
    # start only: containers connected to a runtime socket before, and
    # holding a connection to a daemon's socket open at the start
    clients: tuple[OpenClient, ...] = ()


@dataclass(slots=True)
class ListenView:
    """A socket bound to a port (bind) or listening (listen) in a container."""

    ts: float
    attr: Attribution
    workload: str
    ip: str  # local address, "0.0.0.0" / "::" for a wildcard
    port: int
    transport: str
    op: str  # "bind" | "listen"
    process: ProcessRef


@dataclass(slots=True)
class AcceptView:
    """Inbound TCP connections to a listener, first of a (listener, local
    port, peer) in the kernel's deduplication interval; `count` includes the
    ones folded into it."""

    ts: float
    attr: Attribution  # the listener's cgroup
    workload: str
    peer_ip: str
    peer_port: int
    local_ip: str
    port: int
    count: int
    peer: Attribution | None = None  # the peer is a container on this node
    peer_workload: str | None = None
    peer_node: bool = False  # the peer is this node (loopback, a host address)

    @property
    def peer_class(self) -> str:
        """node | container:<workload> | external (trusted or not: the
        rules decide with the trusted networks)."""
        if self.peer_workload:
            return f"container:{self.peer_workload}"
        return "node" if self.peer_node else "external"


@dataclass(slots=True)
class UnixConnectView:
    """connect(2) to a unix socket path from a container."""

    ts: float
    attr: Attribution
    workload: str
    path: str
    process: ProcessRef
    # the node's runtime socket the path leads to (its file name), by
    # identity (sensor/attribution/runtimesock.py); "" when not or unknown
    runtime: str = ""
    # the kernel refused it: the container is isolated
    denied: bool = False


@dataclass(slots=True)
class FlowView:
    summary: FlowSummary
    attr: Attribution
    workload: str
    ip: str
    port: int
    transport: str
    peer: Attribution | None = None  # the destination is a container on this node
    peer_workload: str | None = None
    process: ProcessRef | None = None  # the process that sent the most of its sampled bytes, else the last to connect
    # every process whose sockets sent on the flow in this window, most bytes first
    senders: list[ProcessRef] = field(default_factory=list)
    # the workload knows the resolver that vouched for the name (set by the
    # detector: sensor/detect/rule.py Context.resolver_known)
    resolver_known: bool = False

    @property
    def container_key(self) -> str:
        return self.attr.container.id if self.attr.container else "host"

    @property
    def domain(self) -> str | None:
        """The destination's name: SNI, Host, or a DNS answer."""
        return self.summary.domain

    @property
    def name_vouched(self) -> bool:
        """A DNS answer the container could not have forged gave the name,
        or agrees with the SNI or Host (FlowSummary.name_vouched), and it
        came from a resolver the workload learned: an attacker's own
        resolver, or a learned name asked of it, vouches for nothing."""
        return self.summary.name_vouched and self.resolver_known


@dataclass(slots=True)
class OverflowView:
    """A cgroup over its fair share of the kernel's flow table or event
    buffer in this window (bpf/lib/common.bpf.h)."""

    overflow: QuotaOverflow
    attr: Attribution
    workload: str


@dataclass
class WindowView:
    start: float
    end: float
    flows: list[FlowView] = field(default_factory=list)
    execs: list[ExecView] = field(default_factory=list)
    connects: list[ConnectView] = field(default_factory=list)
    lifecycle: list[LifecycleView] = field(default_factory=list)
    overflows: list[OverflowView] = field(default_factory=list)
    listens: list[ListenView] = field(default_factory=list)
    accepts: list[AcceptView] = field(default_factory=list)
    unix_connects: list[UnixConnectView] = field(default_factory=list)

    def workloads(self) -> set[str]:
        return (
            {f.workload for f in self.flows}
            | {e.workload for e in self.execs}
            | {c.workload for c in self.connects}
            | {x.workload for x in self.lifecycle}
            | {x.workload for x in self.listens}
            | {x.workload for x in self.accepts if x.attr.cgroup_id}
            | {x.workload for x in self.unix_connects}
        )


class WindowObserver(Protocol):
    def on_window(self, view: WindowView) -> None: ...
