"""The one owner of which containers exist (after Inspektor Gadget's
container collection).

The registry learns containers from cgroup creation and removal (and, at
start, from the cgroups that already exist), keeps what it knows about each
(ContainerLife), and publishes to subscribers:
  - on_added(life): a container's own cgroup appeared;
  - on_member(cgroup id, container's cgroup id): a cgroup that belongs to a
    running container (its own, or one below it: a delegated subtree);
  - on_removed(lives) and on_cgroups_removed(cgroup ids): after a grace
    period. A removed container (or cgroup) stays resolvable until the window
    holding its last bytes is summarised: the pipeline calls expire() when it
    closes a window, and only then are subscribers told to forget.
A removed container leaves `running` at once (nobody can isolate it), but
the attribution caches, the rules' per-container state, the address map and
containment entries are dropped by their owners when told, not by hand.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sensor.attribution.containers import Attribution, Attributor, ContainerInfo, container_from_path


@dataclass
class ContainerLife:
    info: ContainerInfo
    cgroup_id: int
    started: float | None  # wall-clock, None if it predates the sensor

    def attribution(self) -> Attribution:
        """The container's own cgroup, for documents about the container."""
        return Attribution(self.cgroup_id, None, self.info)


Added = Callable[[ContainerLife], None]
# (cgroup id, the container's own cgroup id): a cgroup that belongs to a
# running container, its own or one below it (a delegated subtree)
Member = Callable[[int, int], None]
Removed = Callable[[list[ContainerLife]], None]
CgroupsRemoved = Callable[[set[int]], None]


class ContainerRegistry:
    def __init__(self, attributor: Attributor) -> None:
        self.attributor = attributor
        self.running: dict[str, ContainerLife] = {}
        # removed since the last expire(): (cgroup id, the container whose
        # own cgroup it was, or None for sub-cgroups and host cgroups)
        self._removed: list[tuple[int, ContainerLife | None]] = []
        self._added: list[Added] = []
        self._on_removed: list[Removed] = []
        self._on_cgroups_removed: list[CgroupsRemoved] = []
        self._on_member: list[Member] = []
        # the attribution caches follow the registry
        self.subscribe(on_removed=attributor.containers_removed, on_cgroups_removed=attributor.cgroups_removed)

    def subscribe(
        self,
        on_added: Added | None = None,
        on_removed: Removed | None = None,
        on_cgroups_removed: CgroupsRemoved | None = None,
        on_member: Member | None = None,
    ) -> None:
        if on_member is not None:
            self._on_member.append(on_member)
        if on_added is not None:
            self._added.append(on_added)
        if on_removed is not None:
            self._on_removed.append(on_removed)
        if on_cgroups_removed is not None:
            self._on_cgroups_removed.append(on_cgroups_removed)

    def __len__(self) -> int:
        return len(self.running)

    def get(self, container_id: str) -> ContainerLife | None:
        return self.running.get(container_id)

    def cgroup_created(self, cgroup_id: int, path: str, ts: float) -> tuple[ContainerLife, Attribution] | None:
        """A cgroup appeared; a new container's life (and its attribution)
        when it is a container's own cgroup seen for the first time."""
        self.attributor.learn_cgroup(cgroup_id, path)
        ref = container_from_path(path)
        if ref is None:
            return None  # not a container
        known = self.running.get(ref.id)
        if known is not None:
            if known.cgroup_id != cgroup_id:  # a sub-cgroup of a known one
                self._member(cgroup_id, known.cgroup_id)
            return None
        attr = self.attributor.attribute(cgroup_id)
        if attr.container is None:
            return None
        life = ContainerLife(attr.container, cgroup_id, ts)
        self._add(ref.id, life)
        return life, attr

    def cgroup_removed(self, cgroup_id: int, path: str) -> ContainerLife | None:
        """A cgroup went away; the container's life when it was a running
        container's own cgroup (the container stopped)."""
        ref = container_from_path(path)
        life = self.running.get(ref.id) if ref else None
        if ref is None or life is None or life.cgroup_id != cgroup_id:
            # a sub-cgroup or a host cgroup: a running container stays known
            self._removed.append((cgroup_id, None))
            return None
        del self.running[ref.id]
        self._removed.append((cgroup_id, life))
        return life

    def note_existing(self) -> None:
        """Containers that were running before the sensor started."""
        for cgid, path in self.attributor.resolver.items():
            ref = container_from_path(path)
            # the container's own cgroup, not one of its sub-cgroups
            if ref and ref.id not in self.running and ref.id in path.rsplit("/", 1)[-1]:
                attr = self.attributor.attribute(cgid)
                if attr.container is not None:
                    self._add(ref.id, ContainerLife(attr.container, cgid, None))
        # their sub-cgroups that already exist
        for cgid, path in self.attributor.resolver.items():
            ref = container_from_path(path)
            life = self.running.get(ref.id) if ref else None
            if life is not None and life.cgroup_id != cgid:
                self._member(cgid, life.cgroup_id)

    def _add(self, container_id: str, life: ContainerLife) -> None:
        self.running[container_id] = life
        self._member(life.cgroup_id, life.cgroup_id)
        for fn in self._added:
            fn(life)

    def _member(self, cgroup_id: int, container_cgroup_id: int) -> None:
        for fn in self._on_member:
            fn(cgroup_id, container_cgroup_id)

    def expire(self) -> None:
        """End of the grace period for what was removed since the last call:
        subscribers forget it."""
        removed, self._removed = self._removed, []
        if not removed:
            return
        cgroups = {cgid for cgid, _life in removed}
        for fn in self._on_cgroups_removed:
            fn(cgroups)
        lives = [life for _cgid, life in removed if life is not None]
        if lives:
            for fn2 in self._on_removed:
                fn2(lives)
