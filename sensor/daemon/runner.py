"""The sensor process: probe, load, drain, count, emit, until told to stop."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, cast

from sensor.attribution.cgroups import CgroupResolver
from sensor.attribution.containers import Attributor
from sensor.attribution.docker_api import DockerClient
from sensor.attribution.netmap import NetMap
from sensor.attribution.registry import ContainerLife, ContainerRegistry
from sensor.config import Config
from sensor.daemon.control_server import ControlServer
from sensor.detect.baseline import Baseline, read_key
from sensor.detect.baseline import load as load_baseline
from sensor.detect.baseline import save as save_baseline
from sensor.detect.engine import Detector
from sensor.detect.learn import Learner
from sensor.detect.rules import all_rules
from sensor.detect.rules.fim001_orchestration_config import Settings as FimSettings
from sensor.detect.view import WindowObserver
from sensor.errors import SluiceError
from sensor.kernel.hooks import EXEC_ARGS_UNIT, UNITS
from sensor.kernel.memory import resident_kb
from sensor.kernel.probe import ProbeReport, probe, require_root, require_runnable
from sensor.kernel.source import EventSource
from sensor.ops.fim import FimUnavailable, FimWatcher
from sensor.outputs import documents
from sensor.outputs.sinks import build_output
from sensor.response.containment import Containment, ContainmentError, Entry
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
        # recent alerts for `alerts` requests (sluice emulate, tooling)
        self._alerts: deque[tuple[int, dict[str, Any]]] = deque(maxlen=ALERT_RING)
        self._alert_seq = 0
        self._alerts_lock = threading.Lock()
        self._snapshot_waiters: list[threading.Event] = []
        self._loop_beat = time.monotonic()  # the main loop's last turn
        self._key: bytes | None = None  # baseline signing key
        # control requests that touch the loop's state, run by the loop
        self._calls: list[tuple[Callable[[], dict[str, Any]], threading.Event, list[dict[str, Any]]]] = []
        self.containment: Containment | None = None
        self._containment_problem = ""
        self.control: ControlServer | None = None
        self.pipeline: Pipeline | None = None
        self.attributor: Attributor | None = None
        self.registry: ContainerRegistry | None = None
        self._final_window = False

    # --- documents -----------------------------------------------------------

    def emit(self, doc: dict[str, Any]) -> None:
        self.output.emit(doc)
        if doc["event"]["kind"] == "alert":
            with self._alerts_lock:
                self._alert_seq += 1
                self._alerts.append((self._alert_seq, doc))

    def _health_doc(self, action: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        ts = time.time()
        h = self._health()
        if extra:
            h.update(extra)
        return documents.health(self.host_name, ts, action, h, self._health_message(action, h))

    @staticmethod
    def _health_message(action: str, h: dict[str, Any]) -> str:
        msg = f"sluice {action.replace('sensor_', '')}: {h['status']}"
        bad = sorted(k for k, v in h["hooks"].items() if str(v).startswith("unavailable"))
        if bad:
            msg += "; unavailable: " + ", ".join(bad)
        if h["drops"]["total"]:
            msg += f"; {h['drops']['total']} records lost since start"
        return msg

    def _drops(self, ks: dict[str, int]) -> dict[str, int]:
        d = {
            k: v
            for k, v in ks.items()
            if k.startswith("dropped_") or k in ("flow_map_full", "flow_bytes_untracked", "parent_map_full")
        }
        d["user_lost_records"] = self.source.lost_records() if self.source else 0
        d["decode_errors"] = self.pipeline.counts["decode_errors"] if self.pipeline else 0
        d["output_errors"] = self.output.errors
        d["total"] = (
            sum(v for k, v in d.items() if k.startswith("dropped_"))
            + d.get("flow_map_full", 0)
            + d["user_lost_records"]
            + d["decode_errors"]
            + d["output_errors"]
        )
        return d

    def _health(self) -> dict[str, Any]:
        ks = self.source.kernel_stats() if self.source else {}  # one read of the stats map
        drops = self._drops(ks)
        unavailable = any(str(v).startswith("unavailable") for v in self.hooks.values())
        return {
            "status": "degraded" if unavailable or drops["total"] or self.output.writer_restarts else "ok",
            "uptime_seconds": round(time.time() - self.started_at, 3),
            "startup_seconds": self.startup_seconds,
            "hooks": dict(self.hooks),
            "kernel": self.report.as_dict() if self.report else {},
            "drops": drops,
            "counters": {
                **({k: v for k, v in ks.items() if k.startswith("submitted_")}),
                "egress_packets": ks.get("egress_packets", 0),
                "udp_sends_deduplicated": ks.get("udp_sends_deduplicated", 0),
                **(self.pipeline.counts if self.pipeline else {}),
                "output_lines": self.output.written,
            },
            "output": self.output.stats(),
            "runtime": {
                "docker_socket": self.config.runtime.docker_socket,
                "status": self.attributor.runtime_status if self.attributor is not None else "unknown",
                **(self.attributor.lookup_stats() if self.attributor is not None else {}),
            },
            "containers_tracked": len(self.registry) if self.registry is not None else 0,
            "control": self.control.stats() if self.control is not None else {},
            "containment": {
                "entries": self._containment_entries(),
                **({"problem": self._containment_problem} if self._containment_problem else {}),
            },
            "memory_kb": resident_kb(),
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
        }

    def fresh_snapshot(self, timeout: float = 1.0) -> dict[str, Any]:
        """Ask the main loop (which owns the state) for a new snapshot. A
        loop that does not answer is stalled: the sensor is then not ready
        (the last snapshot is shown, marked), whatever it said before."""
        if not self.ready:
            return self._snapshot
        ev = threading.Event()
        with self._alerts_lock:
            self._snapshot_waiters.append(ev)
        if ev.wait(timeout):
            return self._snapshot
        stalled = round(time.monotonic() - self._loop_beat, 1)
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
        ev, out = threading.Event(), cast(list[dict[str, Any]], [])
        call = (fn, ev, out)
        with self._alerts_lock:
            self._calls.append(call)
        if not ev.wait(timeout):
            with self._alerts_lock:
                if call in self._calls:  # not started: it never will be
                    self._calls.remove(call)
                    return {"ok": False, "error": f"the sensor did not answer in {timeout:.0f} s; nothing was done"}
            if not ev.wait(timeout):  # started just now: wait for its answer, the truth
                return {"ok": False, "error": f"the request started but had not finished after {2 * timeout:.0f} s"}
        return out[0]

    def _serve_snapshot_requests(self) -> None:
        self._loop_beat = time.monotonic()
        with self._alerts_lock:
            calls, self._calls = self._calls, []
        for fn, ev, out in calls:
            try:
                out.append(fn())
            except ContainmentError as e:
                out.append({"ok": False, "error": str(e)})
            except Exception as e:  # an answer, never a dead control socket
                out.append({"ok": False, "error": f"{type(e).__name__}: {e}"})
            ev.set()
        with self._alerts_lock:
            waiters, self._snapshot_waiters = self._snapshot_waiters, []
        if waiters:
            self._publish_snapshot()
            for ev in waiters:
                ev.set()

    def _handle(self, req: dict[str, Any]) -> dict[str, Any]:
        cmd = req.get("cmd")
        if cmd in ("status", "top"):
            return self.fresh_snapshot()
        if cmd == "alerts":
            since = int(req.get("since", 0))
            with self._alerts_lock:
                items = [(n, d) for n, d in self._alerts if n > since]
                last = self._alert_seq
            return {"ok": True, "last": last, "alerts": [d for _n, d in items]}
        if cmd == "isolate":
            return self._call_in_loop(lambda: self._isolate(str(req.get("container", "")), str(req.get("reason", ""))))
        if cmd == "block":
            return self._call_in_loop(
                lambda: self._block(str(req.get("destination", "")), req.get("container"), str(req.get("reason", "")))
            )
        if cmd == "release":
            return self._call_in_loop(lambda: self._release(req.get("container"), req.get("destination")))
        if cmd == "containment":
            return self._call_in_loop(lambda: {"ok": True, "entries": self._containment_entries()})
        return {"ok": False, "error": f"unknown command {cmd!r}"}

    # --- containment (run on the main loop) ----------------------------------

    def _containment_entries(self) -> list[dict[str, Any]]:
        return self.containment.snapshot() if self.containment is not None else []

    def _container(self, ref: str) -> ContainerLife:
        """A running container by id, id prefix or name."""
        assert self.registry is not None
        ref = ref.strip()
        if not ref:
            raise ContainmentError("say which container (id, id prefix or name)")
        lives = self.registry.running
        hits = [
            c for cid, c in lives.items() if cid == ref or c.info.name == ref or (len(ref) >= 4 and cid.startswith(ref))
        ]
        if not hits:
            raise ContainmentError(f"no running container matches {ref!r} (`sluice top` lists them)")
        if len(hits) > 1:
            raise ContainmentError(
                f"{ref!r} matches {len(hits)} containers: "
                + ", ".join(c.info.id[:12] for c in hits)
                + "; give more of the id"
            )
        return hits[0]

    def _dropped_by_entry(self) -> dict[int, int]:
        """Packets dropped so far, by id() of the entry: read before a
        release removes the kernel's counters."""
        assert self.containment is not None
        return {id(e): n for e, n in zip(self.containment.entries, self.containment.dropped(), strict=False)}

    def _containment_doc(
        self, e: Entry, action: str, message: str, life: ContainerLife | None = None, dropped: int = 0
    ) -> None:
        assert self.registry is not None
        if life is None and e.container_id is not None:
            life = self.registry.get(e.container_id)
        attr = life.attribution() if life is not None else None  # None: the container is gone
        self.emit(documents.containment(self.host_name, time.time(), e, action, message, attr, dropped))

    def _isolate(self, ref: str, reason: str) -> dict[str, Any]:
        assert self.containment is not None
        life = self._container(ref)
        e = self.containment.isolate(life.info.id, life.info.name, [life.cgroup_id], reason)
        msg = f"isolated container {e.who()}: all its egress but loopback is dropped"
        self._containment_doc(e, "container_isolated", msg, life)
        return {"ok": True, "message": msg}

    def _block(self, destination: str, ref: Any, reason: str) -> dict[str, Any]:
        assert self.containment is not None
        if ref:
            life = self._container(str(ref))
            e = self.containment.block(destination, life.info.id, life.info.name, [life.cgroup_id], reason)
        else:
            life = None
            e = self.containment.block(destination, reason=reason)
        msg = f"blocked egress to {e.destination} for {e.who()}"
        self._containment_doc(e, "destination_blocked", msg, life)
        return {"ok": True, "message": msg}

    def _release(self, ref: Any, destination: Any) -> dict[str, Any]:
        assert self.containment is not None
        cid = None
        if ref:
            cid = self._container(str(ref)).info.id
        dropped = self._dropped_by_entry()
        gone = self.containment.release(
            cid, str(destination) if destination else None, everything_for_container=not destination
        )
        for e in gone:
            self._containment_doc(e, "containment_released", f"released: {e.label()}", dropped=dropped.get(id(e), 0))
        return {"ok": True, "message": "; ".join(f"released: {e.label()}" for e in gone)}

    def _setup_containment(self) -> None:
        """Re-apply the saved entries of containers still running. A state
        file that cannot be read is kept aside (renamed), reported, and
        containment starts empty: the sensor runs either way."""
        assert self.source is not None and self.registry is not None
        self.containment = Containment(self.source, self.config.sensor.containment_state)
        self.registry.subscribe(on_removed=self._containers_removed)
        try:
            saved = self.containment.load()
        except ContainmentError as err:
            aside = f"{self.config.sensor.containment_state}.unreadable-{int(time.time())}"
            try:
                os.replace(self.config.sensor.containment_state, aside)
                note = f"; moved aside to {aside}"
            except OSError:
                note = ""
            self._containment_problem = f"{err}{note}; nothing was re-applied"
            print(f"sluice: warning: {self._containment_problem}", file=sys.stderr)
            return
        live = {cid: [c.cgroup_id] for cid, c in self.registry.running.items()}
        applied, dropped = self.containment.restore(saved, live)
        for e in applied:
            self._containment_doc(
                e,
                "container_isolated" if e.kind == "isolate" else "destination_blocked",
                f"re-applied at start: {e.label()}",
            )
        for e in dropped:
            self._containment_doc(e, "containment_released", f"released at start, the container is gone: {e.label()}")

    def _containers_removed(self, _lives: list[ContainerLife]) -> None:
        """ContainerRegistry subscription: release the entries of containers
        that are gone. Not in the final window at shutdown: those entries
        stay saved and the next start releases them (and says so)."""
        if self.containment is None or not self.containment.entries or self._final_window:
            return
        assert self.registry is not None
        live = set(self.registry.running)
        if not self.containment.gone(live):
            return
        dropped = self._dropped_by_entry()
        for e in self.containment.containers_gone(live):
            self._containment_doc(
                e,
                "containment_released",
                f"released, the container is gone: {e.label()}",
                dropped=dropped.get(id(e), 0),
            )

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
            units = UNITS + ((EXEC_ARGS_UNIT,) if cfg.kernel.exec_args == "tracepoint" else ())
            self.report = probe(cfg.kernel.mount_tracefs, units)
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
        )
        if self._source_factory is None:
            from sensor.kernel.loader import BccSource

            self.source = BccSource(cfg.kernel, self.report)
        else:
            self.source = self._source_factory(cfg, self.report)
        self.hooks = self.source.start(self.pipeline.handle_raw)
        self.registry.note_existing()
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
        learner = Learner(self.baseline, tz) if cfg.detection.learn_while_detecting and self.baseline else None
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
                self.pipeline.close_window(self.source.drain_flows(), win_start, end)
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
        self._final_window = True
        self.source.poll(0)
        self.pipeline.close_window(self.source.drain_flows(final=True), win_start, time.time())

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
