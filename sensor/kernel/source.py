"""The seam between the kernel and the pipeline.

Only sensor/loader.py imports bcc. Everything downstream consumes this
interface, so unit tests drive the pipeline from a ReplaySource.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Protocol

from sensor.kernel.progstats import ProgramCost
from sensor.telemetry.counters import FlowCounters, QuotaOverflow

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

    def counts_received(self) -> bool:
        """Flows carry what their destination sent back (the ingress program
        is attached and kernel.count_received is on); else their received
        counts are not zeros but unknown."""

    def compile_info(self) -> dict[str, float | bool]:
        """The BPF compile at start: its seconds, and whether it ran early,
        while the CLI loaded (sensor/kernel/precompile.py)."""

    def quota_overflows(self) -> list[QuotaOverflow]:
        """Cgroups over their flow or event quota in the window just drained."""

    def note_quota_event(self, cgroup_id: int) -> None:
        """A cgroup reported going over a quota in this window."""

    def unreported_cgroups(self) -> list[int]:
        """Cgroups whose bind to port 53 or raw/packet socket the kernel
        could not report since the last call (bpf sl_unreported)."""

    def set_quota_charge(self, cgroup_id: int, container_cgroup_id: int) -> None:
        """Charge this cgroup's flow and event quotas to its container's cgroup."""

    def forget_quota_charges(self, cgroup_ids: set[int]) -> None:
        """These cgroups are gone: drop their quota charges."""

    def set_isolated(self, handle: int, on: bool, no_loopback: bool = False) -> None:
        """Drop (on) or stop dropping all egress of the container with this
        containment handle but its own loopback (127.0.0.1, ::1), and that
        too with no_loopback (a shared network namespace). Setting it again
        changes the flag and keeps the count."""

    def set_blocked(self, handle: int, ip: str, on: bool) -> None:
        """Drop egress to ip from the container with this handle (0: from
        every cgroup)."""

    def set_contained_cgroup(self, cgroup_id: int, handle: int, level: int, on: bool) -> None:
        """Put a cgroup (at this level under the root) and its sub-cgroups
        under a containment handle."""

    def set_contained_container(self, container_id: str, handle: int, on: bool) -> None:
        """New cgroups of this container id get the handle at creation."""

    def contained_cgroups(self) -> dict[int, int]:
        """cgroup id -> handle, as the kernel has them."""

    def containment_counts(self) -> tuple[dict[int, int], dict[tuple[int, str], int]]:
        """Packets dropped per isolation handle and per (handle, blocked ip)."""

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
        self.isolated_no_loopback: dict[int, bool] = {}
        self.blocked: dict[tuple[int, str], int] = {}
        self.cgroups: dict[int, int] = {}
        self.container_ids: dict[str, int] = {}
        self.overflows: list[list[QuotaOverflow]] = []
        self.quota_charges: dict[int, int] = {}
        self.unreported: list[int] = []

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

    def counts_received(self) -> bool:
        return True

    def compile_info(self) -> dict[str, float | bool]:
        return {"seconds": 0.0, "early": False}

    def quota_overflows(self) -> list[QuotaOverflow]:
        return self.overflows.pop(0) if self.overflows else []

    def note_quota_event(self, cgroup_id: int) -> None:
        pass

    def unreported_cgroups(self) -> list[int]:
        out, self.unreported = self.unreported, []
        return out

    def set_quota_charge(self, cgroup_id: int, container_cgroup_id: int) -> None:
        self.quota_charges[cgroup_id] = container_cgroup_id

    def forget_quota_charges(self, cgroup_ids: set[int]) -> None:
        for c in cgroup_ids:
            self.quota_charges.pop(c, None)

    def set_isolated(self, handle: int, on: bool, no_loopback: bool = False) -> None:
        if on:
            self.isolated.setdefault(handle, 0)
            self.isolated_no_loopback[handle] = no_loopback
        else:
            self.isolated.pop(handle, None)
            self.isolated_no_loopback.pop(handle, None)

    def set_blocked(self, handle: int, ip: str, on: bool) -> None:
        if on:
            self.blocked.setdefault((handle, ip), 0)
        else:
            self.blocked.pop((handle, ip), None)

    def set_contained_cgroup(self, cgroup_id: int, handle: int, level: int, on: bool) -> None:
        if on:
            self.cgroups[cgroup_id] = handle
        else:
            self.cgroups.pop(cgroup_id, None)

    def set_contained_container(self, container_id: str, handle: int, on: bool) -> None:
        if on:
            self.container_ids[container_id] = handle
        else:
            self.container_ids.pop(container_id, None)

    def contained_cgroups(self) -> dict[int, int]:
        return dict(self.cgroups)

    def containment_counts(self) -> tuple[dict[int, int], dict[tuple[int, str], int]]:
        return dict(self.isolated), dict(self.blocked)

    def close(self) -> None:
        self.closed = True
