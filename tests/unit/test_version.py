"""The version is written once (pyproject.toml)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from sensor import __version__
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
