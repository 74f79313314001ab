"""Build-time constants the loader hands to the BPF compiler."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from sensor.config import default_config
from sensor.kernel.loader import cflags, kernel_version


def test_kernel_version_parses_distribution_releases() -> None:
    assert kernel_version("6.1.0-18-amd64") == (6, 1)
    assert kernel_version("5.10.0-28-cloud-amd64") == (5, 10)
    assert kernel_version("5.15.0-1051-aws") == (5, 15)
    assert kernel_version("6.18.0") == (6, 18)
    assert kernel_version("4.19.0+") == (4, 19)
    assert kernel_version("weird") == (0, 0)


def test_sk_storage_on_any_socket_from_5_11() -> None:
    kc = default_config().kernel
    flag = "-DSL_SK_STORAGE_NEEDS_FULLSOCK=1"
    assert flag in cflags(kc, True, Path("/x"), "5.10.0-28-amd64")
    assert flag not in cflags(kc, True, Path("/x"), "5.11.0")
    assert flag not in cflags(kc, True, Path("/x"), "6.1.0-18-amd64")


def test_count_received_off_compiles_the_dns_only_ingress() -> None:
    kc = default_config().kernel
    assert "-DSL_COUNT_RX=0" not in cflags(kc, True, Path("/x"), "6.1.0")
    assert "-DSL_COUNT_RX=0" in cflags(dataclasses.replace(kc, count_received=False), True, Path("/x"), "6.1.0")
