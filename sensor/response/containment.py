"""The response path: isolate a container, block a destination.

Both strategies end with "isolate the container, block egress". Sluice does
it in its own egress program, for any runtime: the packets of an isolated
container's cgroup (loopback excepted), or to a blocked destination (from
one container, or from every cgroup on the node), are dropped in the kernel
and counted per entry. Entries are kept in a state file (JSON, written
atomically) and applied again when the sensor starts; an entry whose
container is gone is released. Containment lives in the sensor's programs:
while the sensor is stopped, nothing is contained (the start health event
lists what was re-applied).
"""

from __future__ import annotations

import ipaddress
import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass
from typing import Any

from sensor.kernel.source import EventSource

STATE_VERSION = 1


class ContainmentError(Exception):
    """A containment request that cannot be carried out (said to the caller)."""


@dataclass
class Entry:
    kind: str  # "isolate" or "block"
    container_id: str | None  # None: a block for every cgroup on the node
    container_name: str | None
    cgroup_ids: list[int]
    destination: str | None  # block only
    since: float  # wall clock
    reason: str = ""

    def who(self) -> str:
        return (self.container_name or self.container_id[:12]) if self.container_id else "every container"

    def label(self) -> str:
        return f"isolate {self.who()}" if self.kind == "isolate" else f"block {self.destination} for {self.who()}"


def normalise_ip(text: str) -> str:
    try:
        return str(ipaddress.ip_address(text.strip()))
    except ValueError:
        raise ContainmentError(f"{text!r} is not an IP address (blocks are per address)") from None


class Containment:
    def __init__(self, source: EventSource, state_path: str) -> None:
        self.source = source
        self.path = state_path
        self.entries: list[Entry] = []

    # --- state file ----------------------------------------------------------

    def load(self) -> list[Entry]:
        """Entries saved by an earlier run (not applied yet). A missing file
        is empty; an unreadable one raises ContainmentError naming it."""
        try:
            with open(self.path) as f:
                data = json.load(f)
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as e:
            raise ContainmentError(f"containment state {self.path} cannot be read: {e}") from None
        if (
            not isinstance(data, dict)
            or data.get("version") != STATE_VERSION
            or not isinstance(data.get("entries"), list)
        ):
            raise ContainmentError(f"containment state {self.path}: not a version-{STATE_VERSION} state file")
        try:
            return [Entry(**e) for e in data["entries"]]
        except TypeError as e:
            raise ContainmentError(f"containment state {self.path}: bad entry ({e})") from None

    def save(self) -> None:
        d = os.path.dirname(self.path) or "."
        os.makedirs(d, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".containment-", dir=d)
        try:
            with os.fdopen(fd, "w") as f:
                json.dump({"version": STATE_VERSION, "entries": [asdict(e) for e in self.entries]}, f, indent=1)
            os.replace(tmp, self.path)
        except BaseException:
            os.unlink(tmp)
            raise

    # --- kernel --------------------------------------------------------------

    def _apply(self, e: Entry, on: bool) -> None:
        if e.kind == "isolate":
            for cg in e.cgroup_ids:
                self.source.set_isolated(cg, on)
        else:
            assert e.destination is not None
            for cg in e.cgroup_ids or [0]:
                self.source.set_blocked(cg, e.destination, on)

    def restore(self, saved: list[Entry], live: dict[str, list[int]]) -> tuple[list[Entry], list[Entry]]:
        """Apply saved entries whose container still runs (with its current
        cgroups); returns (applied, dropped)."""
        applied, dropped = [], []
        for e in saved:
            if e.container_id is not None:
                if e.container_id not in live:
                    dropped.append(e)
                    continue
                e.cgroup_ids = list(live[e.container_id])
            self._apply(e, True)
            self.entries.append(e)
            applied.append(e)
        if dropped:
            self.save()
        return applied, dropped

    # --- requests --------------------------------------------------------------

    def _find(self, kind: str, container_id: str | None, destination: str | None) -> Entry | None:
        return next(
            (e for e in self.entries if (e.kind, e.container_id, e.destination) == (kind, container_id, destination)),
            None,
        )

    def _add(self, e: Entry) -> Entry:
        self._apply(e, True)
        self.entries.append(e)
        self.save()
        return e

    def isolate(self, container_id: str, name: str | None, cgroup_ids: list[int], reason: str = "") -> Entry:
        if self._find("isolate", container_id, None):
            raise ContainmentError(f"container {name or container_id[:12]} is already isolated")
        return self._add(Entry("isolate", container_id, name, list(cgroup_ids), None, time.time(), reason))

    def block(
        self,
        destination: str,
        container_id: str | None = None,
        name: str | None = None,
        cgroup_ids: list[int] | None = None,
        reason: str = "",
    ) -> Entry:
        ip = normalise_ip(destination)
        if ipaddress.ip_address(ip).is_loopback:
            raise ContainmentError(f"{ip} is a loopback address: loopback is never blocked")
        if self._find("block", container_id, ip):
            raise ContainmentError(
                f"{ip} is already blocked for {name or (container_id or '')[:12] or 'every container'}"
            )
        return self._add(Entry("block", container_id, name, list(cgroup_ids or []), ip, time.time(), reason))

    def release(
        self, container_id: str | None = None, destination: str | None = None, everything_for_container: bool = False
    ) -> list[Entry]:
        """Release the isolation of a container (and, with
        everything_for_container, its blocks), or a destination's block
        (for one container, or node-wide when container_id is None)."""
        ip = normalise_ip(destination) if destination is not None else None
        if ip is None and container_id is None:
            raise ContainmentError("say which container or destination to release")
        gone = []
        for e in list(self.entries):
            if ip is not None:
                hit = e.kind == "block" and e.destination == ip and e.container_id == container_id
            else:
                hit = e.container_id == container_id and (e.kind == "isolate" or everything_for_container)
            if hit:
                self._apply(e, False)
                self.entries.remove(e)
                gone.append(e)
        if not gone:
            raise ContainmentError("nothing to release: no such isolation or block (see `sluice containment`)")
        self.save()
        return gone

    def gone(self, live: set[str]) -> list[Entry]:
        """The entries of containers that no longer exist."""
        return [e for e in self.entries if e.container_id is not None and e.container_id not in live]

    def containers_gone(self, live: set[str]) -> list[Entry]:
        """Release the entries of containers that no longer exist."""
        gone = self.gone(live)
        for e in gone:
            self._apply(e, False)
            self.entries.remove(e)
        if gone:
            self.save()
        return gone

    def dropped(self) -> list[int]:
        """Packets dropped so far by each entry (the kernel maps are read
        only while there are entries: this runs with every status snapshot)."""
        if not self.entries:
            return []
        iso, blk = self.source.containment_counts()
        return [
            sum(iso.get(cg, 0) for cg in e.cgroup_ids)
            if e.kind == "isolate"
            else sum(blk.get((cg, e.destination or ""), 0) for cg in (e.cgroup_ids or [0]))
            for e in self.entries
        ]

    def snapshot(self) -> list[dict[str, Any]]:
        """Entries with the packets dropped so far."""
        return [
            {**asdict(e), "dropped": n, "description": e.label()}
            for e, n in zip(self.entries, self.dropped(), strict=False)
        ]
