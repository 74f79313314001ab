"""Metadata never blocks detection (issue 10, finding 9): with a container
engine that accepts connections and never answers, new containers are
known by id at once, windows close and alerts are raised without waiting
for it; when it answers, the container's name and image are filled in."""

from __future__ import annotations

import os
import random
import threading
import time
from pathlib import Path
from typing import Any

from emulation.records import cgroup_rec, exec_rec, sample_rec, to_wall
from sensor.attribution.cgroups import CgroupResolver
from sensor.attribution.containers import Attributor
from sensor.attribution.docker_api import DockerClient
from sensor.config import load_config
from sensor.detect.engine import Detector
from sensor.detect.rules import all_rules
from sensor.kernel import events as E
from sensor.telemetry.counters import FlowCounters
from sensor.telemetry.pipeline import Pipeline

A = "a7" * 32
B = "b7" * 32
ENGINE_TIMEOUT = 5.0  # what a lookup may take before the client gives up


def _world(tmp_path: Path, engine: Any) -> tuple[Pipeline, Attributor, list[dict[str, Any]], dict[str, int]]:
    root = tmp_path / "cg"
    ids = {}
    for name, cid in (("a", A), ("b", B)):
        d = root / "docker" / cid
        d.mkdir(parents=True)
        ids[name] = os.stat(d).st_ino
    resolver = CgroupResolver(str(root), rescan_interval=3600)
    at = Attributor(resolver, DockerClient(engine.socket_path, ENGINE_TIMEOUT))
    at.start_worker(inline_wait=0.05)
    cfg = tmp_path / "s.toml"
    cfg.write_text('[detection]\ntimezone = "UTC"\n')
    docs: list[dict[str, Any]] = []
    det = Detector(load_config(cfg), None, all_rules(), docs.append, "h")
    pipe = Pipeline(at, docs.append, "h", True, to_wall, observers=[det])
    return pipe, at, docs, ids


def test_a_hung_engine_delays_nothing(tmp_path: Path, fake_docker: Any) -> None:
    fake_docker.add(A, "exfil", "evil/exfil:1", "sha256:" + "a" * 64)
    fake_docker.gate = threading.Event()  # the engine accepts and does not answer
    pipe, at, docs, ids = _world(tmp_path, fake_docker)
    rng = random.Random(7)
    t0 = time.monotonic()
    for name, cid in (("a", A), ("b", B)):  # two containers start
        pipe.handle_raw(cgroup_rec(E.CGROUP_MKDIR, ids[name], f"/docker/{cid}".encode(), ktime_ns=10**9))
    pipe.handle_raw(exec_rec(5_000_777, ids["a"], ktime_ns=2 * 10**9, comm=b"nc", filename=b"/bin/nc"))
    for _ in range(8):
        pipe.handle_raw(sample_rec(ids["a"], "203.0.113.7", 9000, rng.randbytes(128)))
    flows = [FlowCounters(ids["a"], "203.0.113.7", 9000, 6, 3 << 20, 2000, 3 << 20, 1, 1, 2, 8)]
    pipe.close_window(flows, to_wall(0), to_wall(10 * 10**9))
    took = time.monotonic() - t0
    # one inline wait (50 ms) at most, then nothing waits for the engine
    assert took < 1.0, f"the pipeline waited {took:.2f} s for a hung engine"
    alerts = [d for d in docs if d["event"]["kind"] == "alert"]
    assert alerts, "no alert while the engine hangs"
    assert alerts[0]["container"]["id"] == A and "name" not in alerts[0]["container"]  # id only, for now
    assert at.lookup_stats()["lookups_late"] >= 1
    # the engine answers: the container is named from then on
    fake_docker.gate.set()
    deadline = time.monotonic() + 5
    while True:
        a = at.attribute(ids["a"])
        if a.container is not None and a.container.metadata:
            break
        assert time.monotonic() < deadline, "metadata never arrived"
        time.sleep(0.02)
    assert (a.container.name, a.container.image_name) == ("exfil", "evil/exfil:1")


def test_a_healthy_engine_still_names_a_new_container_in_its_first_event(tmp_path: Path, fake_docker: Any) -> None:
    fake_docker.add(A, "web", "nginx:1", "sha256:" + "a" * 64)
    pipe, _at, docs, ids = _world(tmp_path, fake_docker)
    pipe.handle_raw(cgroup_rec(E.CGROUP_MKDIR, ids["a"], f"/docker/{A}".encode(), ktime_ns=10**9))
    start = [d for d in docs if d["event"]["action"] == "container_start"]
    assert start and start[0]["container"]["name"] == "web"
