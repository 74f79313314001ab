"""The ten rules. Each reads a WindowView (and keeps what it must remember
across windows), compares against the workload's baseline where it has one,
and returns Findings with the numbers that fired it."""

from __future__ import annotations

import math
import re
import statistics
from collections import Counter, defaultdict, deque
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from sensor.attribution.containers import Attribution
from sensor.telemetry.protocol import DNS, HTTP, SSH, TLS
from sensor.detect.catalog import BY_ID, RuleInfo
from sensor.detect.engine import Context, Finding
from sensor.detect.view import ConnectView, ExecView, FlowView, ProcessRef, WindowView

# How long per-container state is kept without activity.
STATE_TTL_S = 3600.0


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def _who(attr: Attribution, workload: str) -> str:
    c = attr.container
    if c is None:
        return "Host process"
    name = c.name or c.id[:12]
    return f"Container {name} ({workload})"


def _secs(t: float) -> str:
    return f"{t * 1000:.0f} ms" if t < 1 else f"{t:.1f} s"


def _pname(p: ProcessRef) -> str:
    """busybox applets exec through /proc/self/exe: name them by argv[0]."""
    if p.name == "exe" and p.args:
        return PurePosixPath(p.args[0]).name
    return p.name


def _dest(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def _proc(f: FlowView) -> ProcessRef | None:
    """The flow's process: from the exec table when the pipeline knew it
    (executable, args), else pid and name from the connect event."""
    if f.process is not None:
        return f.process
    s = f.summary
    return ProcessRef(s.pid, s.comm or "") if s.pid is not None else None


def _drop_containers(table: dict[Any, Any], ids: set[str]) -> None:
    """Forget a rule's state keyed by (container id, ...) tuples."""
    for k in [k for k in table if k[0] in ids]:
        del table[k]


class _Base:
    info: RuleInfo

    def __init__(self, rule_id: str) -> None:
        self.info = BY_ID[rule_id]


# --- T1048.001 -------------------------------------------------------------------


class VolumeSpike(_Base):
    """SL-EXF-001: a workload's encrypted-looking bytes in one window, far
    above its baseline quantile."""

    def __init__(self) -> None:
        super().__init__("SL-EXF-001")

    def evaluate(self, view: WindowView, ctx: Context) -> list[Finding]:
        cfg = ctx.settings(self.info.id)
        per: dict[str, list[FlowView]] = defaultdict(list)
        for f in view.flows:
            if f.summary.encrypted_like and f.summary.payload_bytes:
                per[f.workload].append(f)
        out = []
        for w, flows in per.items():
            wb = ctx.workload(w)
            if wb is None or wb.windows < ctx.config.detection.min_baseline_windows:
                continue  # no trusted statistics for this workload yet
            observed = sum(f.summary.payload_bytes for f in flows)
            base = wb.encrypted_bytes.quantile(cfg["quantile"])
            threshold = max(cfg["min_bytes"], cfg["multiplier"] * base)
            if observed <= threshold:
                continue
            by_container: Counter[str] = Counter()
            for f in flows:
                by_container[f.container_key] += f.summary.payload_bytes
            top_c = by_container.most_common(1)[0][0]
            top = max((f for f in flows if f.container_key == top_c), key=lambda f: f.summary.payload_bytes)
            ratio = observed / base if base else None
            out.append(Finding(
                self.info.id, top.attr, w, view.end,
                f"{_who(top.attr, w)} sent {_human(observed)} of encrypted-looking data in "
                f"{view.end - view.start:.0f} s; its baseline p{int(cfg['quantile'] * 100)} is {_human(base)} "
                f"per window" + (f" ({ratio:.0f}x)" if ratio else ""),
                {"observed_bytes": observed, "baseline_quantile": cfg["quantile"], "baseline_bytes": round(base),
                 "multiplier": cfg["multiplier"], "threshold_bytes": round(threshold),
                 "window_seconds": round(view.end - view.start, 3),
                 "destinations": sorted({_dest(f.ip, f.port) for f in flows})[:10],
                 "entropy": top.summary.entropy},
                (top.ip, top.port, top.transport), _proc(top), top.summary.protocol_hint,
            ))
        return out


class NonStandardPort(_Base):
    """SL-EXF-002: TLS/SSH off their ports, or raw encrypted TCP."""

    def __init__(self) -> None:
        super().__init__("SL-EXF-002")
        self._sent: dict[tuple[str, str, int], int] = defaultdict(int)

    def forget_containers(self, ids: set[str]) -> None:
        _drop_containers(self._sent, ids)

    def evaluate(self, view: WindowView, ctx: Context) -> list[Finding]:
        cfg = ctx.settings(self.info.id)
        out = []
        for f in view.flows:
            s = f.summary
            if f.transport != "tcp" or not s.payload_bytes:
                continue
            proto = s.protocol_hint
            if proto == TLS and f.port not in cfg["tls_ports"]:
                kind = "tls_on_nonstandard_port"
            elif proto == SSH and f.port not in cfg["ssh_ports"]:
                kind = "ssh_on_nonstandard_port"
            elif proto is None and s.encrypted_like:
                kind = "raw_encrypted_stream"
            else:
                continue
            key = (f.container_key, f.ip, f.port)
            self._sent[key] += s.payload_bytes
            if self._sent[key] < cfg["min_bytes"]:
                continue
            if ctx.known_destination(f.workload, f.ip, f.port, f.transport) or not ctx.baseline_gate(f.workload):
                continue
            what = {"tls_on_nonstandard_port": f"TLS to port {f.port}",
                    "ssh_on_nonstandard_port": f"SSH to port {f.port}",
                    "raw_encrypted_stream": "a raw encrypted-looking TCP stream (no TLS or SSH handshake)"}[kind]
            out.append(Finding(
                self.info.id, f.attr, f.workload, view.end,
                f"{_who(f.attr, f.workload)} sent {_human(self._sent[key])} over {what} to "
                f"{_dest(f.ip, f.port)}, a destination not in its baseline",
                {"kind": kind, "bytes": self._sent[key], "window_bytes": s.payload_bytes, "entropy": s.entropy,
                 "protocol_hint": proto,
                 "allowed_ports": (cfg["tls_ports"] if proto == TLS else cfg["ssh_ports"] if proto == SSH else None),
                 "threshold_bytes": cfg["min_bytes"]},
                (f.ip, f.port, f.transport), _proc(f), proto,
            ))
            del self._sent[key]
        if len(self._sent) > 100_000:
            self._sent.clear()
        return out


_HEX = re.compile(r"^[0-9a-f]+$", re.I)
_B32 = re.compile(r"^[a-z2-7]+=*$", re.I)
_B64 = re.compile(r"^[A-Za-z0-9+/_-]+=*$")
_MULTI_TLD = {"co", "com", "net", "org", "gov", "ac", "edu"}


def registered_domain(name: str) -> tuple[str, str]:
    """(registered domain, subdomain part): a.b.example.co.uk ->
    (example.co.uk, a.b). A small heuristic, not the public suffix list."""
    labels = [x for x in name.lower().rstrip(".").split(".") if x]
    n = 3 if len(labels) >= 3 and len(labels[-1]) == 2 and labels[-2] in _MULTI_TLD else 2
    return ".".join(labels[-n:]), ".".join(labels[:-n])


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
        super().__init__("SL-EXF-003")
        # (container, domain) -> subdomains seen recently, with times
        self._subs: dict[tuple[str, str], dict[str, float]] = defaultdict(dict)

    def forget_containers(self, ids: set[str]) -> None:
        _drop_containers(self._subs, ids)

    def evaluate(self, view: WindowView, ctx: Context) -> list[Finding]:
        cfg = ctx.settings(self.info.id)
        out = []
        for f in view.flows:
            s = f.summary
            if s.protocol_hint == HTTP and s.compression is None and s.body_entropy is not None \
                    and s.body_entropy >= ctx.high_bits() and s.body_sampled_bytes >= cfg["http_min_body_bytes"]:
                if ctx.known_destination(f.workload, f.ip, f.port, f.transport) and self._known_encrypted(ctx, f):
                    continue
                if not ctx.baseline_gate(f.workload):
                    continue
                out.append(Finding(
                    self.info.id, f.attr, f.workload, view.end,
                    f"{_who(f.attr, f.workload)} sent encrypted-looking HTTP bodies "
                    f"(entropy {s.body_entropy:.2f} bits/byte, {_human(s.payload_bytes)}) to {_dest(f.ip, f.port)} "
                    "over plain HTTP",
                    {"kind": "encrypted_http_body", "body_entropy": s.body_entropy,
                     "body_sampled_bytes": s.body_sampled_bytes, "bytes": s.payload_bytes,
                     "threshold_bits": ctx.high_bits()},
                    (f.ip, f.port, f.transport), _proc(f), HTTP,
                ))
            if s.dns_names:
                out += self._dns(f, view, ctx, cfg)
        self._expire(view.end)
        return out

    @staticmethod
    def _known_encrypted(ctx: Context, f: FlowView) -> bool:
        wb = ctx.workload(f.workload)
        return wb is not None and any(d.max_entropy >= ctx.high_bits() for k, d in wb.destinations.items()
                                      if k.startswith(f"{f.ip}|{f.port}|"))

    def _dns(self, f: FlowView, view: WindowView, ctx: Context, cfg: dict[str, Any]) -> list[Finding]:
        by_domain: dict[str, list[str]] = defaultdict(list)
        for name, _complete in f.summary.dns_names:
            dom, sub = registered_domain(name)
            if sub:
                by_domain[dom].append(sub)
        out = []
        for dom, subs in by_domain.items():
            seen = self._subs[(f.container_key, dom)]
            for sub in subs:
                seen[sub] = view.end
            encoded = [(x, e) for x in subs if (e := encoding_of(x, cfg["dns_min_encoded_length"]))]
            longest = max(subs, key=lambda x: max(len(p) for p in x.split(".")))
            long_label = max(len(p) for p in longest.split("."))
            ent = max(char_entropy(x.replace(".", "")) for x in subs)
            reasons = []
            if len(encoded) >= 2:
                reasons.append(f"{len(encoded)} names carry {encoded[0][1]}-encoded data")
            if long_label >= cfg["dns_min_label_length"] and ent >= cfg["dns_label_entropy_bits"]:
                reasons.append(f"labels up to {long_label} characters with entropy {ent:.1f} bits/char")
            if len(seen) >= cfg["dns_unique_subdomains"]:
                reasons.append(f"{len(seen)} unique subdomains of {dom} in {STATE_TTL_S / 60:.0f} min")
            if not reasons:
                continue
            if not ctx.baseline_gate(f.workload):
                continue
            out.append(Finding(
                self.info.id, f.attr, f.workload, view.end,
                f"{_who(f.attr, f.workload)} looks like it tunnels data through DNS queries for {dom}: "
                + "; ".join(reasons),
                {"kind": "dns_tunnel", "domain": dom, "queries_in_window": len(subs), "unique_subdomains": len(seen),
                 "encoded_names": len(encoded), "encoding": encoded[0][1] if encoded else None,
                 "max_label_length": long_label, "max_label_entropy_bits": round(ent, 2),
                 "examples": [f"{x}.{dom}" for x in subs[:3]]},
                (f.ip, f.port, f.transport), _proc(f), DNS,
            ))
        return out

    def _expire(self, now: float) -> None:
        for k in list(self._subs):
            d = self._subs[k]
            for sub in [s for s, t in d.items() if now - t > STATE_TTL_S]:
                del d[sub]
            if not d:
                del self._subs[k]


class NewDestination(_Base):
    """SL-EXF-004: a destination outside the baseline received a lot of
    encrypted-looking data (cumulative, so slow transfers count too)."""

    def __init__(self) -> None:
        super().__init__("SL-EXF-004")
        self._sent: dict[tuple[str, str, int, str], list[Any]] = {}

    def forget_containers(self, ids: set[str]) -> None:
        _drop_containers(self._sent, ids)

    def evaluate(self, view: WindowView, ctx: Context) -> list[Finding]:
        cfg = ctx.settings(self.info.id)
        out = []
        for f in view.flows:
            s = f.summary
            if not s.encrypted_like or not s.payload_bytes:
                continue
            if ctx.known_destination(f.workload, f.ip, f.port, f.transport) or not ctx.baseline_gate(f.workload):
                continue
            key = (f.container_key, f.ip, f.port, f.transport)
            st = self._sent.setdefault(key, [0, view.start, False, view.end])   # bytes, since, fired, last
            st[0] += s.payload_bytes
            st[3] = view.end
            if st[0] >= cfg["min_bytes"] and not st[2]:
                st[2] = True
                known = ctx.workload(f.workload) is not None
                out.append(Finding(
                    self.info.id, f.attr, f.workload, view.end,
                    f"{_who(f.attr, f.workload)} sent {_human(st[0])} of encrypted-looking data to "
                    f"{_dest(f.ip, f.port)}, " + ("a destination its baseline has never seen" if known
                                                 else "and its workload is not in the baseline at all"),
                    {"bytes": st[0], "threshold_bytes": cfg["min_bytes"], "since": st[1], "entropy": s.entropy,
                     "protocol_hint": s.protocol_hint, "workload_in_baseline": known},
                    (f.ip, f.port, f.transport), _proc(f), s.protocol_hint,
                ))
        for k in [k for k, v in self._sent.items() if view.end - v[3] > STATE_TTL_S]:
            del self._sent[k]   # quiet for an hour: forget
        return out


@dataclass
class _Life:
    attr: Attribution
    workload: str
    encrypted: int = 0
    destinations: Counter[tuple[str, int, str]] = field(default_factory=Counter)
    last: float = 0.0


class ShortLivedContainer(_Base):
    """SL-EXF-005: a container that lived briefly and sent encrypted data."""

    def __init__(self) -> None:
        super().__init__("SL-EXF-005")
        self._lives: dict[str, _Life] = {}

    def evaluate(self, view: WindowView, ctx: Context) -> list[Finding]:
        cfg = ctx.settings(self.info.id)
        for f in view.flows:
            if f.attr.container is None or not f.summary.encrypted_like:
                continue
            lf = self._lives.setdefault(f.attr.container.id, _Life(f.attr, f.workload))
            lf.encrypted += f.summary.payload_bytes
            lf.destinations[(f.ip, f.port, f.transport)] += f.summary.payload_bytes
            lf.last = view.end
        out = []
        for x in view.lifecycle:
            if x.kind != "stop" or x.attr.container is None:
                continue
            lf = self._lives.pop(x.attr.container.id, None)
            if lf is None or x.lifetime is None or x.lifetime > cfg["max_lifetime_seconds"]:
                continue
            if lf.encrypted < cfg["min_bytes"]:
                continue
            wb = ctx.workload(x.workload)
            if wb is not None and wb.lifetimes.n and wb.lifetimes.quantile(0.5) <= cfg["max_lifetime_seconds"] \
                    and all(ctx.known_destination(x.workload, *d) for d in lf.destinations):
                continue  # a batch workload doing what it always does
            if not ctx.baseline_gate(x.workload):
                continue
            dests = sorted(_dest(ip, port) for ip, port, _t in lf.destinations)
            top = lf.destinations.most_common(1)[0][0]
            out.append(Finding(
                self.info.id, x.attr, x.workload, x.ts,
                f"{_who(x.attr, x.workload)} lived {x.lifetime:.1f} s and sent {_human(lf.encrypted)} of "
                f"encrypted-looking data to {', '.join(dests[:5])} before it exited",
                {"lifetime_seconds": round(x.lifetime, 3), "encrypted_bytes": lf.encrypted,
                 "max_lifetime_seconds": cfg["max_lifetime_seconds"], "threshold_bytes": cfg["min_bytes"],
                 "destinations": dests[:10],
                 "baseline_lifetime_p50_seconds": round(wb.lifetimes.quantile(0.5), 1) if wb and wb.lifetimes.n else None},
                top,
            ))
        for k in [k for k, v in self._lives.items() if view.end - v.last > STATE_TTL_S]:
            del self._lives[k]
        return out



# `openssl <cipher>` shorthand commands (openssl aes-256-cbc -in f ...)
_OPENSSL_CIPHERS = ("aes", "des", "chacha20", "camellia", "aria", "bf", "cast", "sm4", "seed", "rc2", "rc4", "idea")
# gpg short options, possibly clustered: -c (symmetric), -e (encrypt): -c, -ac, -se
_GPG_SHORT = re.compile(r"^-[a-z]*[ce][a-z]*$")
# zip short options, possibly clustered, with -e (encrypt): -e, -re, -9er
_ZIP_SHORT = re.compile(r"^-[a-zA-Z0-9]*e[a-zA-Z0-9]*$")


def encryption_tool(p: ProcessRef) -> tuple[str, bool] | None:
    """(tool, sure) when a process is an encryption tool; sure=False when its
    arguments are unknown (the binary alone matched)."""
    exe = PurePosixPath(p.executable or p.name).name
    args = p.args
    if exe in ("age", "ccrypt", "ccencrypt", "gpg-zip"):
        return exe, True
    if exe in ("openssl", "gpg", "gpg2", "7z", "7za", "7zr", "zip") and args is None:
        return exe, False
    if args is None:
        return None
    rest = args[1:]
    if exe == "openssl":
        sub = rest[0] if rest else ""
        if sub == "enc" or (sub in ("smime", "cms") and "-encrypt" in rest) or sub.startswith(_OPENSSL_CIPHERS):
            return f"openssl {sub}", True
    elif exe in ("gpg", "gpg2"):
        if any(a in ("--symmetric", "--encrypt") or _GPG_SHORT.match(a) for a in rest):
            return exe, True
    elif exe in ("7z", "7za", "7zr"):
        if rest and rest[0] == "a" and any(a.startswith("-p") for a in rest):
            return exe, True
    elif exe == "zip":
        if any(a in ("--encrypt",) or a.startswith(("-P", "--password")) or _ZIP_SHORT.match(a) for a in rest):
            return exe, True
    return None


class EncryptThenEgress(_Base):
    """SL-EXF-006: an encryption tool ran, then the container sent data."""

    def __init__(self) -> None:
        super().__init__("SL-EXF-006")
        self._pending: dict[str, list[tuple[ExecView, str, bool]]] = defaultdict(list)

    def forget_containers(self, ids: set[str]) -> None:
        for cid in ids:
            self._pending.pop(cid, None)

    def evaluate(self, view: WindowView, ctx: Context) -> list[Finding]:
        cfg = ctx.settings(self.info.id)
        for e in view.execs:
            if e.attr.container is None:
                continue
            hit = encryption_tool(e.process)
            if hit:
                self._pending[e.attr.container.id].append((e, hit[0], hit[1]))
        out = []
        by_container: dict[str, list[FlowView]] = defaultdict(list)
        for f in view.flows:
            if f.attr.container is not None and f.summary.payload_bytes:
                by_container[f.attr.container.id].append(f)
        for cid in list(self._pending):
            pend = [p for p in self._pending[cid] if view.end - p[0].ts <= cfg["within_seconds"]]
            self._pending[cid] = pend
            flows = by_container.get(cid, [])
            sent = sum(f.summary.payload_bytes for f in flows)
            if pend and sent >= cfg["min_bytes"] and self._routine(ctx, pend[0][0], flows):
                pend.clear()
            if pend and sent >= cfg["min_bytes"] and not ctx.baseline_gate(pend[0][0].workload):
                pend.clear()
            if pend and sent >= cfg["min_bytes"]:
                e, tool, sure = pend[0]
                top = max(flows, key=lambda f: f.summary.payload_bytes)
                out.append(Finding(
                    self.info.id, e.attr, e.workload, view.end,
                    f"{_who(e.attr, e.workload)} ran {tool}"
                    + ("" if sure else " (arguments unknown)")
                    + f" and then sent {_human(sent)} to {', '.join(sorted({_dest(f.ip, f.port) for f in flows})[:5])}",
                    {"tool": tool, "arguments_known": sure, "exec_time": e.ts,
                     "seconds_to_egress": round(max(0.0, view.end - e.ts), 3), "bytes": sent,
                     "within_seconds": cfg["within_seconds"], "threshold_bytes": cfg["min_bytes"],
                     "destinations": sorted({_dest(f.ip, f.port) for f in flows})[:10],
                     "max_entropy": max((f.summary.entropy or 0.0) for f in flows)},
                    (top.ip, top.port, top.transport), e.process, top.summary.protocol_hint,
                    severity_delta=0 if sure else -15,
                ))
                pend.clear()
            if not pend:
                del self._pending[cid]
        return out


    @staticmethod
    def _routine(ctx: Context, e: ExecView, flows: list[FlowView]) -> bool:
        """The baseline has this workload running this tool and sending to
        these destinations: an encrypted backup job doing its job."""
        wb = ctx.workload(e.workload)
        return (wb is not None and (e.process.executable or "") in wb.executables
                and all(ctx.known_destination(f.workload, f.ip, f.port, f.transport) for f in flows))


# --- T1104 ----------------------------------------------------------------------------


class MultiStageChain(_Base):
    """SL-C2-001: connect A -> new executable from a writable path -> connect
    B (new), in one container, within the window of time."""

    def __init__(self) -> None:
        super().__init__("SL-C2-001")
        self._connects: dict[str, deque[ConnectView]] = defaultdict(lambda: deque(maxlen=256))
        self._stages: dict[str, list[tuple[ExecView, ConnectView]]] = defaultdict(list)

    def forget_containers(self, ids: set[str]) -> None:
        for cid in ids:
            self._connects.pop(cid, None)
            self._stages.pop(cid, None)

    def evaluate(self, view: WindowView, ctx: Context) -> list[Finding]:
        cfg = ctx.settings(self.info.id)
        horizon = cfg["within_seconds"]
        events: list[tuple[float, int, Any]] = [(c.ts, 0, c) for c in view.connects if c.attr.container]
        events += [(e.ts, 1, e) for e in view.execs if e.attr.container]
        out = []
        for _ts, kind, ev in sorted(events, key=lambda t: (t[0], t[1])):
            cid = ev.attr.container.id
            if kind == 0:
                for stage, first in list(self._stages.get(cid, [])):
                    if ev.ts - stage.ts > horizon:
                        continue
                    same = (ev.ip, ev.port) == (first.ip, first.port)
                    if same or ctx.known_destination(ev.workload, ev.ip, ev.port, ev.transport):
                        continue
                    out.append(self._finding(first, stage, ev, ctx))
                    self._stages[cid].remove((stage, first))
                self._connects[cid].append(ev)
            else:
                path = ev.process.executable or ""
                if not self._new_writable(ev, path, ctx, cfg):
                    continue
                prior = [c for c in self._connects.get(cid, ()) if 0 <= ev.ts - c.ts <= horizon]
                if prior:
                    self._stages[cid].append((ev, prior[-1]))
        for cid in list(self._stages):
            self._stages[cid] = [(s, c) for s, c in self._stages[cid] if view.end - s.ts <= horizon]
            if not self._stages[cid]:
                del self._stages[cid]
        for cid in [c for c, d in self._connects.items() if d and view.end - d[-1].ts > STATE_TTL_S]:
            del self._connects[cid]
        return [f for f in out if ctx.baseline_gate(f.workload)]

    @staticmethod
    def _new_writable(e: ExecView, path: str, ctx: Context, cfg: dict[str, Any]) -> bool:
        if not path.startswith(tuple(cfg["writable_paths"])):
            return False
        wb = ctx.workload(e.workload)
        return wb is None or path not in wb.executables

    def _finding(self, a: ConnectView, stage: ExecView, b: ConnectView, ctx: Context) -> Finding:
        steps = [
            {"step": "connect", "time": a.ts, "destination": _dest(a.ip, a.port), "process": _pname(a.process),
             "pid": a.process.pid},
            {"step": "exec", "time": stage.ts, "executable": stage.process.executable, "args": stage.process.args,
             "pid": stage.process.pid},
            {"step": "connect", "time": b.ts, "destination": _dest(b.ip, b.port), "process": _pname(b.process),
             "pid": b.process.pid},
        ]
        return Finding(
            self.info.id, b.attr, b.workload, b.ts,
            f"{_who(b.attr, b.workload)} connected to {_dest(a.ip, a.port)}, then ran new executable "
            f"{stage.process.executable} and opened a channel to {_dest(b.ip, b.port)} "
            f"{_secs(b.ts - a.ts)} later",
            {"chain": steps, "seconds": round(b.ts - a.ts, 3),
             "executable_in_baseline": False, "second_destination_in_baseline": False},
            (b.ip, b.port, b.transport), stage.process,
        )


class Beaconing(_Base):
    """SL-C2-002: periodic, low-jitter connections to a new destination."""

    def __init__(self) -> None:
        super().__init__("SL-C2-002")
        self._times: dict[tuple[str, str, int, str], deque[float]] = defaultdict(lambda: deque(maxlen=64))
        self._ctx: dict[tuple[str, str, int, str], ConnectView] = {}

    def forget_containers(self, ids: set[str]) -> None:
        _drop_containers(self._times, ids)
        _drop_containers(self._ctx, ids)

    def evaluate(self, view: WindowView, ctx: Context) -> list[Finding]:
        cfg = ctx.settings(self.info.id)
        touched = set()
        for c in view.connects:
            key = (c.attr.container.id if c.attr.container else "host", c.ip, c.port, c.transport)
            self._times[key].append(c.ts)
            self._ctx[key] = c
            touched.add(key)
        out = []
        for key in touched:
            c = self._ctx[key]
            ts = [t for t in self._times[key] if view.end - t <= cfg["horizon_seconds"]]
            if len(ts) < cfg["min_connections"]:
                continue
            gaps = [b - a for a, b in zip(ts, ts[1:])]
            mean = statistics.fmean(gaps)
            if mean < cfg["min_interval_seconds"]:
                continue
            jitter = statistics.pstdev(gaps) / mean
            if jitter > cfg["max_jitter"]:
                continue
            if ctx.known_destination(c.workload, c.ip, c.port, c.transport) or not ctx.baseline_gate(c.workload):
                continue
            out.append(Finding(
                self.info.id, c.attr, c.workload, c.ts,
                f"{_who(c.attr, c.workload)} connects to {_dest(c.ip, c.port)} every {mean:.1f} s "
                f"(jitter {jitter * 100:.0f} %, {len(ts)} connections), a destination not in its baseline",
                {"connections": len(ts), "mean_interval_seconds": round(mean, 3), "jitter": round(jitter, 3),
                 "max_jitter": cfg["max_jitter"], "min_connections": cfg["min_connections"],
                 "horizon_seconds": cfg["horizon_seconds"]},
                (c.ip, c.port, c.transport), c.process,
            ))
            self._times[key].clear()
        for k in [k for k, d in self._times.items() if not d or view.end - d[-1] > STATE_TTL_S]:
            del self._times[k]
            self._ctx.pop(k, None)
        return out


class InterContainer(_Base):
    """SL-C2-003: a container-to-container peer not in the baseline."""

    def __init__(self) -> None:
        super().__init__("SL-C2-003")

    def evaluate(self, view: WindowView, ctx: Context) -> list[Finding]:
        cfg = ctx.settings(self.info.id)
        out = []
        seen: set[tuple[str, str]] = set()
        for f in view.flows:
            if f.peer is None or f.peer_workload is None or f.attr.container is None:
                continue
            if f.summary.payload_bytes < cfg["min_bytes"] or f.peer.container is None:
                continue
            if f.peer.container.id == f.attr.container.id:
                continue
            # the reply direction of an allowed conversation is not a new peer
            if f.transport == "tcp" and f.port >= 32768 and not f.summary.connects:
                continue
            wb = ctx.workload(f.workload)
            if wb is not None and f.peer_workload in wb.peers:
                continue
            if not ctx.baseline_gate(f.workload):
                continue
            pair = (f.attr.container.id, f.peer.container.id)
            if pair in seen:
                continue
            seen.add(pair)
            pc = f.peer.container
            out.append(Finding(
                self.info.id, f.attr, f.workload, view.end,
                f"{_who(f.attr, f.workload)} talked to container {pc.name or pc.id[:12]} ({f.peer_workload}) "
                f"at {_dest(f.ip, f.port)}; that peer is not in its baseline",
                {"peer_container_id": pc.id, "peer_container_name": pc.name, "peer_workload": f.peer_workload,
                 "bytes": f.summary.payload_bytes, "baseline_peers": sorted(wb.peers)[:20] if wb else []},
                (f.ip, f.port, f.transport), _proc(f), f.summary.protocol_hint,
            ))
        return out


class LifecycleBurst(_Base):
    """SL-C2-004: a workload's containers start and stop in a burst, and one
    of them sends data to a destination outside the baseline."""

    def __init__(self) -> None:
        super().__init__("SL-C2-004")
        self._events: dict[str, deque[tuple[float, str]]] = defaultdict(lambda: deque(maxlen=10_000))
        self._fired_until: dict[str, float] = {}   # workload -> quiet until

    def evaluate(self, view: WindowView, ctx: Context) -> list[Finding]:
        cfg = ctx.settings(self.info.id)
        horizon = cfg["horizon_seconds"]
        for x in view.lifecycle:
            if x.attr.container is not None:
                self._events[x.workload].append((x.ts, x.attr.container.id))
        out = []
        for w in [w for w, until in self._fired_until.items() if until < view.end]:
            del self._fired_until[w]
        for w in list(self._events):
            dq = self._events[w]
            while dq and view.end - dq[0][0] > horizon:
                dq.popleft()
            if not dq:
                del self._events[w]
                continue
            need = self._threshold(ctx, w, cfg, horizon, view.end - view.start)
            if len(dq) < need or view.end < self._fired_until.get(w, 0.0):
                continue
            burst = {c for _t, c in dq}
            new = [f for f in view.flows if f.workload == w and f.attr.container is not None
                   and f.attr.container.id in burst and f.summary.payload_bytes
                   and not ctx.known_destination(f.workload, f.ip, f.port, f.transport)]
            if not new or not ctx.baseline_gate(w):
                continue
            top = max(new, key=lambda f: f.summary.payload_bytes)
            self._fired_until[w] = view.end + horizon
            out.append(Finding(
                self.info.id, top.attr, w, view.end,
                f"{len(dq)} container starts/stops of {w} in {horizon:.0f} s ({len(burst)} containers) while "
                f"{_who(top.attr, w).lower()} sent data to new destination {_dest(top.ip, top.port)}",
                {"lifecycle_events": len(dq), "containers": len(burst), "horizon_seconds": horizon,
                 "threshold_events": need, "new_destinations": sorted({_dest(f.ip, f.port) for f in new})[:10]},
                (top.ip, top.port, top.transport), _proc(top), top.summary.protocol_hint,
            ))
        return out

    @staticmethod
    def _threshold(ctx: Context, w: str, cfg: dict[str, Any], horizon: float, window: float) -> float:
        """min_events, raised for workloads whose baseline shows bursts."""
        wb = ctx.workload(w)
        if wb is None or wb.windows < ctx.config.detection.min_baseline_windows or window <= 0:
            return cfg["min_events"]
        usual = 2 * wb.starts_per_window.quantile(0.99) * horizon / window   # starts and stops
        return max(cfg["min_events"], usual)


def all_rules() -> list[Any]:
    return [VolumeSpike(), NonStandardPort(), CleartextCarrier(), NewDestination(), ShortLivedContainer(),
            EncryptThenEgress(), MultiStageChain(), Beaconing(), InterContainer(), LifecycleBurst()]
