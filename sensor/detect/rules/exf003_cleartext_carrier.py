"""SL-EXF-003: encrypted bytes in HTTP bodies or DNS query names."""

from __future__ import annotations

import math
import re
from collections import Counter, defaultdict
from dataclasses import dataclass

from sensor.detect.rule import T1048, Context, Finding, RuleInfo, RuleSettings
from sensor.detect.rules._common import (
    STATE_TTL_S,
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
from sensor.telemetry.counters import FlowSummary
from sensor.telemetry.names import registered_domain as learned_host
from sensor.telemetry.names import split_domain
from sensor.telemetry.protocol import DNS, HTTP


@dataclass(frozen=True)
class Settings(RuleSettings):
    http_min_body_bytes: int = 256
    dns_min_label_length: int = 40
    dns_label_entropy_bits: float = 3.8
    dns_unique_subdomains: int = 20
    dns_min_encoded_length: int = 24


INFO = RuleInfo(
    "SL-EXF-003",
    "encrypted_in_cleartext",
    "Encrypted payload inside a cleartext protocol",
    "Encrypted or encoded-random bytes in plain HTTP (bodies, JSON values, upgraded streams), or DNS "
    "queries (any port) whose names carry encoded data "
    "(long or high-entropy labels, hex/base32/base64, many unique subdomains of one domain).",
    T1048,
    68,
    Settings,
)

MAX_SUBDOMAINS = 1024  # per (container, domain)
_HEX = re.compile(r"^[0-9a-f]+$", re.I)
_B32 = re.compile(r"^[a-z2-7]+=*$", re.I)
_B64 = re.compile(r"^[A-Za-z0-9+/_-]+=*$")
TRUNCATED = "(domain cut off by the sample)"


def registered_domain(name: str) -> tuple[str, str]:
    """(registered domain, subdomain part): a.b.example.co.uk ->
    (example.co.uk, a.b), from the public suffix list (private suffixes
    honoured; sensor/telemetry/names.py)."""
    return split_domain(name)


def char_entropy(s: str) -> float:
    if not s:
        return 0.0
    c = Counter(s)
    return -sum(v / len(s) * math.log2(v / len(s)) for v in c.values())


def encoding_of(sub: str, min_len: int) -> str | None:
    """hex / base32 / base64 if the subdomain, or one of its labels, looks
    encoded (tunnels add plain labels such as a sequence tag: <hex>.t.x.net)."""
    for label in [sub.replace(".", ""), *sub.split(".")]:
        enc = _encoding(label, min_len)
        if enc:
            return enc
    return None


def _encoding(s: str, min_len: int) -> str | None:
    if len(s) < min_len:
        return None
    if _HEX.match(s) and any(ch.isdigit() for ch in s) and any(ch.isalpha() for ch in s):
        return "hex"
    digits = sum(ch.isdigit() for ch in s)
    if _B32.match(s) and digits >= len(s) // 10 and char_entropy(s.lower()) >= 4.0:
        return "base32"
    if _B64.match(s) and any(ch.isupper() for ch in s) and any(ch.islower() for ch in s) and digits:
        return "base64"
    return None


class CleartextCarrier(_Base):
    """SL-EXF-003: encrypted bytes in HTTP bodies or DNS query names."""

    def __init__(self) -> None:
        super().__init__(INFO)
        # (container, domain) -> subdomains seen recently, with times
        # (container, domain) -> subdomains: capped per container and per domain
        self._subs: dict[tuple[str, str], dict[str, float]] = CappedTable(per_container=256, factory=dict)

    def forget_containers(self, ids: set[str]) -> None:
        _drop_containers(self._subs, ids)

    def evaluate(self, view: WindowView, ctx: Context) -> list[Finding]:
        cfg = ctx.settings(self.info.id, Settings)
        out = []
        for f in view.flows:
            s = f.summary
            if self._opaque_http(s, ctx, cfg):
                if ctx.known_flow(f) and self._known_encrypted(ctx, f):
                    continue
                if not ctx.baseline_gate(f.workload):
                    continue
                out.append(
                    Finding(
                        self.info.id,
                        f.attr,
                        f.workload,
                        view.end,
                        f"{_who(f.attr, f.workload)} sent encrypted-looking HTTP bodies "
                        f"({self._what(s)}, {_human(s.payload_of(HTTP))}) to {_dest(f.ip, f.port, f.domain)} "
                        "over plain HTTP",
                        {
                            "kind": "encrypted_http_body",
                            "body_entropy": s.body_entropy,
                            "body_sampled_bytes": s.body_sampled_bytes,
                            "bytes": s.payload_of(HTTP),
                            "threshold_bits": ctx.high_bits(),
                            **_classes(s),
                        },
                        (f.ip, f.port, f.transport),
                        _proc(f),
                        HTTP,
                        magnitude=s.payload_of(HTTP),
                        **_names(f),
                    )
                )
            if s.dns_names:
                out += self._dns(f, view, ctx, cfg)
        self._expire(view.end)
        return out

    @staticmethod
    def _opaque_http(s: FlowSummary, ctx: Context, cfg: Settings) -> bool:
        """Encrypted bytes inside HTTP: bodies, WebSocket frames, an
        upgraded or CONNECTed stream. Judged per sample (classify) when the
        summary has byte classes: a Content-Encoding header exempts nothing,
        only a body that decodes does. Only the bytes of the flow's sockets
        that spoke HTTP count (a decoy connection to the same destination
        does not relabel them)."""
        if HTTP not in s.protocols():
            return False
        if s.byte_classes is not None:
            return s.opaque_of(HTTP) >= cfg.http_min_body_bytes
        return (
            s.compression is None
            and s.body_entropy is not None
            and s.body_entropy >= ctx.high_bits()
            and s.body_sampled_bytes >= cfg.http_min_body_bytes
        )

    @staticmethod
    def _what(s: FlowSummary) -> str:
        parts = []
        if s.body_entropy is not None:
            parts.append(f"entropy {s.body_entropy:.2f} bits/byte")
        c = s.byte_classes
        if c is not None:
            parts.append(f"{_human(s.opaque_of(HTTP))} opaque")
            if c.encoding:
                parts.append(f"{c.encoding}-encoded")
            if c.fake_compression:
                parts.append(f"compression claimed but not proven: {c.fake_compression}")
        return ", ".join(parts) or "high entropy"

    @staticmethod
    def _known_encrypted(ctx: Context, f: FlowView) -> bool:
        """The baseline saw encrypted bytes go to this destination (TLS-level
        entropy, or classified encrypted/encoded bytes: base64 images a web
        application uploads), so more of them is not news. A named
        destination is learned under its registered domain (Learner), an
        unnamed one (or a version 1 baseline) under its address."""
        wb = ctx.workload(f.workload)
        hosts = {f.ip}
        if f.domain and f.name_vouched:  # a claimed name speaks for nothing
            hosts.add(learned_host(f.domain))
        prefixes = tuple(f"{h}|{f.port}|" for h in hosts)
        return wb is not None and any(
            d.max_entropy >= ctx.high_bits() or d.encrypted_bytes > 0
            for k, d in wb.destinations.items()
            if k.startswith(prefixes)
        )

    def _dns(self, f: FlowView, view: WindowView, ctx: Context, cfg: Settings) -> list[Finding]:
        by_domain: dict[str, list[str]] = defaultdict(list)
        for name, complete in f.summary.dns_names:
            if not complete and "." not in name.strip("."):
                # the sample ended inside the first label (64-byte samples
                # off port 53): the label is all there is to judge
                by_domain[TRUNCATED].append(name)
                continue
            dom, sub = registered_domain(name)
            if sub:
                by_domain[dom].append(sub)
        out = []
        for dom, subs in by_domain.items():
            seen = self._subs[(f.container_key, dom)]
            for sub in subs:
                seen[sub] = view.end
            while len(seen) > MAX_SUBDOMAINS:  # far past any threshold: forget the oldest
                del seen[next(iter(seen))]
                self.evicted += 1
            encoded = [(x, e) for x in subs if (e := encoding_of(x, cfg.dns_min_encoded_length))]
            longest = max(subs, key=lambda x: max(len(p) for p in x.split(".")))
            long_label = max(len(p) for p in longest.split("."))
            ent = max(char_entropy(x.replace(".", "")) for x in subs)
            reasons = []
            if len(encoded) >= 2:
                reasons.append(f"{len(encoded)} names carry {encoded[0][1]}-encoded data")
            if long_label >= cfg.dns_min_label_length and ent >= cfg.dns_label_entropy_bits:
                reasons.append(f"labels up to {long_label} characters with entropy {ent:.1f} bits/char")
            if len(seen) >= cfg.dns_unique_subdomains:
                reasons.append(f"{len(seen)} unique subdomains of {dom} in {STATE_TTL_S / 60:.0f} min")
            if not reasons:
                continue
            if not ctx.baseline_gate(f.workload):
                continue
            out.append(
                Finding(
                    self.info.id,
                    f.attr,
                    f.workload,
                    view.end,
                    f"{_who(f.attr, f.workload)} looks like it tunnels data through DNS queries for {dom}: "
                    + "; ".join(reasons),
                    {
                        "kind": "dns_tunnel",
                        "domain": dom,
                        "queries_in_window": len(subs),
                        "unique_subdomains": len(seen),
                        "encoded_names": len(encoded),
                        "encoding": encoded[0][1] if encoded else None,
                        "max_label_length": long_label,
                        "max_label_entropy_bits": round(ent, 2),
                        "examples": [f"{x}.{dom}" for x in subs[:3]],
                    },
                    (f.ip, f.port, f.transport),
                    _proc(f),
                    DNS,
                    magnitude=len(seen),
                )
            )
        return out

    def _expire(self, now: float) -> None:
        for k in list(self._subs):
            d = self._subs[k]
            for sub in [s for s, t in d.items() if now - t > STATE_TTL_S]:
                del d[sub]
            if not d:
                del self._subs[k]
