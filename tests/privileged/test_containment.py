"""The response path on real containers: `sluice isolate`, `sluice block`
and `sluice release` drop and restore a container's egress in the kernel,
the events say so, the counts are right, entries survive a sensor restart
and are released when their container goes."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from emulation.lab import SECOND_IP

from .harness import SINK_IP, SLUICE, Docker, SensorProc, SinkNet, action, cid_of, run_container


def _send(docker: Docker, cid: str, ip: str, tag: str) -> bool:
    """One short TCP message from the container; True if it got through."""
    r = subprocess.run(
        ["docker", "exec", cid, "sh", "-c", f"echo {tag} | nc -w 3 {ip} 9001"],
        capture_output=True,
        text=True,
        timeout=30,
        env=docker.env,
    )
    return r.returncode == 0


def _cli(s: SensorProc, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    r = subprocess.run([SLUICE, *args, "-c", str(s.config)], capture_output=True, text=True, timeout=30)
    if check:
        assert r.returncode == 0, r.stdout + r.stderr
    return r


def _entries(s: SensorProc) -> list[dict[str, Any]]:
    return [json.loads(x) for x in _cli(s, "containment", "--json").stdout.splitlines() if x.strip()]


def test_isolate_block_release_and_restart(base: Path, docker: Docker, net: SinkNet) -> None:
    s = SensorProc(base, docker.sock, name="contain")
    s.start()
    a = run_container(docker, net, "sleep 300", wait=False)
    b = run_container(docker, net, "sleep 300", wait=False)
    try:
        assert _send(docker, a, SINK_IP, "before")
        assert "nothing is contained" in _cli(s, "containment").stdout

        # isolate a: its egress is dropped, b's is not
        r = _cli(s, "isolate", a[:12], "--reason", "SL-EXF-002 on it")
        assert "isolated container" in r.stdout
        assert not _send(docker, a, SINK_IP, "isolated")
        assert not _send(docker, a, SECOND_IP, "isolated2")
        assert _send(docker, b, SINK_IP, "neighbour")
        (e,) = _entries(s)
        assert (e["kind"], e["container_id"], e["reason"]) == ("isolate", a, "SL-EXF-002 on it")
        assert e["dropped"] > 0
        assert "containment: 1 entry" in s.status().stdout
        doc = s.wait_for(lambda d: action(d) == "container_isolated" and cid_of(d) == a, what="isolation event")
        assert doc["event"]["type"] == ["denied"] and doc["sluice"]["containment"]["reason"] == "SL-EXF-002 on it"
        again = _cli(s, "isolate", a[:12], check=False)
        assert again.returncode != 0 and "already isolated" in again.stderr

        # restart: the entry is re-applied; while no sensor runs, nothing is contained
        assert s.stop() == 0
        assert _send(docker, a, SINK_IP, "no-sensor")
        s.start()
        assert not _send(docker, a, SINK_IP, "after-restart")
        s.wait_for(
            lambda d: action(d) == "container_isolated" and cid_of(d) == a and "re-applied" in d["message"],
            what="re-applied isolation",
        )

        _cli(s, "release", a[:12])
        assert _send(docker, a, SINK_IP, "released")
        assert _entries(s) == []
        rel = s.wait_for(lambda d: action(d) == "containment_released" and cid_of(d) == a, what="release event")
        assert rel["sluice"]["containment"]["dropped_packets"] > 0  # read before the kernel counter went

        # block one destination for one container
        _cli(s, "block", SECOND_IP, "--container", a[:12])
        assert not _send(docker, a, SECOND_IP, "blocked")
        assert _send(docker, a, SINK_IP, "other-dest")
        assert _send(docker, b, SECOND_IP, "other-container")
        _cli(s, "release", a[:12], "--destination", SECOND_IP)
        assert _send(docker, a, SECOND_IP, "unblocked")

        # node-wide block
        _cli(s, "block", SECOND_IP)
        assert not _send(docker, a, SECOND_IP, "nodewide-a") and not _send(docker, b, SECOND_IP, "nodewide-b")
        (e,) = _entries(s)
        assert e["container_id"] is None and e["dropped"] > 0
        _cli(s, "release", "--destination", SECOND_IP)
        assert _send(docker, b, SECOND_IP, "nodewide-released")

        # bad requests are explained
        r = _cli(s, "block", "not-an-ip", check=False)
        assert r.returncode != 0 and "not an IP address" in r.stderr
        r = _cli(s, "isolate", "nosuchcontainer", check=False)
        assert r.returncode != 0 and "no running container matches" in r.stderr

        # an isolated container that goes is released by itself
        _cli(s, "isolate", b[:12])
        docker.docker("rm", "-f", b)
        s.wait_for(
            lambda d: action(d) == "containment_released" and cid_of(d) == b and "gone" in d["message"],
            what="release of a removed container",
            timeout=20,
        )
        # listed as what it left in the kernel (its cgroup stays contained)
        (gone,) = _entries(s)
        assert (gone["state"], gone["container_id"]) == ("lingering", b), gone
        saved = json.loads((s.dir / "containment.json").read_text())
        assert saved["entries"] == [] and [e["container_id"] for e in saved["lingering"]] == [b]
    finally:
        docker.docker("rm", "-f", a, b, check=False)
        assert s.stop() == 0
