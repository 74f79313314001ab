"""What every rule module shares: message helpers and the base class."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import PurePosixPath
from typing import Any

from sensor.attribution.containers import Attribution
from sensor.detect.rule import Context, Finding, RuleInfo
from sensor.detect.view import ConnectView, FlowView, ProcessRef, WindowView
from sensor.telemetry.counters import FlowSummary

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


def _dest(ip: str, port: int, domain: str | None = None) -> str:
    """The destination for a message: its name first, then the address."""
    addr = f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"
    return f"{domain} ({addr})" if domain else addr


def new_tcp_connects(view: WindowView, ctx: Context, match: Callable[[ConnectView], bool]) -> list[ConnectView]:
    """A window's TCP connects from containers that `match`, to a
    destination their workload's baseline does not have (an operator or a
    controller that always does this stays quiet), once per container,
    address and port."""
    out = []
    seen: set[tuple[str, str, int]] = set()
    for c in view.connects:
        if c.attr.container is None or c.transport != "tcp" or not match(c):
            continue
        wb = ctx.workload(c.workload)
        if wb is not None and wb.knows_destination(c.ip, c.port, c.transport):
            continue
        if not ctx.baseline_gate(c.workload):
            continue
        k = (c.attr.container.id, c.ip, c.port)
        if k not in seen:
            seen.add(k)
            out.append(c)
    return out


def connect_finding(rule_id: str, c: ConnectView, what: str, evidence: dict[str, Any]) -> Finding:
    """A finding about one connect to `what` (the destination as the
    message names it), which the workload's baseline never makes."""
    return Finding(
        rule_id,
        c.attr,
        c.workload,
        c.ts,
        f"{_who(c.attr, c.workload)} connected to {what} ({_pname(c.process)}, pid {c.process.pid}); "
        "its baseline never does",
        evidence,
        (c.ip, c.port, c.transport),
        c.process,
    )


def _names(f: FlowView) -> dict[str, Any]:
    """Finding keyword arguments naming a flow's destination."""
    return {
        "domain": f.summary.domain,
        "name_source": f.summary.domain_source,
        "name_vouched": f.name_vouched if f.summary.domain else None,
        "name_resolver": f.summary.name_resolver or None,
    }


def _proc(f: FlowView) -> ProcessRef | None:
    """The flow's process: from the exec table when the pipeline knew it
    (executable, args), else pid and name from the connect event."""
    if f.process is not None:
        return f.process
    s = f.summary
    return ProcessRef(s.pid, s.comm or "") if s.pid is not None else None


def _classes(s: FlowSummary) -> dict[str, Any]:
    """Evidence: the window's payload bytes per class, and what the
    classifier recognised (encoding, compression proven or claimed)."""
    c = s.byte_classes
    if c is None:
        return {}
    out: dict[str, Any] = {"byte_classes": c.as_dict(), "encrypted_bytes": s.encrypted_bytes}
    for k in ("encoding", "compression", "fake_compression"):
        if getattr(c, k):
            out[k] = getattr(c, k)
    split = s.protocol_split()
    if split:  # sockets of the flow spoke different protocols
        out["protocols"] = split
    return out


def _drop_containers(table: dict[Any, Any], ids: set[str]) -> None:
    """Forget a rule's state keyed by (container id, ...) tuples."""
    for k in [k for k in table if k[0] in ids]:
        del table[k]


# Caps on a rule's state keyed by (container id, ...): what one container
# may make a rule remember (destinations it churns through, DNS names it
# invents) and what all of them together may.
PER_CONTAINER_KEYS = 1024
TOTAL_KEYS = 65536


class CappedTable(dict[Any, Any]):
    """A rule's state keyed by (container id, ...) tuples, bounded: at most
    `per_container` keys for one container and `total` overall. Making room
    evicts that container's oldest key (so a container churning destinations
    only forgets its own), or the oldest overall; every eviction is counted
    (health: detection.state_evictions). With a factory it behaves as a
    defaultdict."""

    def __init__(self, per_container: int = PER_CONTAINER_KEYS, total: int = TOTAL_KEYS, factory: Any = None) -> None:
        super().__init__()
        self.per_container, self.total, self.factory = per_container, total, factory
        self._by_container: dict[Any, dict[Any, None]] = {}  # insertion order per container
        self.evictions = 0

    def __missing__(self, key: Any) -> Any:
        if self.factory is None:
            raise KeyError(key)
        v = self.factory()
        self[key] = v
        return v

    def __setitem__(self, key: Any, value: Any) -> None:
        if key not in self:
            mine = self._by_container.setdefault(key[0], {})
            if len(mine) >= self.per_container:
                self._evict(next(iter(mine)))
            while len(self) >= self.total:
                self._evict(next(iter(self)))
            mine = self._by_container.setdefault(key[0], {})
            mine[key] = None
        super().__setitem__(key, value)

    def _evict(self, key: Any) -> None:
        self.evictions += 1
        del self[key]

    def __delitem__(self, key: Any) -> None:
        super().__delitem__(key)
        mine = self._by_container.get(key[0])
        if mine is not None:
            mine.pop(key, None)
            if not mine:
                del self._by_container[key[0]]

    def pop(self, key: Any, *default: Any) -> Any:
        if key in self:
            v = self[key]
            del self[key]
            return v
        if default:
            return default[0]
        raise KeyError(key)

    def setdefault(self, key: Any, default: Any = None) -> Any:
        if key not in self:
            self[key] = default
        return self[key]

    def clear(self) -> None:
        super().clear()
        self._by_container.clear()


def state_evictions(rule: Any) -> int:
    """Keys a rule's capped tables (and its own counter) evicted so far."""
    return int(getattr(rule, "evicted", 0)) + sum(
        v.evictions for v in vars(rule).values() if isinstance(v, CappedTable)
    )


class _Base:
    info: RuleInfo

    def __init__(self, info: RuleInfo) -> None:
        self.info = info
        self.evicted = 0  # state a rule dropped by its own caps

    def forget_containers(self, ids: set[str]) -> None:
        """Rules that keep per-container state override this."""
