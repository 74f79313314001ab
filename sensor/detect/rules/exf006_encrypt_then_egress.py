"""SL-EXF-006: an encryption tool ran, then the container sent data."""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import PurePosixPath

from sensor.detect.rule import KIB, T1048, Context, Finding, RuleInfo, RuleSettings
from sensor.detect.rules._common import _Base, _dest, _human, _who
from sensor.detect.view import ExecView, FlowView, ProcessRef, WindowView


@dataclass(frozen=True)
class Settings(RuleSettings):
    within_seconds: float = 120.0
    min_bytes: int = 4 * KIB


INFO = RuleInfo(
    "SL-EXF-006",
    "encryption_tool_then_egress",
    "Encryption tool run, then egress",
    "An encryption tool (openssl enc, gpg symmetric, 7z/zip with a password, age, ccrypt) ran in "
    "a container and the container sent data out shortly after.",
    T1048,
    66,
    Settings,
)

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
        super().__init__(INFO)
        self._pending: dict[str, list[tuple[ExecView, str, bool]]] = defaultdict(list)

    def forget_containers(self, ids: set[str]) -> None:
        for cid in ids:
            self._pending.pop(cid, None)

    def evaluate(self, view: WindowView, ctx: Context) -> list[Finding]:
        cfg = ctx.settings(self.info.id, Settings)
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
            pend = [p for p in self._pending[cid] if view.end - p[0].ts <= cfg.within_seconds]
            self._pending[cid] = pend
            flows = by_container.get(cid, [])
            sent = sum(f.summary.payload_bytes for f in flows)
            if pend and sent >= cfg.min_bytes and self._routine(ctx, pend[0][0], flows):
                pend.clear()
            if pend and sent >= cfg.min_bytes and not ctx.baseline_gate(pend[0][0].workload):
                pend.clear()
            if pend and sent >= cfg.min_bytes:
                e, tool, sure = pend[0]
                top = max(flows, key=lambda f: f.summary.payload_bytes)
                out.append(
                    Finding(
                        self.info.id,
                        e.attr,
                        e.workload,
                        view.end,
                        f"{_who(e.attr, e.workload)} ran {tool}"
                        + ("" if sure else " (arguments unknown)")
                        + f" and then sent {_human(sent)} to {', '.join(sorted({_dest(f.ip, f.port, f.domain) for f in flows})[:5])}",
                        {
                            "tool": tool,
                            "arguments_known": sure,
                            "exec_time": e.ts,
                            "seconds_to_egress": round(max(0.0, view.end - e.ts), 3),
                            "bytes": sent,
                            "within_seconds": cfg.within_seconds,
                            "threshold_bytes": cfg.min_bytes,
                            "destinations": sorted({_dest(f.ip, f.port, f.domain) for f in flows})[:10],
                            "max_entropy": max((f.summary.entropy or 0.0) for f in flows),
                        },
                        (top.ip, top.port, top.transport),
                        e.process,
                        top.summary.protocol_hint,
                        severity_delta=0 if sure else -15,
                        magnitude=sent,
                    )
                )
                pend.clear()
            if not pend:
                del self._pending[cid]
        return out

    @staticmethod
    def _routine(ctx: Context, e: ExecView, flows: list[FlowView]) -> bool:
        """The baseline has this workload running this tool and sending to
        these destinations: an encrypted backup job doing its job."""
        wb = ctx.workload(e.workload)
        return (
            wb is not None and (e.process.executable or "") in wb.executables and all(ctx.known_flow(f) for f in flows)
        )
