"""SL-EXF-002: TLS/SSH/QUIC/DTLS/WireGuard off their ports, or raw
encrypted bytes over TCP or UDP."""

from __future__ import annotations

from dataclasses import dataclass

from sensor.detect.rule import KIB, T1048, Context, Finding, RuleInfo, RuleSettings
from sensor.detect.rules._common import (
    CappedTable,
    _Base,
    _classes,
    _dest,
    _drop_containers,
    _human,
    _names,
    _proc,
    _who,
)
from sensor.detect.view import FlowView, WindowView
from sensor.telemetry.classify import DTLS, QUIC, WIREGUARD
from sensor.telemetry.protocol import SSH, TLS


@dataclass(frozen=True)
class Settings(RuleSettings):
    min_bytes: int = 64 * KIB
    tls_ports: tuple[int, ...] = (443, 8443, 465, 587, 636, 853, 993, 995, 2376, 5061, 6443, 9443, 10250)
    ssh_ports: tuple[int, ...] = (22, 2222)
    quic_ports: tuple[int, ...] = (443, 8443)
    dtls_ports: tuple[int, ...] = (443, 3478, 4433, 5349, 5684)
    wireguard_ports: tuple[int, ...] = (51820,)


INFO = RuleInfo(
    "SL-EXF-002",
    "encrypted_nonstandard_port",
    "Encrypted channel on a non-standard port",
    "TLS, SSH, QUIC, DTLS or WireGuard to a port not on the allow list for that protocol, or "
    "encrypted-looking bytes over TCP or UDP with no known handshake, to a destination the "
    "workload's baseline does not have.",
    T1048,
    63,
    Settings,
)

# protocol hint -> the setting listing the ports where it belongs
_PORTS = {TLS: "tls_ports", SSH: "ssh_ports", QUIC: "quic_ports", DTLS: "dtls_ports", WIREGUARD: "wireguard_ports"}
_NAMES = {TLS: "TLS", SSH: "SSH", QUIC: "QUIC", DTLS: "DTLS", WIREGUARD: "WireGuard"}


class NonStandardPort(_Base):
    """SL-EXF-002: an encrypted protocol off its ports, or raw encrypted
    bytes (no handshake of a known protocol) over TCP or UDP."""

    def __init__(self) -> None:
        super().__init__(INFO)
        self._sent: dict[tuple[str, str, int, str], int] = CappedTable(factory=int)

    def forget_containers(self, ids: set[str]) -> None:
        _drop_containers(self._sent, ids)

    @staticmethod
    def _kind(f: FlowView, cfg: Settings) -> tuple[str, int, str | None] | None:
        """(kind, bytes counted, protocol) of a flow this rule is about, else
        None. Judged per protocol of the flow's sending sockets: a TLS
        connection on 443 does not vouch for a raw encrypted stream opened
        beside it to the same destination. The bytes are those of every part
        the rule is about; the kind is the largest part's."""
        s = f.summary
        if f.transport not in ("tcp", "udp") or not s.payload_bytes:
            return None
        # Port 53: its DNS queries are SL-EXF-003's (named "dns", never a
        # part here); what went there and is not a query is a raw stream or
        # raw datagrams like anywhere else (an intruder's own port 53).
        protos = s.protocols()
        # every part counts: a decoy connection off its port must not hide
        # the raw stream beside it (nor the other way round)
        parts: list[tuple[int, str, str | None]] = []
        for proto in sorted(p for p in protos if p is not None and p in _PORTS):
            if f.port not in getattr(cfg, _PORTS[proto]):
                parts.append((s.payload_of(proto), f"{proto}_on_nonstandard_port", proto))
        if None in protos:
            raw_kind = "raw_encrypted_stream" if f.transport == "tcp" else "raw_encrypted_datagrams"
            parts.append((s.opaque_of(None), raw_kind, None))
        parts = [p for p in parts if p[0] > 0]
        if not parts:
            return None
        _largest, kind, which = max(parts, key=lambda p: p[0])
        return kind, sum(p[0] for p in parts), which

    def evaluate(self, view: WindowView, ctx: Context) -> list[Finding]:
        cfg = ctx.settings(self.info.id, Settings)
        out = []
        for f in view.flows:
            s = f.summary
            k = self._kind(f, cfg)
            if k is None:
                continue
            kind, nbytes, proto = k
            key = (f.container_key, f.ip, f.port, f.transport)
            self._sent[key] += nbytes
            if self._sent[key] < cfg.min_bytes:
                continue
            if ctx.known_flow(f) or not ctx.baseline_gate(f.workload):
                continue
            if kind == "raw_encrypted_stream":
                what = "a raw encrypted-looking TCP stream (no TLS or SSH handshake)"
            elif kind == "raw_encrypted_datagrams":
                what = "encrypted-looking UDP datagrams (no QUIC, DTLS or WireGuard header)"
            else:
                what = f"{_NAMES[proto or '']} to {'UDP ' if f.transport == 'udp' else ''}port {f.port}"
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
                        "allowed_ports": list(getattr(cfg, _PORTS[proto])) if proto in _PORTS else None,
                        "threshold_bytes": cfg.min_bytes,
                        **_classes(s),
                    },
                    (f.ip, f.port, f.transport),
                    _proc(f),
                    proto,
                    magnitude=self._sent[key],
                    **_names(f),
                )
            )
            del self._sent[key]
        if len(self._sent) > 100_000:
            self._sent.clear()
        return out
