"""The rules Sluice ships: stable ids, what they mean, ATT&CK mapping,
severity and default thresholds. Config keys under [rules.<id>] are checked
against these defaults (same names, same types).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

T1048 = {
    "technique": ("T1048", "Exfiltration Over Alternative Protocol", "https://attack.mitre.org/techniques/T1048/"),
    "subtechnique": (
        "T1048.001",
        "Exfiltration Over Symmetric Encrypted Non-C2 Protocol",
        "https://attack.mitre.org/techniques/T1048/001/",
    ),
    "tactic": ("TA0010", "Exfiltration", "https://attack.mitre.org/tactics/TA0010/"),
}
T1104 = {
    "technique": ("T1104", "Multi-Stage Channels", "https://attack.mitre.org/techniques/T1104/"),
    "subtechnique": None,
    "tactic": ("TA0011", "Command and Control", "https://attack.mitre.org/tactics/TA0011/"),
}

KIB = 1024
MIB = 1024 * 1024


@dataclass(frozen=True)
class RuleInfo:
    id: str
    slug: str
    name: str
    description: str
    attack: dict[str, Any]
    severity: int  # 0-100, also event.risk_score
    defaults: dict[str, Any] = field(default_factory=dict)


RULES: tuple[RuleInfo, ...] = (
    RuleInfo(
        "SL-EXF-001",
        "egress_volume_spike",
        "Encrypted egress volume spike",
        "A workload sent far more high-entropy (encrypted-looking) bytes in one window than its "
        "baseline says it ever does.",
        T1048,
        73,
        {"multiplier": 4.0, "quantile": 0.99, "min_bytes": 1 * MIB},
    ),
    RuleInfo(
        "SL-EXF-002",
        "encrypted_nonstandard_port",
        "Encrypted channel on a non-standard port",
        "TLS or SSH to a port not on the allow list for that protocol, or a raw high-entropy TCP "
        "stream with no TLS/SSH handshake, that the workload's baseline does not have.",
        T1048,
        63,
        {
            "min_bytes": 64 * KIB,
            "tls_ports": [443, 8443, 465, 587, 636, 853, 993, 995, 2376, 5061, 6443, 9443, 10250],
            "ssh_ports": [22, 2222],
        },
    ),
    RuleInfo(
        "SL-EXF-003",
        "encrypted_in_cleartext",
        "Encrypted payload inside a cleartext protocol",
        "High-entropy bodies in plain HTTP, or DNS queries whose names carry encoded data "
        "(long or high-entropy labels, hex/base32/base64, many unique subdomains of one domain).",
        T1048,
        68,
        {
            "http_min_body_bytes": 256,
            "dns_min_label_length": 40,
            "dns_label_entropy_bits": 3.8,
            "dns_unique_subdomains": 20,
            "dns_min_encoded_length": 24,
        },
    ),
    RuleInfo(
        "SL-EXF-004",
        "new_destination_encrypted",
        "Large encrypted transfer to a new destination",
        "A destination not in the workload's baseline received a large amount of high-entropy data.",
        T1048,
        68,
        {"min_bytes": 1 * MIB},
    ),
    RuleInfo(
        "SL-EXF-005",
        "short_lived_container_egress",
        "Short-lived container sent encrypted data",
        "A container that lived only briefly (the docker run --rm pattern) sent high-entropy data "
        "out before it exited.",
        T1048,
        70,
        {"max_lifetime_seconds": 300.0, "min_bytes": 64 * KIB},
    ),
    RuleInfo(
        "SL-EXF-006",
        "encryption_tool_then_egress",
        "Encryption tool run, then egress",
        "An encryption tool (openssl enc, gpg symmetric, 7z/zip with a password, age, ccrypt) ran in "
        "a container and the container sent data out shortly after.",
        T1048,
        66,
        {"within_seconds": 120.0, "min_bytes": 4 * KIB},
    ),
    RuleInfo(
        "SL-C2-001",
        "multi_stage_chain",
        "Multi-stage chain: fetch, execute, new channel",
        "In one container: a connection, then a new executable (not in the baseline, from a writable "
        "path such as /tmp, /dev/shm or memfd) ran, then a connection to a destination not seen "
        "before.",
        T1104,
        85,
        {
            "within_seconds": 300.0,
            "writable_paths": [
                "/tmp/",
                "/var/tmp/",
                "/dev/shm/",
                "/run/",
                "/memfd:",
                "/proc/self/fd/",
                "/home/",
                "/root/",
            ],
        },
    ),
    RuleInfo(
        "SL-C2-002",
        "beaconing",
        "Beaconing to a new destination",
        "Periodic, low-jitter connections from a container to a destination outside its baseline.",
        T1104,
        60,
        {"min_connections": 6, "max_jitter": 0.2, "min_interval_seconds": 0.5, "horizon_seconds": 900.0},
    ),
    RuleInfo(
        "SL-C2-003",
        "atypical_inter_container",
        "Atypical inter-container communication",
        "A container talked to another container whose workload is not among its baseline peers.",
        T1104,
        55,
        {"min_bytes": 1},
    ),
    RuleInfo(
        "SL-C2-004",
        "lifecycle_burst_with_egress",
        "Container lifecycle burst with new egress",
        "A burst of container creation/removal coincided with egress to destinations outside the baseline.",
        T1104,
        58,
        {"min_events": 10, "horizon_seconds": 60.0},
    ),
)

# File integrity of orchestration configuration: a data source of the
# T1048.001 strategy ("changes to container-orchestration config files").
RULES += (
    RuleInfo(
        "SL-FIM-001",
        "orchestration_config_changed",
        "Container orchestration configuration changed",
        "A container runtime or orchestrator configuration file was created, modified, renamed or deleted; "
        "the alert names the process and container that did it (a change made from inside a container "
        "scores higher).",
        T1048,
        47,
        {
            "paths": [
                "/etc/docker/daemon.json",
                "/etc/containerd/config.toml",
                "/etc/kubernetes/manifests/",
                "/var/lib/kubelet/config.yaml",
                "/etc/cni/net.d/",
            ],
            "container_severity_bonus": 25,
            "rescan_seconds": 60.0,
            "host_root": "",
        },
    ),
)

BY_ID: dict[str, RuleInfo] = {r.id: r for r in RULES}
