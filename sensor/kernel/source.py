"""The seam between the kernel and the pipeline.

Only sensor/loader.py imports bcc. Everything downstream consumes this
interface, so unit tests drive the pipeline from a ReplaySource.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Protocol

from sensor.kernel.progstats import ProgramCost
from sensor.telemetry.counters import FlowCounters

RecordSink = Callable[[bytes], None]


class EventSource(Protocol):
    def start(self, sink: RecordSink) -> dict[str, str]:
        """Load and attach; return hook name -> status."""

    def poll(self, timeout_ms: int) -> int:
        """Deliver pending records to the sink; return how many."""

    def drain_flows(self, final: bool = False) -> list[FlowCounters]:
        """Kernel flow counters of the window that just ended."""

    def kernel_stats(self) -> dict[str, int]:
        """Kernel-side counters (submitted, dropped, map full, ...)."""

    def lost_records(self) -> int:
        """Records lost between kernel and user space (perf buffer)."""

    def program_costs(self) -> list[ProgramCost]:
        """Run count and run time of each loaded BPF program (kernel bpf_stats)."""

    def set_isolated(self, cgroup_id: int, on: bool) -> None:
        """Drop (on) or stop dropping all egress of this cgroup but loopback."""

    def set_blocked(self, cgroup_id: int, ip: str, on: bool) -> None:
        """Drop egress to ip from this cgroup (0: from every cgroup)."""

    def containment_counts(self) -> tuple[dict[int, int], dict[tuple[int, str], int]]:
        """Packets dropped per isolated cgroup and per (cgroup, blocked ip)."""

    def close(self) -> None:
        """Detach everything."""


class ReplaySource:
    """Replays recorded raw records and flow counters (unit tests)."""

    def __init__(self, records: Iterable[bytes] = (), windows: Iterable[list[FlowCounters]] = ()) -> None:
        self.records = list(records)
        self.windows = list(windows)
        self.sink: RecordSink | None = None
        self.closed = False
        self.isolated: dict[int, int] = {}
        self.blocked: dict[tuple[int, str], int] = {}

    def start(self, sink: RecordSink) -> dict[str, str]:
        self.sink = sink
        return {"replay": "attached"}

    def poll(self, timeout_ms: int) -> int:
        assert self.sink is not None
        n = len(self.records)
        for r in self.records:
            self.sink(r)
        self.records = []
        return n

    def drain_flows(self, final: bool = False) -> list[FlowCounters]:
        return self.windows.pop(0) if self.windows else []

    def kernel_stats(self) -> dict[str, int]:
        return {}

    def lost_records(self) -> int:
        return 0

    def program_costs(self) -> list[ProgramCost]:
        return []

    def set_isolated(self, cgroup_id: int, on: bool) -> None:
        if on:
            self.isolated.setdefault(cgroup_id, 0)
        else:
            self.isolated.pop(cgroup_id, None)

    def set_blocked(self, cgroup_id: int, ip: str, on: bool) -> None:
        if on:
            self.blocked.setdefault((cgroup_id, ip), 0)
        else:
            self.blocked.pop((cgroup_id, ip), None)

    def containment_counts(self) -> tuple[dict[int, int], dict[tuple[int, str], int]]:
        return dict(self.isolated), dict(self.blocked)

    def close(self) -> None:
        self.closed = True
