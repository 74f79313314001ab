"""The detector: rules over windows, then allow lists, schedules,
suppression, and ECS alert documents that explain themselves."""

from __future__ import annotations

import datetime as _dt
import fnmatch
import ipaddress
import time
import uuid
from collections.abc import Callable
from typing import Any

import dateutil.tz
from croniter import CroniterBadDateError, croniter

from sensor.attribution.containers import Attribution
from sensor.attribution.registry import ContainerLife
from sensor.config import AllowEntry, Config
from sensor.detect.baseline import Baseline
from sensor.detect.catalog import BY_ID
from sensor.detect.learn import Learner, local_hour
from sensor.detect.rule import Context, Finding, Rule, RuleSettings
from sensor.detect.rules import fim001_orchestration_config as fim001
from sensor.detect.view import ProcessRef, WindowView
from sensor.outputs import documents

PRUNE_EVERY_S = 60.0  # how often expired suppression keys are forgotten
MAX_PENDING_COUNTS = 100_000  # expired keys' repeat counts kept for their next alert

__all__ = ["Context", "Detector", "Finding", "Rule", "allowed", "cron_matches", "in_schedule"]

Emit = Callable[[dict[str, Any]], None]


# --- allow lists and schedules -------------------------------------------------


def cron_matches(expr: str, t: time.struct_time) -> bool:
    """Does a five-field cron expression match the minute `t`? (croniter:
    ranges, lists, steps, 0 and 7 for Sunday, and cron's rule that when both
    day fields are restricted either may match.)"""
    return bool(croniter.match(expr, _dt.datetime(*t[:5])))


