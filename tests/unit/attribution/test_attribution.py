"""cgroup path -> container, and metadata from a fake Docker Engine."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sensor.attribution.cgroups import CgroupResolver
from sensor.attribution.containers import Attribution, Attributor, ContainerInfo, ContainerRef, container_from_path
from sensor.attribution.docker_api import DockerClient, DockerError, NotFound

A = "0123456789abcdef" * 4
B = "fedcba9876543210" * 4
UID = "4f1c2d3e-5a6b-4c7d-8e9f-0a1b2c3d4e5f"
UID_ = UID.replace("-", "_")


def _container(a: Attribution) -> ContainerInfo:
    """The attributed container, asserted present."""
    assert a.container is not None
    return a.container


# --- container_from_path ----------------------------------------------------


def test_docker_cgroupfs() -> None:
    assert container_from_path(f"/docker/{A}") == ContainerRef("docker", A)
    assert container_from_path(f"/docker/{A}/") == ContainerRef("docker", A)
    # a sub-cgroup made inside the container still belongs to it
    assert container_from_path(f"/docker/{A}/init") == ContainerRef("docker", A)


def test_docker_systemd() -> None:
    assert container_from_path(f"/system.slice/docker-{A}.scope") == ContainerRef("docker", A)
    assert container_from_path(f"/system.slice/docker-{A}.scope/init.scope") == ContainerRef("docker", A)


def test_containerd_under_kubepods_systemd() -> None:
    path = f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/cri-containerd-{A}.scope"
    assert container_from_path(path) == ContainerRef("containerd", A, UID)


def test_containerd_besteffort_and_guaranteed() -> None:
    path = f"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice/cri-containerd-{B}.scope"
    assert container_from_path(path) == ContainerRef("containerd", B, UID)
    path = f"/kubepods.slice/kubepods-pod{UID_}.slice/cri-containerd-{A}.scope"
    assert container_from_path(path) == ContainerRef("containerd", A, UID)


def test_kubepods_cgroupfs() -> None:
    assert container_from_path(f"/kubepods/burstable/pod{UID}/{A}") == ContainerRef("containerd", A, UID)
    assert container_from_path(f"/kubepods/pod{UID}/{B}") == ContainerRef("containerd", B, UID)


def test_docker_under_kubepods_systemd_keeps_pod_uid() -> None:
    path = f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/docker-{A}.scope"
    assert container_from_path(path) == ContainerRef("docker", A, UID)


def test_crio() -> None:
    path = f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/crio-{A}.scope"
    assert container_from_path(path) == ContainerRef("cri-o", A, UID)


def test_podman() -> None:
    path = f"/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{A}.scope"
    assert container_from_path(path) == ContainerRef("podman", A)
    assert container_from_path(f"/machine.slice/libpod-{B}.scope/container") == ContainerRef("podman", B)


# A cgroup below a container's own is the container's to create (delegation,
# docker-in-docker): whatever it is called, it is that container (issue 10:
# identity is the runtime's, not the workload's).


def test_nested_systemd_scopes_are_the_outer_container() -> None:
    path = f"/system.slice/docker-{A}.scope/system.slice/docker-{B}.scope"
    assert container_from_path(path) == ContainerRef("docker", A)


def test_nested_docker_cgroupfs_is_the_outer_container() -> None:
    # docker-in-docker with the cgroupfs driver: the inner "container" lives
    # in the outer one's subtree, which the outer container controls
    assert container_from_path(f"/docker/{A}/docker/{B}") == ContainerRef("docker", A)


def test_cgroupfs_container_nested_in_systemd_scope_is_the_outer_container() -> None:
    assert container_from_path(f"/system.slice/docker-{A}.scope/docker/{B}") == ContainerRef("docker", A)


@pytest.mark.parametrize(
    "path",
    [
        # a delegated user subtree naming a cgroup after a docker container
        f"/user.slice/user-1000.slice/user@1000.service/app.slice/docker-{A}.scope",
        f"/user.slice/user-1000.slice/user@1000.service/docker/{A}",
        # a service's own subtree (delegated to it)
        f"/system.slice/myservice.service/docker-{A}.scope",
        f"/system.slice/containerd.service/docker/{A}",
        # runtimes outside their own parents
        f"/system.slice/cri-containerd-{A}.scope",
        f"/machine.slice/docker-{A}.scope",
        f"/kubepods.slice/docker-{A}.scope",
        f"/somewhere/docker/{A}",
        f"/user.slice/user-1000.slice/user@1001.service/user.slice/libpod-{A}.scope",
    ],
)
def test_container_names_outside_the_runtimes_parents_are_not_containers(path: str) -> None:
    assert container_from_path(path) is None


@pytest.mark.parametrize(
    "path",
    [
        "",
        "/",
        "/init.scope",
        "/system.slice",
        "/system.slice/docker.service",
        "/system.slice/containerd.service",
        "/system.slice/sshd.service",
        "/user.slice/user-1000.slice/session-3.scope",
        "/user.slice/user-1000.slice/user@1000.service/app.slice/dbus.socket",
        "/kubepods.slice/kubepods-burstable.slice",
        f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice",
        "/docker",
        f"/docker/{A[:12]}",
        f"/system.slice/docker-{A[:63]}.scope",
        f"/system.slice/docker-{A.upper()}.scope",
    ],
)
def test_host_paths(path: str) -> None:
    assert container_from_path(path) is None


# --- Attributor with a fake engine -------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def cgtree(tmp_path: Path) -> tuple[CgroupResolver, dict[str, int]]:
    root = tmp_path / "cg"
    dirs = {
        "a": root / "system.slice" / f"docker-{A}.scope",
        "b": root / "docker" / B,
        "host": root / "system.slice" / "cron.service",
        "pod": root / "kubepods.slice" / f"kubepods-pod{UID_}.slice" / f"cri-containerd-{A}.scope",
    }
    for d in dirs.values():
        d.mkdir(parents=True)
    r = CgroupResolver(str(root), rescan_interval=0)
    r.scan()
    return r, {k: os.stat(d).st_ino for k, d in dirs.items()}


def test_docker_client_container_summary(fake_docker) -> None:
    fake_docker.add(A, "web", "nginx:1.27", "sha256:" + "1" * 64)
    # the engine's id filter is a pattern: a short id matches both; only an exact Id is taken
    fake_docker.add("x" + A[:63], "other", "nginx:1.27", "sha256:" + "2" * 64)
    c = DockerClient(fake_docker.socket_path, timeout=2)
    s = c.container_summary(A)
    assert (s["Id"], s["Names"], s["Image"]) == (A, ["/web"], "nginx:1.27")
    with pytest.raises(NotFound):
        c.container_summary(B)
    with pytest.raises(NotFound):
        c.container_summary(A[:12])  # only the full id is accepted
    with pytest.raises(DockerError):
        DockerClient(fake_docker.socket_path + ".missing", timeout=0.5).container_summary(A)


def test_metadata_filled_from_engine(fake_docker, cgtree) -> None:
    resolver, ids = cgtree
    labels = {"io.kubernetes.pod.name": "api-7d9f", "io.kubernetes.pod.namespace": "prod", "team": "x"}
    fake_docker.add(A, "web-1", "registry.example/web:2.3", "sha256:" + "c" * 64, labels)
    statuses: list[tuple[str, str]] = []
    at = Attributor(
        resolver, DockerClient(fake_docker.socket_path, 2.0), on_runtime_status=lambda s, d: statuses.append((s, d))
    )
    a = at.attribute(ids["a"])
    assert not a.is_host
    assert a.cgroup_path == f"/system.slice/docker-{A}.scope"
    c = a.container
    assert c is not None
    assert (c.id, c.runtime) == (A, "docker")
    assert c.name == "web-1"  # leading slash removed
    assert c.image_name == "registry.example/web:2.3"
    assert c.image_id == "sha256:" + "c" * 64
    assert c.labels == labels
    assert c.pod_name == "api-7d9f" and c.pod_namespace == "prod"
    assert c.metadata is True
    assert at.runtime_status == "ok"
    assert statuses == [("ok", "")]
    # one list entry; the image is asked for its labels since identity labels are present
    assert len(fake_docker.requests) == 2 and fake_docker.requests[0].startswith("/containers/json?all=1&filters=")
    assert fake_docker.requests[1] == "/images/sha256%3A" + "c" * 64 + "/json"


def test_metadata_is_cached(fake_docker, cgtree) -> None:
    resolver, ids = cgtree
    fake_docker.add(A, "web-1", "nginx", "sha256:1")
    at = Attributor(resolver, DockerClient(fake_docker.socket_path, 2.0))
    first = at.attribute(ids["a"]).container
    for _ in range(5):
        assert at.attribute(ids["a"]).container is first
    assert len(fake_docker.requests) == 1
    assert at.lookups == 1
    assert len(at) == 1


def test_host_cgroup_is_not_looked_up(fake_docker, cgtree) -> None:
    resolver, ids = cgtree
    at = Attributor(resolver, DockerClient(fake_docker.socket_path, 2.0))
    a = at.attribute(ids["host"])
    assert a.is_host and a.container is None
    assert a.cgroup_path == "/system.slice/cron.service"
    assert fake_docker.requests == []


def test_non_docker_runtime_is_not_asked_to_docker(fake_docker, cgtree) -> None:
    resolver, ids = cgtree
    at = Attributor(resolver, DockerClient(fake_docker.socket_path, 2.0))
    c = at.attribute(ids["pod"]).container
    assert c is not None and c.runtime == "containerd" and c.pod_uid == UID
    assert c.metadata is False
    assert fake_docker.requests == []


def test_unknown_container_is_negatively_cached(fake_docker, cgtree) -> None:
    resolver, ids = cgtree
    clock = Clock()
    at = Attributor(resolver, DockerClient(fake_docker.socket_path, 2.0), negative_cache_seconds=30, clock=clock)
    c = at.attribute(ids["b"]).container
    assert c is not None and c.id == B and c.name is None and not c.metadata
    assert at.runtime_status == "ok"  # the engine answered (404)
    at.attribute(ids["b"])
    assert len(fake_docker.requests) == 1
    # the container appears in the engine; it is found after the negative cache expires
    fake_docker.add(B, "late", "alpine", "sha256:2")
    clock.t += 29.9
    assert _container(at.attribute(ids["b"])).name is None
    assert len(fake_docker.requests) == 1
    clock.t += 0.1
    assert _container(at.attribute(ids["b"])).name == "late"
    assert len(fake_docker.requests) == 2


def test_unreachable_engine_keeps_id_and_reports_once(tmp_path: Path, cgtree) -> None:
    resolver, ids = cgtree
    clock = Clock()
    calls: list[tuple[str, str]] = []
    docker = DockerClient(str(tmp_path / "no-docker.sock"), timeout=0.5)
    at = Attributor(
        resolver, docker, negative_cache_seconds=30, clock=clock, on_runtime_status=lambda s, d: calls.append((s, d))
    )
    a = at.attribute(ids["a"])
    assert a.container is not None
    assert a.container.id == A and a.container.runtime == "docker"
    assert a.container.name is None and a.container.metadata is False
    assert at.runtime_status == "unreachable"
    assert len(calls) == 1 and calls[0][0] == "unreachable"
    assert "no-docker.sock" in calls[0][1]
    assert (at.lookups, at.lookup_failures) == (1, 1)

    # within the negative cache: no new attempt
    clock.t += 10
    at.attribute(ids["a"])
    assert at.lookups == 1
    # after it: one retry, still unreachable, callback not repeated
    clock.t += 20
    at.attribute(ids["a"])
    assert at.lookups == 2
    assert len(calls) == 1


def test_engine_comes_back_after_negative_cache(tmp_path: Path, cgtree) -> None:
    from tests.support.docker_fake import FakeDockerEngine

    resolver, ids = cgtree
    clock = Clock()
    calls: list[str] = []
    sock = str(tmp_path / "later.sock")
    at = Attributor(
        resolver,
        DockerClient(sock, timeout=0.5),
        negative_cache_seconds=5,
        clock=clock,
        on_runtime_status=lambda s, d: calls.append(s),
    )
    assert _container(at.attribute(ids["a"])).name is None
    engine = FakeDockerEngine(sock).start()
    try:
        engine.add(A, "back", "nginx", "sha256:3")
        clock.t += 1
        assert _container(at.attribute(ids["a"])).name is None
        assert engine.requests == []
        clock.t += 4
        assert _container(at.attribute(ids["a"])).name == "back"
        assert calls == ["unreachable", "ok"]
        assert at.runtime_status == "ok"
    finally:
        engine.stop()


def test_no_docker_client(cgtree) -> None:
    resolver, ids = cgtree
    at = Attributor(resolver, None)
    c = at.attribute(ids["a"]).container
    assert c is not None and c.id == A and not c.metadata
    assert at.runtime_status == "unknown"


def test_forget_container(fake_docker, cgtree) -> None:
    resolver, ids = cgtree
    fake_docker.add(A, "web", "nginx", "sha256:1")
    at = Attributor(resolver, DockerClient(fake_docker.socket_path, 2.0))
    at.attribute(ids["a"])
    at.forget_container(A)
    assert len(at) == 0
    at.attribute(ids["a"])
    assert len(fake_docker.requests) == 2


def test_unknown_cgroup_id_is_host_with_no_path(cgtree) -> None:
    resolver, _ids = cgtree
    a = Attributor(resolver, None).attribute(2**63 + 1)
    assert a.is_host and a.cgroup_path is None


# --- identity labels: the runtime's, not the image's (issue 10) ---------------------------


@pytest.mark.parametrize(
    ("image_labels", "container_labels", "workload"),
    [
        # the image carries the label, the container was not given one: the image does not choose
        ({"io.sluice.workload": "payments"}, {"io.sluice.workload": "payments"}, "evil/app"),
        # the operator set it on the container (another value than the image's): it counts
        ({"io.sluice.workload": "payments"}, {"io.sluice.workload": "batch"}, "batch"),
        # set on the container, the image has none: it counts
        ({}, {"io.sluice.workload": "batch"}, "batch"),
        # a pod identity baked into the image is not a pod
        (
            {"io.kubernetes.pod.name": "api-7d9f", "io.kubernetes.pod.namespace": "prod"},
            {"io.kubernetes.pod.name": "api-7d9f", "io.kubernetes.pod.namespace": "prod"},
            "evil/app",
        ),
    ],
)
def test_an_image_label_does_not_choose_the_workload(
    fake_docker, cgtree, image_labels: dict[str, str], container_labels: dict[str, str], workload: str
) -> None:
    from sensor.attribution.workload import workload_of

    resolver, ids = cgtree
    image_id = "sha256:" + "d" * 64
    fake_docker.images[image_id] = image_labels
    fake_docker.add(A, "web-1", "evil/app:1", image_id, {**container_labels, "team": "x"})
    at = Attributor(resolver, DockerClient(fake_docker.socket_path, 2.0))
    a = at.attribute(ids["a"])
    assert workload_of(a) == workload
    assert a.container is not None and a.container.labels["team"] == "x"  # every label still shown
    if workload == "evil/app":
        assert a.container.pod_name is None
