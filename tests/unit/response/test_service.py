"""The containment service over a real registry, the replay source and a
fake Docker engine: an isolation follows its container through a restart
(same id, new cgroup), holds while the container is stopped, and is
released only when the runtime no longer has the container."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from sensor.attribution.cgroups import CgroupResolver
from sensor.attribution.containers import Attributor
from sensor.attribution.docker_api import DockerClient
from sensor.attribution.registry import ContainerRegistry
from sensor.kernel.source import ReplaySource
from sensor.response.containment import ContainmentError
from sensor.response.service import ContainmentService
from tests.support.docker_fake import FakeDockerEngine

A = "a0" * 32


def _world(
    tmp_path: Path, engine: FakeDockerEngine, src: ReplaySource | None = None
) -> tuple[ContainmentService, ContainerRegistry, ReplaySource, list[dict[str, Any]]]:
    resolver = CgroupResolver(str(tmp_path), rescan_interval=3600)
    resolver.learn(100, f"/docker/{A}")
    reg = ContainerRegistry(Attributor(resolver, DockerClient(engine.socket_path)))
    reg.note_existing()
    src = src if src is not None else ReplaySource()
    docs: list[dict[str, Any]] = []
    svc = ContainmentService(src, str(tmp_path / "containment.json"), reg, docs.append, "node-1")
    return svc, reg, src, docs


def test_isolation_follows_a_restart_and_is_released_when_the_container_is_gone(
    tmp_path: Path, fake_docker: FakeDockerEngine
) -> None:
    fake_docker.add(A, "web", "acme/web:1", "sha256:" + "1" * 64)
    svc, reg, src, docs = _world(tmp_path, fake_docker)
    svc.isolate(A[:12], "test")
    assert src.isolated == {100: 0} and src.cgroups == {100: 100} and src.container_ids == {A: 100}

    # docker restart: the old cgroup goes, a window closes, the new one comes
    reg.cgroup_removed(100, f"/docker/{A}")
    reg.expire()
    svc.recheck()
    assert src.isolated == {100: 0}, "released while the runtime still has the container"
    src.cgroups[200] = 100  # what cgroup_mkdir did in the kernel
    reg.cgroup_created(200, f"/docker/{A}", 1.0)
    (d,) = [x for x in docs if x["event"]["action"] == "containment_followed"]
    assert "in the kernel when the cgroup was created" in d["message"]
    assert src.cgroups == {100: 100, 200: 100}  # the old one's sockets outlive it
    (e,) = svc.entries()
    assert e["cgroup_ids"] == [200] and e["former_cgroup_ids"] == [100]

    # stopped, then removed: released once the engine no longer has it
    reg.cgroup_removed(200, f"/docker/{A}")
    reg.expire()
    assert src.isolated == {100: 0}
    del fake_docker.containers[A]
    svc.recheck()
    (rel,) = [x for x in docs if x["event"]["action"] == "containment_released"]
    assert "stay contained in the kernel" in rel["message"]
    assert svc.entries() == [] and src.isolated == {100: 0}  # the kernel keeps applying it
    assert [e.container_id for e in svc.containment.lingering] == [A]


def test_a_gone_containers_entries_are_listed_and_can_be_released(
    tmp_path: Path, fake_docker: FakeDockerEngine
) -> None:
    """What the kernel still applies for a container that is gone is
    listed (`sluice containment`), and `sluice release` by its id, id prefix
    or name lets it go: the runtime no longer knows the container, so only
    the lingering entries can say which one is meant."""
    fake_docker.add(A, "web", "acme/web:1", "sha256:" + "1" * 64)
    svc, reg, src, docs = _world(tmp_path, fake_docker)
    svc.isolate("web", "test")
    src.isolated[100] = 7  # packets the kernel dropped
    reg.cgroup_removed(100, f"/docker/{A}")
    reg.expire()
    del fake_docker.containers[A]
    svc.recheck()
    assert svc.entries() == []
    (e,) = svc.lingering()
    assert e["state"] == "lingering" and e["container_id"] == A and e["dropped"] == 7
    assert e["description"] == "isolate web (gone; its cgroups stay contained)"
    with pytest.raises(ContainmentError, match="no running or contained container matches"):
        svc.release("nothing-like-it", None)
    r = svc.release("web", None)
    assert r["ok"] and "released: isolate web" in r["message"]
    assert svc.lingering() == [] and src.isolated == {} and src.cgroups == {}
    (rel,) = [
        x for x in docs if x["event"]["action"] == "containment_released" and x["message"] == "released: isolate web"
    ]
    assert rel["sluice"]["containment"]["dropped_packets"] == 7
    # saved: a restart does not bring it back
    svc2, _reg2, src2, _docs2 = _world(tmp_path, fake_docker)
    svc2.restore()
    assert svc2.lingering() == [] and src2.isolated == {}


def test_a_release_names_one_container_among_running_stopped_and_gone_ones(
    tmp_path: Path, fake_docker: FakeDockerEngine
) -> None:
    """A prefix or name that fits two containers (running, stopped with
    its entry, or gone) is refused and nothing is released; a full id is
    exact; a stopped container's entry can be released by its id."""
    fake_docker.add(A, "web", "acme/web:1", "sha256:" + "1" * 64)
    svc, _reg, src, _docs = _world(tmp_path, fake_docker)
    svc.isolate("web", "running one")
    c1, c2 = A[:8] + "c" * 56, A[:8] + "d" * 56  # not running: c1 gone, c2 stopped
    svc.containment.isolate(c1, "web", [300])
    svc.containment.containers_gone({A, c2})  # c1 is gone
    svc.containment.isolate(c2, "job", [301])
    for ref in ("web", A[:6]):
        with pytest.raises(ContainmentError, match="matches [23] containers") as err:
            svc.release(ref, None)
        assert "give more of the id" in str(err.value)
    assert len(svc.entries()) == 2 and len(svc.lingering()) == 1 and set(src.isolated) == {100, 300, 301}
    assert "released: isolate web" in svc.release(c1, None)["message"]  # the gone one, by its full id
    assert [e["container_id"] for e in svc.entries()] == [A, c2] and svc.lingering() == []
    assert "released: isolate job" in svc.release("job", None)["message"]  # stopped: by its name
    assert "released: isolate web" in svc.release("web", None)["message"]  # now only the running one
    assert src.isolated == {}
    with pytest.raises(ContainmentError, match="say which container"):
        svc.release(" ", None)


