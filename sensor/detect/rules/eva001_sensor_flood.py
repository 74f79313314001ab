"""SL-EVA-001: a container flooded the sensor's kernel tables.

The kernel gives every cgroup a fair share of the flow table and of the
event buffer per window (bpf/lib/common.bpf.h); past it, the cgroup's new
destinations are counted together and its events only counted, so the
other containers stay visible. Going over the share is itself suspicious:
it is how a container would blind the sensor (to hide its own exfiltration
or a neighbour's), so it is an alert naming the container, with the counts.

Also here: a cgroup over its share of the window's views in user space
(sensor/telemetry/pipeline.py view_keep): decoy listeners, unix paths or
destinations sent ahead of the one that matters would push it out of what
the rules examine.

And: sockets the kernel sampled without the sensor's per-socket state.
That state is charged to the socket's option memory and refused when it is
full; a sender fills it on purpose (TCP MD5 keys for other peers, socket
filters) so that its socket is paced by the flow's packet count, a pace it
can steer, with no protection against decoys. No ordinary socket fills it.
"""

from __future__ import annotations

from dataclasses import dataclass

from sensor.detect.rule import T1562, Context, Finding, RuleInfo, RuleSettings
from sensor.detect.rules._common import _Base, _human, _who
from sensor.detect.view import WindowView


@dataclass(frozen=True)
class Settings(RuleSettings):
    # flow entries + events refused + samples without socket state, in one
    # window, before it is an alert
    min_refused: int = 1


INFO = RuleInfo(
    "SL-EVA-001",
    "sensor_flood",
    "Container flooded the sensor's kernel tables",
    "A container went over its fair share of the kernel flow table (new destinations) or of the "
    "event buffer in one window: the kernel counted the excess together (bytes kept) so the other "
    "containers stayed visible; or went over its share of the events the rules examine in a window; or "
    "filled its sockets' option memory so the kernel could not keep the sensor's per-socket state. "
    "Flooding the sensor is how a workload would blind it.",
    T1562,
    70,
    Settings,
)


class SensorFlood(_Base):
    """SL-EVA-001: over its flow-table or event-buffer share in a window."""

    def __init__(self) -> None:
        super().__init__(INFO)

    def evaluate(self, view: WindowView, ctx: Context) -> list[Finding]:
        cfg = ctx.settings(self.info.id, Settings)
        out = []
        for v in view.overflows:
            o = v.overflow
            kinds = (
                ("flows", o.flows_refused),
                ("events", o.events_refused),
                ("stateless_samples", o.stateless_samples),
                ("views", o.views_refused),
            )
            total = sum(n for _k, n in kinds)
            if total < cfg.min_refused:
                continue
            parts = []
            if o.flows_refused:
                parts.append(
                    f"{o.flows_refused} new destinations past its flow-table share of {o.flow_quota} "
                    f"(their {_human(o.bytes)} in {o.packets} packets are still counted, together)"
                )
            if o.events_refused:
                parts.append(f"{o.events_refused} events past its event share of {o.event_quota}")
            if o.stateless_samples:
                parts.append(
                    f"{o.stateless_samples} payload samples of sockets the kernel could not give the sensor's "
                    "per-socket state (their option memory was full: TCP MD5 keys or socket filters fill it), "
                    "so those sockets were sampled at a pace the sender can steer"
                )
            if o.views_refused:
                parts.append(
                    f"{o.views_refused} events past its share of what the rules look at in a window (unique "
                    "listening ports, inbound peers, unix socket paths, destinations, programs; they were "
                    "counted, not examined)"
                )
            out.append(
                Finding(
                    self.info.id,
                    v.attr,
                    v.workload,
                    view.end,
                    f"{_who(v.attr, v.workload)} flooded the sensor in one window: {'; '.join(parts)}. "
                    "Flooding the sensor's tables hides activity; the other containers stay counted",
                    {
                        "flows_refused": o.flows_refused,
                        "events_refused": o.events_refused,
                        "flow_quota": o.flow_quota,
                        "event_quota": o.event_quota,
                        "stateless_samples": o.stateless_samples,
                        "views_refused": o.views_refused,
                        "over_quota_bytes": o.bytes,
                        "over_quota_packets": o.packets,
                        "over_quota_connects": o.connects,
                        "cgroup_id": o.cgroup_id,
                        "window_seconds": round(view.end - view.start, 3),
                        "threshold_refused": cfg.min_refused,
                    },
                    categories=(["intrusion_detection", "network"], ["info", "denied"]),
                    # a flood of another table is another alert (review: the
                    # first flood's kept a second, of another kind, quiet)
                    magnitude=total,
                    facet=",".join(k for k, n in kinds if n),
                )
            )
        return out
