"""The container registry: the one owner of which containers exist. It
publishes additions at once and removals after the grace period (the window
that saw them go is summarised first); its subscribers forget then."""

from __future__ import annotations

from pathlib import Path

from sensor.attribution.cgroups import CgroupResolver
from sensor.attribution.containers import Attributor
from sensor.attribution.netmap import NetMap
from sensor.attribution.registry import ContainerLife, ContainerRegistry
from sensor.config import default_config
from sensor.detect.engine import Detector
from sensor.detect.rules import all_rules
from sensor.detect.rules.exf004_new_destination import NewDestination

A = "a0" * 32
B = "b1" * 32


class Log:
    def __init__(self) -> None:
        self.added: list[str] = []
        self.removed: list[list[str]] = []
        self.cgroups: list[set[int]] = []

    def subscribe(self, reg: ContainerRegistry) -> None:
        reg.subscribe(
            on_added=lambda life: self.added.append(life.info.id),
            on_removed=lambda lives: self.removed.append([life.info.id for life in lives]),
            on_cgroups_removed=self.cgroups.append,
        )


def make(tmp_path: Path) -> tuple[ContainerRegistry, Attributor, Log]:
    resolver = CgroupResolver(str(tmp_path), rescan_interval=3600)
    resolver.learn(100, f"/docker/{A}")  # running before the sensor
    resolver.learn(101, f"/docker/{A}/app")  # its sub-cgroup
    resolver.learn(102, "/system.slice/cron.service")
    at = Attributor(resolver, None)
    reg = ContainerRegistry(at)
    log = Log()
    log.subscribe(reg)
    return reg, at, log


def test_existing_containers_are_noted_once_by_their_own_cgroup(tmp_path: Path) -> None:
    reg, _at, log = make(tmp_path)
    reg.note_existing()
    reg.note_existing()
    assert set(reg.running) == {A} and len(reg) == 1
    life = reg.running[A]
    assert (life.cgroup_id, life.started) == (100, None)
    assert log.added == [A]
    assert life.attribution().cgroup_id == 100 and life.attribution().container is life.info


def test_created_container_is_published_sub_cgroups_and_host_cgroups_are_not(tmp_path: Path) -> None:
    reg, at, log = make(tmp_path)
    new = reg.cgroup_created(200, f"/system.slice/docker-{B}.scope", 5.0)
    assert new is not None
    life, attr = new
    assert life.info.id == B and life.started == 5.0 and attr.container is life.info
    assert reg.cgroup_created(201, f"/system.slice/docker-{B}.scope/init.scope", 5.1) is None
    assert reg.cgroup_created(202, "/user.slice/session-1.scope", 5.2) is None
    assert log.added == [B]
    assert at.resolver.path(201) == f"/system.slice/docker-{B}.scope/init.scope"  # learned all the same


def test_removal_is_published_after_the_grace_period(tmp_path: Path) -> None:
    reg, at, log = make(tmp_path)
    reg.note_existing()
    assert reg.cgroup_removed(101, f"/docker/{A}/app") is None  # a sub-cgroup: A still runs
    life = reg.cgroup_removed(100, f"/docker/{A}")
    assert isinstance(life, ContainerLife) and life.info.id == A
    assert A not in reg.running and reg.get(A) is None
    # grace: still resolvable, nobody told yet
    assert log.removed == [] and log.cgroups == []
    assert at.attribute(100).container is life.info
    reg.expire()
    assert log.removed == [[A]] and log.cgroups == [{100, 101}]
    # the attribution caches are subscribers too: the cgroups and the container are forgotten
    assert at.resolver.path(100) is None and len(at) == 0
    reg.expire()  # nothing new: nothing published
    assert log.removed == [[A]] and log.cgroups == [{100, 101}]


def test_host_cgroup_removal_publishes_only_the_cgroup(tmp_path: Path) -> None:
    reg, _at, log = make(tmp_path)
    reg.note_existing()
    assert reg.cgroup_removed(102, "/system.slice/cron.service") is None
    reg.expire()
    assert log.removed == [] and log.cgroups == [{102}] and set(reg.running) == {A}


def test_netmap_and_rules_forget_through_their_subscriptions(tmp_path: Path) -> None:
    reg, _at, _log = make(tmp_path)
    reg.note_existing()
    netmap = NetMap(host_addresses=set())
    netmap._by_container[A] = {"172.17.0.2"}
    netmap._by_ip["172.17.0.2"] = A
    reg.subscribe(on_removed=netmap.containers_removed)
    det = Detector(default_config(), None, all_rules(), lambda _d: None, "h")
    reg.subscribe(on_removed=det.containers_removed)
    rule = next(r for r in det.rules if isinstance(r, NewDestination))
    rule._sent[(A, "203.0.113.9", 443, "tcp")] = [1, 2.0, False]
    rule._sent[(B, "203.0.113.9", 443, "tcp")] = [1, 2.0, False]
    reg.cgroup_removed(100, f"/docker/{A}")
    assert netmap.container_of("172.17.0.2") == A and len(rule._sent) == 2  # grace period
    reg.expire()
    assert netmap.container_of("172.17.0.2") is None and not netmap.has(A)
    assert list(rule._sent) == [(B, "203.0.113.9", 443, "tcp")]


def test_members_are_a_containers_own_cgroup_and_its_sub_cgroups(tmp_path: Path) -> None:
    """What the kernel's quota charge map is fed with (sl_quota_charge): a
    container's sub-cgroups share its fair share, host cgroups are not members."""
    reg, _at, _log = make(tmp_path)
    members: dict[int, int] = {}
    reg.subscribe(on_member=members.__setitem__)
    reg.note_existing()
    assert members == {100: 100, 101: 100}  # the container and its existing sub-cgroup
    reg.cgroup_created(103, f"/docker/{A}/app/deeper", 1.0)  # a delegated subtree grows
    reg.cgroup_created(104, "/system.slice/other.service", 1.0)
    reg.cgroup_created(200, f"/docker/{B}", 2.0)  # a new container
    assert members == {100: 100, 101: 100, 103: 100, 200: 200}
