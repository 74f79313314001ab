"""Container runtime sockets by identity, not by the name a caller wrote.

The connect_unix hook reports the path a process passed to connect(2). A
rule that matched its last component (docker.sock) missed the same socket
reached by another name: a symlink (`ln -s /var/run/docker.sock /tmp/x`),
a hostPath mounted as /run/rt, an O_PATH descriptor's /proc/self/fd/N
(review). The node's runtime sockets are known by (device, inode), which a
bind mount keeps and a symlink leads to; the caller's path is resolved as
the caller sees it (its root and working directory, symlinks followed
inside that root) and compared by identity. A path that cannot be resolved
(the caller exited and its container has no process left) falls back to
the name.
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Callable

from sensor.telemetry.stage import script_fd

# Unix socket file names of container runtimes (matched on the last path
# component, so a socket mounted anywhere in a container still counts).
RUNTIME_SOCKETS = (
    "docker.sock",
    "containerd.sock",
    "crio.sock",
    "podman.sock",
    "cri-dockerd.sock",
    "dockershim.sock",
    "buildkitd.sock",
)
# where runtimes put their sockets on a node (the name is what the rules
# and baselines know them by)
HOST_SOCKETS = (
    "/var/run/docker.sock",
    "/run/docker.sock",
    "/run/containerd/containerd.sock",
    "/run/containerd/containerd.sock.ttrpc",
    "/run/k3s/containerd/containerd.sock",
    "/var/run/crio/crio.sock",
    "/run/podman/podman.sock",
    "/var/run/cri-dockerd.sock",
    "/run/buildkit/buildkitd.sock",
)
REFRESH_S = 30.0  # daemons re-create their sockets when they restart
MAX_LINKS = 40  # symlinks followed per path, as the kernel's limit
# components looked at per path, links' included: a chain of 40 links of
# 800 "d/" each cost 0.6 s per connect in the drain loop (review)
MAX_STEPS = 256
MAX_PATH = 4096
MAX_PIDS = 8  # processes of the container tried when the caller is gone


def resolve_in_root(root: str, cwd: str, path: str) -> str | None:
    """`path` as a process whose root is `root` (a host path such as
    /proc/<pid>/root) and whose working directory is `cwd` (inside that
    root) would reach it, as a host path: symlinks followed, absolute ones
    from `root`, ".." never above it. None when a component is missing or
    the links are too many."""
    full = path if path.startswith("/") else cwd.rstrip("/") + "/" + path
    if len(full) > MAX_PATH:
        return None
    parts = [p for p in full.split("/") if p]
    done: list[str] = []
    hops = steps = 0
    while parts:
        steps += 1
        if steps > MAX_STEPS:
            return None
        p = parts.pop(0)
        if p == ".":
            continue
        if p == "..":
            if done:
                done.pop()
            continue
        here = root + "/" + "/".join([*done, p])
        try:
            st = os.lstat(here)
        except OSError:
            return None
        if stat.S_ISLNK(st.st_mode):
            hops += 1
            if hops > MAX_LINKS:
                return None
            try:
                target = os.readlink(here)
            except OSError:
                return None
            if target.startswith("/"):
                done = []
            parts = [x for x in target.split("/") if x] + parts
            if len(parts) > MAX_STEPS:
                return None
            continue
        done.append(p)
    return root + "/" + "/".join(done)


class RuntimeSockets:
    """The node's runtime sockets, by (device, inode)."""

    def __init__(
        self, extra: tuple[str, ...] = (), proc: str = "/proc", clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.paths = tuple(dict.fromkeys((*HOST_SOCKETS, *extra)))
        self.proc = proc
        self.clock = clock
        self._known: dict[tuple[int, int], str] = {}
        self._at = float("-inf")

    def known(self) -> dict[tuple[int, int], str]:
        if self.clock() - self._at >= REFRESH_S:
            found = {}
            for path in self.paths:
                try:
                    st = os.stat(path)
                except OSError:
                    continue
                if stat.S_ISSOCK(st.st_mode):
                    found[(st.st_dev, st.st_ino)] = path.rsplit("/", 1)[-1]
            self._known, self._at = found, self.clock()
        return self._known

    def _host_path(self, pid: int, path: str) -> str | None:
        fd = script_fd(path) if path != "-" else None
        if fd is not None:
            # a descriptor (an O_PATH fd of the socket): the caller's own,
            # or another process's by its pid in the caller's namespace
            # (read through the caller's root, whose /proc is that one's)
            other, n = fd
            return f"{self.proc}/{pid}/root/proc/{other}/fd/{n}" if other else f"{self.proc}/{pid}/fd/{n}"
        if path.startswith("/"):
            cwd = "/"
        else:
            try:
                cwd = os.readlink(f"{self.proc}/{pid}/cwd")
            except OSError:
                return None  # (a cwd too deep to read: unknown, not "/")
        return resolve_in_root(f"{self.proc}/{pid}/root", cwd, path)

    def identify(self, pid: int, path: str, others: Callable[[], list[int]]) -> str:
        """The runtime socket's name when `path`, as `pid` (or, once it is
        gone, another process of its container) sees it, is one; "" when it
        is not, or cannot be told."""
        known = self.known()
        if not known or not path or path.startswith("@"):
            return ""
        own_fd = path != "-" and script_fd(path) is not None  # (a descriptor path names the caller's)
        for p in [pid, *([] if own_fd else others()[:MAX_PIDS])]:
            if not os.path.exists(f"{self.proc}/{p}/root"):
                continue
            host = self._host_path(p, path)
            if host is None:
                return ""
            try:
                st = os.stat(host)
            except OSError:
                return ""
            return known.get((st.st_dev, st.st_ino), "")
        return ""
