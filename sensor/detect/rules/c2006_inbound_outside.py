"""SL-C2-006: a container accepts connections from outside on a port where
its baseline never saw outside peers."""

from __future__ import annotations

from dataclasses import dataclass

from sensor.detect.rule import T1104, Context, Finding, RuleInfo, RuleSettings
from sensor.detect.rules._common import _Base, _dest, _who
from sensor.detect.view import AcceptView, WindowView


@dataclass(frozen=True)
class Settings(RuleSettings):
    min_accepted: int = 1


INFO = RuleInfo(
    "SL-C2-006",
    "inbound_from_outside",
    "Inbound connection from outside",
    "A container accepted a connection from a peer outside the trusted networks (not this node, not a "
    "container on it) on a port where its baseline never saw such peers.",
    T1104,
    66,
    Settings,
)


class InboundFromOutside(_Base):
    """SL-C2-006: inbound connections from outside the trusted networks."""

    def __init__(self) -> None:
        super().__init__(INFO)

    def evaluate(self, view: WindowView, ctx: Context) -> list[Finding]:
        cfg = ctx.settings(self.info.id, Settings)
        # (container, port) -> peers and connections this window
        groups: dict[tuple[str, int], list[AcceptView]] = {}
        for a in view.accepts:
            if a.attr.container is None or a.peer_class != "external" or ctx.trusted_ip(a.peer_ip):
                continue
            wb = ctx.workload(a.workload)
            if wb is not None and f"tcp/{a.port}|external" in wb.inbound:
                continue  # the service takes outside clients on this port
            if not ctx.baseline_gate(a.workload):
                continue
            groups.setdefault((a.attr.container.id, a.port), []).append(a)
        out = []
        for (_cid, port), items in groups.items():
            n = sum(a.count for a in items)
            if n < cfg.min_accepted:
                continue
            first = min(items, key=lambda a: a.ts)
            wb = ctx.workload(first.workload)
            peers = sorted({a.peer_ip for a in items})
            known_port = wb is not None and f"tcp/{port}" in wb.listen_ports
            out.append(
                Finding(
                    self.info.id,
                    first.attr,
                    first.workload,
                    first.ts,
                    f"{_who(first.attr, first.workload)} accepted {n} connection{'s' if n != 1 else ''} on port "
                    f"{port} from {', '.join(_dest(p, 0).rsplit(':', 1)[0] for p in peers[:5])}, outside the "
                    f"trusted networks; its baseline "
                    + ("never saw outside peers on that port" if known_port else "has no listener on that port"),
                    {
                        "inbound": {"port": port, "connections": n, "peers": peers[:20], "peer_class": "external"},
                        "baseline_listen_ports": sorted(wb.listen_ports)[:20] if wb else [],
                        "baseline_inbound": sorted(k for k in wb.inbound if k.startswith(f"tcp/{port}|"))[:20]
                        if wb
                        else [],
                    },
                    (first.local_ip, port, "tcp"),
                    None,
                    source=(first.peer_ip, first.peer_port),
                    direction="ingress",
                )
            )
        return out
