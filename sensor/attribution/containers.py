"""cgroup id -> container: runtime, id, and metadata from the engine.

cgroup id -> path (CgroupResolver) -> container id parsed from the path ->
name, image and labels from the Docker Engine API (docker containers) or
from the OCI bundle's annotations (containerd and CRI-O under Kubernetes:
pod, namespace, container name and image; see sensor.oci). Metadata is
cached per container; when the runtime is unreachable the container id alone is kept
and the status change is reported (a health event), never an exception.
Processes outside any container cgroup are attributed to the host.
"""

from __future__ import annotations

import queue
import re
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sensor.attribution.cgroups import CgroupResolver
from sensor.attribution.docker_api import DockerClient, DockerError, NotFound
from sensor.attribution.oci import BundleError, read_metadata
from sensor.text import safe_text

if TYPE_CHECKING:
    from sensor.attribution.registry import ContainerLife

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
# labels that decide a container's identity (workload, pod)
IDENTITY_LABEL_PREFIXES = ("io.sluice.", "io.kubernetes.")
# Container cgroups named by their runtime (systemd cgroup driver).
_SCOPES: list[tuple[str, re.Pattern[str]]] = [
    ("docker", re.compile(r"^docker-([0-9a-f]{64})\.scope$")),
    ("containerd", re.compile(r"^cri-containerd-([0-9a-f]{64})\.scope$")),
    ("cri-o", re.compile(r"^crio-([0-9a-f]{64})\.scope$")),
    ("podman", re.compile(r"^libpod-([0-9a-f]{64})\.scope$")),
]
_POD = re.compile(r"pod([0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12})")


@dataclass(frozen=True)
class ContainerRef:
    runtime: str
    id: str
    pod_uid: str | None = None


def container_from_path(path: str) -> ContainerRef | None:
    """Container runtime and id encoded in a cgroup path, if any.

    Only a container cgroup where its runtime puts it counts: a cgroup below
    a container's own is part of that container (the container may create
    it: cgroup delegation, docker-in-docker), whatever it is named, so a
    process in a delegated subtree cannot pose as another container by
    naming a cgroup `docker-<id>.scope`. Accepted:
      docker     /system.slice/docker-<id>.scope, /docker/<id>
      podman     /machine.slice/libpod-<id>.scope,
                 /user.slice/user-<uid>.slice/user@<uid>.service/user.slice/libpod-<id>.scope
      kubernetes /kubepods[.slice]/[<qos>/]pod<uid>/<runtime scope or id>
                 (cri-containerd-, crio-, docker- scopes; a bare id on cgroupfs)
    A container nested in another (docker-in-docker) is attributed to the
    outer one, the one the node's runtime knows.
    """
    comps = [c for c in path.split("/") if c]
    if len(comps) < 2:
        return None
    top = comps[0]
    if top == "docker":
        return ContainerRef("docker", comps[1]) if _HEX64.match(comps[1]) else None
    if top == "system.slice":
        return _scope(comps[1], ("docker",), None)
    if top == "machine.slice":
        return _scope(comps[1], ("podman",), None)
    if top == "user.slice":
        m = _USER_SLICE.match(comps[1])
        if m and len(comps) >= 5 and comps[2] == f"user@{m.group(1)}.service" and comps[3] == "user.slice":
            return _scope(comps[4], ("podman",), None)
        return None
    if top in ("kubepods", "kubepods.slice"):
        return _kubepods(comps[1:], systemd=top == "kubepods.slice")
    return None


_USER_SLICE = re.compile(r"^user-(\d+)\.slice$")
_QOS = ("burstable", "besteffort", "guaranteed")
_K8S_RUNTIMES = ("containerd", "cri-o", "docker")


def _scope(comp: str, runtimes: tuple[str, ...], pod_uid: str | None) -> ContainerRef | None:
    for runtime, pat in _SCOPES:
        if runtime in runtimes:
            m = pat.match(comp)
            if m:
                return ContainerRef(runtime, m.group(1), pod_uid)
    return None


