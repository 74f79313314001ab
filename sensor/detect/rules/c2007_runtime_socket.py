"""SL-C2-007: a container uses a container runtime socket."""

from __future__ import annotations

from dataclasses import dataclass

from sensor.attribution.runtimesock import RUNTIME_SOCKETS
from sensor.detect.rule import T1610, Context, Finding, RuleInfo, RuleSettings
from sensor.detect.rules._common import _Base, _dest, _pname, _who, connect_finding, new_tcp_connects
from sensor.detect.view import UnixConnectView, WindowView


@dataclass(frozen=True)
class Settings(RuleSettings):
    sockets: tuple[str, ...] = RUNTIME_SOCKETS
    # the Docker Engine API over TCP (2375 plain, 2376 TLS), on any address:
    # the same API as docker.sock, from a container that has no socket
    tcp_ports: tuple[int, ...] = (2375, 2376)


INFO = RuleInfo(
    "SL-C2-007",
    "runtime_socket_use",
    "Container runtime socket used from a container",
    "A process in a container connected to a container runtime socket (docker.sock, containerd.sock, "
    "CRI-O, podman), or to the Docker Engine API over TCP (tcp_ports on any address), that its "
    "workload's baseline does not use: it can start containers on the node.",
    T1610,
    78,
    Settings,
)


def runtime_socket(u: UnixConnectView, names: tuple[str, ...]) -> str | None:
    """The runtime socket's file name when the path leads to one (by the
    socket's identity, whatever the caller called it) or is named like one,
    else None."""
    if u.runtime:
        return u.runtime
    name = u.path.rsplit("/", 1)[-1]
    return name if name in names else None


class RuntimeSocket(_Base):
    """SL-C2-007: a container uses a container runtime socket."""

    def __init__(self) -> None:
        super().__init__(INFO)

    def evaluate(self, view: WindowView, ctx: Context) -> list[Finding]:
        cfg = ctx.settings(self.info.id, Settings)
        out = []
        seen: set[tuple[str, str]] = set()
        for u in view.unix_connects:
            name = runtime_socket(u, cfg.sockets)
            if name is None or u.attr.container is None:
                continue
            wb = ctx.workload(u.workload)
            if wb is not None and name in wb.unix_sockets:
                continue  # a CI runner or an operator that always does this
            if not ctx.baseline_gate(u.workload):
                continue
            k = (u.attr.container.id, u.path)
            if k in seen:
                continue
            seen.add(k)
            n = sum(1 for v in view.unix_connects if v.attr.container is u.attr.container and v.path == u.path)
            out.append(
                Finding(
                    self.info.id,
                    u.attr,
                    u.workload,
                    u.ts,
                    f"{_who(u.attr, u.workload)} "
                    f"{'tried to connect (refused: it is isolated)' if u.denied else 'connected'} "
                    f"to the container runtime socket {u.path} "
                    f"({_pname(u.process)}, pid {u.process.pid}); its baseline does not use it",
                    {
                        "socket": {"path": u.path, "name": name, "connects_in_window": n, "refused": u.denied},
                        "baseline_unix_sockets": sorted(wb.unix_sockets)[:20] if wb else [],
                    },
                    None,
                    u.process,
                    unix_path=u.path,
                )
            )
        ports = set(cfg.tcp_ports)
        for c in new_tcp_connects(view, ctx, lambda c: c.port in ports):
            what = f"the Docker Engine API port {_dest(c.ip, c.port, c.domain)}"
            evidence = {"engine_api": _dest(c.ip, c.port), "tcp_ports": sorted(ports)}
            out.append(connect_finding(self.info.id, c, what, evidence))
        return out
