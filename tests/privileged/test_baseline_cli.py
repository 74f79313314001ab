"""Baselines through the real CLI and a real sensor: learn (ready while
learning), show, export, merge, reset, and corrupt or newer files refused
and never overwritten."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import msgpack

from .harness import SINK_IP, SLUICE, Docker, SinkNet, run_container


def _cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([SLUICE, *args], capture_output=True, text=True, timeout=timeout)


def _config(base: Path, docker: Docker) -> Path:
    cfg = base / "bl.toml"
    cfg.write_text(
        f'[sensor]\nwindow_seconds = 1.0\ncontrol_socket = "{base}/bl-ctl.sock"\n'
        f'[runtime]\ndocker_socket = "{docker.sock}"\n'
    )
    return cfg


def test_learn_show_export_merge_reset(base: Path, docker: Docker, net: SinkNet) -> None:
    cfg, bl = _config(base, docker), base / "learned.msgpack"
    p = subprocess.Popen(
        [
            SLUICE,
            "baseline",
            "learn",
            "--duration",
            # long enough for the container below to start and run on a
            # loaded machine (its flows must close inside the learning time)
            "20",
            "-c",
            str(cfg),
            "--baseline",
            str(bl),
            "-o",
            str(base / "learn.jsonl"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 30
    while _cli("status", "-c", str(cfg)).returncode != 0:
        assert p.poll() is None, p.communicate()
        assert time.monotonic() < deadline, "learning sensor never ready"
        time.sleep(0.2)
    st = json.loads(_cli("status", "--json", "-c", str(cfg)).stdout)
    assert st["mode"] == "learn"
    cid = run_container(docker, net, f"head -c 50000 /dev/urandom | nc {SINK_IP} 9000; openssl rand -hex 4")
    _out, err = p.communicate(timeout=60)
    assert p.returncode == 0, err
    assert "learned" in err and str(bl) in err
    # progress on stderr, plain lines (not a terminal): the last one says where it ended
    progress = [ln for ln in err.splitlines() if ln.startswith("sluice: learning: ")]
    assert progress, err
    last = progress[-1]
    assert "of 20s, 0s left" in last and " windows, " in last and last.endswith(" workloads"), last
    assert int(last.split(", ")[-2].split()[0]) >= 5  # windows of 1 s
    assert "\x1b" not in err
    assert bl.exists()

    show = _cli("baseline", "show", "--baseline", str(bl))
    assert show.returncode == 0 and "sluice-test" in show.stdout, show.stdout
    exp = json.loads(_cli("baseline", "export", "--baseline", str(bl)).stdout)
    w = exp["workloads"]["sluice-test"]
    assert f"{SINK_IP}|9000|tcp" in w["destinations"]
    assert "/usr/bin/openssl" in w["executables"]
    assert w["windows"] >= 1 and cid

    merged = base / "merged.msgpack"
    m = _cli("baseline", "merge", str(merged), str(bl), str(bl))
    assert m.returncode == 0, m.stderr
    mexp = json.loads(_cli("baseline", "export", "--baseline", str(merged)).stdout)
    assert mexp["workloads"]["sluice-test"]["windows"] == 2 * w["windows"]

    assert _cli("baseline", "reset", "sluice-test", "--baseline", str(merged)).returncode == 0
    assert "sluice-test" not in json.loads(_cli("baseline", "export", "--baseline", str(merged)).stdout)["workloads"]
    assert _cli("baseline", "reset", "no-such", "--baseline", str(merged)).returncode == 1


def test_corrupt_and_newer_baselines_are_refused_untouched(base: Path, docker: Docker) -> None:
    cfg = _config(base, docker)
    corrupt = base / "corrupt.msgpack"
    corrupt.write_bytes(b"\x00\x01 not a baseline")
    newer = base / "newer.msgpack"
    newer.write_bytes(msgpack.packb({"format": "sluice-baseline", "version": 99, "workloads": {}}))
    for path, words in ((corrupt, "corrupt"), (newer, "newer")):
        before = path.read_bytes()
        r = _cli("run", "-c", str(cfg), "--baseline", str(path))
        assert r.returncode == 2 and words in r.stderr and str(path) in r.stderr, r.stderr
        r = _cli("baseline", "learn", "--duration", "2", "-c", str(cfg), "--baseline", str(path))
        assert r.returncode == 2 and words in r.stderr, r.stderr
        r = _cli("baseline", "learn", "--duration", "2", "--replace", "-c", str(cfg), "--baseline", str(path))
        assert r.returncode == 2, r.stderr
        assert path.read_bytes() == before, "a refused baseline file was modified"
    r = _cli("baseline", "merge", str(corrupt), str(newer))
    assert r.returncode == 2 and corrupt.read_bytes().startswith(b"\x00\x01")
