"""Workload identity: what a baseline is keyed by.

Containers are ephemeral; workloads are not. A container's workload is, in
order of preference:
  1. the label `io.sluice.workload` (set by the operator),
  2. its Kubernetes owner: namespace/controller/container, the controller
     being the pod name without the ReplicaSet hash and pod suffix,
  3. its image repository, without tag or digest (upgrades keep the
     baseline),
  4. "container:<id>" when the runtime gave no image (unreachable runtime).
Host processes form the workload "host".
"""

from __future__ import annotations

import re

from sensor.attribution.containers import Attribution, ContainerInfo

HOST = "host"
LABEL = "io.sluice.workload"
_RS_POD = re.compile(r"^(?P<base>.+)-[0-9a-f]{6,10}-[0-9a-z]{5}$")  # deployment pod
_DS_POD = re.compile(r"^(?P<base>.+)-[0-9a-z]{5}$")  # daemonset / job pod
_STS_POD = re.compile(r"^(?P<base>.+)-\d+$")  # statefulset pod


def image_repository(image: str) -> str:
    """`registry:5000/team/app:1.2@sha256:..` -> `registry:5000/team/app`."""
    name = image.split("@", 1)[0]
    slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > slash:
        name = name[:colon]
    return name


def pod_controller(pod_name: str) -> str:
    for pat in (_RS_POD, _STS_POD, _DS_POD):
        m = pat.match(pod_name)
        if m:
            return m.group("base")
    return pod_name


def container_workload(info: ContainerInfo) -> str:
    label = info.identity_label(LABEL)
    if label:
        return label
    if info.pod_name and info.pod_namespace:
        cname = info.identity_label("io.kubernetes.container.name") or ""
        base = f"k8s:{info.pod_namespace}/{pod_controller(info.pod_name)}"
        return f"{base}/{cname}" if cname else base
    if info.image_name:
        return image_repository(info.image_name)
    return f"container:{info.id[:12]}"


def workload_of(attr: Attribution) -> str:
    c = attr.container
    if c is None:
        return HOST
    if c.workload is None:
        c.workload = container_workload(c)
    return c.workload
