"""The version is written once (pyproject.toml); the sensor's own memory
comes from psutil under the /proc/self/status names status and bench use."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from sensor import __version__
from sensor.kernel.memory import resident_kb
from sensor.outputs import ecs

ROOT = Path(__file__).resolve().parents[2]
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


def test_version_comes_from_pyproject() -> None:
    assert __version__ == VERSION
    assert ecs.base(0.0, "h", "event", ["network"], ["info"], "x", "sluice.x")["agent"]["version"] == VERSION


def test_packaging_names_the_same_version() -> None:
    """Image tags and labels in packaging/ are copies a release must bump too."""
    found = []
    for p in (ROOT / "packaging").rglob("*"):
        if p.is_file() and p.suffix in ("", ".md", ".yaml", ".yml") or p.name == "Dockerfile":
            text = p.read_text(errors="replace")
            found += re.findall(r"sluice:(\d+\.\d+\.\d+)", text)
            found += re.findall(r'image\.version="([^"]+)"', text)
    assert found and set(found) == {VERSION}


def test_resident_memory_matches_proc_status() -> None:
    mine = resident_kb()
    status = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        k, _, v = line.partition(":")
        if k in ("VmRSS", "RssAnon", "RssFile", "RssShmem"):
            status[k] = int(v.split()[0])
    assert set(mine) == {"VmRSS", "RssAnon", "RssFile"}
    # the two reads are a moment apart: allow a little drift
    assert abs(mine["VmRSS"] - status["VmRSS"]) <= max(2048, status["VmRSS"] // 20)
    assert abs(mine["RssFile"] - (status["RssFile"] + status["RssShmem"])) <= 2048
    assert abs(mine["RssAnon"] + mine["RssFile"] - mine["VmRSS"]) <= 1  # kB rounding
