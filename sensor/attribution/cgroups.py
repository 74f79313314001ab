"""cgroup v2 discovery and cgroup id -> path resolution.

The cgroup v2 id that BPF reports (bpf_get_current_cgroup_id,
bpf_skb_cgroup_id) is the inode number of the cgroup's directory in the
cgroup2 filesystem. The mount point is read from /proc/self/mountinfo, never
assumed (/sys/fs/cgroup on unified hosts, /sys/fs/cgroup/unified on hybrid
ones).
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass

from sensor.errors import SluiceError
from sensor.text import safe_text


@dataclass(frozen=True)
class Mount:
    mount_point: str
    fstype: str
    root: str


_OCTAL = re.compile(r"\\([0-7]{3})")


def _unescape(s: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as \\ooo."""
    return _OCTAL.sub(lambda m: chr(int(m.group(1), 8)), s)


def parse_mountinfo(text: str) -> list[Mount]:
    mounts = []
    for line in text.splitlines():
        if " - " not in line:
            continue
        left, right = line.split(" - ", 1)
        lf, rf = left.split(), right.split()
        if len(lf) < 5 or not rf:
            continue
        mounts.append(Mount(_unescape(lf[4]), rf[0], _unescape(lf[3])))
    return mounts


def find_cgroup2_mount(mountinfo_text: str | None = None) -> str:
    """The cgroup2 mount point, or raise with what to do."""
    if mountinfo_text is None:
        with open("/proc/self/mountinfo") as f:
            mountinfo_text = f.read()
    for m in parse_mountinfo(mountinfo_text):
        if m.fstype == "cgroup2" and m.root == "/":
            return m.mount_point
    raise SluiceError(
        "no cgroup v2 filesystem is mounted",
        hint="mount it (mount -t cgroup2 none /sys/fs/cgroup/unified) or boot with "
        "systemd.unified_cgroup_hierarchy=1; Sluice attributes traffic by cgroup v2 id",
    )


def cgroup_mode(mountinfo_text: str) -> str:
    """'unified', 'hybrid' (v1 controllers plus a v2 mount) or 'legacy'."""
    types = {m.fstype for m in parse_mountinfo(mountinfo_text)}
    if "cgroup2" in types:
        return "hybrid" if "cgroup" in types else "unified"
    return "legacy"


class CgroupResolver:
    """Maps cgroup ids to paths relative to the cgroup2 mount.

    Paths are learned from cgroup_mkdir events as they happen and from a walk
    of the mount for cgroups that existed before the sensor. A miss triggers a
    rescan at most every `rescan_interval` seconds.
    """

    def __init__(self, mount: str, rescan_interval: float = 2.0) -> None:
        self.mount = mount.rstrip("/") or "/"
        self.rescan_interval = rescan_interval
        self._paths: dict[int, str] = {}
        self._last_scan = 0.0
        self.scans = 0

    def __len__(self) -> int:
        return len(self._paths)

    def learn(self, cgroup_id: int, path: str) -> None:
        self._paths[cgroup_id] = path or "/"

    def items(self) -> list[tuple[int, str]]:
        return list(self._paths.items())

    def forget(self, cgroup_id: int) -> None:
        self._paths.pop(cgroup_id, None)

    def scan(self) -> None:
        self.scans += 1
        self._last_scan = time.monotonic()
        base = len(self.mount) if self.mount != "/" else 0
        for dirpath, _dirs, _files in os.walk(self.mount):
            try:
                ino = os.stat(dirpath).st_ino
            except OSError:
                continue
            self._paths[ino] = safe_text(dirpath[base:]) or "/"

    def path(self, cgroup_id: int) -> str | None:
        p = self._paths.get(cgroup_id)
        if p is None and time.monotonic() - self._last_scan >= self.rescan_interval:
            self.scan()
            p = self._paths.get(cgroup_id)
        return p

    def id_of(self, path: str) -> int:
        """cgroup id of a path relative to the mount (for tests and tools)."""
        return os.stat(self.mount + path).st_ino