def _kubepods(comps: list[str], systemd: bool) -> ContainerRef | None:
    """[<qos>/]pod<uid>/<container> below the kubepods root."""
    if comps and (comps[0] in _QOS or comps[0] in tuple(f"kubepods-{q}.slice" for q in _QOS)):
        comps = comps[1:]
    if len(comps) < 2:
        return None
    m = _POD.search(comps[0])
    if m is None or not comps[0].startswith(("pod", "kubepods")):
        return None
    uid = m.group(1).replace("_", "-")
    if systemd:
        return _scope(comps[1], _K8S_RUNTIMES, uid)
    return ContainerRef("containerd", comps[1], uid) if _HEX64.match(comps[1]) else None


@dataclass
class ContainerInfo:
    id: str
    runtime: str
    name: str | None = None
    image_name: str | None = None
    image_id: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    pod_uid: str | None = None
    metadata: bool = False  # name/image came from the runtime
    workload: str | None = None  # cached by sensor.workload; reset when metadata arrives
    # identity labels whose value came from the image, not from whoever
    # created the container: shown, never used for identity
    image_set_labels: frozenset[str] = frozenset()

    def identity_label(self, key: str) -> str | None:
        """A label that may decide identity (workload, pod): only when the
        runtime or orchestrator set it on the container, not when the image
        carries it (an image's own LABEL io.sluice.workload=... must not pick
        the baseline it is judged by)."""
        return None if key in self.image_set_labels else self.labels.get(key)

    @property
    def pod_name(self) -> str | None:
        return self.identity_label("io.kubernetes.pod.name")

    @property
    def pod_namespace(self) -> str | None:
        return self.identity_label("io.kubernetes.pod.namespace")


@dataclass(frozen=True)
class Attribution:
    cgroup_id: int
    cgroup_path: str | None
    container: ContainerInfo | None

    @property
    def is_host(self) -> bool:
        return self.container is None


