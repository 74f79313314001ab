"""What the sensor's health documents and `sluice status` say about loss:
the drop counters (kernel, ring reader, decoder, output) and the one-line
message of a health document."""

from __future__ import annotations

from typing import Any

# kernel stats that count lost records or unaccounted bytes
_LOSS_STATS = ("flow_map_full", "flow_bytes_untracked", "parent_map_full", "execd_map_full", "containment_map_full")
# kernel stats shown as counters (not losses): fair-share refusals (counted,
# their bytes kept), fragments, containment and raw-socket activity
KERNEL_COUNTERS = (
    "flow_quota_refused",
    "event_quota_refused",
    "ipv4_fragments",
    "containment_followed_cgroups",
    "raw_sockets_denied",
    "raw_socket_events_deduplicated",
    "packet_socket_processes_killed",
    "socket_state_refused",
    "unix_refused",
    "unix_into_refused",
)


def drops(kernel_stats: dict[str, int], lost_records: int, decode_errors: int, output_errors: int) -> dict[str, int]:
    d = {k: v for k, v in kernel_stats.items() if k.startswith("dropped_") or k in _LOSS_STATS}
    d["user_lost_records"] = lost_records
    d["decode_errors"] = decode_errors
    d["output_errors"] = output_errors
    d["total"] = (
        sum(v for k, v in d.items() if k.startswith("dropped_"))
        + d.get("flow_map_full", 0)
        + d["user_lost_records"]
        + d["decode_errors"]
        + d["output_errors"]
    )
    return d


def message(action: str, h: dict[str, Any]) -> str:
    msg = f"sluice {action.replace('sensor_', '')}: {h['status']}"
    bad = sorted(k for k, v in h["hooks"].items() if str(v).startswith("unavailable"))
    if bad:
        msg += "; unavailable: " + ", ".join(bad)
    if h["drops"]["total"]:
        msg += f"; {h['drops']['total']} records lost since start"
    return msg