def test_a_release_by_prefix_that_matches_two_gone_containers_says_so(
    tmp_path: Path, fake_docker: FakeDockerEngine
) -> None:
    c1, c2 = "c0" * 32, "c0c0c0c0" + "d" * 56  # not running (A is)
    svc, _reg, _src, _docs = _world(tmp_path, fake_docker)
    for cid, name, cg in ((c1, "web", 300), (c2, "web2", 301)):
        svc.containment.isolate(cid, name, [cg])
    svc.containment.containers_gone(set())
    with pytest.raises(ContainmentError, match="matches 2 containers"):
        svc.release("c0c0c0", None)
    assert len(svc.lingering()) == 2
    assert "released: isolate web2" in svc.release(c2[:10], None)["message"]


class _FullMap(ReplaySource):
    """The kernel's containment map when it is full: bcc's update fails."""

    full = False

    def set_contained_cgroup(self, cgroup_id: int, handle: int, level: int, on: bool) -> None:
        if on and self.full:
            raise Exception("Could not update table: Argument list too long")  # what bcc raises
        super().set_contained_cgroup(cgroup_id, handle, level, on)


def test_a_full_containment_map_at_a_restart_is_reported_not_fatal(
    tmp_path: Path, fake_docker: FakeDockerEngine
) -> None:
    """A contained container that can write cgroupfs filled the kernel's
    map with sub-cgroups named like containers, then restarted: following
    it raised out of the registry's callback and stopped the sensor
    (review). Now the failure is a document and the sensor's problem."""
    fake_docker.add(A, "web", "acme/web:1", "sha256:" + "1" * 64)
    src = _FullMap()
    svc, reg, _src, docs = _world(tmp_path, fake_docker, src)
    svc.isolate("web", "test")
    reg.cgroup_removed(100, f"/docker/{A}")
    reg.expire()
    src.full = True
    reg.cgroup_created(200, f"/docker/{A}", 1.0)  # raised here before
    (d,) = [x for x in docs if x["event"]["action"] == "containment_follow_failed"]
    assert "Argument list too long" in d["message"] and "cgroup 200" in d["message"]
    assert svc.problem and "could not follow web" in svc.problem
    assert src.cgroups == {100: 100}  # the old cgroup stays contained


