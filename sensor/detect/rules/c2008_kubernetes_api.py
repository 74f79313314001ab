"""SL-C2-008: a container talks to the Kubernetes API server."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass

from sensor.detect.rule import T1609, Context, Finding, RuleInfo, RuleSettings
from sensor.detect.rules._common import _Base, _dest, connect_finding, new_tcp_connects
from sensor.detect.view import WindowView


@dataclass(frozen=True)
class Settings(RuleSettings):
    api_servers: tuple[str, ...] = ()
    use_service_env: bool = True
    # a kubelet's API (10250; 10255 read-only) on any address: it runs
    # commands in, and reads the logs of, every pod on its node
    kubelet_ports: tuple[int, ...] = (10250, 10255)


INFO = RuleInfo(
    "SL-C2-008",
    "kubernetes_api_use",
    "Kubernetes API server or a kubelet contacted from a container",
    "A container connected to the Kubernetes API server, or to a kubelet's API (kubelet_ports on any "
    "address), which its workload's baseline never does (api_servers lists ip:port; empty takes "
    "KUBERNETES_SERVICE_HOST/PORT from the sensor's environment).",
    T1609,
    60,
    Settings,
)


def api_servers(cfg: Settings, env: Mapping[str, str]) -> set[tuple[str, int]]:
    """(ip, port) pairs: the configured ones, else the in-cluster service
    address from KUBERNETES_SERVICE_HOST/PORT (when use_service_env)."""
    out: set[tuple[str, int]] = set()
    for s in cfg.api_servers:
        host, _, port = str(s).rpartition(":")
        host = host.strip("[]")
        try:
            out.add((str(ipaddress.ip_address(host)), int(port)))
        except ValueError:
            continue  # not ip:port; config validation names the entry
    if not out and cfg.use_service_env:
        host, port = env.get("KUBERNETES_SERVICE_HOST", ""), env.get("KUBERNETES_SERVICE_PORT", "443")
        try:
            out.add((str(ipaddress.ip_address(host)), int(port)))
        except ValueError:
            pass
    return out


class KubernetesApi(_Base):
    """SL-C2-008: a container talks to the Kubernetes API server."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        super().__init__(INFO)
        self._env = env if env is not None else os.environ

    def evaluate(self, view: WindowView, ctx: Context) -> list[Finding]:
        cfg = ctx.settings(self.info.id, Settings)
        servers = api_servers(cfg, self._env)
        kubelet = set(cfg.kubelet_ports)
        out = []
        for c in new_tcp_connects(view, ctx, lambda c: (c.ip, c.port) in servers or c.port in kubelet):
            if (c.ip, c.port) in servers:
                what = f"the Kubernetes API server {_dest(c.ip, c.port, c.domain)}"
                evidence: dict[str, object] = {
                    "api_server": _dest(c.ip, c.port),
                    "configured_api_servers": sorted(_dest(*s) for s in servers),
                }
            else:
                # a kubelet's API: exec and logs of every pod on that node
                what = f"a kubelet's API {_dest(c.ip, c.port, c.domain)}"
                evidence = {"kubelet": _dest(c.ip, c.port), "kubelet_ports": sorted(kubelet)}
            out.append(connect_finding(self.info.id, c, what, evidence))
        return out
