"""The response path: isolate a container, block a destination.

Both strategies end with "isolate the container, block egress". Sluice does
it in its own egress program, for any runtime: the packets of an isolated
container's cgroup (but those to its own 127.0.0.1 and ::1, when its
network namespace is its own: a shared one's loopback reaches processes
outside the container that could relay, such as a mesh sidecar), or to a blocked destination (from
one container, or from every cgroup on the node), are dropped in the kernel
and counted per entry. Entries are kept in a state file (JSON, written
atomically) and applied again when the sensor starts; an entry whose
container is gone (the runtime no longer knows it) is released. Containment
lives in the sensor's programs: while the sensor is stopped, nothing is
contained (the start health event lists what was re-applied).

Containment follows the container, not a cgroup (bpf/lib/contain.bpf.h):
each contained container has a kernel *handle*; its container id is given
to the kernel, which puts the cgroup of a restart or re-creation of the
same container under the handle when the cgroup is created, before any
process can join it; sub-cgroups are covered through their ancestors. The
kernel also refuses raw and packet sockets to contained containers (where
the socket hooks load). follow() catches up user space (and, where the
cgroup_mkdir tracepoint is missing, the kernel) at each window.

A cgroup the container has left stays contained. Its id is never reused,
but its sockets live on: a TCP socket closed when the container was killed
keeps retransmitting what it could not send (an orphan), and its owner
decides for how long (TCP_USER_TIMEOUT has no upper bound); a socket held
by another process (fd passing) sends under the old cgroup for as long as
it lives. So those ids stay in the kernel while the entry lasts
(former_cgroup_ids, the newest MAX_FORMER of them), and the entries of a
container that is gone stay applied in the kernel (`lingering`, saved with
the state) until their cgroups would take more than MAX_LINGER_CGROUPS of
the kernel's map: the oldest leave first. Destroying the old cgroup's
sockets instead (SOCK_DESTROY) would end this for good; not done.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from sensor.kernel.source import EventSource

STATE_VERSION = 1
# cgroups a contained container has left, kept contained per entry (a
# crash-looping container makes one per restart; the oldest go first)
MAX_FORMER = 256
# cgroups of gone containers kept contained in the kernel (of the
# SL_CONTAIN_ENTRIES = 4096 its map holds); the oldest gone go first
MAX_LINGER_CGROUPS = 1024


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
    # kernel handle shared by a container's entries (its first contained
    # cgroup id); 0 for node-wide blocks and for files written before it
    handle: int = 0
    # cgroups of earlier runs (restarts): still contained, their sockets
    # may outlive the run
    former_cgroup_ids: list[int] = field(default_factory=list)
    # isolation only: the container's network namespace is shared (the
    # host's, a pod's): its loopback is dropped too (netmap.netns_shared)
    loopback_dropped: bool = False
    # a Kubernetes container's identity (its pod's uid and its name in the
    # pod): the kubelet re-creates it under a new container id (a restart,
    # a crash loop), and the entry follows it there (recreated)
    pod_uid: str | None = None
    pod_container: str | None = None
    # container ids it had before such re-creations (their kernel mapping
    # is removed with the entry)
    former_container_ids: list[str] = field(default_factory=list)

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
    def __init__(self, source: EventSource, state_path: str, level_of: Callable[[int], int] = lambda _cg: 0) -> None:
        self.source = source
        self.path = state_path
        self.entries: list[Entry] = []
        # entries of containers that are gone, still applied in the kernel
        # (their sockets outlive them), oldest first
        self.lingering: list[Entry] = []
        # cgroup id -> its level (depth under the cgroup2 root): the kernel
        # covers sub-cgroups through their ancestor at that level
        self.level_of = level_of
        self._saved_lingering: list[Entry] = []  # read by load(), applied by restore()

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
            self._saved_lingering = [Entry(**e) for e in data.get("lingering", [])]
            return [Entry(**e) for e in data["entries"]]
        except TypeError as e:
            raise ContainmentError(f"containment state {self.path}: bad entry ({e})") from None

    def save(self) -> None:
        d = os.path.dirname(self.path) or "."
        os.makedirs(d, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".containment-", dir=d)
        try:
            with os.fdopen(fd, "w") as f:
                state = {
                    "version": STATE_VERSION,
                    "entries": [asdict(e) for e in self.entries],
                    # older sensors ignore this key
                    "lingering": [asdict(e) for e in self.lingering],
                }
                json.dump(state, f, indent=1)
            os.replace(tmp, self.path)
        except BaseException:
            os.unlink(tmp)
            raise

    # --- kernel --------------------------------------------------------------

    def _handle_for(self, e: Entry) -> int:
        """The container's handle: the one its other entries use, else its
        first cgroup id, else (a stopped container restored from a state
        file of an older version) one derived from its id; any non-zero
        value unique to the container does (0 means node-wide)."""
        if e.container_id is None:
            return 0
        other = next(
            (o.handle for o in self.entries + self.lingering if o.container_id == e.container_id and o.handle), 0
        )
        if other or e.cgroup_ids:
            return other or e.cgroup_ids[0]
        digest = hashlib.blake2b(e.container_id.encode(), digest_size=8).digest()
        return int.from_bytes(digest, "big") | (1 << 63)  # above any cgroup id

    def _apply(self, e: Entry, on: bool) -> None:
        if e.container_id is None:  # node-wide block
            assert e.destination is not None
            self.source.set_blocked(0, e.destination, on)
            return
        if on and not e.handle:
            e.handle = self._handle_for(e)
        h = e.handle
        if on:
            self.source.set_contained_container(e.container_id, h, True)
            for cg in e.cgroup_ids:
                self.source.set_contained_cgroup(cg, h, self.level_of(cg), True)
            for cg in e.former_cgroup_ids:  # gone: the level of the current one stands
                self.source.set_contained_cgroup(cg, h, 0, True)
        if e.kind == "isolate":
            self.source.set_isolated(h, on, e.loopback_dropped)
        else:
            assert e.destination is not None
            self.source.set_blocked(h, e.destination, on)
        others = [o for o in self.entries + self.lingering if o is not e]
        if not on and not any(o.container_id == e.container_id for o in others):
            # the container's last entry: its id and cgroups leave the kernel
            self.source.set_contained_container(e.container_id, h, False)
            for old in e.former_container_ids:
                self.source.set_contained_container(old, h, False)
            for cg, hh in self.source.contained_cgroups().items():
                if hh == h:
                    self.source.set_contained_cgroup(cg, h, 0, False)

    def restore(
        self, saved: list[Entry], live: dict[str, list[int]], exists: Callable[[str], bool] = lambda _cid: False
    ) -> tuple[list[Entry], list[Entry]]:
        """Apply saved entries whose container still runs (with its current
        cgroups) or still exists (stopped: it is contained when it starts
        again); returns (applied, dropped)."""
        applied, dropped = [], []
        for e in saved:
            if e.container_id is not None:
                if e.container_id in live or exists(e.container_id):
                    # the cgroups it ran in stay contained (their sockets outlive the run)
                    now = list(live.get(e.container_id, []))
                    e.former_cgroup_ids = [c for c in e.former_cgroup_ids + e.cgroup_ids if c not in now][-MAX_FORMER:]
                    e.cgroup_ids = now
                else:
                    dropped.append(e)
                    continue
            self._apply(e, True)
            self.entries.append(e)
            applied.append(e)
        for e in self._saved_lingering:  # gone containers' cgroups stay contained
            self._apply(e, True)
            self.lingering.append(e)
        self._saved_lingering = []
        # entries of containers gone while the sensor was stopped linger too
        self.lingering += dropped
        for e in dropped:
            self._apply(e, True)
        self._bound_lingering()
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

    def isolate(
        self, container_id: str, name: str | None, cgroup_ids: list[int], reason: str = "", shared_netns: bool = False
    ) -> Entry:
        """shared_netns: the container's network namespace is not its own
        (the host's, a pod's): its loopback is dropped too."""
        if self._find("isolate", container_id, None):
            raise ContainmentError(f"container {name or container_id[:12]} is already isolated")
        e = Entry("isolate", container_id, name, list(cgroup_ids), None, time.time(), reason)
        e.loopback_dropped = shared_netns
        return self._add(e)

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
        # a gone container's entries too (lingering): an operator who knows
        # its old cgroups' sockets are dead lets them go
        for table in (self.entries, self.lingering):
            for e in list(table):
                if ip is not None:
                    hit = e.kind == "block" and e.destination == ip and e.container_id == container_id
                else:
                    hit = e.container_id == container_id and (e.kind == "isolate" or everything_for_container)
                if hit:
                    self._apply(e, False)
                    table.remove(e)
                    gone.append(e)
        if not gone:
            raise ContainmentError("nothing to release: no such isolation or block (see `sluice containment`)")
        self.save()
        return gone

    def follow(self, live: dict[str, int]) -> list[tuple[Entry, int, bool]]:
        """Contained containers now running in a cgroup their entries do not
        name (restarted or re-created): make sure the kernel has it, and
        record it. Returns (entry, new cgroup id, whether the kernel already
        had it: put there by cgroup_mkdir at creation)."""
        out: list[tuple[Entry, int, bool]] = []
        kernel: dict[int, int] | None = None
        had_by_container: dict[str, bool] = {}
        for e in self.entries:
            if e.container_id is None or e.container_id not in live:
                continue
            cg = live[e.container_id]
            if cg in e.cgroup_ids:
                continue
            if kernel is None:
                kernel = self.source.contained_cgroups()
            had = had_by_container.setdefault(e.container_id, kernel.get(cg) == e.handle)
            if kernel.get(cg) != e.handle:
                self.source.set_contained_cgroup(cg, e.handle, self.level_of(cg), True)
                kernel[cg] = e.handle
            # the old cgroup stays contained: its sockets outlive the run
            # (an orphan's retransmissions of what it wrote while isolated)
            e.former_cgroup_ids = [c for c in e.former_cgroup_ids + e.cgroup_ids if c != cg]
            for old in e.former_cgroup_ids[:-MAX_FORMER]:  # the container's entries share them
                if kernel.pop(old, None) is not None:
                    self.source.set_contained_cgroup(old, e.handle, 0, False)
            e.former_cgroup_ids = e.former_cgroup_ids[-MAX_FORMER:]
            e.cgroup_ids = [cg]
            out.append((e, cg, had))
        if out:
            self.save()
        return out

    def gone(self, live: set[str]) -> list[Entry]:
        """The entries of containers not running now (candidates: a
        restarting container is not running for a moment either)."""
        return [e for e in self.entries if e.container_id is not None and e.container_id not in live]

    def containers_gone(self, live: set[str]) -> list[Entry]:
        """Release the entries of containers not running now (the caller
        leaves out of `live` only the containers the runtime says are gone).
        The kernel keeps applying them (`lingering`): the container's
        sockets outlive it."""
        gone = self.gone(live)
        for e in gone:
            self.entries.remove(e)
            self.lingering.append(e)
        if gone:
            self._bound_lingering()
            self.save()
        return gone

    def _bound_lingering(self) -> None:
        """Remove from the kernel the oldest gone containers' entries while
        their cgroups number more than MAX_LINGER_CGROUPS."""
        count = sum(len(e.cgroup_ids) + len(e.former_cgroup_ids) for e in self.lingering)
        while self.lingering and count > MAX_LINGER_CGROUPS:
            e = self.lingering.pop(0)
            count -= len(e.cgroup_ids) + len(e.former_cgroup_ids)
            self._apply(e, False)

    def recreated(self, container_id: str, pod_uid: str | None, pod_container: str | None) -> list[Entry]:
        """A Kubernetes container re-created under a new id (the kubelet's
        restart of a crashed or killed container: same pod uid, same
        container name): the entries of the pod's container of that name
        move to the new id, from the lingering ones too (the old container
        is gone). The old id's cgroups stay contained (former); `follow`
        then contains the new cgroup. The kernel follows by id, so the new
        id is put there at once: a restart of the new container is followed
        at cgroup creation again."""
        if not pod_uid or not pod_container:
            return []
        moved: list[Entry] = []
        for table in (self.entries, self.lingering):
            for e in list(table):
                if (e.pod_uid, e.pod_container) != (pod_uid, pod_container) or e.container_id in (None, container_id):
                    continue
                assert e.container_id is not None
                e.former_container_ids = [*e.former_container_ids, e.container_id][-MAX_FORMER:]
                e.former_cgroup_ids = (e.former_cgroup_ids + e.cgroup_ids)[-MAX_FORMER:]
                e.cgroup_ids = []
                e.container_id = container_id
                self.source.set_contained_container(container_id, e.handle, True)
                if table is self.lingering:
                    self.lingering.remove(e)
                    self.entries.append(e)
                moved.append(e)
        if moved:
            self.save()
        return moved

    def returned(self, container_id: str) -> list[Entry]:
        """A gone container's lingering entries, when it runs again (the
        runtime could not be asked, and said nothing for GRACE_S): they are
        entries again (the kernel never stopped applying them)."""
        back = [e for e in self.lingering if e.container_id == container_id]
        if back:
            self.lingering = [e for e in self.lingering if e.container_id != container_id]
            self.entries += back
            self.save()
        return back

    def dropped(self, entries: list[Entry] | None = None) -> list[int]:
        """Packets dropped so far by each entry (of `entries`, by default the
        active ones; the kernel maps are read only when there are some:
        this runs with every status snapshot)."""
        entries = self.entries if entries is None else entries
        if not entries:
            return []
        iso, blk = self.source.containment_counts()
        return [
            iso.get(e.handle, 0) if e.kind == "isolate" else blk.get((e.handle, e.destination or ""), 0)
            for e in entries
        ]

    def snapshot(self, lingering: bool = False) -> list[dict[str, Any]]:
        """Entries with the packets dropped so far; lingering: those of
        containers that are gone, which the kernel still applies."""
        return self.listing()["lingering" if lingering else "entries"]

    def listing(self) -> dict[str, list[dict[str, Any]]]:
        """Both kinds of entries (snapshot), from one read of the kernel's counters."""
        both = self.entries + self.lingering
        counts = self.dropped(both)
        out: dict[str, list[dict[str, Any]]] = {"entries": [], "lingering": []}
        for i, (e, n) in enumerate(zip(both, counts, strict=False)):
            gone = i >= len(self.entries)
            out["lingering" if gone else "entries"].append(
                {
                    **asdict(e),
                    "dropped": n,
                    "description": e.label() + (" (gone; its cgroups stay contained)" if gone else ""),
                    "state": "lingering" if gone else "active",
                }
            )
        return out
