"""Per-flow knowledge that outlives a window, bounded per cgroup.

What the pipeline remembers about a flow between windows (the process that
connected, the protocol each socket started with, the byte classifier's
framing state and last class mix) is kept in FlowTables: LRU maps keyed by
flow keys, or flow keys plus a socket cookie, whose first item is the
cgroup id.

Each cgroup may hold at most `per_cgroup` entries, all cgroups together at
most `total`. A cgroup that churns destinations evicts its own oldest
entries, never another's (the kernel gives a cgroup at most
`kernel.flow_quota_per_cgroup` flows per window, so knowledge of twice that
many covers every flow it can have counted in the last two windows); when
the total is reached, the least recently active cgroup gives up its oldest
entry. Every eviction is counted (status: counters.flow_state_evictions).

Memory is what this bounds (issue 10): a container flooding 20,000 new
destinations a second used to fill five 65,536-entry tables (~90 MB of
Python objects) at the expense of the other containers' state.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from typing import Any, Generic, TypeVar

V = TypeVar("V")
_MISSING = object()

# Per cgroup, when the caller does not say: twice the kernel's default flow
# quota per cgroup and window (kernel.flow_quota_per_cgroup = 2048).
PER_CGROUP = 4096
TOTAL = 65536


class FlowTable(Generic[V]):
    """An LRU map of flow key -> value, bounded per cgroup (key[0]) and in
    total, evictions counted. put() and get(touch=True) make a key the most
    recent of its cgroup."""

    __slots__ = ("per_cgroup", "total", "evictions", "_by_cg", "_n")

    def __init__(self, per_cgroup: int = PER_CGROUP, total: int = TOTAL) -> None:
        if per_cgroup < 1 or total < 1:
            raise ValueError("FlowTable caps must be positive")
        self.per_cgroup = min(per_cgroup, total)
        self.total = total
        self.evictions = 0
        # cgroup id -> its keys, oldest first; cgroups least recently active first
        self._by_cg: OrderedDict[int, OrderedDict[Any, V]] = OrderedDict()
        self._n = 0

    def put(self, key: Any, value: V) -> None:
        cg = key[0]
        mine = self._by_cg.get(cg)
        if mine is None:
            mine = self._by_cg[cg] = OrderedDict()
        else:
            self._by_cg.move_to_end(cg)
        if key in mine:
            mine[key] = value
            mine.move_to_end(key)
            return
        if len(mine) >= self.per_cgroup:
            mine.popitem(last=False)
            self._n -= 1
            self.evictions += 1
        while self._n >= self.total:
            self._evict_oldest_cgroup_entry(cg)
        mine[key] = value
        self._n += 1

    def _evict_oldest_cgroup_entry(self, keep: int) -> None:
        """The least recently active cgroup (not `keep`, unless it is the
        only one) gives up its oldest entry."""
        victim = next(iter(self._by_cg))
        if victim == keep and len(self._by_cg) > 1:
            self._by_cg.move_to_end(keep)
            victim = next(iter(self._by_cg))
        entries = self._by_cg[victim]
        entries.popitem(last=False)
        self._n -= 1
        self.evictions += 1
        if not entries and victim != keep:
            del self._by_cg[victim]

    def get(self, key: Any, default: Any = None, touch: bool = False) -> Any:
        """The value of key; touch: a hit becomes its cgroup's most recent
        entry (an entry in use is not the one its cgroup's churn evicts)."""
        mine = self._by_cg.get(key[0])
        if mine is None:
            return default
        v = mine.get(key, _MISSING)
        if v is _MISSING:
            return default
        if touch:
            mine.move_to_end(key)
        return v

    def pop(self, key: Any, default: Any = None) -> Any:
        cg = key[0]
        mine = self._by_cg.get(cg)
        if mine is None or key not in mine:
            return default
        v = mine.pop(key)
        self._n -= 1
        if not mine:
            del self._by_cg[cg]
        return v

    def forget_cgroups(self, ids: set[int]) -> None:
        for cg in ids:
            mine = self._by_cg.pop(cg, None)
            if mine is not None:
                self._n -= len(mine)

    def cgroup_len(self, cgroup_id: int) -> int:
        mine = self._by_cg.get(cgroup_id)
        return len(mine) if mine is not None else 0

    def __getitem__(self, key: Any) -> V:
        mine = self._by_cg.get(key[0])
        if mine is None:
            raise KeyError(key)
        return mine[key]

    def __contains__(self, key: Any) -> bool:
        mine = self._by_cg.get(key[0])
        return mine is not None and key in mine

    def __len__(self) -> int:
        return self._n

    def __bool__(self) -> bool:
        return self._n > 0

    def __iter__(self) -> Iterator[Any]:
        for mine in list(self._by_cg.values()):
            yield from list(mine)


K = TypeVar("K")


class Interner(Generic[K]):
    """One shared object per distinct value (a flood of flows carrying the
    same owner, protocol split or class mix stores one tuple, not one per
    flow). A cache: cleared when it holds `cap` values; values already
    stored elsewhere stay valid."""

    __slots__ = ("cap", "_seen")

    def __init__(self, cap: int = 4096) -> None:
        self.cap = cap
        self._seen: dict[K, K] = {}

    def __call__(self, value: K) -> K:
        shared = self._seen.get(value)
        if shared is None:
            if len(self._seen) >= self.cap:
                self._seen.clear()
            shared = self._seen[value] = value
        return shared
