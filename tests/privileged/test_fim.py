"""Orchestration config integrity (SL-FIM-001) on the real kernel: changes
made from the host and from inside a container, with the writer named."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

from emulation.lab import wait_until

from .harness import IMAGE, Docker, SensorProc, action, cid_of, run_container


def test_config_changes_raise_alerts_naming_writer_and_container(base: Path, docker: Docker) -> None:
    etc = base / "fim-etc"
    (etc / "docker").mkdir(parents=True)
    (etc / "manifests").mkdir()
    (etc / "docker" / "daemon.json").write_text("{}\n")
    s = SensorProc(
        base,
        docker.sock,
        name="fim",
        extra_config=(
            f'[rules.SL-FIM-001]\npaths = ["{etc}/docker/daemon.json", "{etc}/manifests/", "{etc}/cni/net.d/"]\n'
            "rescan_seconds = 1.0\n"
        ),
    )
    s.start()
    try:
        st = s.status("--json").stdout
        assert "watching (fanotify)" in st and "absent" in st
        # 1. from the host: an atomic save (temp file + rename), as editors do
        p = subprocess.Popen(
            [
                "sh",
                "-c",
                f"echo '{{\"debug\": true}}' > {etc}/docker/daemon.json.new && "
                f"mv {etc}/docker/daemon.json.new {etc}/docker/daemon.json",
            ]
        )
        p.wait()
        host = s.wait_for(
            lambda d: action(d) == "orchestration_config_changed" and d["file"]["path"] == f"{etc}/docker/daemon.json",
            what="host FIM alert",
        )
        assert host["sluice"]["attribution"] == "host" and "container" not in host
        assert "rename_to" in host["sluice"]["evidence"]["operations"]
        assert host["event"]["severity"] == 47
        assert host["rule"]["id"] == "SL-FIM-001" and "daemon.json" in host["message"]
        # 2. from inside a container with the directory bind-mounted
        cid = run_container(
            docker,
            None,
            # the writer outlives the sensor's lag: the event's pid is
            # attributed to its container through /proc while it lives
            "echo 'kind: Pod' > /host-manifests/backdoor.yaml; sleep 3",
            volumes=(f"{etc}/manifests:/host-manifests",),
        )
        d = s.wait_for(
            lambda d: action(d) == "orchestration_config_changed" and cid_of(d) == cid, what="container FIM alert"
        )
        assert d["file"]["path"] == f"{etc}/manifests/backdoor.yaml"
        assert d["container"]["image"]["name"] == IMAGE
        assert d["event"]["severity"] == 47 + 25
        assert d["process"]["pid"] > 0 and "creation" in d["event"]["type"]
        # 3. a directory that appears later is picked up by the rescan
        (etc / "cni" / "net.d").mkdir(parents=True)
        netd = str(etc / "cni" / "net.d")

        def fim_hooks() -> dict[str, str]:
            r = s.status("--json", check=False)
            hooks = json.loads(r.stdout).get("hooks", {}) if r.returncode == 0 else {}
            return {k[4:].rstrip("/"): v for k, v in hooks.items() if k.startswith("fim:")}

        # the rescan watches it (status says so) before the write
        assert wait_until(lambda: fim_hooks().get(netd, "").startswith("watching"), 20), fim_hooks()
        (etc / "cni" / "net.d" / "10-evil.conflist").write_text("{}")
        s.wait_for(
            lambda d: action(d) == "orchestration_config_changed" and d["file"]["path"].endswith("10-evil.conflist"),
            what="FIM alert after rescan",
        )
        # unrelated files in a watched directory are not reported
        (etc / "docker" / "unrelated.txt").write_text("x")
        time.sleep(1.5)
        assert not [
            x
            for x in s.docs()
            if action(x) == "orchestration_config_changed" and x["file"]["path"].endswith("unrelated.txt")
        ]
    finally:
        assert s.stop() == 0


def test_host_root_watches_under_it_and_reports_host_paths(base: Path) -> None:
    """In the DaemonSet the node's /etc is mounted at /host/etc."""
    from sensor.ops.fim import FimWatcher

    root = base / "fake-host"
    (root / "etc" / "docker").mkdir(parents=True)
    w = FimWatcher(["/etc/docker/daemon.json"], root=str(root))
    w.start()
    try:
        assert w.status == {"/etc/docker/daemon.json": "watching (fanotify)"}
        (root / "etc" / "docker" / "daemon.json").write_text("{}")
        time.sleep(0.2)
        events = w.read()
        assert [e.path for e in events] == ["/etc/docker/daemon.json"]
        assert "creation" in events[0].operations
    finally:
        w.close()
