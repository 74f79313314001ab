"""cgroup v2 discovery from mountinfo and id -> path resolution on a real tree."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sensor.attribution.cgroups import CgroupResolver, Mount, cgroup_mode, find_cgroup2_mount, parse_mountinfo
from sensor.errors import SluiceError

# Debian 11 / Ubuntu 20.04 style: v1 controllers + v2 at /sys/fs/cgroup/unified
HYBRID = """\
22 27 0:20 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
23 27 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw
27 1 259:2 / / rw,relatime shared:1 - ext4 /dev/nvme0n1p2 rw,errors=remount-ro
30 22 0:25 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
31 30 0:26 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw,nsdelegate
32 30 0:27 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:11 - cgroup cgroup rw,xattr,name=systemd
35 30 0:30 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:15 - cgroup cgroup rw,memory
36 30 0:31 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:16 - cgroup cgroup rw,cpu,cpuacct
"""

# Debian 12 / Ubuntu 22.04+ style: cgroup2 only, at /sys/fs/cgroup
UNIFIED = """\
22 28 0:21 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
28 1 259:2 / / rw,relatime shared:1 - ext4 /dev/nvme0n1p2 rw,errors=remount-ro
30 22 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
31 22 0:6 / /sys/kernel/debug rw,nosuid,nodev,noexec,relatime shared:13 - debugfs debugfs rw
1024 30 0:26 /system.slice/docker-abc.scope /mnt/inner rw,relatime shared:9 - cgroup2 cgroup2 rw
"""

# cgroup v1 only (CentOS 7 style)
LEGACY = """\
22 27 0:20 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
30 22 0:25 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
32 30 0:27 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:11 - cgroup cgroup rw,xattr,name=systemd
35 30 0:30 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:15 - cgroup cgroup rw,memory
"""

HEX_A = "a1" * 32
HEX_B = "b2" * 32


def test_parse_mountinfo_fields() -> None:
    mounts = parse_mountinfo(HYBRID)
    assert len(mounts) == 8
    assert Mount("/sys/fs/cgroup/unified", "cgroup2", "/") in mounts
    assert Mount("/sys/fs/cgroup/cpu,cpuacct", "cgroup", "/") in mounts
    assert mounts[0] == Mount("/sys", "sysfs", "/")


def test_parse_mountinfo_optional_fields_and_bind_root() -> None:
    mounts = parse_mountinfo(UNIFIED)
    inner = [m for m in mounts if m.mount_point == "/mnt/inner"]
    assert inner == [Mount("/mnt/inner", "cgroup2", "/system.slice/docker-abc.scope")]


def test_parse_mountinfo_skips_garbage() -> None:
    assert parse_mountinfo("\nnot a mount line\n1 2 3\n") == []


def test_parse_mountinfo_unescapes_octal() -> None:
    line = "40 30 0:40 / /mnt/cgroup\\040v2 rw,relatime - cgroup2 cgroup2 rw\n"
    assert parse_mountinfo(line) == [Mount("/mnt/cgroup v2", "cgroup2", "/")]


def test_parse_mountinfo_unescape_keeps_utf8() -> None:
    # the kernel escapes only space, tab, newline and backslash; UTF-8 bytes
    # pass through and must survive the unescaping of the space
    line = "40 30 0:40 / /mnt/donn\u00e9es\\040v2 rw,relatime - cgroup2 cgroup2 rw\n"
    assert parse_mountinfo(line)[0].mount_point == "/mnt/donn\u00e9es v2"


def test_find_cgroup2_mount_hybrid() -> None:
    assert find_cgroup2_mount(HYBRID) == "/sys/fs/cgroup/unified"


def test_find_cgroup2_mount_unified_ignores_bind_mounts_of_subtrees() -> None:
    assert find_cgroup2_mount(UNIFIED) == "/sys/fs/cgroup"
    # a subtree bind listed first must not win
    lines = UNIFIED.splitlines()
    reordered = "\n".join([lines[-1]] + lines[:-1]) + "\n"
    assert find_cgroup2_mount(reordered) == "/sys/fs/cgroup"


def test_find_cgroup2_mount_of_this_host() -> None:
    mount = find_cgroup2_mount()
    assert os.path.isdir(mount)


def test_no_cgroup2_is_an_error_with_a_hint() -> None:
    with pytest.raises(SluiceError) as ei:
        find_cgroup2_mount(LEGACY)
    assert "no cgroup v2 filesystem is mounted" in str(ei.value)
    assert "mount -t cgroup2" in ei.value.hint


def test_cgroup_mode() -> None:
    assert cgroup_mode(HYBRID) == "hybrid"
    assert cgroup_mode(UNIFIED) == "unified"
    assert cgroup_mode(LEGACY) == "legacy"
    assert cgroup_mode("") == "legacy"


# --- resolver over a real directory tree ----------------------------------


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "cg"
    (root / "docker" / HEX_A).mkdir(parents=True)
    (root / "system.slice" / f"docker-{HEX_B}.scope").mkdir(parents=True)
    (root / "user.slice" / "user-1000.slice").mkdir(parents=True)
    return root


def ino(p: Path) -> int:
    return os.stat(p).st_ino


def test_scan_maps_inodes_to_paths_relative_to_the_mount(tree: Path) -> None:
    r = CgroupResolver(str(tree))
    r.scan()
    assert r.scans == 1
    assert r.path(ino(tree)) == "/"
    assert r.path(ino(tree / "docker")) == "/docker"
    assert r.path(ino(tree / "docker" / HEX_A)) == f"/docker/{HEX_A}"
    assert r.path(ino(tree / "system.slice" / f"docker-{HEX_B}.scope")) == f"/system.slice/docker-{HEX_B}.scope"
    assert r.path(ino(tree / "user.slice" / "user-1000.slice")) == "/user.slice/user-1000.slice"
    assert len(r) == 7  # cg, docker, docker/<id>, system.slice, its scope, user.slice, user-1000
    assert r.id_of(f"/docker/{HEX_A}") == ino(tree / "docker" / HEX_A)


def test_trailing_slash_on_mount(tree: Path) -> None:
    r = CgroupResolver(str(tree) + "/")
    r.scan()
    assert r.path(ino(tree / "docker" / HEX_A)) == f"/docker/{HEX_A}"


def test_learn_and_forget(tree: Path) -> None:
    r = CgroupResolver(str(tree), rescan_interval=3600)
    r.scan()
    r.learn(123456789, "/kubepods.slice/x")
    assert r.path(123456789) == "/kubepods.slice/x"
    assert (123456789, "/kubepods.slice/x") in r.items()
    r.learn(5, "")
    assert r.path(5) == "/"
    r.forget(123456789)
    assert r.path(123456789) is None
    r.forget(123456789)  # forgetting twice is fine
    assert r.scans == 1  # the miss did not rescan within the interval


def test_unknown_id_triggers_rescan_that_finds_new_directory(tree: Path) -> None:
    r = CgroupResolver(str(tree), rescan_interval=0)
    r.scan()
    new = tree / "system.slice" / f"docker-{HEX_A}.scope"
    new.mkdir()
    assert r.path(ino(new)) == f"/system.slice/docker-{HEX_A}.scope"
    assert r.scans == 2
    # a known id does not rescan
    assert r.path(ino(new)) is not None
    assert r.scans == 2


def test_rescan_is_rate_limited(tree: Path) -> None:
    r = CgroupResolver(str(tree), rescan_interval=3600)
    r.scan()
    new = tree / "late"
    new.mkdir()
    assert r.path(ino(new)) is None
    assert r.scans == 1


def test_unknown_id_still_unknown_after_rescan(tree: Path) -> None:
    r = CgroupResolver(str(tree), rescan_interval=0)
    bogus = 2**63 + 5  # no inode has this number
    assert r.path(bogus) is None  # the first miss scans (nothing scanned yet)
    assert r.scans == 1
    assert r.path(ino(tree / "docker")) == "/docker"
    assert r.scans == 1
    assert r.path(bogus) is None
    assert r.scans == 2
