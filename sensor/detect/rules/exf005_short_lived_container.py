"""SL-EXF-005: a container that lived briefly and sent encrypted data."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from sensor.attribution.containers import Attribution
from sensor.detect.rule import KIB, T1048, Context, Finding, RuleInfo, RuleSettings
from sensor.detect.rules._common import STATE_TTL_S, _Base, _dest, _human, _who
from sensor.detect.view import WindowView


@dataclass(frozen=True)
class Settings(RuleSettings):
    max_lifetime_seconds: float = 300.0
    min_bytes: int = 64 * KIB


INFO = RuleInfo(
    "SL-EXF-005",
    "short_lived_container_egress",
    "Short-lived container sent encrypted data",
    "A container that lived only briefly (the docker run --rm pattern) sent high-entropy data out before it exited.",
    T1048,
    70,
    Settings,
)


@dataclass
class _Life:
    attr: Attribution
    workload: str
    encrypted: int = 0
    destinations: Counter[tuple[str, int, str]] = field(default_factory=Counter)
    # destination -> its latest name: (name, source "sni" | "http_host" |
    # "dns", vouched by a DNS answer, the resolver that gave it)
    names: dict[tuple[str, int, str], tuple[str, str, bool, str]] = field(default_factory=dict)
    last: float = 0.0

    def name(self, d: tuple[str, int, str]) -> tuple[str | None, bool]:
        """(name, vouched) of a destination, for known_destination."""
        n = self.names.get(d)
        return (n[0], n[2]) if n is not None else (None, True)


class ShortLivedContainer(_Base):
    """SL-EXF-005: a container that lived briefly and sent encrypted data."""

    def __init__(self) -> None:
        super().__init__(INFO)
        self._lives: dict[str, _Life] = {}

    def evaluate(self, view: WindowView, ctx: Context) -> list[Finding]:
        cfg = ctx.settings(self.info.id, Settings)
        for f in view.flows:
            if f.attr.container is None or not f.summary.encrypted_like:
                continue
            acc = self._lives.setdefault(f.attr.container.id, _Life(f.attr, f.workload))
            acc.encrypted += f.summary.encrypted_bytes
            acc.destinations[(f.ip, f.port, f.transport)] += f.summary.encrypted_bytes
            if f.domain:
                acc.names[(f.ip, f.port, f.transport)] = (
                    f.domain,
                    f.summary.domain_source or "dns",
                    f.name_vouched,
                    f.summary.name_resolver,
                )
            acc.last = view.end
        out = []
        for x in view.lifecycle:
            if x.kind != "stop" or x.attr.container is None:
                continue
            lf = self._lives.pop(x.attr.container.id, None)
            if lf is None or x.lifetime is None or x.lifetime > cfg.max_lifetime_seconds:
                continue
            if lf.encrypted < cfg.min_bytes:
                continue
            wb = ctx.workload(x.workload)
            if (
                wb is not None
                and wb.lifetimes.n
                and wb.lifetimes.quantile(0.5) <= cfg.max_lifetime_seconds
                and all(ctx.known_destination(x.workload, *d, *lf.name(d)) for d in lf.destinations)
            ):
                continue  # a batch workload doing what it always does
            if not ctx.baseline_gate(x.workload):
                continue
            dests = sorted(_dest(ip, port, lf.name((ip, port, t))[0]) for ip, port, t in lf.destinations)
            top = lf.destinations.most_common(1)[0][0]
            n = lf.names.get(top)
            # the Finding's name fields, as _names gives them for a flow
            named: dict[str, Any] = (
                {"domain": n[0], "name_source": n[1], "name_vouched": n[2], "name_resolver": n[3] or None}
                if n is not None
                else {}
            )
            out.append(
                Finding(
                    self.info.id,
                    x.attr,
                    x.workload,
                    x.ts,
                    f"{_who(x.attr, x.workload)} lived {x.lifetime:.1f} s and sent {_human(lf.encrypted)} of "
                    f"encrypted-looking data to {', '.join(dests[:5])} before it exited",
                    {
                        "lifetime_seconds": round(x.lifetime, 3),
                        "encrypted_bytes": lf.encrypted,
                        "max_lifetime_seconds": cfg.max_lifetime_seconds,
                        "threshold_bytes": cfg.min_bytes,
                        "destinations": dests[:10],
                        "baseline_lifetime_p50_seconds": round(wb.lifetimes.quantile(0.5), 1)
                        if wb and wb.lifetimes.n
                        else None,
                    },
                    top,
                    **named,
                )
            )
        for k in [k for k, v in self._lives.items() if view.end - v.last > STATE_TTL_S]:
            del self._lives[k]
        return out


# `openssl <cipher>` shorthand commands (openssl aes-256-cbc -in f ...)
