"""Containment bookkeeping (sensor.containment) over the replay source: what
is applied to the kernel maps, saved, restored and released. The kernel
side is proven in tests/privileged/test_containment.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sensor.kernel.events import format_addr, parse_addr
from sensor.kernel.source import ReplaySource
from sensor.response.containment import MAX_FORMER, MAX_LINGER_CGROUPS, Containment, ContainmentError

A, B = "a" * 64, "b" * 64


def _c(tmp_path: Path) -> tuple[Containment, ReplaySource]:
    src = ReplaySource()
    return Containment(src, str(tmp_path / "state" / "containment.json")), src


def test_isolate_applies_saves_and_refuses_twice(tmp_path: Path) -> None:
    c, src = _c(tmp_path)
    e = c.isolate(A, "web", [11], "alert 42")
    assert src.isolated == {11: 0}
    assert e.label() == "isolate web"
    saved = json.loads(Path(c.path).read_text())
    assert saved["version"] == 1 and saved["entries"][0]["container_id"] == A
    with pytest.raises(ContainmentError, match="already isolated"):
        c.isolate(A, "web", [11])
    assert len(c.entries) == 1


def test_block_normalises_and_refuses_bad_addresses(tmp_path: Path) -> None:
    c, src = _c(tmp_path)
    c.block("2001:DB8::0001", A, "web", [11])
    c.block("198.18.64.1")
    assert src.blocked == {(11, "2001:db8::1"): 0, (0, "198.18.64.1"): 0}
    with pytest.raises(ContainmentError, match="not an IP address"):
        c.block("example.com")
    with pytest.raises(ContainmentError, match="loopback"):
        c.block("127.0.0.1")
    with pytest.raises(ContainmentError, match="already blocked for every container"):
        c.block("198.18.64.1")


def test_release_by_container_and_by_destination(tmp_path: Path) -> None:
    c, src = _c(tmp_path)
    c.isolate(A, "web", [11])
    c.block("198.18.64.1", A, "web", [11])
    c.block("198.18.64.1")
    # a destination release is exact: the node-wide block only
    (gone,) = c.release(None, "198.18.64.1")
    assert gone.container_id is None and (0, "198.18.64.1") not in src.blocked
    # a container release lifts its isolation and its blocks
    assert {e.kind for e in c.release(A, None, everything_for_container=True)} == {"isolate", "block"}
    assert src.isolated == {} and src.blocked == {} and c.entries == []
    with pytest.raises(ContainmentError, match="nothing to release"):
        c.release(A)
    with pytest.raises(ContainmentError, match="say which"):
        c.release()


def test_restore_reapplies_live_containers_and_drops_gone_ones(tmp_path: Path) -> None:
    c, _ = _c(tmp_path)
    c.isolate(A, "web", [11])
    c.isolate(B, "db", [12])
    c.block("198.18.64.1")
    c2, src2 = _c(tmp_path)
    applied, dropped = c2.restore(c2.load(), {A: [21]})  # A restarted under a new cgroup; B is gone
    assert [e.container_id for e in applied] == [A, None] and [e.container_id for e in dropped] == [B]
    # the kernel handle stays the one saved; the new cgroup maps to it, the
    # old one stays (its sockets outlive the run); B's entry lingers
    assert src2.isolated == {11: 0, 12: 0} and src2.blocked == {(0, "198.18.64.1"): 0}
    assert src2.cgroups == {21: 11, 11: 11, 12: 12} and src2.container_ids == {A: 11, B: 12}
    (a,) = [e for e in c2.entries if e.container_id == A]
    assert a.cgroup_ids == [21] and a.former_cgroup_ids == [11]
    state = json.loads(Path(c2.path).read_text())
    assert [e["container_id"] for e in state["entries"]] == [A, None]
    assert [e["container_id"] for e in state["lingering"]] == [B]


def test_restore_keeps_stopped_containers_the_runtime_still_has(tmp_path: Path) -> None:
    c, _ = _c(tmp_path)
    c.isolate(A, "web", [11])
    c2, src2 = _c(tmp_path)
    applied, dropped = c2.restore(c2.load(), {}, exists=lambda cid: cid == A)
    assert [e.container_id for e in applied] == [A] and dropped == []
    # contained by id: its next cgroup gets handle 11 at creation
    assert (
        src2.container_ids == {A: 11} and src2.isolated == {11: 0} and src2.cgroups == {11: 11}
    )  # its last run's sockets outlive it


def test_entries_of_a_container_share_one_handle_and_follow_it(tmp_path: Path) -> None:
    c, src = _c(tmp_path)
    c.isolate(A, "web", [11])
    c.block("198.18.64.1", A, "web", [11])
    assert src.isolated == {11: 0} and src.blocked == {(11, "198.18.64.1"): 0}
    assert src.container_ids == {A: 11} and src.cgroups == {11: 11}
    # restarted as cgroup 31, which the kernel already put under the handle
    src.cgroups[31] = 11
    followed = c.follow({A: 31})
    assert [(e.kind, cg, had) for e, cg, had in followed] == [("isolate", 31, True), ("block", 31, True)]
    # the old cgroup stays contained: its sockets outlive the run
    assert src.cgroups == {11: 11, 31: 11}
    assert all(e.cgroup_ids == [31] and e.former_cgroup_ids == [11] for e in c.entries)
    assert c.follow({A: 31}) == []
    # restarted again, the kernel missed it (no cgroup_mkdir hook): user space adds it
    (first, *_rest) = c.follow({A: 41})
    assert first[1:] == (41, False) and src.cgroups == {11: 11, 31: 11, 41: 11}
    # releasing the isolation keeps the block's mapping; releasing the block clears it
    c.release(A, None)
    assert src.isolated == {} and src.cgroups == {11: 11, 31: 11, 41: 11} and src.container_ids == {A: 11}
    c.release(A, "198.18.64.1")
    assert src.cgroups == {} and src.container_ids == {} and src.blocked == {}


def test_containers_gone_are_released(tmp_path: Path) -> None:
    c, src = _c(tmp_path)
    c.isolate(A, "web", [11])
    c.block("198.18.64.1")
    assert c.containers_gone({A}) == []
    (gone,) = c.containers_gone(set())
    assert gone.container_id == A and len(c.entries) == 1
    # the kernel keeps it: its sockets outlive it (an orphan's owner sets
    # how long it retransmits); saved, and applied again at start
    assert src.isolated == {11: 0} and src.cgroups == {11: 11}
    state = json.loads(Path(c.path).read_text())
    assert state["entries"][0]["container_id"] is None and state["lingering"][0]["container_id"] == A
    c2, src2 = _c(tmp_path)
    c2.restore(c2.load(), {})
    assert src2.isolated == {11: 0} and src2.cgroups == {11: 11} and [e.container_id for e in c2.lingering] == [A]


def test_lingering_cgroups_are_bounded_oldest_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sensor.response.containment as containment

    assert MAX_LINGER_CGROUPS == 1024  # of the kernel map's 4096
    monkeypatch.setattr(containment, "MAX_LINGER_CGROUPS", 5)
    c, src = _c(tmp_path)
    for i in range(8):
        c.isolate(f"{i:064x}", None, [1000 + i])
    c.containers_gone(set())
    assert len(c.lingering) == 5
    assert set(src.cgroups) == {1003, 1004, 1005, 1006, 1007} and len(src.isolated) == 5


def test_a_gone_container_that_runs_again_gets_its_entries_back(tmp_path: Path) -> None:
    c, src = _c(tmp_path)
    c.isolate(A, "web", [11])
    c.containers_gone(set())
    assert c.entries == [] and src.container_ids == {A: 11}
    (back,) = c.returned(A)
    assert c.entries == [back] and c.lingering == []
    # a second isolation request finds it; the handle stays one
    with pytest.raises(ContainmentError, match="already isolated"):
        c.isolate(A, "web", [12])
    c.release(A, None)
    assert src.cgroups == {} and src.container_ids == {} and src.isolated == {}


def test_a_crash_looping_container_keeps_its_newest_former_cgroups(tmp_path: Path) -> None:
    c, src = _c(tmp_path)
    c.isolate(A, "web", [11])
    c.block("198.18.64.1", A, "web", [11])
    for cg in range(100, 100 + MAX_FORMER + 5):
        c.follow({A: cg})
    newest = list(range(100 + 4, 100 + MAX_FORMER + 4))  # 11 and the first four dropped out
    assert all(e.former_cgroup_ids == newest for e in c.entries)
    assert set(src.cgroups) == {*newest, 100 + MAX_FORMER + 4}
    # saved, and applied again at start
    c2, src2 = _c(tmp_path)
    c2.restore(c2.load(), {A: [100 + MAX_FORMER + 4]})
    assert set(src2.cgroups) == set(src.cgroups)


def test_snapshot_reports_kernel_drop_counts(tmp_path: Path) -> None:
    c, src = _c(tmp_path)
    c.isolate(A, "web", [11])
    c.block("198.18.64.1")
    src.isolated[11] = 7
    src.blocked[(0, "198.18.64.1")] = 3
    snap = {e["kind"]: e for e in c.snapshot()}
    assert snap["isolate"]["dropped"] == 7 and snap["block"]["dropped"] == 3
    assert snap["block"]["description"] == "block 198.18.64.1 for every container"


@pytest.mark.parametrize(
    "content, match",
    [
        ("{not json", "cannot be read"),
        ('{"version": 2, "entries": []}', "not a version-1"),
        ('{"version": 1, "entries": [{"kind": "isolate"}]}', "bad entry"),
    ],
)
def test_unreadable_state_is_refused_with_its_path(tmp_path: Path, content: str, match: str) -> None:
    c, _ = _c(tmp_path)
    Path(c.path).parent.mkdir(parents=True)
    Path(c.path).write_text(content)
    with pytest.raises(ContainmentError, match=match) as e:
        c.load()
    assert c.path in str(e.value)
    assert Path(c.path).read_text() == content  # untouched


def test_missing_state_is_empty(tmp_path: Path) -> None:
    c, _ = _c(tmp_path)
    assert c.load() == []
    assert not Path(c.path).exists()


def test_addresses_round_trip_in_kernel_form() -> None:
    for ip in ("198.18.0.1", "2001:db8::1", "::ffff:1.2.3.4"):
        raw = parse_addr(ip)
        assert len(raw) == 16
    assert format_addr(parse_addr("198.18.0.1")) == "198.18.0.1"
    assert format_addr(parse_addr("2001:db8::1")) == "2001:db8::1"
    with pytest.raises(ValueError):
        parse_addr("nope")


def test_a_stopped_container_from_an_old_state_file_never_gets_the_node_wide_handle(tmp_path: Path) -> None:
    c, _ = _c(tmp_path)
    Path(c.path).parent.mkdir(parents=True)
    old: dict[str, object] = {"kind": "block", "container_id": A, "container_name": "web", "cgroup_ids": [11]}
    old |= {"destination": "198.18.64.1", "since": 0.0, "reason": ""}  # no "handle": written before it existed
    Path(c.path).write_text(json.dumps({"version": 1, "entries": [old]}))
    c2, src2 = _c(tmp_path)
    (e,), _ = c2.restore(c2.load(), {}, exists=lambda _cid: True)
    assert e.handle != 0 and (0, "198.18.64.1") not in src2.blocked
    assert src2.blocked == {(e.handle, "198.18.64.1"): 0} and src2.container_ids == {A: e.handle}


def test_a_shared_network_namespace_drops_loopback_too_and_is_saved(tmp_path: Path) -> None:
    c, src = _c(tmp_path)
    c.isolate(A, "web", [11], shared_netns=True)
    c.isolate(B, "db", [12])
    assert src.isolated_no_loopback == {11: True, 12: False}
    c2, src2 = _c(tmp_path)
    c2.restore(c2.load(), {A: [11], B: [12]})
    assert src2.isolated_no_loopback == {11: True, 12: False}


def test_a_pod_container_re_created_under_a_new_id_takes_the_entry(tmp_path: Path) -> None:
    """The kubelet's restart: a new container id, the same pod uid and
    container name. The entry moves to it (from the lingering ones: the old
    container is gone); the old id and cgroup stay in the kernel until the
    release, which removes both ids."""
    c, src = _c(tmp_path)
    e = c.isolate(A, "api", [11])
    e.pod_uid, e.pod_container = "uid-1", "api"
    c.containers_gone(set())
    assert c.recreated(B, "uid-2", "api") == [] and c.recreated(B, "uid-1", "sidecar") == []
    assert c.recreated(B, "uid-1", None) == []
    (moved,) = c.recreated(B, "uid-1", "api")
    assert moved is e and c.entries == [e] and c.lingering == []
    assert (e.container_id, e.former_container_ids, e.cgroup_ids, e.former_cgroup_ids) == (B, [A], [], [11])
    assert src.container_ids == {A: 11, B: 11}
    # follow then contains the new cgroup under the same handle
    c.follow({B: 12})
    assert src.cgroups[12] == 11 and e.cgroup_ids == [12]
    saved = json.loads(Path(c.path).read_text())["entries"][0]
    assert saved["container_id"] == B and saved["pod_uid"] == "uid-1" and saved["former_container_ids"] == [A]
    c.release(B, None)
    assert src.container_ids == {} and src.cgroups == {} and src.isolated == {}