class Attributor:
    def __init__(
        self,
        resolver: CgroupResolver,
        docker: DockerClient | None,
        negative_cache_seconds: float = 30.0,
        on_runtime_status: Callable[[str, str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        oci_bundles: tuple[str, ...] = (),
    ) -> None:
        self.resolver = resolver
        self.docker = docker
        self.oci_bundles = tuple(oci_bundles)
        self.negative_cache_seconds = negative_cache_seconds
        self.on_runtime_status = on_runtime_status
        self.clock = clock
        self.runtime_status = "unknown"
        self._containers: dict[str, ContainerInfo] = {}
        self._retry_at: dict[str, float] = {}
        self._image_labels: dict[str, dict[str, str]] = {}  # image id -> its labels
        # lookups on a worker thread (start_worker); None: on the caller's thread
        self._worker: threading.Thread | None = None
        self._jobs: queue.Queue[tuple[str, str, str | None, threading.Event]] = queue.Queue()
        self._done: deque[Callable[[], None]] = deque()
        self._pending: set[str] = set()
        self._engine_slow = False
        self.inline_wait = 0.0
        self.lookups_dropped = 0  # queue full: retried
        self.lookups_late = 0  # not answered within inline_wait: id only until they are
        # cgroup id -> attribution: the path parse runs once per cgroup
        self._cache: dict[int, Attribution] = {}
        self.lookups = 0
        self.lookup_failures = 0
        self.bundle_errors: deque[str] = deque(maxlen=5)  # the last few, for status

    def _set_status(self, status: str, detail: str) -> None:
        if self._worker is not None and threading.current_thread() is self._worker:
            self._done.append(lambda: self._set_status(status, detail))  # told on the caller's thread
            return
        if status != self.runtime_status:
            self.runtime_status = status
            if self.on_runtime_status:
                self.on_runtime_status(status, detail)

    def _fill_metadata(self, info: ContainerInfo) -> None:
        """Docker containers from the engine; the others (containerd and
        CRI-O under Kubernetes) from their OCI bundle's annotations."""
        if info.runtime == "docker" and self.docker is None:
            return
        if info.runtime != "docker" and not self.oci_bundles:
            return
        now = self.clock()
        if now < self._retry_at.get(info.id, 0.0):
            return
        if self._worker is not None:
            self._submit(info, now)
            return
        self.lookups += 1
        ok = self._from_engine(info) if info.runtime == "docker" else self._from_bundle(info)
        self._settle(info, info, ok, now)

    def _settle(self, info: ContainerInfo, found: ContainerInfo, ok: bool, now: float) -> None:
        """A lookup's result into the container's record (the caller's thread)."""
        if ok:
            if found is not info:
                info.name, info.image_name, info.image_id = found.name, found.image_name, found.image_id
                info.labels = {**info.labels, **found.labels}
                info.image_set_labels = found.image_set_labels
                info.pod_uid = info.pod_uid or found.pod_uid
            info.metadata = True
            info.workload = None
            self._retry_at.pop(info.id, None)
        else:
            self.lookup_failures += 1
            self._retry_at[info.id] = now + self.negative_cache_seconds

    # --- lookups off the caller's thread ------------------------------------------
    #
    # The sensor's drain loop must never wait for a container engine: a hung
    # engine would delay every alert. With start_worker(), lookups run on one
    # worker thread fed by a bounded queue; the caller waits for a result at
    # most `inline_wait` seconds (so a healthy engine still names a new
    # container in its first events) and not at all once a wait has timed
    # out, until the engine answers again. Until the answer arrives the
    # container is known by id; its record is filled in (on the caller's
    # thread) when it does. A full queue is counted, and the lookup retried.

    def start_worker(self, inline_wait: float = 0.05, queue_size: int = 256) -> None:
        self.inline_wait = inline_wait
        self._jobs = queue.Queue(maxsize=queue_size)
        self._worker = threading.Thread(target=self._work, name="sluice-metadata", daemon=True)
        self._worker.start()

    def _submit(self, info: ContainerInfo, now: float) -> None:
        if info.id in self._pending:
            return
        done = threading.Event()
        try:
            self._jobs.put_nowait((info.id, info.runtime, info.pod_uid, done))
        except queue.Full:
            self.lookups_dropped += 1
            self._retry_at[info.id] = now + 1.0
            return
        self._pending.add(info.id)
        if self._engine_slow or self.inline_wait <= 0:
            return
        if done.wait(self.inline_wait):
            self.apply_results()
        else:
            self._engine_slow = True  # do not wait again until it answers
            self.lookups_late += 1

    def _work(self) -> None:
        while True:
            cid, runtime, pod_uid, done = self._jobs.get()
            found = ContainerInfo(cid, runtime, pod_uid=pod_uid)
            try:
                self.lookups += 1
                ok = self._from_engine(found) if runtime == "docker" else self._from_bundle(found)
            except Exception as e:  # a lookup bug must not end the worker
                ok = False
                self.bundle_errors.append(f"{cid[:12]}: {type(e).__name__}: {e}")
            self._done.append(lambda cid=cid, found=found, ok=ok: self._finish(cid, found, ok))  # type: ignore[misc]
            done.set()

    def _finish(self, cid: str, found: ContainerInfo, ok: bool) -> None:
        self._pending.discard(cid)
        self._engine_slow = False
        info = self._containers.get(cid)
        if info is not None:  # else forgotten meanwhile
            self._settle(info, found, ok, self.clock())

    def apply_results(self) -> None:
        """Results of lookups done on the worker, applied on this thread."""
        while self._done:
            self._done.popleft()()

    def _from_engine(self, info: ContainerInfo) -> bool:
        assert self.docker is not None
        try:
            data = self.docker.container_summary(info.id)
        except NotFound:
            self._set_status("ok", "")
            return False
        except DockerError as e:
            self._set_status("unreachable", str(e))
            return False
        self._set_status("ok", "")
        names = data.get("Names") or []
        labels = {safe_text(str(k)): safe_text(str(v)) for k, v in (data.get("Labels") or {}).items()}
        image_id = safe_text(str(data.get("ImageID") or "")) or None
        try:
            from_image = self._image_set(image_id, labels)
        except DockerError as e:
            self._set_status("unreachable", str(e))
            return False  # retried: identity is not guessed
        info.name = safe_text(names[0]).lstrip("/") if names else None
        info.image_name = safe_text(str(data.get("Image") or "")) or None
        info.image_id = image_id
        info.labels = labels
        info.image_set_labels = from_image
        return True

    def _image_set(self, image_id: str | None, labels: dict[str, str]) -> frozenset[str]:
        """Identity labels of the container whose value is the image's own.
        The engine's container list merges image and container labels, so
        the image is asked (once per image) only when there is any."""
        ident = [k for k in labels if k.startswith(IDENTITY_LABEL_PREFIXES)]
        if not ident or image_id is None:
            return frozenset()
        assert self.docker is not None
        img = self._image_labels.get(image_id)
        if img is None:
            try:
                img = self.docker.image_labels(image_id)
            except NotFound:
                img = {}  # the image is gone: nothing it could have set
            self._image_labels[image_id] = img
            while len(self._image_labels) > 1024:
                self._image_labels.pop(next(iter(self._image_labels)))
        return frozenset(k for k in ident if k in img and img[k] == labels[k])

    def _from_bundle(self, info: ContainerInfo) -> bool:
        try:
            md = read_metadata(info.id, self.oci_bundles)
        except BundleError as e:
            self.bundle_errors.append(str(e))
            return False
        if md is None:
            return False
        info.name, info.image_name = md.name, md.image_name
        info.labels = {**info.labels, **md.labels}
        if info.pod_uid is None:
            info.pod_uid = md.labels.get("io.kubernetes.pod.uid")
        return True

    def container(self, ref: ContainerRef) -> ContainerInfo:
        if self._done:
            self.apply_results()
        info = self._containers.get(ref.id)
        if info is None:
            info = ContainerInfo(ref.id, ref.runtime, pod_uid=ref.pod_uid)
            self._containers[ref.id] = info
        if not info.metadata:
            self._fill_metadata(info)
        return info

    def attribute(self, cgroup_id: int) -> Attribution:
        if self._done:
            self.apply_results()
        a = self._cache.get(cgroup_id)
        if a is not None:
            c = a.container
            if c is not None and not c.metadata:
                self.container(ContainerRef(c.runtime, c.id, c.pod_uid))  # retry, rate-limited
            return a
        path = self.resolver.path(cgroup_id)
        ref = container_from_path(path) if path else None
        a = Attribution(cgroup_id, path, self.container(ref) if ref else None)
        if path is not None:
            self._cache[cgroup_id] = a
        return a

    def invalidate(self, cgroup_id: int) -> None:
        """The cgroup's path changed or went away."""
        self._cache.pop(cgroup_id, None)

    def learn_cgroup(self, cgroup_id: int, path: str) -> None:
        """A cgroup was created (its path from the kernel event)."""
        self.resolver.learn(cgroup_id, path)
        self.invalidate(cgroup_id)

    def cgroup_id_of(self, path: str) -> int:
        """The id of the cgroup at a v2 path (e.g. from /proc/<pid>/cgroup)."""
        return self.resolver.id_of(path)

    def cgroup_dir(self, attr: Attribution) -> str | None:
        """The cgroup's directory on this host, if its path is known."""
        return self.resolver.mount.rstrip("/") + attr.cgroup_path if attr.cgroup_path else None

    def forget_container(self, container_id: str) -> None:
        self._containers.pop(container_id, None)
        self._retry_at.pop(container_id, None)
        for k in [k for k, a in self._cache.items() if a.container and a.container.id == container_id]:
            del self._cache[k]

    # --- ContainerRegistry subscriptions (after the grace period) -------------

    def cgroups_removed(self, cgroup_ids: set[int]) -> None:
        for cgid in cgroup_ids:
            self.resolver.forget(cgid)
            self.invalidate(cgid)

    def containers_removed(self, lives: list[ContainerLife]) -> None:
        for life in lives:
            self.forget_container(life.info.id)

    def lookup_stats(self) -> dict[str, Any]:
        """Metadata lookups, failed ones, and known containers still known
        only by id (their documents lack name, image and labels)."""
        out: dict[str, Any] = {
            "lookups": self.lookups,
            "lookup_failures": self.lookup_failures,
            "containers_without_metadata": sum(1 for c in self._containers.values() if not c.metadata),
            "lookups_pending": len(self._pending),
            "lookups_late": self.lookups_late,
            "lookups_dropped": self.lookups_dropped,
        }
        if self.bundle_errors:
            out["last_bundle_errors"] = list(self.bundle_errors)
        return out

    def __len__(self) -> int:
        return len(self._containers)
