"""SL-EXF-004: a destination outside the baseline received a lot of."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sensor.detect.rule import MIB, T1048, Context, Finding, RuleInfo, RuleSettings
from sensor.detect.rules._common import STATE_TTL_S, CappedTable, _Base, _dest, _drop_containers, _human, _proc, _who
from sensor.detect.view import WindowView


@dataclass(frozen=True)
class Settings(RuleSettings):
    min_bytes: int = 1 * MIB


INFO = RuleInfo(
    "SL-EXF-004",
    "new_destination_encrypted",
    "Large encrypted transfer to a new destination",
    "A destination not in the workload's baseline received a large amount of high-entropy data.",
    T1048,
    68,
    Settings,
)


class NewDestination(_Base):
    """SL-EXF-004: a destination outside the baseline received a lot of
    encrypted-looking data (cumulative, so slow transfers count too)."""

    def __init__(self) -> None:
        super().__init__(INFO)
        self._sent: dict[tuple[str, str, int, str], list[Any]] = CappedTable()

    def forget_containers(self, ids: set[str]) -> None:
        _drop_containers(self._sent, ids)

    def evaluate(self, view: WindowView, ctx: Context) -> list[Finding]:
        cfg = ctx.settings(self.info.id, Settings)
        out = []
        for f in view.flows:
            s = f.summary
            if not s.encrypted_like or not s.payload_bytes:
                continue
            if ctx.known_destination(f.workload, f.ip, f.port, f.transport) or not ctx.baseline_gate(f.workload):
                continue
            key = (f.container_key, f.ip, f.port, f.transport)
            st = self._sent.setdefault(key, [0, view.start, False, view.end])  # bytes, since, fired, last
            st[0] += s.payload_bytes
            st[3] = view.end
            if st[0] >= cfg.min_bytes and not st[2]:
                st[2] = True
                known = ctx.workload(f.workload) is not None
                out.append(
                    Finding(
                        self.info.id,
                        f.attr,
                        f.workload,
                        view.end,
                        f"{_who(f.attr, f.workload)} sent {_human(st[0])} of encrypted-looking data to "
                        f"{_dest(f.ip, f.port)}, "
                        + (
                            "a destination its baseline has never seen"
                            if known
                            else "and its workload is not in the baseline at all"
                        ),
                        {
                            "bytes": st[0],
                            "threshold_bytes": cfg.min_bytes,
                            "since": st[1],
                            "entropy": s.entropy,
                            "protocol_hint": s.protocol_hint,
                            "workload_in_baseline": known,
                        },
                        (f.ip, f.port, f.transport),
                        _proc(f),
                        s.protocol_hint,
                    )
                )
        for k in [k for k, v in self._sent.items() if view.end - v[3] > STATE_TTL_S]:
            del self._sent[k]  # quiet for an hour: forget
        return out
