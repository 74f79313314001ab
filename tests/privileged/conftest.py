"""Fixtures for privileged tests. They need root, bcc, a kernel build tree
and dockerd; when any is missing they FAIL with what is missing (never skip:
CI runs as root and must prove the sensor on a real kernel). Deselect them on
a workstation with `-m "not privileged"`.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from .harness import Docker, SensorProc, SinkNet, prerequisite_problems


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/privileged" in str(item.fspath):
            item.add_marker(pytest.mark.privileged)


@pytest.fixture(scope="session")
def base() -> Iterator[Path]:
    problems = prerequisite_problems()
    if problems:
        pytest.fail(
            "privileged tests cannot run: "
            + "; ".join(problems)
            + " (run `sudo make test`, or deselect with -m 'not privileged')",
            pytrace=False,
        )
    d = Path(tempfile.mkdtemp(prefix="sluice-test-"))
    yield d
    if not os.environ.get("SLUICE_KEEP_TEST_DIR"):  # keep outputs for debugging
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session")
def docker(base: Path) -> Iterator[Docker]:
    d = Docker(base / "docker")
    d.start()
    try:
        d.build_image()
        yield d
    finally:
        d.stop()


@pytest.fixture(scope="session")
def net(base: Path) -> Iterator[SinkNet]:
    n = SinkNet(base)
    n.start()
    yield n
    n.stop()


@pytest.fixture(autouse=True)
def no_leaked_sensor() -> Iterator[None]:
    """A test that fails between starting and stopping a sensor must not
    leave it running for the tests after it."""
    before = set(map(id, SensorProc.started))
    yield
    for s in SensorProc.started:
        if id(s) not in before and s.proc is not None and s.proc.poll() is None and s is not _SESSION.get("sensor"):
            s.stop()


_SESSION: dict[str, SensorProc] = {}


@pytest.fixture(scope="session")
def sensor(base: Path, docker: Docker) -> Iterator[SensorProc]:
    s = SensorProc(base, docker.sock)
    s.start()
    _SESSION["sensor"] = s
    yield s
    s.stop()
