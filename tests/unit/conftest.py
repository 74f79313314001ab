"""Shared seams for the unit tests: a fake Docker Engine on a unix socket."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

# Helpers (_records.py, _docker_fake.py) live next to this file.
sys.path.insert(0, os.path.dirname(__file__))

from _docker_fake import FakeDockerEngine


@pytest.fixture
def fake_docker(tmp_path: Path):
    engine = FakeDockerEngine(str(tmp_path / "docker.sock")).start()
    try:
        yield engine
    finally:
        engine.stop()
