"""A hostile container against the real sensor (issue 10): privileged
tests, run with the privileged suite's fixtures and harness (a private
dockerd, the sink netns on 198.18.0.0/16, the real `sluice run`)."""

from __future__ import annotations

import pytest

from tests.privileged.conftest import base, docker, net, no_leaked_sensor  # noqa: F401  (fixtures)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/adversarial" in str(item.fspath):
            item.add_marker(pytest.mark.privileged)
