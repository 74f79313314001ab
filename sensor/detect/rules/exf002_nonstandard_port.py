"""SL-EXF-002: TLS/SSH off their ports, or raw encrypted TCP."""

from __future__ import annotations

from dataclasses import dataclass

from sensor.detect.rule import KIB, T1048, Context, Finding, RuleInfo, RuleSettings
from sensor.detect.rules._common import CappedTable, _Base, _dest, _drop_containers, _human, _names, _proc, _who
from sensor.detect.view import WindowView
from sensor.telemetry.protocol import SSH, TLS


@dataclass(frozen=True)
class Settings(RuleSettings):
    min_bytes: int = 64 * KIB
    tls_ports: tuple[int, ...] = (443, 8443, 465, 587, 636, 853, 993, 995, 2376, 5061, 6443, 9443, 10250)
    ssh_ports: tuple[int, ...] = (22, 2222)


INFO = RuleInfo(
    "SL-EXF-002",
    "encrypted_nonstandard_port",
    "Encrypted channel on a non-standard port",
    "TLS or SSH to a port not on the allow list for that protocol, or a raw high-entropy TCP "
    "stream with no TLS/SSH handshake, that the workload's baseline does not have.",
    T1048,
    63,
    Settings,
)


class NonStandardPort(_Base):
    """SL-EXF-002: TLS/SSH off their ports, or raw encrypted TCP."""

    def __init__(self) -> None:
        super().__init__(INFO)
        self._sent: dict[tuple[str, str, int], int] = CappedTable(factory=int)

    def forget_containers(self, ids: set[str]) -> None:
        _drop_containers(self._sent, ids)

    def evaluate(self, view: WindowView, ctx: Context) -> list[Finding]:
        cfg = ctx.settings(self.info.id, Settings)
        out = []
        for f in view.flows:
            s = f.summary
            if f.transport != "tcp" or not s.payload_bytes:
                continue
            proto = s.protocol_hint
            if proto == TLS and f.port not in cfg.tls_ports:
                kind = "tls_on_nonstandard_port"
            elif proto == SSH and f.port not in cfg.ssh_ports:
                kind = "ssh_on_nonstandard_port"
            elif proto is None and s.encrypted_like:
                kind = "raw_encrypted_stream"
            else:
                continue
            key = (f.container_key, f.ip, f.port)
            self._sent[key] += s.payload_bytes
            if self._sent[key] < cfg.min_bytes:
                continue
            if ctx.known_destination(f.workload, f.ip, f.port, f.transport, f.domain) or not ctx.baseline_gate(
                f.workload
            ):
                continue
            what = {
                "tls_on_nonstandard_port": f"TLS to port {f.port}",
                "ssh_on_nonstandard_port": f"SSH to port {f.port}",
                "raw_encrypted_stream": "a raw encrypted-looking TCP stream (no TLS or SSH handshake)",
            }[kind]
            out.append(
                Finding(
                    self.info.id,
                    f.attr,
                    f.workload,
                    view.end,
                    f"{_who(f.attr, f.workload)} sent {_human(self._sent[key])} over {what} to "
                    f"{_dest(f.ip, f.port, f.domain)}, a destination not in its baseline",
                    {
                        "kind": kind,
                        "bytes": self._sent[key],
                        "window_bytes": s.payload_bytes,
                        "entropy": s.entropy,
                        "protocol_hint": proto,
                        "allowed_ports": (
                            list(cfg.tls_ports) if proto == TLS else list(cfg.ssh_ports) if proto == SSH else None
                        ),
                        "threshold_bytes": cfg.min_bytes,
                    },
                    (f.ip, f.port, f.transport),
                    _proc(f),
                    proto,
                    **_names(f),
                )
            )
            del self._sent[key]
        if len(self._sent) > 100_000:
            self._sent.clear()
        return out
