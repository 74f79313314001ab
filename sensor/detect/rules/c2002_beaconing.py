"""SL-C2-002: periodic, low-jitter connections to a new destination."""

from __future__ import annotations

import statistics
from collections import deque
from dataclasses import dataclass

from sensor.detect.rule import T1104, Context, Finding, RuleInfo, RuleSettings
from sensor.detect.rules._common import STATE_TTL_S, CappedTable, _Base, _dest, _drop_containers, _who
from sensor.detect.view import ConnectView, WindowView
from sensor.telemetry.names import registered_domain


@dataclass(frozen=True)
class Settings(RuleSettings):
    min_connections: int = 6
    max_jitter: float = 0.2
    min_interval_seconds: float = 0.5
    horizon_seconds: float = 900.0


INFO = RuleInfo(
    "SL-C2-002",
    "beaconing",
    "Beaconing to a new destination",
    "Periodic, low-jitter connections from a container to a destination outside its baseline.",
    T1104,
    60,
    Settings,
)


class Beaconing(_Base):
    """SL-C2-002: periodic, low-jitter connections to a new destination."""

    def __init__(self) -> None:
        super().__init__(INFO)
        # one entry per (container, destination): capped, a churning container evicts its own
        self._times: dict[tuple[str, str, int, str], deque[float]] = CappedTable(factory=lambda: deque(maxlen=64))
        self._ctx: dict[tuple[str, str, int, str], ConnectView] = CappedTable()

    def forget_containers(self, ids: set[str]) -> None:
        _drop_containers(self._times, ids)
        _drop_containers(self._ctx, ids)

    def evaluate(self, view: WindowView, ctx: Context) -> list[Finding]:
        cfg = ctx.settings(self.info.id, Settings)
        touched = set()
        for c in view.connects:
            # by registered domain when the container's own resolver gave the
            # address that name (a beacon rotating across a CDN's addresses is
            # one beacon), else by address: a name only an attacker's resolver
            # gave would put its beacon in the group of a learned service's
            # connects, and the group is judged by its latest connect
            target = registered_domain(c.domain) if c.domain and c.name_vouched else c.ip
            key = (c.attr.container.id if c.attr.container else "host", target, c.port, c.transport)
            self._times[key].append(c.ts)
            self._ctx[key] = c
            touched.add(key)
        out = []
        for key in touched:
            if key not in self._ctx or key not in self._times:  # evicted by the cap meanwhile
                continue
            c = self._ctx[key]
            ts = [t for t in self._times[key] if view.end - t <= cfg.horizon_seconds]
            if len(ts) < cfg.min_connections:
                continue
            gaps = [b - a for a, b in zip(ts, ts[1:], strict=False)]
            mean = statistics.fmean(gaps)
            if mean < cfg.min_interval_seconds:
                continue
            jitter = statistics.pstdev(gaps) / mean
            if jitter > cfg.max_jitter:
                continue
            if ctx.known_destination(
                c.workload, c.ip, c.port, c.transport, c.domain, c.name_vouched
            ) or not ctx.baseline_gate(c.workload):
                continue
            out.append(
                Finding(
                    self.info.id,
                    c.attr,
                    c.workload,
                    c.ts,
                    f"{_who(c.attr, c.workload)} connects to {_dest(c.ip, c.port, c.domain)} every {mean:.1f} s "
                    f"(jitter {jitter * 100:.0f} %, {len(ts)} connections), a destination not in its baseline",
                    {
                        "connections": len(ts),
                        "mean_interval_seconds": round(mean, 3),
                        "jitter": round(jitter, 3),
                        "max_jitter": cfg.max_jitter,
                        "min_connections": cfg.min_connections,
                        "horizon_seconds": cfg.horizon_seconds,
                        "grouped_by": "registered_domain" if c.domain and c.name_vouched else "address",
                    },
                    (c.ip, c.port, c.transport),
                    c.process,
                    domain=c.domain,
                    name_source="dns" if c.domain else None,
                    name_vouched=c.name_vouched if c.domain else None,
                    name_resolver=c.name_resolver or None,
                )
            )
            self._times[key].clear()
        for k in [k for k, d in self._times.items() if not d or view.end - d[-1] > STATE_TTL_S]:
            del self._times[k]
            self._ctx.pop(k, None)
        return out
