"""Prometheus metrics (`--metrics ADDR`, off by default).

A collector renders the sensor's latest published snapshot at scrape time:
nothing is counted twice and the event path pays nothing for metrics.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import start_http_server
from prometheus_client.core import CollectorRegistry, CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.registry import Collector

from sensor import __version__


def _one(family: type, name: str, help_: str, value: float) -> Any:
    """A metric family with a single, label-less sample."""
    f = family(name, help_)
    f.add_metric([], value)
    return f


class SensorCollector(Collector):
    def __init__(self, snapshot: Callable[[], dict[str, Any]], severities: dict[str, int]) -> None:
        self.snapshot = snapshot
        self.severities = severities

    def collect(self) -> Iterator[Any]:
        s = self.snapshot()
        counters = s.get("counters", {})
        drops = s.get("drops", {})
        kernel = s.get("kernel", {})
        info = InfoMetricFamily("sluice_build", "Sluice build and kernel facts")
        info.add_metric(
            [],
            {
                "version": __version__,
                "kernel": kernel.get("kernel_release", ""),
                "buffer": s.get("hooks", {}).get("buffer", ""),
                "mode": s.get("mode", ""),
            },
        )
        yield info
        ev = CounterMetricFamily("sluice_events", "Kernel events decoded, by source", labels=["source"])
        for src in ("exec", "exit", "connect", "sample", "cgroup", "exec_args"):
            ev.add_metric([src], counters.get(src, 0))
        yield ev
        sub = CounterMetricFamily("sluice_kernel_submitted", "Events the kernel submitted, by type", labels=["type"])
        lost = CounterMetricFamily(
            "sluice_kernel_dropped", "Events the kernel could not submit (buffer full)", labels=["type"]
        )
        for k, v in counters.items():
            if k.startswith("submitted_"):
                sub.add_metric([k[len("submitted_") :]], v)
        for k, v in drops.items():
            if k.startswith("dropped_"):
                lost.add_metric([k[len("dropped_") :]], v)
        yield sub
        yield lost
        for name, key, help_ in (
            ("sluice_user_lost_records", "user_lost_records", "Records lost between kernel and user space"),
            ("sluice_decode_errors", "decode_errors", "Records that could not be decoded"),
            ("sluice_flow_map_full", "flow_map_full", "Packets whose flow could not be tracked (map full)"),
            ("sluice_flow_bytes_untracked", "flow_bytes_untracked", "Bytes of flows that could not be tracked"),
            ("sluice_output_errors", "output_errors", "Output lines lost (queue full, sink errors)"),
        ):
            yield _one(CounterMetricFamily, name, help_, drops.get(key, 0))
        det = s.get("detection") or {}
        alerts = CounterMetricFamily(
            "sluice_alerts", "Alerts emitted, by rule and severity", labels=["rule", "severity"]
        )
        by_rule = det.get("by_rule") or {}
        # every rule from zero, so rate() and increase() see its first alert
        for rule in sorted(set(self.severities) | set(by_rule)):
            alerts.add_metric([rule, str(self.severities.get(rule, 0))], by_rule.get(rule, 0))
        yield alerts
        for name, key, help_ in (
            ("sluice_alerts_suppressed", "suppressed", "Alerts suppressed as repeats"),
            (
                "sluice_alerts_escalated",
                "escalated",
                "Repeats alerted within their suppression interval: escalation_factor times the last alert's size",
            ),
            ("sluice_alerts_allowed", "allowed", "Findings silenced by allow lists"),
        ):
            yield _one(CounterMetricFamily, name, help_, det.get(key, 0))
        errs = CounterMetricFamily(
            "sluice_rule_errors", "Windows a rule was skipped because it raised, by rule", labels=["rule"]
        )
        for rule, n in (det.get("rule_errors_by_rule") or {}).items():
            errs.add_metric([rule], n)
        yield errs
        out = s.get("output", {})
        yield _one(CounterMetricFamily, "sluice_output_lines", "Lines delivered to the sinks", out.get("written", 0))
        yield _one(
            CounterMetricFamily,
            "sluice_output_dropped",
            "Lines dropped because the output queue was full",
            out.get("dropped_queue_full", 0),
        )
        yield _one(
            GaugeMetricFamily,
            "sluice_containers_tracked",
            "Containers the sensor is tracking",
            s.get("containers_tracked", 0),
        )
        entries = s.get("containment", {}).get("entries", [])
        yield _one(
            GaugeMetricFamily,
            "sluice_containment_entries",
            "Containers isolated and destinations blocked now",
            len(entries),
        )
        yield _one(
            CounterMetricFamily,
            "sluice_containment_dropped_packets",
            "Packets dropped by the current containment entries",
            sum(e.get("dropped", 0) for e in entries),
        )
        yield from bpf_program_metrics(s.get("bpf_programs") or {})
        ft = s.get("flow_table", {})
        yield _one(
            GaugeMetricFamily,
            "sluice_flow_table_entries",
            "Kernel flow table entries used by the last window (cgroup x destination)",
            ft.get("entries", 0),
        )
        yield _one(
            GaugeMetricFamily,
            "sluice_flow_table_capacity",
            "Kernel flow table size (kernel.flow_map_entries); beyond it flows are not tracked",
            ft.get("capacity", 0),
        )
        rt = s.get("runtime", {})
        yield _one(
            CounterMetricFamily,
            "sluice_runtime_lookup_failures",
            "Container metadata lookups that failed (those containers are known by id only)",
            rt.get("lookup_failures", 0),
        )
        yield _one(
            GaugeMetricFamily,
            "sluice_containers_without_metadata",
            "Tracked containers whose name, image and labels are not known",
            rt.get("containers_without_metadata", 0),
        )
        yield _one(
            GaugeMetricFamily, "sluice_uptime_seconds", "Seconds since the sensor started", s.get("uptime_seconds", 0)
        )
        yield _one(
            GaugeMetricFamily,
            "sluice_ready",
            "1 when programs are attached and the sensor is running",
            1 if s.get("ready") else 0,
        )


def bpf_program_metrics(section: dict[str, Any]) -> Iterator[Any]:
    """Each BPF program's runs and run time (as Tetragon's overhead metrics),
    only while the kernel measures them (bpf_stats): zeros would read as
    "free"."""
    if not section.get("stats_enabled"):
        return
    runs = CounterMetricFamily(
        "sluice_bpf_program_runs", "Runs of each sensor BPF program (kernel bpf_stats)", labels=["program", "hook"]
    )
    secs = CounterMetricFamily(
        "sluice_bpf_program_run_seconds",
        "Time spent in each sensor BPF program (kernel bpf_stats)",
        labels=["program", "hook"],
    )
    for name, p in (section.get("programs") or {}).items():
        runs.add_metric([name, str(p.get("hook", ""))], p.get("runs", 0))
        secs.add_metric([name, str(p.get("hook", ""))], p.get("run_time_ns", 0) / 1e9)
    yield runs
    yield secs


def serve(addr: str, snapshot: Callable[[], dict[str, Any]], severities: dict[str, int]) -> Any:
    host, _, port = addr.rpartition(":")
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SensorCollector(snapshot, severities))
    return start_http_server(int(port), addr=host.strip("[]") or "0.0.0.0", registry=registry)
