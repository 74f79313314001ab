"""SL-C2-004: a workload's containers start and stop in a burst, and one."""

from __future__ import annotations

from collections import defaultdict, deque
from dataclasses import dataclass

from sensor.detect.rule import T1104, Context, Finding, RuleInfo, RuleSettings
from sensor.detect.rules._common import _Base, _dest, _names, _proc, _who
from sensor.detect.view import WindowView


@dataclass(frozen=True)
class Settings(RuleSettings):
    min_events: int = 10
    horizon_seconds: float = 60.0


INFO = RuleInfo(
    "SL-C2-004",
    "lifecycle_burst_with_egress",
    "Container lifecycle burst with new egress",
    "A burst of container creation/removal coincided with egress to destinations outside the baseline.",
    T1104,
    58,
    Settings,
)


class LifecycleBurst(_Base):
    """SL-C2-004: a workload's containers start and stop in a burst, and one
    of them sends data to a destination outside the baseline."""

    def __init__(self) -> None:
        super().__init__(INFO)
        self._events: dict[str, deque[tuple[float, str]]] = defaultdict(lambda: deque(maxlen=10_000))
        self._fired_until: dict[str, float] = {}  # workload -> quiet until

    def evaluate(self, view: WindowView, ctx: Context) -> list[Finding]:
        cfg = ctx.settings(self.info.id, Settings)
        horizon = cfg.horizon_seconds
        for x in view.lifecycle:
            if x.attr.container is not None:
                self._events[x.workload].append((x.ts, x.attr.container.id))
        out = []
        for w in [w for w, until in self._fired_until.items() if until < view.end]:
            del self._fired_until[w]
        for w in list(self._events):
            dq = self._events[w]
            while dq and view.end - dq[0][0] > horizon:
                dq.popleft()
            if not dq:
                del self._events[w]
                continue
            need = self._threshold(ctx, w, cfg, horizon, view.end - view.start)
            if len(dq) < need or view.end < self._fired_until.get(w, 0.0):
                continue
            burst = {c for _t, c in dq}
            new = [
                f
                for f in view.flows
                if f.workload == w
                and f.attr.container is not None
                and f.attr.container.id in burst
                and f.summary.payload_bytes
                and not ctx.known_flow(f)
            ]
            if not new or not ctx.baseline_gate(w):
                continue
            top = max(new, key=lambda f: f.summary.payload_bytes)
            self._fired_until[w] = view.end + horizon
            out.append(
                Finding(
                    self.info.id,
                    top.attr,
                    w,
                    view.end,
                    f"{len(dq)} container starts/stops of {w} in {horizon:.0f} s ({len(burst)} containers) while "
                    f"{_who(top.attr, w).lower()} sent data to new destination {_dest(top.ip, top.port, top.domain)}",
                    {
                        "lifecycle_events": len(dq),
                        "containers": len(burst),
                        "horizon_seconds": horizon,
                        "threshold_events": need,
                        "new_destinations": sorted({_dest(f.ip, f.port, f.domain) for f in new})[:10],
                    },
                    (top.ip, top.port, top.transport),
                    _proc(top),
                    top.summary.protocol_hint,
                    **_names(top),
                )
            )
        return out

    @staticmethod
    def _threshold(ctx: Context, w: str, cfg: Settings, horizon: float, window: float) -> float:
        """min_events, raised for workloads whose baseline shows bursts."""
        wb = ctx.workload(w)
        if wb is None or wb.windows < ctx.config.detection.min_baseline_windows or window <= 0:
            return cfg.min_events
        usual = 2 * wb.starts_per_window.quantile(0.99) * horizon / window  # starts and stops
        return max(cfg.min_events, usual)
