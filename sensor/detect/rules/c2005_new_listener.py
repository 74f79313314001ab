"""SL-C2-005: a container opens a listener its baseline does not have."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from sensor.detect.rule import T1104, Context, Finding, RuleInfo, RuleSettings
from sensor.detect.rules._common import _Base, _dest, _pname, _who
from sensor.detect.view import WindowView


@dataclass(frozen=True)
class Settings(RuleSettings):
    ignore_loopback: bool = True
    include_udp: bool = True


INFO = RuleInfo(
    "SL-C2-005",
    "new_listener",
    "New listener in a container",
    "A container started listening on a port its workload's baseline does not have (a bind shell, a C2 "
    "server in an ephemeral container). TCP at listen(2), UDP at bind(2).",
    T1104,
    62,
    Settings,
)


def _loopback(ip: str) -> bool:
    a = ipaddress.ip_address(ip)
    if isinstance(a, ipaddress.IPv6Address) and a.ipv4_mapped is not None:
        a = a.ipv4_mapped
    return a.is_loopback


class NewListener(_Base):
    """SL-C2-005: a container opens a listener its baseline does not have.

    TCP counts at listen(2) (its real port, also when the kernel picked it);
    a TCP bind(2) alone is not a listener. UDP counts at bind(2) with a port.
    """

    def __init__(self) -> None:
        super().__init__(INFO)

    def evaluate(self, view: WindowView, ctx: Context) -> list[Finding]:
        cfg = ctx.settings(self.info.id, Settings)
        out = []
        seen: set[tuple[str, str, int]] = set()
        for x in view.listens:
            if x.attr.container is None:
                continue
            if x.transport == "tcp" and x.op != "listen":
                continue
            if x.transport == "udp" and not cfg.include_udp:
                continue
            if x.transport not in ("tcp", "udp"):
                continue
            if cfg.ignore_loopback and _loopback(x.ip):
                continue
            key = f"{x.transport}/{x.port}"
            wb = ctx.workload(x.workload)
            if wb is not None and key in wb.listen_ports:
                continue
            if not ctx.baseline_gate(x.workload):
                continue
            k = (x.attr.container.id, x.transport, x.port)
            if k in seen:
                continue
            seen.add(k)
            out.append(
                Finding(
                    self.info.id,
                    x.attr,
                    x.workload,
                    x.ts,
                    f"{_who(x.attr, x.workload)} started listening on {x.transport} {_dest(x.ip, x.port)} "
                    f"({_pname(x.process)}, pid {x.process.pid}); that port is not in its baseline",
                    {
                        "listen": {"ip": x.ip, "port": x.port, "transport": x.transport, "operation": x.op},
                        "baseline_listen_ports": sorted(wb.listen_ports)[:20] if wb else [],
                    },
                    (x.ip, x.port, x.transport),
                    x.process,
                    direction="ingress",
                )
            )
        return out
