"""A contained container that can write cgroupfs (privileged, a systemd
container, sysbox) made sub-cgroups named like itself (`jN-<its id>`),
mkdir and rmdir over and over: the kernel followed each into the
containment map (made for a restart's new cgroup) and kept it, 4,096 in
0.14 s, after which no container on the node could be isolated (review).
Sub-cgroups made from inside the container are covered through their
ancestor and are no longer followed; a cgroup the runtime makes from
outside still is. The real kernel half (BccSource), a real cgroup."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from sensor.config import default_config
from sensor.kernel import hooks as H
from sensor.kernel.loader import BccSource
from sensor.kernel.probe import probe


def test_sub_cgroups_made_inside_are_not_followed() -> None:
    report = probe(True, H.UNITS)
    assert report.cgroup2_mount
    mnt = report.cgroup2_mount.rstrip("/")
    cid = "cd" * 32
    top = Path(mnt) / f"sluice-fill-{os.getpid()}"
    cg = top / cid
    cg.mkdir(parents=True)
    cgid = cg.stat().st_ino
    level = len(str(cg)[len(mnt) :].strip("/").split("/"))
    restart = top / f"docker-{cid}.scope"
    src = BccSource(default_config().kernel, report)
    src.start(lambda _b: None)
    try:
        src.set_contained_container(cid, cgid, True)
        src.set_contained_cgroup(cgid, cgid, level, True)
        src.set_isolated(cgid, True)
        # from inside the contained cgroup (a shell moved into it)
        inside = (
            f"echo $$ > {cg}/cgroup.procs && i=0; while [ $i -lt 300 ]; do "
            f"mkdir {cg}/j$i-{cid} && rmdir {cg}/j$i-{cid}; i=$((i+1)); done"
        )
        subprocess.run(["sh", "-c", inside], check=True, timeout=60)
        held = src.contained_cgroups()
        assert len(held) == 1 and held.get(cgid) == cgid, f"{len(held)} cgroups in the containment map"
        # the runtime's restart, made from outside: followed
        restart.mkdir()
        assert src.contained_cgroups().get(restart.stat().st_ino) == cgid
    finally:
        src.close()
        for d in (restart, cg, top):
            try:
                d.rmdir()
            except OSError:
                pass
