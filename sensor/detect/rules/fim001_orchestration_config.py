"""SL-FIM-001: a container runtime or orchestrator configuration file
changed. Not a window rule: sensor/ops/fim.py watches the paths and the
engine's on_fim() turns each change into this rule's finding."""

from __future__ import annotations

from dataclasses import dataclass

from sensor.attribution.containers import Attribution
from sensor.detect.rule import T1048, Finding, RuleInfo, RuleSettings
from sensor.detect.view import ProcessRef


@dataclass(frozen=True)
class Settings(RuleSettings):
    paths: tuple[str, ...] = (
        "/etc/docker/daemon.json",
        "/etc/containerd/config.toml",
        "/etc/kubernetes/manifests/",
        "/var/lib/kubelet/config.yaml",
        "/etc/cni/net.d/",
    )
    container_severity_bonus: int = 25
    rescan_seconds: float = 60.0
    host_root: str = ""


# File integrity of orchestration configuration: a data source of the
# T1048.001 strategy ("changes to container-orchestration config files").
INFO = RuleInfo(
    "SL-FIM-001",
    "orchestration_config_changed",
    "Container orchestration configuration changed",
    "A container runtime or orchestrator configuration file was created, modified, renamed or deleted; "
    "the alert names the process and container that did it (a change made from inside a container "
    "scores higher).",
    T1048,
    47,
    Settings,
)


def finding(
    cfg: Settings,
    path: str,
    operations: list[str],
    ts: float,
    attr: Attribution,
    workload: str,
    process: ProcessRef | None,
) -> Finding:
    types = sorted({"creation" if o == "creation" else "deletion" if o == "deletion" else "change" for o in operations})
    who = (
        f"container {attr.container.name or attr.container.id[:12]} ({workload})"
        if attr.container
        else "a host process"
    )
    by = f"{process.executable or process.name} (pid {process.pid})" if process else "an unknown process"
    directory, _, name = path.rpartition("/")
    return Finding(
        INFO.id,
        attr,
        workload,
        ts,
        f"Orchestration config {path} was {'/'.join(operations)} by {by} in {who}",
        {"path": path, "operations": operations, "writer_in_container": attr.container is not None},
        process=process,
        severity_delta=cfg.container_severity_bonus if attr.container else 0,
        file={"path": path, "name": name, "directory": directory or "/"},
        categories=(["intrusion_detection", "file", "configuration"], ["info", *types]),
    )
