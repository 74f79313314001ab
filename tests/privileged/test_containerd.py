"""Kubernetes containers without the Docker API: a real containerd (the
test dockerd's own) runs a container the way its CRI plugin does for a pod
(namespace k8s.io, a kubepods cgroup path, the CRI annotations in the OCI
spec), and the sensor must attribute the container's execs and egress to
the pod, namespace, container name and image read from the bundle."""

from __future__ import annotations

import json
import secrets
import socket
import subprocess
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from emulation.lab import wait_until
from sensor.attribution.cgroups import find_cgroup2_mount

from .harness import Docker, SensorProc, action, cid_of, sluice_cli

POD, NAMESPACE, CONTAINER = "api-7d9f8c6b5-x2k4q", "shop", "api"
IMAGE = "registry.example/shop/api:1.4.2"


def _remove_pod_cgroups(uid: str) -> None:
    """runc leaves the parents of the container's cgroup (kubepods/besteffort/
    pod<uid>) in every hierarchy; remove ours, and the parents if now empty."""
    roots = [Path("/sys/fs/cgroup")] + [p for p in Path("/sys/fs/cgroup").iterdir() if p.is_dir()]
    for r in roots:
        for d in (r / "kubepods" / "besteffort" / f"pod{uid}", r / "kubepods" / "besteffort", r / "kubepods"):
            try:
                d.rmdir()
            except OSError:
                pass


def _cri_annotations(uid: str) -> dict[str, str]:
    """What containerd's CRI plugin puts in a pod container's OCI spec."""
    return {
        "io.kubernetes.cri.container-type": "container",
        "io.kubernetes.cri.container-name": CONTAINER,
        "io.kubernetes.cri.image-name": IMAGE,
        "io.kubernetes.cri.sandbox-name": POD,
        "io.kubernetes.cri.sandbox-namespace": NAMESPACE,
        "io.kubernetes.cri.sandbox-uid": uid,
    }


def test_containerd_pod_container_is_attributed_from_its_bundle(base: Path, docker: Docker) -> None:
    exec_root = docker.base / "exec" / "containerd"
    sock = exec_root / "containerd.sock"
    assert sock.exists(), f"the test dockerd's containerd socket is not at {sock}"
    bundles = f"{exec_root}/daemon/io.containerd.runtime.v2.task/*/{{id}}/config.json"
    s = SensorProc(base, docker.sock, name="cri", extra_config=f'oci_bundles = ["{bundles}"]\n')
    s.start()
    cid, uid = secrets.token_hex(32), str(uuid.uuid4())
    # a loopback receiver on the host: the container shares the host network
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    port = srv.getsockname()[1]
    received = []

    def drain() -> None:
        conn, _ = srv.accept()
        while chunk := conn.recv(65536):
            received.append(len(chunk))
        conn.close()

    t = threading.Thread(target=drain, daemon=True)
    t.start()
    annotations = _cri_annotations(uid)
    cmd = [
        "ctr",
        "-a",
        str(sock),
        "-n",
        "k8s.io",
        "run",
        "--rm",
        "--net-host",
        "--rootfs",
        "--cgroup",
        f"/kubepods/besteffort/pod{uid}/{cid}",
        "--env",
        "PATH=/bin",
    ]
    for k, v in annotations.items():
        cmd += ["--annotation", f"{k}={v}"]
    # the root filesystem the docker fixture built the test image from
    cmd += [
        str(docker.base / "rootfs"),
        cid,
        "/bin/sh",
        "-c",
        f"head -c 50000 /dev/urandom | nc 127.0.0.1 {port}; sleep 1",
    ]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        t.join(10)
        assert sum(received) == 50000
        flow = s.wait_for(
            lambda d: action(d) == "flow_summary" and cid_of(d) == cid and d["destination"]["port"] == port,
            what="the pod container's flow",
        )
        start = s.wait_for(lambda d: action(d) == "container_start" and cid_of(d) == cid, what="container start")
        execs = s.matching(lambda d: action(d) == "exec" and cid_of(d) == cid)
        assert execs, "no exec attributed to the pod container"
        for d in (flow, start, *execs):
            c = d["container"]
            assert (c["id"], c["runtime"], c["name"], c["image"]["name"]) == (cid, "containerd", CONTAINER, IMAGE), c
            assert d["orchestrator"]["resource"]["name"] == POD and d["orchestrator"]["namespace"] == NAMESPACE, d
            assert d["orchestrator"]["resource"]["id"] == uid  # from the cgroup path

        # the transfer may span two windows: their summaries together
        def counted() -> int:
            flows = s.matching(
                lambda d: action(d) == "flow_summary" and cid_of(d) == cid and d["destination"]["port"] == port
            )
            return sum(d["sluice"]["payload"]["bytes"] for d in flows)

        assert wait_until(lambda: counted() >= 50000, 15), f"the pod container's bytes: {counted()} of 50,000"
        st = json.loads(s.status("--json").stdout)["runtime"]
        assert st["lookups"] >= 1 and "last_bundle_errors" not in st, st
    finally:
        subprocess.run(["ctr", "-a", str(sock), "-n", "k8s.io", "task", "kill", "-s", "KILL", cid], capture_output=True)
        subprocess.run(["ctr", "-a", str(sock), "-n", "k8s.io", "container", "rm", cid], capture_output=True)
        srv.close()
        assert s.stop() == 0
        _remove_pod_cgroups(uid)
    assert not (Path(find_cgroup2_mount()) / "kubepods" / "besteffort" / f"pod{uid}").exists()


