"""The seam between the kernel and the pipeline.

Only sensor/loader.py imports bcc. Everything downstream consumes this
interface, so unit tests drive the pipeline from a ReplaySource.
"""

from __future__ import annotations

from typing import Callable, Iterable, Protocol

from .counters import FlowCounters

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

    def close(self) -> None:
        """Detach everything."""


class ReplaySource:
    """Replays recorded raw records and flow counters (unit tests)."""

    def __init__(self, records: Iterable[bytes] = (), windows: Iterable[list[FlowCounters]] = ()) -> None:
        self.records = list(records)
        self.windows = list(windows)
        self.sink: RecordSink | None = None
        self.closed = False

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

    def close(self) -> None:
        self.closed = True
