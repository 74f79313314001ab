"""SL-C2-001: connect A -> new executable from a writable path -> connect."""

from __future__ import annotations

from collections import defaultdict, deque
from dataclasses import dataclass
from typing import Any

from sensor.detect.rule import T1104, Context, Finding, RuleInfo, RuleSettings
from sensor.detect.rules._common import STATE_TTL_S, _Base, _dest, _pname, _secs, _who
from sensor.detect.view import ConnectView, ExecView, WindowView


@dataclass(frozen=True)
class Settings(RuleSettings):
    within_seconds: float = 300.0
    writable_paths: tuple[str, ...] = (
        "/tmp/",
        "/var/tmp/",
        "/dev/shm/",
        "/run/",
        "/memfd:",
        "/proc/self/fd/",
        "/home/",
        "/root/",
    )


INFO = RuleInfo(
    "SL-C2-001",
    "multi_stage_chain",
    "Multi-stage chain: fetch, execute, new channel",
    "In one container: a connection, then a new executable (not in the baseline, from a writable "
    "path such as /tmp, /dev/shm or memfd) ran, then a connection to a destination not seen "
    "before.",
    T1104,
    85,
    Settings,
)


class MultiStageChain(_Base):
    """SL-C2-001: connect A -> new executable from a writable path -> connect
    B (new), in one container, within the window of time."""

    def __init__(self) -> None:
        super().__init__(INFO)
        self._connects: dict[str, deque[ConnectView]] = defaultdict(lambda: deque(maxlen=256))
        self._stages: dict[str, list[tuple[ExecView, ConnectView]]] = defaultdict(list)

    def forget_containers(self, ids: set[str]) -> None:
        for cid in ids:
            self._connects.pop(cid, None)
            self._stages.pop(cid, None)

    def evaluate(self, view: WindowView, ctx: Context) -> list[Finding]:
        cfg = ctx.settings(self.info.id, Settings)
        horizon = cfg.within_seconds
        events: list[tuple[float, int, Any]] = [(c.ts, 0, c) for c in view.connects if c.attr.container]
        events += [(e.ts, 1, e) for e in view.execs if e.attr.container]
        out = []
        for _ts, kind, ev in sorted(events, key=lambda t: (t[0], t[1])):
            cid = ev.attr.container.id
            if kind == 0:
                for stage, first in list(self._stages.get(cid, [])):
                    if ev.ts - stage.ts > horizon:
                        continue
                    same = (ev.ip, ev.port) == (first.ip, first.port)
                    if same or ctx.known_destination(ev.workload, ev.ip, ev.port, ev.transport, ev.domain):
                        continue
                    out.append(self._finding(first, stage, ev, ctx))
                    self._stages[cid].remove((stage, first))
                self._connects[cid].append(ev)
            else:
                path = ev.process.executable or ""
                if not self._new_writable(ev, path, ctx, cfg):
                    continue
                prior = [c for c in self._connects.get(cid, ()) if 0 <= ev.ts - c.ts <= horizon]
                if prior:
                    self._stages[cid].append((ev, prior[-1]))
        for cid in list(self._stages):
            self._stages[cid] = [(s, c) for s, c in self._stages[cid] if view.end - s.ts <= horizon]
            if not self._stages[cid]:
                del self._stages[cid]
        for cid in [c for c, d in self._connects.items() if d and view.end - d[-1].ts > STATE_TTL_S]:
            del self._connects[cid]
        return [f for f in out if ctx.baseline_gate(f.workload)]

    @staticmethod
    def _new_writable(e: ExecView, path: str, ctx: Context, cfg: Settings) -> bool:
        if not path.startswith(tuple(cfg.writable_paths)):
            return False
        wb = ctx.workload(e.workload)
        return wb is None or path not in wb.executables

    def _finding(self, a: ConnectView, stage: ExecView, b: ConnectView, ctx: Context) -> Finding:
        steps = [
            {
                "step": "connect",
                "time": a.ts,
                "destination": _dest(a.ip, a.port, a.domain),
                "process": _pname(a.process),
                "pid": a.process.pid,
            },
            {
                "step": "exec",
                "time": stage.ts,
                "executable": stage.process.executable,
                "args": stage.process.args,
                "pid": stage.process.pid,
            },
            {
                "step": "connect",
                "time": b.ts,
                "destination": _dest(b.ip, b.port, b.domain),
                "process": _pname(b.process),
                "pid": b.process.pid,
            },
        ]
        return Finding(
            self.info.id,
            b.attr,
            b.workload,
            b.ts,
            f"{_who(b.attr, b.workload)} connected to {_dest(a.ip, a.port, a.domain)}, then ran new executable "
            f"{stage.process.executable} and opened a channel to {_dest(b.ip, b.port, b.domain)} "
            f"{_secs(b.ts - a.ts)} later",
            {
                "chain": steps,
                "seconds": round(b.ts - a.ts, 3),
                "executable_in_baseline": False,
                "second_destination_in_baseline": False,
            },
            (b.ip, b.port, b.transport),
            stage.process,
            domain=b.domain,
            name_source="dns" if b.domain else None,
        )