def _ctr(sock: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ctr", "-a", str(sock), "-n", "k8s.io", *args], capture_output=True, text=True, timeout=60)


def _run_pod_container(docker: Docker, sock: Path, uid: str, cid: str, script: str) -> None:
    """A container of pod `uid` named CONTAINER, as the CRI plugin runs one
    (detached; host network)."""
    annotations = _cri_annotations(uid)
    cmd = ["run", "-d", "--net-host", "--rootfs", "--cgroup", f"/kubepods/besteffort/pod{uid}/{cid}"]
    cmd += ["--env", "PATH=/bin"]
    for k, v in annotations.items():
        cmd += ["--annotation", f"{k}={v}"]
    r = _ctr(sock, *cmd, str(docker.base / "rootfs"), cid, "/bin/sh", "-c", script)
    assert r.returncode == 0, r.stderr


def _remove(sock: Path, cid: str) -> None:
    _ctr(sock, "task", "kill", "-s", "KILL", cid)
    wait_until(
        lambda: _ctr(sock, "task", "delete", cid).returncode == 0 or "not found" in _ctr(sock, "task", "ls").stdout,
        10,
        0.2,
    )
    _ctr(sock, "container", "rm", cid)


def _active_entry(s: SensorProc) -> dict[str, Any]:
    lines = [json.loads(x) for x in sluice_cli(s, "containment", "--json").splitlines() if x.strip()]
    active = [e for e in lines if e["state"] == "active"]
    assert len(active) == 1, lines
    e: dict[str, Any] = active[0]
    return e


def test_isolation_follows_the_kubelets_re_creation_of_the_container(base: Path, docker: Docker) -> None:
    """The kubelet restarts a killed or crashed container as a new
    container (new id, same pod, same name). Before, the isolation stayed
    with the old id: the re-created container sent freely. Now the entry
    moves to it (pod uid from the cgroup path, the name from the CRI
    annotations) and its sends are dropped."""
    exec_root = docker.base / "exec" / "containerd"
    sock = exec_root / "containerd.sock"
    bundles = f"{exec_root}/daemon/io.containerd.runtime.v2.task/*/{{id}}/config.json"
    s = SensorProc(base, docker.sock, name="crifollow", extra_config=f'oci_bundles = ["{bundles}"]\n')
    s.start()
    uid, first, second = str(uuid.uuid4()), secrets.token_hex(32), secrets.token_hex(32)
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(64)
    srv.settimeout(0.2)
    port = srv.getsockname()[1]
    got: list[tuple[float, bytes]] = []
    done = threading.Event()

    def drain() -> None:
        while not done.is_set():
            try:
                conn, _ = srv.accept()
            except OSError:
                continue
            conn.settimeout(2)
            try:
                data = conn.recv(100)
            except OSError:
                data = b""
            conn.close()
            if data:
                got.append((time.monotonic(), data))

    t = threading.Thread(target=drain, daemon=True)
    t.start()
    try:
        _run_pod_container(docker, sock, uid, first, "sleep 600")
        s.wait_for(lambda d: action(d) == "container_start" and cid_of(d) == first, what="the first container")
        out = sluice_cli(s, "isolate", first[:12])
        assert "isolated" in out, out
        entry = _active_entry(s)
        assert (entry["pod_uid"], entry["pod_container"]) == (uid, CONTAINER), entry
        _remove(sock, first)  # killed: the kubelet starts a new one
        _run_pod_container(
            docker,
            sock,
            uid,
            second,
            f"i=0; while [ $i -lt 60 ]; do echo leak-$i | nc -w 1 127.0.0.1 {port}; i=$((i+1)); sleep 0.2; done",
        )
        followed = s.wait_for(
            lambda d: action(d) == "containment_followed" and second[:12] in d.get("message", ""),
            what="the isolation following the re-created container",
            timeout=20,
        )
        at = time.monotonic()
        time.sleep(4)
        after = [data for when, data in got if when > at + 0.5]
        assert not after, f"the re-created container sent after the isolation followed it: {after[:5]}"
        before = [data for when, data in got if when <= at + 0.5]
        print(f"sends that left before the follow: {len(before)}")
        assert "re-created as" in followed["message"]
        entry = _active_entry(s)
        assert entry["container_id"] == second and first in entry["former_container_ids"], entry
    finally:
        done.set()
        for c in (first, second):
            _remove(sock, c)
        srv.close()
        assert s.stop() == 0
        _remove_pod_cgroups(uid)
