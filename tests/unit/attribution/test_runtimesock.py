"""Runtime sockets by identity (sensor/attribution/runtimesock.py): a
symlink to docker.sock, a mount under another name and an O_PATH
descriptor were all missed by a match on the path's last component
(review). Real unix sockets, real /proc."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from sensor.attribution.runtimesock import RuntimeSockets, resolve_in_root


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[Path]:
    """A listening unix socket standing for the node's docker.sock."""
    path = tmp_path / "run" / "docker.sock"
    path.parent.mkdir()
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(path))
    s.listen()
    try:
        yield path
    finally:
        s.close()


def test_a_symlink_by_any_name_is_the_runtime_socket(tmp_path: Path, runtime: Path) -> None:
    rs = RuntimeSockets(extra=(str(runtime),))
    (tmp_path / "x").symlink_to(runtime)
    (tmp_path / "rel").symlink_to("run/docker.sock")
    me = os.getpid()
    assert rs.identify(me, str(tmp_path / "x"), list) == "docker.sock"
    assert rs.identify(me, str(tmp_path / "rel"), list) == "docker.sock"
    assert rs.identify(me, str(runtime), list) == "docker.sock"
    other = tmp_path / "other.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as o:
        o.bind(str(other))
        assert rs.identify(me, str(other), list) == ""
    assert rs.identify(me, str(tmp_path / "missing"), list) == ""
    assert rs.identify(me, "@abstract", list) == ""


def test_an_o_path_descriptor_of_the_socket(runtime: Path) -> None:
    rs = RuntimeSockets(extra=(str(runtime),))
    fd = os.open(runtime, os.O_PATH)
    try:
        assert rs.identify(os.getpid(), f"/proc/self/fd/{fd}", list) == "docker.sock"
    finally:
        os.close(fd)


def test_a_relative_path_from_the_working_directory(tmp_path: Path, runtime: Path) -> None:
    rs = RuntimeSockets(extra=(str(runtime),))
    old = os.getcwd()
    os.chdir(tmp_path / "run")
    try:
        assert rs.identify(os.getpid(), "docker.sock", list) == "docker.sock"
    finally:
        os.chdir(old)


def test_symlinks_resolve_inside_the_callers_root(tmp_path: Path, runtime: Path) -> None:
    """A container's absolute symlink points inside the container, not at
    the host's file of that name."""
    root = tmp_path / "root"
    (root / "var").mkdir(parents=True)
    (root / "run").mkdir()
    (root / "var" / "run").symlink_to("../run")
    os.link(runtime, root / "run" / "rt.sock")  # the same socket under another name, as a bind mount keeps it
    (root / "tmp").mkdir()
    (root / "tmp" / "x").symlink_to("/var/run/rt.sock")
    (root / "tmp" / "loop").symlink_to("/tmp/loop")
    (root / "tmp" / "up").symlink_to("../../../../../../run/rt.sock")
    assert resolve_in_root(str(root), "/", "/tmp/x") == f"{root}/run/rt.sock"
    assert resolve_in_root(str(root), "/tmp", "x") == f"{root}/run/rt.sock"
    assert resolve_in_root(str(root), "/", "/tmp/up") == f"{root}/run/rt.sock"  # never above the root
    assert resolve_in_root(str(root), "/", "/tmp/loop") is None
    assert resolve_in_root(str(root), "/", "/nope/x") is None
    # through a /proc-like tree: the caller's root and working directory
    proc = tmp_path / "proc"
    (proc / "77").mkdir(parents=True)
    (proc / "77" / "root").symlink_to(root)
    (proc / "77" / "cwd").symlink_to("/tmp")
    rs = RuntimeSockets(extra=(str(runtime),), proc=str(proc))
    assert rs.identify(77, "/tmp/x", list) == "docker.sock"
    assert rs.identify(77, "x", list) == "docker.sock"
    # the caller gone: another process of its container resolves it
    assert rs.identify(78, "/tmp/x", lambda: [77]) == "docker.sock"
    assert rs.identify(78, "/tmp/x", list) == ""


def test_the_sockets_are_looked_at_again(tmp_path: Path) -> None:
    """A daemon restart re-creates its socket (a new inode)."""
    path = tmp_path / "docker.sock"
    now = [0.0]
    rs = RuntimeSockets(extra=(str(path),), clock=lambda: now[0])
    assert rs.identify(os.getpid(), str(path), list) == ""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.bind(str(path))
        assert rs.identify(os.getpid(), str(path), list) == ""  # not looked at yet
        now[0] += 31
        assert rs.identify(os.getpid(), str(path), list) == "docker.sock"


def test_a_costly_path_is_given_up_quickly(tmp_path: Path, runtime: Path) -> None:
    """40 links of 800 components each cost 0.6 s per connect (review):
    the resolution gives up after MAX_STEPS components."""
    import time

    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "d").symlink_to(".")
    prev = str(runtime)
    for i in range(40):  # a chain of 40 plain links
        link = tmp_path / f"l{i}"
        link.symlink_to(prev)
        prev = str(link)
    heavy = tmp_path / "heavy"
    heavy.symlink_to("d/" * 1000 + "x")
    rs = RuntimeSockets(extra=(str(runtime),))
    t = time.monotonic()
    assert rs.identify(os.getpid(), str(heavy), list) == ""
    assert time.monotonic() - t < 0.1
    assert rs.identify(os.getpid(), prev, list) == "docker.sock"  # 40 plain links: within the budget


def test_dev_fd_is_the_callers_own_descriptor(runtime: Path) -> None:
    rs = RuntimeSockets(extra=(str(runtime),))
    fd = os.open(runtime, os.O_PATH)
    try:
        assert rs.identify(os.getpid(), f"/dev/fd/{fd}", list) == "docker.sock"
        assert rs.identify(os.getpid(), f"/proc/self/task/{os.getpid()}/fd/{fd}", list) == "docker.sock"
        # another process's descriptor, by its pid in the caller's namespace
        assert rs.identify(os.getpid(), f"/proc/{os.getpid()}/fd/{fd}", list) == "docker.sock"
    finally:
        os.close(fd)
