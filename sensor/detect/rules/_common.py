"""What every rule module shares: message helpers and the base class."""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Any

from sensor.attribution.containers import Attribution
from sensor.detect.rule import RuleInfo
from sensor.detect.view import FlowView, ProcessRef

# How long per-container state is kept without activity.
STATE_TTL_S = 3600.0


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def _who(attr: Attribution, workload: str) -> str:
    c = attr.container
    if c is None:
        return "Host process"
    name = c.name or c.id[:12]
    return f"Container {name} ({workload})"


def _secs(t: float) -> str:
    return f"{t * 1000:.0f} ms" if t < 1 else f"{t:.1f} s"


def _pname(p: ProcessRef) -> str:
    """busybox applets exec through /proc/self/exe: name them by argv[0]."""
    if p.name == "exe" and p.args:
        return PurePosixPath(p.args[0]).name
    return p.name


def _dest(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def _proc(f: FlowView) -> ProcessRef | None:
    """The flow's process: from the exec table when the pipeline knew it
    (executable, args), else pid and name from the connect event."""
    if f.process is not None:
        return f.process
    s = f.summary
    return ProcessRef(s.pid, s.comm or "") if s.pid is not None else None


def _drop_containers(table: dict[Any, Any], ids: set[str]) -> None:
    """Forget a rule's state keyed by (container id, ...) tuples."""
    for k in [k for k in table if k[0] in ids]:
        del table[k]


class _Base:
    info: RuleInfo

    def __init__(self, info: RuleInfo) -> None:
        self.info = info

    def forget_containers(self, ids: set[str]) -> None:
        """Rules that keep per-container state override this."""
