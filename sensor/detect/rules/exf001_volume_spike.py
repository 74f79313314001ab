"""SL-EXF-001: a workload's encrypted-looking bytes in one window, far."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass

from sensor.detect.baseline import WorkloadBaseline
from sensor.detect.rule import MIB, T1048, Context, Finding, RuleInfo, RuleSettings
from sensor.detect.rules._common import _Base, _classes, _dest, _human, _proc, _who
from sensor.detect.view import FlowView, WindowView


@dataclass(frozen=True)
class Settings(RuleSettings):
    multiplier: float = 4.0
    quantile: float = 0.99
    min_bytes: int = 1 * MIB


INFO = RuleInfo(
    "SL-EXF-001",
    "egress_volume_spike",
    "Encrypted egress volume spike",
    "A workload sent far more high-entropy (encrypted-looking) bytes in one window than its "
    "baseline says it ever does.",
    T1048,
    73,
    Settings,
)


def volume_threshold(wb: WorkloadBaseline, cfg: Settings) -> tuple[float, float]:
    """Encrypted bytes in one window above which a workload alerts, and the
    baseline quantile it derives from (also shown by `sluice baseline show`)."""
    base = wb.encrypted_bytes.quantile(cfg.quantile)
    return max(cfg.min_bytes, cfg.multiplier * base), base


class VolumeSpike(_Base):
    """SL-EXF-001: a workload's encrypted-looking bytes in one window, far
    above its baseline quantile."""

    def __init__(self) -> None:
        super().__init__(INFO)

    def evaluate(self, view: WindowView, ctx: Context) -> list[Finding]:
        cfg = ctx.settings(self.info.id, Settings)
        per: dict[str, list[FlowView]] = defaultdict(list)
        for f in view.flows:
            if f.summary.encrypted_bytes:
                per[f.workload].append(f)
        out = []
        for w, flows in per.items():
            wb = ctx.workload(w)
            if wb is None or wb.windows < ctx.config.detection.min_baseline_windows:
                continue  # no trusted statistics for this workload yet
            observed = sum(f.summary.encrypted_bytes for f in flows)
            threshold, base = volume_threshold(wb, cfg)
            if observed <= threshold:
                continue
            by_container: Counter[str] = Counter()
            for f in flows:
                by_container[f.container_key] += f.summary.encrypted_bytes
            top_c = by_container.most_common(1)[0][0]
            top = max((f for f in flows if f.container_key == top_c), key=lambda f: f.summary.encrypted_bytes)
            ratio = observed / base if base else None
            out.append(
                Finding(
                    self.info.id,
                    top.attr,
                    w,
                    view.end,
                    f"{_who(top.attr, w)} sent {_human(observed)} of encrypted-looking data in "
                    f"{view.end - view.start:.0f} s; its baseline p{int(cfg.quantile * 100)} is {_human(base)} "
                    f"per window" + (f" ({ratio:.0f}x)" if ratio else ""),
                    {
                        "observed_bytes": observed,
                        "baseline_quantile": cfg.quantile,
                        "baseline_bytes": round(base),
                        "multiplier": cfg.multiplier,
                        "threshold_bytes": round(threshold),
                        "window_seconds": round(view.end - view.start, 3),
                        "destinations": sorted({_dest(f.ip, f.port, f.domain) for f in flows})[:10],
                        "entropy": top.summary.entropy,
                        **_classes(top.summary),
                    },
                    (top.ip, top.port, top.transport),
                    _proc(top),
                    top.summary.protocol_hint,
                    magnitude=observed,
                )
            )
        return out
