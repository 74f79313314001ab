"""Workload keys: what a baseline is keyed by."""

from __future__ import annotations

import pytest

from sensor.attribution.containers import Attribution, ContainerInfo
from sensor.attribution.workload import container_workload, image_repository, pod_controller, workload_of

CID = "3f" * 32


def info(image: str | None = "nginx:1.25", labels: dict[str, str] | None = None) -> ContainerInfo:
    return ContainerInfo(CID, "docker", name="c", image_name=image, labels=dict(labels or {}))


def k8s(pod: str, ns: str = "prod", cname: str | None = "app", **extra: str) -> dict[str, str]:
    d = {"io.kubernetes.pod.name": pod, "io.kubernetes.pod.namespace": ns, **extra}
    if cname:
        d["io.kubernetes.container.name"] = cname
    return d


def test_label_wins_over_everything() -> None:
    labels = k8s("web-5d8f7c9b6d-x7k2p", **{"io.sluice.workload": "payments-api"})
    assert container_workload(info("registry.local/web:2", labels)) == "payments-api"
    assert container_workload(info(None, {"io.sluice.workload": "x"})) == "x"


def test_empty_label_is_ignored() -> None:
    assert container_workload(info("nginx:1.25", {"io.sluice.workload": ""})) == "nginx"


@pytest.mark.parametrize(
    "pod,controller",
    [
        ("web-5d8f7c9b6d-x7k2p", "web"),  # Deployment: ReplicaSet hash + pod suffix
        ("api-v2-7c9f8b6d54-4jw2q", "api-v2"),
        ("coredns-565d847f94-8c9kn", "coredns"),
        ("db-0", "db"),  # StatefulSet ordinal
        ("kafka-broker-12", "kafka-broker"),
        ("fluentd-x7k2p", "fluentd"),  # DaemonSet / Job suffix
        ("node-exporter-4bq9z", "node-exporter"),
        ("standalone", "standalone"),
    ],
)
def test_pod_controller(pod: str, controller: str) -> None:
    assert pod_controller(pod) == controller


def test_kubernetes_workload_keys() -> None:
    assert container_workload(info("nginx:1", k8s("web-5d8f7c9b6d-x7k2p"))) == "k8s:prod/web/app"
    assert container_workload(info("pg:16", k8s("db-1", ns="data", cname="postgres"))) == "k8s:data/db/postgres"
    assert (
        container_workload(info("fluentd:1", k8s("fluentd-x7k2p", ns="kube-system"))) == "k8s:kube-system/fluentd/app"
    )
    # the pause container has no container name label
    assert container_workload(info("pause:3.9", k8s("web-5d8f7c9b6d-x7k2p", cname=None))) == "k8s:prod/web"
    # two replicas of one Deployment share a workload
    a = container_workload(info("nginx:1", k8s("web-5d8f7c9b6d-x7k2p")))
    b = container_workload(info("nginx:1", k8s("web-5d8f7c9b6d-9qzrt")))
    assert a == b


def test_pod_name_without_namespace_is_not_kubernetes() -> None:
    assert container_workload(info("nginx:1", {"io.kubernetes.pod.name": "web-0"})) == "nginx"


@pytest.mark.parametrize(
    "image,repo",
    [
        ("nginx", "nginx"),
        ("nginx:1.25", "nginx"),
        ("nginx:latest", "nginx"),
        ("library/nginx:1.25-alpine", "library/nginx"),
        ("ghcr.io/acme/api:v2.1.0", "ghcr.io/acme/api"),
        ("registry:5000/team/app", "registry:5000/team/app"),
        ("registry:5000/team/app:1.2", "registry:5000/team/app"),
        ("registry:5000/team/app:1.2@sha256:" + "ab" * 32, "registry:5000/team/app"),
        ("registry:5000/team/app@sha256:" + "ab" * 32, "registry:5000/team/app"),
        ("localhost:5000/app", "localhost:5000/app"),
        ("alpine@sha256:" + "cd" * 32, "alpine"),
    ],
)
def test_image_repository(image: str, repo: str) -> None:
    assert image_repository(image) == repo


def test_image_workload_keeps_baseline_across_upgrades() -> None:
    assert container_workload(info("acme/api:1.0")) == container_workload(info("acme/api:1.1")) == "acme/api"


def test_host_and_imageless_containers() -> None:
    assert workload_of(Attribution(1, "/system.slice/sshd.service", None)) == "host"
    assert workload_of(Attribution(2, "/docker/" + CID, info(None))) == f"container:{CID[:12]}"
    assert workload_of(Attribution(2, "/docker/" + CID, info(""))) == f"container:{CID[:12]}"
    assert len(f"container:{CID[:12]}".split(":")[1]) == 12
