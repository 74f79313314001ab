"""Shared seams for the unit tests: a fake Docker Engine on a unix socket.

Helpers shared between tests live in the tests.support package (and the
kernel record builders in emulation.records, which the benchmarks use too)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.docker_fake import FakeDockerEngine


@pytest.fixture
def fake_docker(tmp_path: Path) -> Iterator[FakeDockerEngine]:
    engine = FakeDockerEngine(str(tmp_path / "docker.sock")).start()
    try:
        yield engine
    finally:
        engine.stop()
