"""Learning: fold each window into the per-workload baseline."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable

from sensor.detect.baseline import Baseline, dest_key
from sensor.detect.view import WindowView
from sensor.telemetry.names import registered_domain


def local_hour(ts: float, tz: str) -> int:
    return (time.gmtime(ts) if tz == "UTC" else time.localtime(ts)).tm_hour


class Learner:
    """Adds every window (or, while detecting, every window of a workload
    that raised no alert) to a Baseline."""

    def __init__(self, baseline: Baseline, timezone: str = "local", skip: Callable[[str], bool] | None = None) -> None:
        self.baseline = baseline
        self.tz = timezone
        self.skip = skip or (lambda _w: False)
        self.windows = 0

    def on_window(self, view: WindowView) -> None:
        self.windows += 1
        egress: dict[str, int] = defaultdict(int)
        encrypted: dict[str, int] = defaultdict(int)
        starts: dict[str, int] = defaultdict(int)
        hour = local_hour(view.end, self.tz)
        active = {w for w in view.workloads() if not self.skip(w)}
        b = self.baseline
        for f in view.flows:
            if f.workload not in active:
                continue
            s = f.summary
            if not s.bytes and not s.connects:
                continue  # only received (ingress counts): not a destination it sends to
            enc = s.payload_bytes if s.encrypted_like else 0
            egress[f.workload] += s.bytes
            encrypted[f.workload] += enc
            # by name (registered domain) when the flow had one, else by address
            host = registered_domain(s.domain) if s.domain else f.ip
            b.workload(f.workload).add_destination(
                dest_key(host, f.port, f.transport),
                s.payload_bytes,
                enc,
                s.entropy,
                s.protocol_hint,
                address=f.ip if s.domain else None,
            )
            if f.peer_workload:
                b.workload(f.workload).add_peer(f.peer_workload)
        for e in view.execs:
            if e.workload in active and e.process.executable:
                b.workload(e.workload).add_executable(e.process.executable)
        for x in view.lifecycle:
            if x.workload not in active:
                continue
            if x.kind == "start":
                starts[x.workload] += 1
            elif x.lifetime is not None:
                b.workload(x.workload).lifetimes.add(x.lifetime)
        for w in active:
            wb = b.workload(w)
            wb.windows += 1
            wb.seen(view.end)
            wb.hours[hour] += 1
            wb.egress_bytes.add(egress.get(w, 0))
            wb.encrypted_bytes.add(encrypted.get(w, 0))
            wb.starts_per_window.add(starts.get(w, 0))
