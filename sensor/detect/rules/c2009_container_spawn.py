"""SL-C2-009: a container started right after another container used a
runtime socket: the alert links the new container to its creator."""

from __future__ import annotations

from dataclasses import dataclass

from sensor.attribution.containers import Attribution
from sensor.detect.rule import T1610, Context, Finding, RuleInfo, RuleSettings
from sensor.detect.rules import c2007_runtime_socket
from sensor.detect.rules._common import _Base, _pname, _who
from sensor.detect.rules.c2007_runtime_socket import runtime_socket
from sensor.detect.view import LifecycleView, ProcessRef, WindowView


@dataclass(frozen=True)
class Settings(RuleSettings):
    within_seconds: float = 5.0


INFO = RuleInfo(
    "SL-C2-009",
    "container_started_by_container",
    "Container started from inside another container",
    "A new container started right after another, still running, container used a runtime socket (or "
    "while it held a connection to one open), and the caller's baseline never started that workload: the "
    "alert links the new container to the one that created it.",
    T1610,
    80,
    Settings,
)

MAX_CALLS = 256


@dataclass
class _Call:
    ts: float
    attr: Attribution
    workload: str
    path: str
    process: ProcessRef


class ContainerSpawn(_Base):
    """SL-C2-009: a container started by a container through the runtime.

    The runtime does not say who asked for a container; the link is the
    time: the most recent runtime-socket connect from another container at
    most within_seconds before the new container's cgroup appeared, from a
    container still running then (the client waits for the start it asked
    for, so a caller that has stopped cannot be the creator). Failing that,
    a container that connected earlier and still holds the connection open
    at the start (LifecycleView.clients, read by the pipeline).
    """

    def __init__(self) -> None:
        super().__init__(INFO)
        self._calls: list[_Call] = []

    def evaluate(self, view: WindowView, ctx: Context) -> list[Finding]:
        cfg = ctx.settings(self.info.id, Settings)
        sockets = ctx.settings("SL-C2-007", c2007_runtime_socket.Settings).sockets
        for u in view.unix_connects:
            if u.attr.container is not None and runtime_socket(u, sockets):
                self._calls.append(_Call(u.ts, u.attr, u.workload, u.path, u.process))
        self._calls = self._calls[-MAX_CALLS:]
        out = []
        for x in sorted(view.lifecycle, key=lambda v: v.ts):
            if x.kind == "stop" and x.attr.container is not None:
                gone = x.attr.container.id
                self._calls = [c for c in self._calls if c.attr.container is None or c.attr.container.id != gone]
                continue
            if x.kind != "start" or x.attr.container is None:
                continue
            cands = [
                c
                for c in self._calls
                if c.attr.container is not None
                and c.attr.container.id != x.attr.container.id
                and 0 <= x.ts - c.ts <= cfg.within_seconds
            ]
            # the latest connect within the time first, then the open
            # connections; each judged by its own caller's baseline (review:
            # a learned proxy's connect within 5 s was picked, then dropped
            # as usual, and the open connection behind it never looked at)
            linked = [("time", c) for c in sorted(cands, key=lambda c: -c.ts)]
            linked += [("open_connection", c) for c in sorted(self._open_clients(x, ctx, sockets), key=lambda c: -c.ts)]
            pick = next(((how, c) for how, c in linked if self._may_have_created(c, x, ctx)), None)
            if pick is None:
                continue
            linked_by, call = pick
            wb = ctx.workload(call.workload)
            creator = call.attr.container
            assert creator is not None
            new = x.attr.container
            out.append(
                Finding(
                    self.info.id,
                    x.attr,
                    x.workload,
                    x.ts,
                    f"Container {new.name or new.id[:12]} ({x.workload}) started {x.ts - call.ts:.1f} s after "
                    f"{_who(call.attr, call.workload).lower()} "
                    + (
                        f"used the runtime socket {call.path}"
                        if linked_by == "time"
                        else f"connected to the runtime socket {call.path}, a connection it still held open"
                    )
                    + f" ({_pname(call.process)}, pid {call.process.pid}): created from inside a container",
                    {
                        "created_by": {
                            "container_id": creator.id,
                            "container_name": creator.name,
                            "workload": call.workload,
                            "socket": call.path,
                            "process": {
                                "pid": call.process.pid,
                                "name": call.process.name,
                                "executable": call.process.executable,
                            },
                            "seconds_before_start": round(x.ts - call.ts, 3),
                            # "time": a connect within_seconds before the start;
                            # "open_connection": one made earlier, still open then
                            "linked_by": linked_by,
                        },
                        "baseline_spawned": sorted(wb.spawned)[:20] if wb else [],
                    },
                    None,
                    call.process,
                    unix_path=call.path,
                )
            )
        horizon = view.end - 2 * cfg.within_seconds
        self._calls = [c for c in self._calls if c.ts >= horizon]
        return out

    @staticmethod
    def _may_have_created(call: _Call, x: LifecycleView, ctx: Context) -> bool:
        wb = ctx.workload(call.workload)
        if wb is not None and x.workload in wb.spawned:
            return False  # a CI runner starting its usual job containers
        return ctx.baseline_gate(call.workload)

    @staticmethod
    def _open_clients(x: LifecycleView, ctx: Context, sockets: tuple[str, ...]) -> list[_Call]:
        """Containers holding a connection to the runtime socket open at the
        start, connected longer ago than within_seconds: a creator that
        connects, waits, then sends its request on the same connection
        (review). Not a workload whose baseline uses the runtime socket: a
        reverse proxy or an agent that watches the runtime's events holds
        one open all the time, and would be every new container's creator."""
        out = []
        for o in x.clients:
            if (
                x.attr.container is not None
                and o.attr.container is not None
                and o.attr.container.id == x.attr.container.id
            ):
                continue
            name = o.peer.rsplit("/", 1)[-1]
            wb = ctx.workload(o.workload)
            if name not in sockets or (wb is not None and name in wb.unix_sockets):
                continue
            out.append(_Call(o.connected, o.attr, o.workload, o.path, o.process))
        return out
