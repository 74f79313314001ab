"""Learning: fold each window into the per-workload baseline."""

from __future__ import annotations

import time
from collections import defaultdict, deque
from collections.abc import Callable

from sensor.attribution.runtimesock import RUNTIME_SOCKETS
from sensor.detect.baseline import Baseline, dest_key
from sensor.detect.view import WindowView
from sensor.telemetry.names import registered_domain

SPAWN_WINDOW_S = 5.0


def local_hour(ts: float, tz: str) -> int:
    return (time.gmtime(ts) if tz == "UTC" else time.localtime(ts)).tm_hour


class Learner:
    """Adds every window (or, while detecting, every window of a workload
    that raised no alert and was not near one) to a Baseline."""

    def __init__(
        self,
        baseline: Baseline,
        timezone: str = "local",
        skip: Callable[[str], bool] | None = None,
        quarantine_windows: int = 0,
        new_resolvers: bool = True,
    ) -> None:
        self.baseline = baseline
        # A resolver is what vouches for names (Context.resolver_known):
        # while detecting (new_resolvers False) a workload learns one only
        # if some workload of the baseline already knows it, so a few quiet
        # queries to an attacker's resolver are not learned into trust. The
        # cluster's resolver is known to the others when a new workload
        # first uses it; a resolver no workload knows waits for `sluice
        # baseline learn`.
        self.new_resolvers = new_resolvers
        self.resolvers_withheld = 0  # port 53 flows not learned for that
        # every workload's resolvers, read from the baseline once and kept
        # up to date by what this learner adds (not per window: one packet
        # to an unknown resolver would make every window walk the baseline)
        self._known_resolvers: set[str] | None = None
        self.tz = timezone
        self.skip = skip or (lambda _w: False)
        self.windows = 0
        # Quarantine (learning while detecting): a workload's windows within
        # `quarantine_windows` of a window where skip() held (it raised) are
        # not learned, before or after it. Windows wait that long before
        # they are learned, so a finding can still exclude them (the last
        # ones before a stop are never learned).
        self.quarantine = quarantine_windows
        self._pending: deque[tuple[WindowView, set[str]]] = deque()
        self._cooldown: dict[str, int] = {}
        self.quarantined = 0  # workload-windows not learned because of a nearby finding
        # workload -> time of its last runtime-socket connect: a container
        # started within SPAWN_WINDOW_S after it counts as spawned by it
        # (the start can fall in the next window)
        self._callers: dict[str, float] = {}

    def on_window(self, view: WindowView) -> None:
        if not self.quarantine:
            self._learn(view, {w for w in view.workloads() if self.skip(w)})
            return
        hot = {w for w in view.workloads() if self.skip(w)}
        for _v, excluded in self._pending:
            self.quarantined += len(hot - excluded)
            excluded |= hot
        for w in hot:
            self._cooldown[w] = self.quarantine
        excluded = hot | set(self._cooldown)
        self.quarantined += len((excluded - hot) & view.workloads())
        for w in [w for w in self._cooldown if w not in hot]:
            self._cooldown[w] -= 1
            if self._cooldown[w] <= 0:
                del self._cooldown[w]
        self._pending.append((view, excluded))
        while len(self._pending) > self.quarantine:
            self._learn(*self._pending.popleft())

    def _learn(self, view: WindowView, skipped: set[str]) -> None:
        self.windows += 1
        egress: dict[str, int] = defaultdict(int)
        encrypted: dict[str, int] = defaultdict(int)
        starts: dict[str, int] = defaultdict(int)
        hour = local_hour(view.end, self.tz)
        active = view.workloads() - skipped
        b = self.baseline
        for f in view.flows:
            if f.workload not in active:
                continue
            s = f.summary
            if not s.bytes and not s.connects:
                continue  # only received (ingress counts): not a destination it sends to
            if f.port == 53 and not self.new_resolvers and not b.workload(f.workload).knows_resolver(f.ip):
                if self._known_resolvers is None:
                    self._known_resolvers = b.resolvers()
                if f.ip not in self._known_resolvers:
                    self.resolvers_withheld += 1
                    continue
            enc = s.encrypted_bytes
            egress[f.workload] += s.bytes
            encrypted[f.workload] += enc
            # by name (registered domain) when the flow had one, else by
            # address; a resolver always by address (what knows_resolver asks)
            host = registered_domain(s.domain) if s.domain and f.port != 53 else f.ip
            if f.port == 53 and self._known_resolvers is not None:
                self._known_resolvers.add(f.ip)
            b.workload(f.workload).add_destination(
                dest_key(host, f.port, f.transport),
                s.payload_bytes,
                enc,
                s.entropy,
                s.protocol_hint,
                address=f.ip if s.domain and f.port != 53 else None,
            )
            if f.peer_workload:
                b.workload(f.workload).add_peer(f.peer_workload)
        for e in view.execs:
            if e.workload in active and e.process.executable:
                b.workload(e.workload).add_executable(e.process.executable)
            if e.workload in active and e.script:
                # a script its interpreter runs (SL-C2-001 writable_script)
                b.workload(e.workload).add_executable(e.script)
        self._inbound(view, active, skipped)
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

    def _inbound(self, view: WindowView, active: set[str], skipped: set[str]) -> None:
        """Listen ports, inbound peer classes, unix sockets used and the
        workloads started while a runtime socket was in use. A caller that
        raised (skip) or is quarantined in this window (skipped) learns no
        spawned workload."""
        b = self.baseline
        for lv in view.listens:
            if lv.workload in active and lv.attr.container is not None:
                wb = b.workload(lv.workload)
                wb.add_count(wb.listen_ports, f"{lv.transport}/{lv.port}")
        for a in view.accepts:
            if a.workload in active and a.attr.container is not None:
                wb = b.workload(a.workload)
                wb.add_count(wb.inbound, f"tcp/{a.port}|{a.peer_class}", a.count)
                # a port that accepts connections listens, also when its
                # listen(2) predates learning (no count: no listen was seen)
                wb.add_count(wb.listen_ports, f"tcp/{a.port}", 0)
        for u in view.unix_connects:
            if u.workload in active:
                wb = b.workload(u.workload)
                name = u.runtime or u.path.rsplit("/", 1)[-1]
                wb.add_count(wb.unix_sockets, name)
                if name in RUNTIME_SOCKETS:
                    self._callers[u.workload] = max(u.ts, self._callers.get(u.workload, 0.0))
        for x in view.lifecycle:
            if x.kind != "start":
                continue
            for w, ts in self._callers.items():
                if w != x.workload and w not in skipped and not self.skip(w) and 0 <= x.ts - ts <= SPAWN_WINDOW_S:
                    wb = b.workload(w)
                    wb.add_count(wb.spawned, x.workload)
        self._callers = {w: ts for w, ts in self._callers.items() if view.end - ts <= SPAWN_WINDOW_S}