def test_a_namespace_is_read_through_the_next_task_when_one_went_away() -> None:
    """CI: the task picked for a restarted container's namespace exited
    before nsenter opened it; the link cut failed and waited a minute."""
    import os

    from sensor.response import service
    from sensor.response.service import _in_netns, _task_start

    here = os.getpid()
    started = _task_start(here)
    assert started is not None
    me = (here, started)
    ino = os.stat("/proc/self/ns/net").st_ino
    gone = (2**22 + 12345, 1.0)  # above pid_max's default: no such task

    def read(t: int) -> int:
        if not os.path.exists(f"/proc/{t}/ns/net"):
            raise OSError(f"nsenter: cannot open /proc/{t}/ns/net: No such file or directory")
        return t

    assert _in_netns(ino, [gone, me], read) == here
    # CI again: every task of a namespace went away (runc's start
    # processes): the namespace went with them, nothing to read there
    assert _in_netns(ino, [gone], read) is None

    def broken(t: int) -> int:
        raise OSError("tc: a real failure")

    with pytest.raises(OSError, match="a real failure"):  # a task still there: not retried
        _in_netns(ino, [me, gone], broken)

    # the pid is another task's by the end of the read (reused: another
    # start time), or the task moved to another namespace: its answer is
    # not the namespace's
    reused = (here, me[1] - 5.0)
    assert _in_netns(ino, [reused], read) is None
    assert _in_netns(ino + 1, [me], read) is None
    assert _in_netns(ino, [reused, me], read) == here
    # ... unless the read acted (the unix sweep's cuts are done: said)
    assert _in_netns(ino, [reused], read, acts=True) == here
    assert service._task_start(gone[0]) is None


def test_the_link_cut_never_looks_in_the_sensors_own_namespace() -> None:
    """runc's first processes of a (re)start are in the container's new
    cgroup while still in the host's network namespace (measured): the
    link cut must not take the host's veths for the container's."""
    import os
    import subprocess

    from sensor.response.service import _task_start, _tasks_per_netns

    ours = os.stat("/proc/self/ns/net").st_ino
    me = os.getpid()
    mine = (me, _task_start(me))
    assert _tasks_per_netns([me]) == {ours: [mine]}  # (the unix sweep: a shared namespace is read)
    assert _tasks_per_netns([me], but_not_ours=True) == {}
    if os.geteuid() != 0 and os.environ.get("CI") != "true":
        return  # (another namespace needs root; CI runs as root)
    child = subprocess.Popen(["unshare", "--net", "sleep", "30"])
    try:
        import time

        deadline = time.monotonic() + 5
        while os.stat(f"/proc/{child.pid}/ns/net").st_ino == ours:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        theirs = os.stat(f"/proc/{child.pid}/ns/net").st_ino
        assert _tasks_per_netns([me, child.pid], but_not_ours=True) == {theirs: [(child.pid, _task_start(child.pid))]}
    finally:
        child.kill()
        child.wait()


@pytest.mark.parametrize(
    "unix,into,says,never",
    [
        ("attached", "attached", "are refused", "NOT refused"),
        ("attached", "unavailable: no BPF LSM", "cut at each window", "its unix sockets from outside it are refused"),
        ("unavailable: Linux 6.1", "unavailable: no BPF LSM", "into its unix sockets from outside it are NOT", "cut"),
    ],
)
def test_the_isolation_message_says_what_happens_to_unix_calls_into_it(
    unix: str, into: str, says: str, never: str
) -> None:
    """Review: "cut at each window" was said where nothing is swept (no
    connect_unix hook: the sweep does not run)."""
    from types import SimpleNamespace

    from sensor.response.service import ContainmentService

    svc = SimpleNamespace(unix_hook=unix, unix_sendmsg_hook="attached", unix_into_hook=into)
    text = ContainmentService._unix_refusal(svc, False)  # type: ignore[arg-type]
    assert says in text and never not in text, text


def test_runcs_own_processes_are_known_by_name_file_and_youth(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The per-window sweep leaves out runc's start/exec processes (their
    socketpair to runc is `docker exec`'s); a process dressed as one is
    one only while young (review: comm and file name are the task's)."""
    import shutil
    import subprocess

    from sensor.response import service

    fake = tmp_path / "runc:[2:INIT]"  # exec sets comm from the file's name
    shutil.copy("/bin/sleep", fake)
    p = subprocess.Popen([str(fake), "30"])
    plain = subprocess.Popen(["sleep", "30"])
    try:
        deadline = time.monotonic() + 5
        while Path(f"/proc/{p.pid}/comm").read_text().strip() != "runc:[2:INIT]":
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert service._runc_task(p.pid)
        assert not service._runc_task(plain.pid)
        monkeypatch.setattr(service, "RUNC_YOUNG_S", 0.0)
        assert not service._runc_task(p.pid)  # no longer young
    finally:
        for x in (p, plain):
            x.kill()
            x.wait()
