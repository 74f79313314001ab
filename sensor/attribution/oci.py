"""Container metadata from the runtime's OCI bundle, for runtimes without
the Docker Engine API (containerd and CRI-O under Kubernetes).

Before it creates a container (and so its cgroup), the runtime writes the
container's OCI runtime spec to `config.json` in the container's bundle
directory. Under Kubernetes the CRI puts the pod and container identity in
the spec's annotations:

  containerd (CRI plugin)          CRI-O
  io.kubernetes.cri.sandbox-name   io.kubernetes.pod.name
  io.kubernetes.cri.sandbox-namespace  io.kubernetes.pod.namespace
  io.kubernetes.cri.sandbox-uid    io.kubernetes.pod.uid
  io.kubernetes.cri.container-name io.kubernetes.container.name
  io.kubernetes.cri.image-name     io.kubernetes.cri-o.ImageName
  io.kubernetes.cri.container-type io.kubernetes.cri-o.ContainerType  (sandbox|container)

Reading one small file needs no gRPC client and does not wait for the
runtime. Bundle locations are configured as path patterns with `{id}`
(runtime.oci_bundles); they are read under the host root when the sensor
runs in a container with the host's /run mounted elsewhere.
"""

from __future__ import annotations

import glob
import json
import os
from dataclasses import dataclass, field
from typing import Any

# (the pod/container label the rest of Sluice reads, containerd's annotation, CRI-O's)
_IDENTITY = (
    ("io.kubernetes.pod.name", "io.kubernetes.cri.sandbox-name", "io.kubernetes.pod.name"),
    ("io.kubernetes.pod.namespace", "io.kubernetes.cri.sandbox-namespace", "io.kubernetes.pod.namespace"),
    ("io.kubernetes.pod.uid", "io.kubernetes.cri.sandbox-uid", "io.kubernetes.pod.uid"),
    ("io.kubernetes.container.name", "io.kubernetes.cri.container-name", "io.kubernetes.container.name"),
)
_IMAGE = ("io.kubernetes.cri.image-name", "io.kubernetes.cri-o.ImageName")
_TYPE = ("io.kubernetes.cri.container-type", "io.kubernetes.cri-o.ContainerType")

MAX_CONFIG_BYTES = 4 << 20  # a spec is a few KiB; refuse to slurp anything odd


class BundleError(Exception):
    """A bundle's config.json exists but cannot be read as an OCI spec."""


@dataclass
class BundleMetadata:
    path: str
    name: str | None = None
    image_name: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    sandbox: bool = False  # the pod's pause container


def find_config(container_id: str, patterns: list[str] | tuple[str, ...], root: str = "") -> str | None:
    """The first existing config.json for this container id (patterns are
    globs; the id and the root are matched literally)."""
    prefix = glob.escape(root.rstrip("/"))
    for pattern in patterns:
        hits = sorted(
            h for h in glob.glob(prefix + pattern.replace("{id}", glob.escape(container_id))) if os.path.isfile(h)
        )
        if hits:
            return hits[0]
    return None


def from_annotations(annotations: dict[str, Any], path: str) -> BundleMetadata:
    a = {k: v for k, v in annotations.items() if isinstance(k, str) and isinstance(v, str)}
    md = BundleMetadata(path)
    for label, containerd_key, crio_key in _IDENTITY:
        v = a.get(containerd_key) or a.get(crio_key)
        if v:
            md.labels[label] = v
    md.name = md.labels.get("io.kubernetes.container.name")
    md.image_name = next((a[k] for k in _IMAGE if a.get(k)), None)
    md.sandbox = any(a.get(k) == "sandbox" for k in _TYPE)
    if md.sandbox and not md.name:
        md.name = "POD"  # what kubelet and crictl call the pause container
    return md


def read_metadata(container_id: str, patterns: list[str] | tuple[str, ...], root: str = "") -> BundleMetadata | None:
    """The container's identity from its bundle; None when no bundle is
    found (not this runtime's, or already gone)."""
    path = find_config(container_id, patterns, root)
    if path is None:
        return None
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_CONFIG_BYTES + 1)
    except OSError as e:
        raise BundleError(f"{path}: {e.strerror}") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise BundleError(f"{path}: larger than {MAX_CONFIG_BYTES} bytes, not read")
    try:
        spec = json.loads(raw)
    except ValueError as e:
        raise BundleError(f"{path}: not JSON ({e})") from None
    annotations = spec.get("annotations") if isinstance(spec, dict) else None
    return from_annotations(annotations if isinstance(annotations, dict) else {}, path)