def in_schedule(expr: str, duration_minutes: float, ts: float, tz: str) -> bool:
    """Did a schedule window (start matching `expr`, lasting the duration)
    cover `ts`? The latest start at or before ts's minute, in UTC or local
    time (DST-aware), no more than the duration before it."""
    zone = _dt.UTC if tz == "UTC" else dateutil.tz.tzlocal()
    minute = _dt.datetime.fromtimestamp(int(ts // 60) * 60, zone)
    # get_prev is strictly before its start: from one second past the
    # minute, a start on the minute itself counts
    try:
        last_start = float(croniter(expr, minute + _dt.timedelta(seconds=1)).get_prev(float))
    except CroniterBadDateError:  # a date that never comes (30 February): no window ever starts
        return False
    return minute.timestamp() - last_start <= 60 * int(duration_minutes)


def allowed(entry: AllowEntry, f: Finding, tz: str) -> bool:
    if entry.rules and f.rule not in entry.rules:
        return False
    if entry.workload is not None and not fnmatch.fnmatchcase(f.workload, entry.workload):
        return False
    if entry.executable is not None:
        # every process that sent on the flow, not only the one named: an
        # allowed tool connecting to the same destination does not cover an
        # intruder's socket
        procs: list[ProcessRef | None] = [*f.senders] if f.senders else [f.process]
        if not all(
            p is not None and p.executable and fnmatch.fnmatchcase(p.executable, entry.executable) for p in procs
        ):
            return False
    if entry.destination is not None:
        if f.destination is None or ipaddress.ip_address(f.destination[0]) not in ipaddress.ip_network(
            entry.destination, strict=False
        ):
            return False
    if entry.domain is not None and not (
        # a name only the client claimed (SNI, Host) allows nothing: any
        # process in the container can write any name
        f.domain and f.name_vouched is not False and fnmatch.fnmatchcase(f.domain.lower(), entry.domain.lower())
    ):
        return False
    if entry.port is not None and (f.destination is None or f.destination[1] != entry.port):
        return False
    if entry.schedule is not None and not in_schedule(entry.schedule, entry.duration_minutes, f.ts, tz):
        return False
    return True


# --- the detector -------------------------------------------------------------------


class Detector:
    def __init__(
        self,
        config: Config,
        baseline: Baseline | None,
        rules: list[Rule],
        emit: Emit,
        host_name: str,
        learner: Learner | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.ctx = Context(
            config, baseline, [ipaddress.ip_network(n, strict=False) for n in config.detection.trusted_networks]
        )
        self.rules = [r for r in rules if config.rules[r.info.id].enabled]
        self.emit = emit
        self.host_name = host_name
        self.learner = learner
        self.clock = clock
        # suppression key -> (when it last alerted, its magnitude then)
        self._last: dict[tuple[str, ...], tuple[float, float]] = {}
        self._suppressed: dict[tuple[str, ...], int] = {}
        self._suppressed_size: dict[tuple[str, ...], float] = {}  # their magnitudes, added up
        self._pruned_at = 0.0
        self.counts: dict[str, int] = {"alerts": 0, "suppressed": 0, "escalated": 0, "allowed": 0, "rule_errors": 0}
        self.by_rule: dict[str, int] = {}
        # A rule that raises is skipped for that window, counted here and
        # in health/metrics; the loop and the other rules go on.
        self.rule_errors: dict[str, int] = {}
        self.last_rule_error = ""
        self._alerting: set[str] = set()
        # (container, ip, port, transport) -> the window's sending processes by pid
        self._senders: dict[tuple[str, str, int, str], dict[int, ProcessRef]] = {}

    def on_window(self, view: WindowView) -> None:
        self._alerting = set()
        # a flow's process, when it exec'd in this window: executable and
        # args for the alert and for allow entries by executable
        execs = {(e.attr.cgroup_id, e.process.pid): e.process for e in view.execs}
        self._senders = {}
        # a baseline lookup per (workload, resolver) and window, not per flow
        resolvers: dict[tuple[str, str], bool] = {}

        def resolver_known(workload: str, resolver: str) -> bool:
            known = resolvers.get((workload, resolver))
            if known is None:
                known = resolvers[(workload, resolver)] = self.ctx.resolver_known(workload, resolver)
            return known

        for cv in view.connects:
            cv.resolver_known = resolver_known(cv.workload, cv.name_resolver)
        for fv in view.flows:
            fv.resolver_known = resolver_known(fv.workload, fv.summary.name_resolver)
            if fv.summary.pid is not None and (fv.process is None or not fv.process.executable):
                fv.process = execs.get((fv.attr.cgroup_id, fv.summary.pid), fv.process)
            fv.senders = [p if p.executable else execs.get((fv.attr.cgroup_id, p.pid), p) for p in fv.senders]
            if fv.senders:
                senders = self._senders.setdefault((fv.container_key, fv.ip, fv.port, fv.transport), {})
                for p in fv.senders:
                    senders.setdefault(p.pid, p)
        for rule in self.rules:
            try:
                for f in rule.evaluate(view, self.ctx):
                    self._consider(f)
            except Exception as e:
                self._rule_failed(rule.info.id, e)
        if self.learner is not None:
            self.learner.skip = lambda w: w in self._alerting
            try:
                self.learner.on_window(view)
            except Exception as e:
                self._rule_failed("learner", e)

    def state_evictions(self) -> int:
        """Rule state dropped by its caps (per-container and total), all rules."""
        from sensor.detect.rules._common import state_evictions

        return sum(state_evictions(r) for r in self.rules)

    def _rule_failed(self, rule_id: str, e: Exception) -> None:
        self.counts["rule_errors"] += 1
        self.rule_errors[rule_id] = self.rule_errors.get(rule_id, 0) + 1
        self.last_rule_error = f"{rule_id}: {type(e).__name__}: {e}"

    def containers_removed(self, lives: list[ContainerLife]) -> None:
        """ContainerRegistry subscription: stopped containers (after the
        window that saw them stop): their rule state goes with them."""
        gone = {life.info.id for life in lives}
        for rule in self.rules:
            try:
                rule.forget_containers(gone)
            except Exception as e:
                self._rule_failed(rule.info.id, e)

    def _consider(self, f: Finding) -> None:
        tz = self.config.detection.timezone
        if f.destination is not None and not f.senders:
            ck = f.attr.container.id if f.attr.container else "host"
            f.senders = list(self._senders.get((ck, *f.destination), {}).values())
        for entry in self.config.allow:
            if allowed(entry, f, tz):
                self.counts["allowed"] += 1
                return
        # alerting (or suppressed) windows are not learned from; allowed ones are
        self._alerting.add(f.workload)
        target = (
            f"{f.destination[0]}:{f.destination[1]}"
            if f.destination
            else (f.unix_path or (f.file or {}).get("path", ""))
        )
        # and by executable: a decoy's alert (the same rule, workload and
        # destination, another binary: a harmless-looking stage run first)
        # kept the real stage's alert, and its path, out for the interval
        # (review); the next one would carry only a count
        key = (f.rule, f.workload, target, f.executable or "", f.facet)
        now = self.clock()
        self._prune(now)
        last = self._last.get(key)
        if last is not None and now - last[0] < self.config.detection.suppress_seconds:
            factor = self.config.detection.escalation_factor
            # the repeats' sizes added up since that alert: chunks each under
            # the factor, as many as it takes, were never escalated (review)
            since = self._suppressed_size.get(key, 0.0) + f.magnitude
            if not (factor and last[1] > 0 and since >= factor * last[1]):
                self._suppressed[key] = self._suppressed.get(key, 0) + 1
                self._suppressed_size[key] = since
                self.counts["suppressed"] += 1
                return
            # far more of it than the alert that started the interval said
            ratio = since / last[1]
            f.message += f"; {ratio:.0f}x as much as this alert's last one said, in the {now - last[0]:.0f} s since"
            f.evidence["escalated"] = {
                "previous_magnitude": last[1],
                "magnitude": f.magnitude,
                "magnitude_since_previous": since,
                "seconds_since_previous": round(now - last[0], 3),
                "escalation_factor": factor,
            }
            self.counts["escalated"] += 1
            size = since  # the escalated alert's size is the next reference
        else:
            size = f.magnitude
        self._suppressed_size.pop(key, None)
        self._last[key] = (now, size)
        self.counts["alerts"] += 1
        self.by_rule[f.rule] = self.by_rule.get(f.rule, 0) + 1
        self.emit(self.alert_doc(f, self._suppressed.pop(key, 0)))

    def _prune(self, now: float) -> None:
        """Forget suppression keys past their interval (they suppress
        nothing more), once a minute: a container alerting on ever new
        destinations would otherwise grow the table for the sensor's life."""
        if now - self._pruned_at < PRUNE_EVERY_S:
            return
        self._pruned_at = now
        keep = self.config.detection.suppress_seconds
        for key in [k for k, (t, _m) in self._last.items() if now - t >= keep]:
            del self._last[key]
            self._suppressed_size.pop(key, None)
        # an expired key's count of repeats stays for its next alert, up to
        # a bound (they are all in counts["suppressed"] either way)
        if len(self._suppressed) > MAX_PENDING_COUNTS:
            for key in [k for k in self._suppressed if k not in self._last]:
                del self._suppressed[key]

    def _time_context(self, f: Finding) -> tuple[int, dict[str, Any]]:
        wb = self.ctx.workload(f.workload)
        hour = local_hour(f.ts, self.config.detection.timezone)
        if wb is None or wb.windows < self.config.detection.min_baseline_windows:
            return 0, {"hour": hour}
        usual = wb.active_hour(hour)
        return (0 if usual else 10), {"hour": hour, "usual_hour": usual}

    def alert_doc(self, f: Finding, suppressed: int) -> dict[str, Any]:
        info = BY_ID[f.rule]
        settings = self.config.rule(f.rule, RuleSettings)
        delta, tctx = self._time_context(f)
        score = max(0, min(100, settings.severity + f.severity_delta + delta))
        wb = self.ctx.workload(f.workload)
        evidence = {
            **f.evidence,
            "time": tctx,
            "baseline": {"known_workload": wb is not None, "windows": wb.windows if wb else 0},
        }
        if len({p.pid for p in f.senders}) > 1:  # more than one process sent on the flow
            evidence["senders"] = [{"pid": p.pid, "name": p.name, "executable": p.executable} for p in f.senders]
        return documents.alert(self.host_name, f, info, score, self.clock(), str(uuid.uuid4()), evidence, suppressed)

    def on_fim(
        self, path: str, operations: list[str], ts: float, attr: Attribution, workload: str, process: ProcessRef | None
    ) -> None:
        """A watched orchestration config file changed (rule SL-FIM-001)."""
        cfg = self.config.rule(fim001.INFO.id, fim001.Settings)
        if cfg.enabled:
            self._consider(fim001.finding(cfg, path, operations, ts, attr, workload, process))
