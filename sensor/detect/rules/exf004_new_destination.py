"""SL-EXF-004: a destination outside the baseline received a lot of."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sensor.detect.rule import MIB, T1048, Context, Finding, RuleInfo, RuleSettings
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
from sensor.detect.view import WindowView


@dataclass(frozen=True)
class Settings(RuleSettings):
    min_bytes: int = 1 * MIB
    # upload/download ratio (payload sent per byte received, cumulative): at
    # or above upload_ratio_high raises the severity, at or below
    # upload_ratio_balanced (an API answering in proportion) lowers it
    upload_ratio_high: float = 20.0
    upload_ratio_balanced: float = 2.0
    # A destination's running count is kept this long after its last
    # encrypted byte: a drip with sends further apart than this starts over.
    quiet_seconds: float = 86400.0


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
        # quiet for too long: forget, before this window adds to the count
        for k in [k for k, v in self._sent.items() if view.start - v[3] > cfg.quiet_seconds]:
            del self._sent[k]
        out = []
        for f in view.flows:
            s = f.summary
            if not s.encrypted_bytes:
                continue
            if ctx.known_flow(f) or not ctx.baseline_gate(f.workload):
                continue
            key = (f.container_key, f.ip, f.port, f.transport)
            # bytes, since, fired, last, bytes received, packets received
            st = self._sent.setdefault(key, [0, view.start, False, view.end, 0, 0])
            st[0] += s.encrypted_bytes
            st[3] = view.end
            st[4] += s.rx_payload_bytes
            st[5] += s.rx_packets
            if st[0] >= cfg.min_bytes and not st[2]:
                st[2] = True
                known = ctx.workload(f.workload) is not None
                ratio = st[0] / max(st[4], 1) if st[5] else None
                delta, shape = 0, ""
                if ratio is not None and ratio >= cfg.upload_ratio_high:
                    delta, shape = 10, f" while receiving only {_human(st[4])}"
                elif ratio is not None and ratio <= cfg.upload_ratio_balanced:
                    delta, shape = -20, f" and received {_human(st[4])} back, in proportion"
                out.append(
                    Finding(
                        self.info.id,
                        f.attr,
                        f.workload,
                        view.end,
                        f"{_who(f.attr, f.workload)} sent {_human(st[0])} of encrypted-looking data to "
                        f"{_dest(f.ip, f.port, f.domain)}, "
                        + (
                            "a destination its baseline has never seen"
                            if known
                            else "and its workload is not in the baseline at all"
                        )
                        + shape,
                        {
                            "bytes": st[0],
                            "threshold_bytes": cfg.min_bytes,
                            "since": st[1],
                            "entropy": s.entropy,
                            "protocol_hint": s.protocol_hint,
                            "workload_in_baseline": known,
                            **(
                                {"received_bytes": st[4], "upload_download_ratio": round(ratio, 2)}
                                if ratio is not None
                                else {}
                            ),
                            **_classes(s),
                        },
                        (f.ip, f.port, f.transport),
                        _proc(f),
                        s.protocol_hint,
                        severity_delta=delta,
                        **_names(f),
                    )
                )
        return out
