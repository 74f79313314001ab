"""The sensor process: probe, load, drain, count, emit, until told to stop.

The runner composes: it builds the parts (source, attributor, container
registry, pipeline, detector, containment service, outputs, control socket),
wires the registry's subscribers, and runs the main loop. Control requests
reach the loop through daemon/handoff.py; health wording is daemon/health.py.

Size (~470 lines): most of it is the health and status record, which reads
every part; it is the next piece to move (daemon/health.py) once the
branches that add health fields (issues 10, 13) have landed.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from typing import Any

from sensor.attribution.cgroups import CgroupResolver
from sensor.attribution.containers import Attributor
from sensor.attribution.docker_api import DockerClient
from sensor.attribution.netmap import NetMap
from sensor.attribution.registry import ContainerRegistry
from sensor.attribution.runtimesock import RuntimeSockets
from sensor.config import Config
from sensor.daemon import health
from sensor.daemon.control_server import ControlServer
from sensor.daemon.handoff import Handoff
from sensor.detect.baseline import Baseline, read_key
from sensor.detect.baseline import load as load_baseline
from sensor.detect.baseline import save as save_baseline
from sensor.detect.engine import Detector
from sensor.detect.learn import Learner
from sensor.detect.rules import all_rules
from sensor.detect.rules.fim001_orchestration_config import Settings as FimSettings
from sensor.detect.view import WindowObserver
from sensor.errors import SluiceError
from sensor.kernel.hooks import UNIX_CONNECT_HOOK, UNIX_INTO_HOOK, UNIX_SENDMSG_HOOK, wanted_units
from sensor.kernel.memory import HeapTrimmer, resident_kb
from sensor.kernel.probe import ProbeReport, probe, require_root, require_runnable
from sensor.kernel.progstats import stats_enabled, status_section
from sensor.kernel.source import EventSource
from sensor.ops.fim import FimUnavailable, FimWatcher
from sensor.outputs import documents
from sensor.outputs.sinks import build_output
from sensor.response.service import ContainmentService
from sensor.telemetry.pipeline import Pipeline, monotonic_to_wall_factory

# The reader drains at least this often: most records are submitted without
# a wake-up (see bpf/lib/common.bpf.h), so this bounds their latency (rules
# run per window; execs wake the reader at once).
POLL_MS = 100
ALERT_RING = 1000
# The state shown by `sluice status`, `top` and metrics is rebuilt when asked
# (within one poll interval), and at least this often: nothing is spent on
# it while nobody looks.
SNAPSHOT_EVERY_S = 5.0


class Sensor:
    """One sensor process. mode "detect" runs the rules (against a baseline
    when one is given); mode "learn" folds every window into a baseline and
    writes it when the learning time is up or the sensor is stopped."""

    def __init__(
        self,
        config: Config,
        source_factory: Callable[[Config, ProbeReport], EventSource] | None = None,
        report: ProbeReport | None = None,
        baseline_path: str | None = None,
        learn_seconds: float | None = None,
        replace_baseline: bool = False,
    ) -> None:
        self.config = config
        self.baseline_path = baseline_path
        self.learn_seconds = learn_seconds
        self.replace_baseline = replace_baseline
        self.baseline: Baseline | None = None
        self.detector: Detector | None = None
        self.learner: Learner | None = None
        self.learned_saved = False
        self.fim: FimWatcher | None = None
        self.host_name = config.sensor.host_name or os.uname().nodename
        if report is None:
            require_root()  # before any file is opened: a non-root user gets this, not an output error
        self.output = build_output(config.output, self.host_name)
        self.output.on_writer_restart = lambda: self.emit(self._health_doc("output_writer_restarted"))
        self._metrics_server: Any = None
        self._source_factory = source_factory
        self.report = report
        self.source: EventSource | None = None
        self.hooks: dict[str, str] = {}
        self.started_at = time.time()
        self.startup_seconds: float | None = None
        self.ready = False
        self._stop = False
        self._reopen = False
        self._snapshot: dict[str, Any] = {"ok": True, "ready": False}
        self._handoff = Handoff(ALERT_RING)  # control requests -> main loop; recent alerts
        self._key: bytes | None = None  # baseline signing key
        self.containment: ContainmentService | None = None
        self.control: ControlServer | None = None
        self.pipeline: Pipeline | None = None
        self.attributor: Attributor | None = None
        self.registry: ContainerRegistry | None = None
        self.flow_entries = 0
        # the wall-clock end of the last window closed (their count is
        # pipeline.counts["windows"]): what happened before it is in the
        # summaries (status shows it; tests wait on it)
        self.last_window_end = 0.0
        self.learn_until: float | None = None
        # free heap a flood's window left behind goes back to the kernel
        self.trimmer = HeapTrimmer()

    # --- documents -----------------------------------------------------------

    def emit(self, doc: dict[str, Any]) -> None:
        self.output.emit(doc)
        if doc["event"]["kind"] == "alert":
            self._handoff.record_alert(doc)

    def _health_doc(self, action: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        ts = time.time()
        h = self._health()
        if extra:
            h.update(extra)
        return documents.health(self.host_name, ts, action, h, health.message(action, h))

    def _health(self) -> dict[str, Any]:
        ks = self.source.kernel_stats() if self.source else {}  # one read of the stats map
        drops = health.drops(
            ks,
            self.source.lost_records() if self.source else 0,
            self.pipeline.counts["decode_errors"] if self.pipeline else 0,
            self.output.errors,
        )
        unavailable = any(str(v).startswith("unavailable") for v in self.hooks.values())
        return {
            "status": "degraded" if unavailable or drops["total"] or self.output.writer_restarts else "ok",
            "uptime_seconds": round(time.time() - self.started_at, 3),
            "startup_seconds": self.startup_seconds,
            "bpf_compile": self.source.compile_info() if self.source else {},
            "hooks": dict(self.hooks),
            "kernel": self.report.as_dict() if self.report else {},
            "drops": drops,
            "counters": {
                **({k: v for k, v in ks.items() if k.startswith("submitted_")}),
                "egress_packets": ks.get("egress_packets", 0),
                "udp_sends_deduplicated": ks.get("udp_sends_deduplicated", 0),
                "dns_responses_truncated": ks.get("dns_responses_truncated", 0),
                "dns_responses_capped": ks.get("dns_responses_capped", 0),
                **{k: ks.get(k, 0) for k in health.KERNEL_COUNTERS},
                **(self.pipeline.counts if self.pipeline else {}),
                # destination names: DNS responses parsed / unparsable, SNI and Host found
                **({f"names_{k}": v for k, v in self.pipeline.names.counts.items()} if self.pipeline else {}),
                "output_lines": self.output.written,
                **(
                    {
                        "learn_quarantined": self.learner.quarantined,
                        "learn_resolvers_withheld": self.learner.resolvers_withheld,
                    }
                    if self.learner is not None
                    else {}
                ),
            },
            "output": self.output.stats(),
            "runtime": {
                "docker_socket": self.config.runtime.docker_socket,
                "status": self.attributor.runtime_status if self.attributor is not None else "unknown",
                **(self.attributor.lookup_stats() if self.attributor is not None else {}),
            },
            "containers_tracked": len(self.registry) if self.registry is not None else 0,
            "control": self.control.stats() if self.control is not None else {},
            "flow_table": {"entries": self.flow_entries, "capacity": self.config.kernel.flow_map_entries},
            "last_window_end": round(self.last_window_end, 3),
            "containment": {
                **self._containment_listing(),
                **({"problem": self.containment.problem} if self.containment and self.containment.problem else {}),
            },
            "memory_kb": resident_kb(),
            "memory_trim": self.trimmer.stats(),
            "config": self.config.source,
            "mode": "learn" if self.learn_seconds is not None else "detect",
            "baseline": {
                "path": self.baseline_path,
                "workloads": len(self.baseline.workloads) if self.baseline else 0,
                "learned_windows": self.learner.windows if self.learner else 0,
            },
            "detection": (
                {
                    **self.detector.counts,
                    "by_rule": dict(self.detector.by_rule),
                    "rules": len(self.detector.rules),
                    "rule_errors_by_rule": dict(self.detector.rule_errors),
                    "state_evictions": self.detector.state_evictions(),
                    "last_rule_error": self.detector.last_rule_error,
                }
                if self.detector
                else None
            ),
        }

    # --- control -------------------------------------------------------------

    def _publish_snapshot(self) -> None:
        h = self._health()
        self._snapshot = {
            "ok": True,
            "ready": self.ready,
            "pid": os.getpid(),
            "host": self.host_name,
            "window_seconds": self.config.sensor.window_seconds,
            "output": self.config.output.path or "stdout",
            "events": self.config.output.events,
            "top": list(self.pipeline.top) if self.pipeline else [],
            **h,
            # the sensor's own kernel cost (kernel bpf_stats), status and metrics only
            "bpf_programs": status_section(self.source.program_costs() if self.source else [], stats_enabled()),
        }

    def fresh_snapshot(self, timeout: float = 1.0) -> dict[str, Any]:
        """Ask the main loop (which owns the state) for a new snapshot. A
        loop that does not answer is stalled: the sensor is then not ready
        (the last snapshot is shown, marked), whatever it said before."""
        if not self.ready:
            return self._snapshot
        if self._handoff.wait_for_snapshot(timeout):
            return self._snapshot
        stalled = round(time.monotonic() - self._handoff.loop_beat, 1)
        return {
            **self._snapshot,
            "ready": False,
            "status": "stalled",
            "not_ready": f"the main loop has not answered for {stalled} s (last snapshot shown)",
            "loop_stalled_seconds": stalled,
        }

    def _call_in_loop(self, fn: Callable[[], dict[str, Any]], timeout: float = 5.0) -> dict[str, Any]:
        """Run fn on the main loop (which owns pipeline and maps) and return
        its answer to the control client."""
        if not self.ready:
            return {"ok": False, "error": "the sensor is not ready yet"}
        return self._handoff.call(fn, timeout)

    def _serve_snapshot_requests(self) -> None:
        """The main loop's turn: run queued control calls, answer status waiters."""
        self._handoff.serve(self._publish_snapshot)

    def _handle(self, req: dict[str, Any]) -> dict[str, Any]:
        cmd = req.get("cmd")
        if cmd in ("status", "top"):
            return self.fresh_snapshot()
        if cmd == "alerts":
            return self._handoff.alerts_since(int(req.get("since", 0)))
        if cmd == "isolate":
            return self._call_in_loop(
                lambda: self._contain().isolate(str(req.get("container", "")), str(req.get("reason", "")))
            )
        if cmd == "block":
            return self._call_in_loop(
                lambda: self._contain().block(
                    str(req.get("destination", "")), req.get("container"), str(req.get("reason", ""))
                )
            )
        if cmd == "release":
            return self._call_in_loop(lambda: self._contain().release(req.get("container"), req.get("destination")))
        if cmd == "containment":
            return self._call_in_loop(lambda: {"ok": True, **self._containment_listing()})
        return {"ok": False, "error": f"unknown command {cmd!r}"}

    # --- containment (run on the main loop) ----------------------------------

    def _containment_listing(self) -> dict[str, list[dict[str, Any]]]:
        if self.containment is None:
            return {"entries": [], "lingering": []}
        return self.containment.listing()

    def _contain(self) -> ContainmentService:
        assert self.containment is not None
        return self.containment

    def _setup_containment(self) -> None:
        assert self.source is not None and self.registry is not None
        self.containment = ContainmentService(
            self.source, self.config.sensor.containment_state, self.registry, self.emit, self.host_name
        )
        self.containment.unix_hook = (self.hooks or {}).get(UNIX_CONNECT_HOOK, "not attached")
        self.containment.unix_sendmsg_hook = (self.hooks or {}).get(UNIX_SENDMSG_HOOK, "not attached")
        self.containment.unix_into_hook = (self.hooks or {}).get(UNIX_INTO_HOOK, "not attached")
        self.containment.restore()

    # --- main loop -----------------------------------------------------------

    def request_stop(self, *_: object) -> None:
        self._stop = True

    def request_reopen(self, *_: object) -> None:
        self._reopen = True

    def _runtime_status(self, status: str, detail: str) -> None:
        """The container runtime became reachable or unreachable."""
        self.emit(self._health_doc("runtime_status", {"runtime_detail": detail}))

    def setup(self) -> None:
        t0 = time.monotonic()
        cfg = self.config
        if self.report is None:
            require_root()
            self.report = probe(cfg.kernel.mount_tracefs, wanted_units(cfg.kernel.exec_args))
            require_runnable(self.report)
        assert self.report.cgroup2_mount
        resolver = CgroupResolver(self.report.cgroup2_mount)
        resolver.scan()
        docker = DockerClient(cfg.runtime.docker_socket, cfg.runtime.timeout_seconds)
        self.attributor = Attributor(
            resolver,
            docker,
            cfg.runtime.negative_cache_seconds,
            on_runtime_status=self._runtime_status,
            oci_bundles=tuple(cfg.runtime.oci_bundles),
        )
        self.attributor.start_worker()  # engine lookups never on the drain loop
        self.registry = ContainerRegistry(self.attributor)
        self._setup_detection()
        if self.detector is not None:
            self.registry.subscribe(on_removed=self.detector.containers_removed)
        # the detector feeds its own learner (learn_while_detecting)
        observers: list[WindowObserver] = [self.detector] if self.detector else ([self.learner] if self.learner else [])
        self.pipeline = Pipeline(
            self.attributor,
            self.emit,
            self.host_name,
            cfg.output.events,
            monotonic_to_wall_factory(),
            observers=observers,
            netmap=NetMap(),
            high_entropy_bits=cfg.detection.high_entropy_bits,
            max_cmdline_bytes=cfg.sensor.max_cmdline_bytes,
            registry=self.registry,
            sample_bytes=cfg.kernel.sample_bytes,
            sample_every=cfg.kernel.sample_every,
            sample_first_packets=cfg.kernel.sample_first_packets,
            # a cgroup has at most flow_quota_per_cgroup flows counted per
            # window: knowledge of two windows' worth per cgroup
            flow_state_per_cgroup=2 * cfg.kernel.flow_quota_per_cgroup,
        )
        self.pipeline.runtime_sockets = RuntimeSockets(extra=(cfg.runtime.docker_socket,))
        if self._source_factory is None:
            from sensor.kernel.loader import BccSource

            self.source = BccSource(cfg.kernel, self.report)
        else:
            self.source = self._source_factory(cfg, self.report)
        self.pipeline.on_quota = self.source.note_quota_event
        # a container's sub-cgroups share its quotas (delegation cannot multiply them)
        self.registry.subscribe(
            on_member=self.source.set_quota_charge, on_cgroups_removed=self.source.forget_quota_charges
        )
        self.hooks = self.source.start(self.pipeline.handle_raw)
        self.pipeline.counts_received = self.source.counts_received()
        self.registry.note_existing()
        self.pipeline.scan_existing_forgers()
        self._setup_containment()
        self.control = ControlServer(cfg.sensor.control_socket, self._handle)
        self.control.start()
        if cfg.output.metrics:
            from sensor.outputs.metrics import serve

            try:
                self._metrics_server = serve(
                    cfg.output.metrics, self.fresh_snapshot, {r: v.severity for r, v in cfg.rules.items()}
                )
            except OSError as e:
                raise SluiceError(
                    f"cannot serve metrics on {cfg.output.metrics}: {e.strerror}",
                    hint="choose another --metrics address or free the port",
                ) from None
        self._setup_fim()
        self.startup_seconds = round(time.monotonic() - t0, 3)
        self.ready = True
        self._publish_snapshot()
        self.emit(self._health_doc("sensor_start"))

    def _setup_detection(self) -> None:
        """Baseline loading happens before anything is attached: a corrupt or
        newer baseline file stops the sensor with the reason, untouched."""
        cfg = self.config
        tz = cfg.detection.timezone
        self._key = read_key(cfg.detection.baseline_key_file) if cfg.detection.baseline_key_file else None
        if self.learn_seconds is not None:
            assert self.baseline_path
            # An existing file is read even with --replace: a corrupt or newer
            # one is refused rather than overwritten.
            existing = load_baseline(self.baseline_path, self._key) if os.path.exists(self.baseline_path) else None
            self.baseline = existing if existing is not None and not self.replace_baseline else Baseline()
            self.baseline.window_seconds = cfg.sensor.window_seconds
            self.baseline.nodes.add(self.host_name)
            self.learner = Learner(self.baseline, tz)
            return
        if not cfg.detection.enabled:
            return
        if self.baseline_path:
            self.baseline = load_baseline(self.baseline_path, self._key)
        learner = (
            Learner(self.baseline, tz, quarantine_windows=cfg.detection.learn_quarantine_windows, new_resolvers=False)
            if cfg.detection.learn_while_detecting and self.baseline
            else None
        )
        self.learner = learner
        self.detector = Detector(cfg, self.baseline, all_rules(), self.emit, self.host_name, learner)

    def _setup_fim(self) -> None:
        """Orchestration config integrity (rule SL-FIM-001), via fanotify."""
        rule = self.config.rule("SL-FIM-001", FimSettings)
        if self.detector is None or not rule.enabled:
            return
        w = FimWatcher(list(rule.paths), root=rule.host_root)
        try:
            w.start()
        except FimUnavailable as e:
            self.hooks["fim"] = f"unavailable: {e.strerror}"
            return
        self.fim = w
        self._fim_status()

    def _fim_status(self) -> None:
        assert self.fim is not None
        for path, st in self.fim.status.items():
            self.hooks[f"fim:{path}"] = st

    def _poll_fim(self) -> None:
        if self.fim is None or self.detector is None or self.pipeline is None:
            return
        for ev in self.fim.read():
            attr, workload, proc = self.pipeline.attribute_pid(ev.pid)
            self.detector.on_fim(ev.path, ev.operations, ev.ts, attr, workload, proc)

    def run(self, install_signals: bool = True) -> int:
        if install_signals:
            signal.signal(signal.SIGINT, self.request_stop)
            signal.signal(signal.SIGTERM, self.request_stop)
            signal.signal(signal.SIGHUP, self.request_reopen)
        try:
            self.setup()
            self._loop()
        finally:
            self.shutdown()
        return 0

    def _loop(self) -> None:
        assert self.source and self.pipeline
        window = self.config.sensor.window_seconds
        health_every = self.config.sensor.health_interval_seconds
        win_start = time.time()
        next_window = time.monotonic() + window
        next_health = time.monotonic() + health_every
        next_snapshot = 0.0
        learn_until = (time.monotonic() + self.learn_seconds) if self.learn_seconds is not None else None
        self.learn_until = learn_until  # monotonic; progress shown by `baseline learn`
        fim_rescan = self.config.rule("SL-FIM-001", FimSettings).rescan_seconds
        next_fim_rescan = time.monotonic() + fim_rescan
        while not self._stop:
            if learn_until is not None and time.monotonic() >= learn_until:
                break
            self.source.poll(POLL_MS)
            self._poll_fim()
            now = time.monotonic()
            if self._reopen:
                self._reopen = False
                self.output.reopen()
            if now >= next_window:
                end = time.time()
                flows = self.source.drain_flows()
                self.pipeline.note_unreported(self.source.unreported_cgroups())
                self.flow_entries = len(flows)  # the flow table's use by one window (metrics)
                self.pipeline.close_window(flows, win_start, end, self.source.quota_overflows())
                del flows
                self.last_window_end = end
                self.trimmer.maybe_trim()
                if self.containment is not None:
                    self.containment.recheck()
                win_start = end
                next_window += window
                if next_window < now:  # we fell behind: do not burst
                    next_window = now + window
            if self.fim is not None and now >= next_fim_rescan:
                self.fim.rescan()
                self._fim_status()
                next_fim_rescan = now + fim_rescan
            if now >= next_health:
                if self.config.detection.learn_while_detecting and self.detector is not None:
                    self.save_learned()  # do not lose what was learned to a crash
                self.emit(self._health_doc("sensor_health"))
                next_health = now + health_every
            self._serve_snapshot_requests()
            if now >= next_snapshot:
                self._publish_snapshot()
                next_snapshot = now + SNAPSHOT_EVERY_S
        # final window: what is still buffered, then both generations
        if self.containment is not None:
            self.containment.final_window = True
        self.source.poll(0)
        flows = self.source.drain_flows(final=True)
        self.pipeline.note_unreported(self.source.unreported_cgroups())
        self.pipeline.close_window(flows, win_start, time.time(), self.source.quota_overflows())

    def save_learned(self) -> None:
        if (
            self.learner is not None
            and self.baseline is not None
            and self.baseline_path
            and (self.learn_seconds is not None or self.config.detection.learn_while_detecting)
        ):
            save_baseline(self.baseline, self.baseline_path, self._key)
            self.learned_saved = True

    def shutdown(self) -> None:
        self.ready = False
        if self.control is not None:
            self.control.stop()
        if self.fim is not None:
            self.fim.close()
        if self.containment is not None:
            # the link cuts go with the sensor's programs (a crash leaves
            # them: the next start re-applies or releases)
            self.containment.close()
        if self.source is not None:
            try:
                if self.pipeline is not None:
                    self.save_learned()
                    self.emit(self._health_doc("sensor_stop", {"baseline_saved": self.learned_saved}))
            finally:
                self.source.close()
        if self._metrics_server is not None:
            self._metrics_server[0].shutdown()
        self.output.close()
