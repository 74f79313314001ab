"""Container metadata from OCI bundles (containerd and CRI-O under
Kubernetes): annotations, bundle lookup, errors, and the Attributor using
them for non-docker containers."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from sensor.attribution.cgroups import CgroupResolver
from sensor.attribution.containers import Attribution, Attributor, ContainerInfo
from sensor.attribution.oci import MAX_CONFIG_BYTES, BundleError, find_config, from_annotations, read_metadata
from sensor.attribution.workload import workload_of
from sensor.config import load_config
from sensor.errors import ConfigError

C = "c0ffee" * 10 + "abcd"
UID = "4f1c2d3e-5a6b-4c7d-8e9f-0a1b2c3d4e5f"


def _container(a: Attribution) -> ContainerInfo:
    """The attributed container, asserted present."""
    assert a.container is not None
    return a.container


CONTAINERD = {
    "io.kubernetes.cri.container-type": "container",
    "io.kubernetes.cri.container-name": "api",
    "io.kubernetes.cri.image-name": "registry.example/shop/api:1.4.2",
    "io.kubernetes.cri.sandbox-name": "api-7d9f8c6b5-x2k4q",
    "io.kubernetes.cri.sandbox-namespace": "shop",
    "io.kubernetes.cri.sandbox-uid": UID,
    "io.kubernetes.cri.sandbox-id": "f" * 64,
}
CRIO = {
    "io.kubernetes.cri-o.ContainerType": "container",
    "io.kubernetes.container.name": "worker",
    "io.kubernetes.cri-o.ImageName": "quay.example/batch/worker:7",
    "io.kubernetes.pod.name": "worker-0",
    "io.kubernetes.pod.namespace": "batch",
    "io.kubernetes.pod.uid": UID,
}
PATTERNS = (
    "{root}/containerd/io.containerd.runtime.v2.task/*/{id}/config.json",
    "{root}/containers/storage/overlay-containers/{id}/userdata/config.json",
)


def _patterns(root: Path) -> tuple[str, ...]:
    return tuple(p.replace("{root}", str(root)) for p in PATTERNS)


def _bundle(root: Path, rel: str, annotations: dict[str, str] | None, raw: bytes | None = None) -> Path:
    p = root / rel / "config.json"
    p.parent.mkdir(parents=True)
    p.write_bytes(
        raw
        if raw is not None
        else json.dumps({"ociVersion": "1.0.2", "process": {"args": ["/app"]}, "annotations": annotations}).encode()
    )
    return p


def test_containerd_cri_annotations() -> None:
    md = from_annotations(CONTAINERD, "/x/config.json")
    assert md.name == "api" and md.image_name == "registry.example/shop/api:1.4.2" and not md.sandbox
    assert md.labels == {
        "io.kubernetes.pod.name": "api-7d9f8c6b5-x2k4q",
        "io.kubernetes.pod.namespace": "shop",
        "io.kubernetes.pod.uid": UID,
        "io.kubernetes.container.name": "api",
    }


def test_crio_annotations() -> None:
    md = from_annotations(CRIO, "/x/config.json")
    assert md.name == "worker" and md.image_name == "quay.example/batch/worker:7"
    assert md.labels["io.kubernetes.pod.name"] == "worker-0" and md.labels["io.kubernetes.pod.namespace"] == "batch"


def test_sandbox_is_named_pod_and_non_strings_are_ignored() -> None:
    # non-string keys and values on purpose: typed Any so the call accepts them
    annotations: dict[Any, Any] = {
        "io.kubernetes.cri.container-type": "sandbox",
        "io.kubernetes.cri.sandbox-name": "web-1",
        "io.kubernetes.cri.sandbox-namespace": 7,
        3: "x",
    }
    md = from_annotations(annotations, "/x")
    assert md.sandbox and md.name == "POD"
    assert md.labels == {"io.kubernetes.pod.name": "web-1"}


def test_find_config_any_containerd_namespace_and_crio(tmp_path: Path) -> None:
    assert find_config(C, _patterns(tmp_path)) is None
    p = _bundle(tmp_path, f"containerd/io.containerd.runtime.v2.task/k8s.io/{C}", CONTAINERD)
    assert find_config(C, _patterns(tmp_path)) == str(p)
    other = "d" * 64
    q = _bundle(tmp_path, f"containers/storage/overlay-containers/{other}/userdata", CRIO)
    assert find_config(other, _patterns(tmp_path)) == str(q)
    # the id is matched literally: a pattern character in it matches nothing else
    assert find_config("*", _patterns(tmp_path)) is None


def test_find_config_under_a_host_root(tmp_path: Path) -> None:
    _bundle(tmp_path / "host" / "run", f"containerd/io.containerd.runtime.v2.task/k8s.io/{C}", CONTAINERD)
    pats = ("/run/containerd/io.containerd.runtime.v2.task/*/{id}/config.json",)
    assert find_config(C, pats, root=str(tmp_path / "host")) is not None


def test_read_metadata_errors_are_explained(tmp_path: Path) -> None:
    pats = _patterns(tmp_path)
    assert read_metadata(C, pats) is None
    _bundle(tmp_path, f"containerd/io.containerd.runtime.v2.task/k8s.io/{C}", None, raw=b"{not json")
    with pytest.raises(BundleError, match="not JSON"):
        read_metadata(C, pats)
    big = "e" * 64
    _bundle(tmp_path, f"containerd/io.containerd.runtime.v2.task/k8s.io/{big}", None, raw=b" " * (MAX_CONFIG_BYTES + 1))
    with pytest.raises(BundleError, match="larger than"):
        read_metadata(big, pats)
    # a spec without annotations (plain containerd, not Kubernetes): found, no identity
    plain = "a" * 64
    _bundle(tmp_path, f"containerd/io.containerd.runtime.v2.task/default/{plain}", None, raw=b'{"ociVersion": "1"}')
    md = read_metadata(plain, pats)
    assert md is not None and md.name is None and md.labels == {}


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def _pod_cgroup(tmp_path: Path) -> tuple[CgroupResolver, int]:
    d = tmp_path / "cg" / "kubepods.slice" / f"kubepods-pod{UID.replace('-', '_')}.slice" / f"cri-containerd-{C}.scope"
    d.mkdir(parents=True)
    r = CgroupResolver(str(tmp_path / "cg"), rescan_interval=0)
    r.scan()
    return r, os.stat(d).st_ino


def test_attributor_reads_the_bundle_of_a_kubernetes_container(tmp_path: Path) -> None:
    resolver, cgid = _pod_cgroup(tmp_path)
    _bundle(tmp_path, f"containerd/io.containerd.runtime.v2.task/k8s.io/{C}", CONTAINERD)
    at = Attributor(resolver, None, oci_bundles=_patterns(tmp_path))
    a = at.attribute(cgid)
    c = a.container
    assert c is not None and c.runtime == "containerd" and c.metadata
    assert (c.name, c.image_name, c.pod_uid) == ("api", "registry.example/shop/api:1.4.2", UID)
    assert (c.pod_name, c.pod_namespace) == ("api-7d9f8c6b5-x2k4q", "shop")
    assert workload_of(a) == "k8s:shop/api/api"  # baselines follow the Deployment, not the pod
    st = at.lookup_stats()
    assert (st["lookups"], st["lookup_failures"], st["containers_without_metadata"]) == (1, 0, 0)


def test_attributor_bundle_not_found_is_retried_after_the_negative_cache(tmp_path: Path) -> None:
    resolver, cgid = _pod_cgroup(tmp_path)
    clock = Clock()
    at = Attributor(resolver, None, negative_cache_seconds=5, clock=clock, oci_bundles=_patterns(tmp_path))
    c = at.attribute(cgid).container
    assert c is not None and not c.metadata and c.name is None
    assert workload_of(at.attribute(cgid)) == f"container:{C[:12]}"
    assert at.lookup_stats()["containers_without_metadata"] == 1
    _bundle(tmp_path, f"containerd/io.containerd.runtime.v2.task/k8s.io/{C}", CONTAINERD)
    clock.t += 4
    assert _container(at.attribute(cgid)).name is None and at.lookups == 1
    clock.t += 1
    a = at.attribute(cgid)
    assert _container(a).name == "api" and at.lookups == 2 and at.lookup_failures == 1
    assert workload_of(a) == "k8s:shop/api/api"  # the cached id-only workload was replaced


def test_attributor_reports_a_corrupt_bundle(tmp_path: Path) -> None:
    resolver, cgid = _pod_cgroup(tmp_path)
    _bundle(tmp_path, f"containerd/io.containerd.runtime.v2.task/k8s.io/{C}", None, raw=b"\x00garbage")
    at = Attributor(resolver, None, oci_bundles=_patterns(tmp_path))
    c = at.attribute(cgid).container
    assert c is not None and not c.metadata
    st = at.lookup_stats()
    assert st["lookup_failures"] == 1 and "not JSON" in st["last_bundle_errors"][0]


def test_without_bundle_patterns_nothing_is_read(tmp_path: Path) -> None:
    resolver, cgid = _pod_cgroup(tmp_path)
    _bundle(tmp_path, f"containerd/io.containerd.runtime.v2.task/k8s.io/{C}", CONTAINERD)
    at = Attributor(resolver, None)
    assert _container(at.attribute(cgid)).name is None and at.lookups == 0


def test_config_checks_bundle_patterns(tmp_path: Path) -> None:
    cfg = load_config(None)
    assert any("io.containerd.runtime.v2.task" in p for p in cfg.runtime.oci_bundles)
    bad = tmp_path / "bad.toml"
    bad.write_text('[runtime]\noci_bundles = ["run/containerd/{id}/config.json"]\n')
    with pytest.raises(ConfigError, match=r'oci_bundles.*"\{id\}"') as e:
        load_config(str(bad))
    assert e.value.line == 2
    bad.write_text('[runtime]\noci_bundles = ["/run/containerd/config.json"]\n')
    with pytest.raises(ConfigError):
        load_config(str(bad))


def test_doctor_reports_the_fixed_directory_of_a_bundle_pattern() -> None:
    from sensor.ops.doctor import _pattern_dir

    assert (
        _pattern_dir("/run/containerd/io.containerd.runtime.v2.task/*/{id}/config.json")
        == "/run/containerd/io.containerd.runtime.v2.task"
    )
    assert (
        _pattern_dir("/run/containers/storage/overlay-containers/{id}/userdata/config.json")
        == "/run/containers/storage/overlay-containers"
    )
    assert _pattern_dir("/{id}/config.json") == "/"
