"""SL-C2-003: a container-to-container peer not in the baseline."""

from __future__ import annotations

from dataclasses import dataclass

from sensor.detect.rule import T1104, Context, Finding, RuleInfo, RuleSettings
from sensor.detect.rules._common import _Base, _dest, _names, _proc, _who
from sensor.detect.view import WindowView


@dataclass(frozen=True)
class Settings(RuleSettings):
    min_bytes: int = 1


INFO = RuleInfo(
    "SL-C2-003",
    "atypical_inter_container",
    "Atypical inter-container communication",
    "A container talked to another container whose workload is not among its baseline peers.",
    T1104,
    55,
    Settings,
)


class InterContainer(_Base):
    """SL-C2-003: a container-to-container peer not in the baseline."""

    def __init__(self) -> None:
        super().__init__(INFO)

    def evaluate(self, view: WindowView, ctx: Context) -> list[Finding]:
        cfg = ctx.settings(self.info.id, Settings)
        out = []
        seen: set[tuple[str, str]] = set()
        for f in view.flows:
            if f.peer is None or f.peer_workload is None or f.attr.container is None:
                continue
            if f.summary.payload_bytes < cfg.min_bytes or f.peer.container is None:
                continue
            if f.peer.container.id == f.attr.container.id:
                continue
            # the reply direction of an allowed conversation is not a new peer
            if f.transport == "tcp" and f.port >= 32768 and not f.summary.connects:
                continue
            wb = ctx.workload(f.workload)
            if wb is not None and f.peer_workload in wb.peers:
                continue
            if not ctx.baseline_gate(f.workload):
                continue
            pair = (f.attr.container.id, f.peer.container.id)
            if pair in seen:
                continue
            seen.add(pair)
            pc = f.peer.container
            out.append(
                Finding(
                    self.info.id,
                    f.attr,
                    f.workload,
                    view.end,
                    f"{_who(f.attr, f.workload)} talked to container {pc.name or pc.id[:12]} ({f.peer_workload}) "
                    f"at {_dest(f.ip, f.port, f.domain)}; that peer is not in its baseline",
                    {
                        "peer_container_id": pc.id,
                        "peer_container_name": pc.name,
                        "peer_workload": f.peer_workload,
                        "bytes": f.summary.payload_bytes,
                        "baseline_peers": sorted(wb.peers)[:20] if wb else [],
                    },
                    (f.ip, f.port, f.transport),
                    _proc(f),
                    f.summary.protocol_hint,
                    **_names(f),
                )
            )
        return out
