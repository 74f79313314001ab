"""What a rule is: its catalog entry (RuleInfo), its typed settings
(a frozen RuleSettings subclass), what it reports (Finding), what it may
consult (Context) and the protocol the engine drives (Rule).

Each module under sensor/detect/rules/ defines one INFO and one Settings;
sensor/detect/catalog.py collects the INFOs. Nothing here imports a rule
or the engine, so rule modules and the catalog import this without cycles.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from sensor.attribution.containers import Attribution
from sensor.detect.view import FlowView, ProcessRef, WindowView

if TYPE_CHECKING:
    from sensor.config import Config
    from sensor.detect.baseline import Baseline, WorkloadBaseline

T1048 = {
    "technique": ("T1048", "Exfiltration Over Alternative Protocol", "https://attack.mitre.org/techniques/T1048/"),
    "subtechnique": (
        "T1048.001",
        "Exfiltration Over Symmetric Encrypted Non-C2 Protocol",
        "https://attack.mitre.org/techniques/T1048/001/",
    ),
    "tactic": ("TA0010", "Exfiltration", "https://attack.mitre.org/tactics/TA0010/"),
}
T1104 = {
    "technique": ("T1104", "Multi-Stage Channels", "https://attack.mitre.org/techniques/T1104/"),
    "subtechnique": None,
    "tactic": ("TA0011", "Command and Control", "https://attack.mitre.org/tactics/TA0011/"),
}

T1562 = {
    "technique": ("T1562", "Impair Defenses", "https://attack.mitre.org/techniques/T1562/"),
    "subtechnique": None,
    "tactic": ("TA0005", "Defense Evasion", "https://attack.mitre.org/tactics/TA0005/"),
}
T1610 = {
    "technique": ("T1610", "Deploy Container", "https://attack.mitre.org/techniques/T1610/"),
    "subtechnique": None,
    "tactic": ("TA0002", "Execution", "https://attack.mitre.org/tactics/TA0002/"),
}
T1609 = {
    "technique": ("T1609", "Container Administration Command", "https://attack.mitre.org/techniques/T1609/"),
    "subtechnique": None,
    "tactic": ("TA0002", "Execution", "https://attack.mitre.org/tactics/TA0002/"),
}

KIB = 1024
MIB = 1024 * 1024


@dataclass(frozen=True)
class RuleSettings:
    """[rules.<id>] keys every rule has; a rule's Settings subclass adds its
    thresholds, each with its default. Field types are what the config
    loader accepts (bool, int, float, str, tuple[int, ...], tuple[str, ...]);
    numbers must not be negative (checked at load, with file and line)."""

    enabled: bool = True
    severity: int = 0  # 0-100, also event.risk_score; the default is RuleInfo.severity


@dataclass(frozen=True)
class RuleInfo:
    id: str
    slug: str
    name: str
    description: str
    attack: dict[str, Any]
    severity: int  # 0-100, also event.risk_score
    settings: type[RuleSettings] = RuleSettings

    def defaults(self) -> RuleSettings:
        """The settings when the config says nothing about this rule."""
        return self.settings(severity=self.severity)

    def default_values(self) -> dict[str, Any]:
        """defaults() as a dict in field order (enabled, severity, thresholds)."""
        return {f.name: getattr(self.defaults(), f.name) for f in dataclasses.fields(self.settings)}


S = TypeVar("S", bound=RuleSettings)


@dataclass
class Finding:
    """What a rule saw; the engine turns it into an alert (or not)."""

    rule: str
    attr: Attribution
    workload: str
    ts: float  # when the activity happened
    message: str
    evidence: dict[str, Any]
    destination: tuple[str, int, str] | None = None  # ip, port, transport
    process: ProcessRef | None = None
    network_protocol: str | None = None
    severity_delta: int = 0
    file: dict[str, Any] | None = None  # ECS file.* for file integrity findings
    categories: tuple[list[str], list[str]] | None = None  # event.category / event.type override
    domain: str | None = None  # the destination's name (SNI, Host or DNS answer), when known
    name_source: str | None = None  # "sni" | "http_host" | "dns"
    # False: only the client's SNI or Host names the destination, no DNS
    # answer the container received agrees (the rule judged the address)
    name_vouched: bool | None = None
    name_resolver: str | None = None  # the resolver whose answer gave or agrees with the name
    source: tuple[str, int] | None = None  # the peer of an inbound connection: ip, port
    direction: str = "egress"  # network.direction: "ingress" for listeners and inbound connections
    unix_path: str | None = None  # a unix socket the finding is about (destination.address)
    # every process that sent on the finding's flow in its window (set by the
    # engine from the window's flows; an allow entry by executable must match all)
    senders: list[ProcessRef] = field(default_factory=list)
    # how much of it there was (bytes sent, entries refused): a repeat the
    # engine would suppress is alerted after all when this reaches
    # [detection] escalation_factor times the last alert's (review: a
    # small spike alerted first kept the real transfer's size out of view
    # for suppress_seconds)
    magnitude: float = 0.0
    # more of the suppression key (rule, workload, target, executable): the
    # kind of it (SL-EVA-001: which of the sensor's tables were flooded)
    facet: str = ""

    @property
    def executable(self) -> str | None:
        return self.process.executable if self.process else None


class Rule(Protocol):
    info: RuleInfo

    def evaluate(self, view: WindowView, ctx: Context) -> list[Finding]: ...

    def forget_containers(self, ids: set[str]) -> None:
        """Drop per-container state of containers that are gone."""
        ...


@dataclass
class Context:
    config: Config
    baseline: Baseline | None
    trusted: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = field(default_factory=list)

    def settings(self, rule_id: str, kind: type[S]) -> S:
        """The rule's typed settings (kind: the rule module's Settings)."""
        return self.config.rule(rule_id, kind)

    def workload(self, name: str) -> WorkloadBaseline | None:
        return self.baseline.get(name) if self.baseline else None

    def trusted_ip(self, ip: str) -> bool:
        a = ipaddress.ip_address(ip)
        return any(a in n for n in self.trusted)

    def known_destination(
        self,
        workload: str,
        ip: str,
        port: int,
        transport: str,
        domain: str | None = None,
        vouched: bool = True,
    ) -> bool:
        """In the workload's baseline (or trusted). Unknown workload: False.
        A named destination is known by its registered domain (a learned
        name on a new address is known; a new name on a known address is
        not); an unnamed one by address prefix. A name no DNS answer vouched
        for (an SNI or Host only: the client's claim) must be known and the
        address too: a container cannot borrow a learned name for a new
        address by writing it into its ClientHello."""
        if self.trusted_ip(ip):
            return True
        wb = self.workload(workload)
        if wb is None:
            return False
        d = self.config.detection
        known = wb.knows_destination(
            ip, port, transport, d.destination_prefix_v4, d.destination_prefix_v6, domain=domain
        )
        if known and domain and not vouched:
            return wb.knows_destination(ip, port, transport, d.destination_prefix_v4, d.destination_prefix_v6)
        return known

    def resolver_known(self, workload: str, resolver: str) -> bool:
        """May this resolver's answers vouch for names for the workload? It
        is trusted, or the workload learned it as a DNS destination (UDP or
        TCP port 53), or it is on loopback: inside the container's own
        network namespace (Docker's 127.0.0.11, systemd-resolved's
        127.0.0.53), where only the container itself could forge an answer,
        and a container that could is distrusted at the source
        (sensor/telemetry/names.py FlowNamer.distrust). (Docker's resolver
        is reported on port 53 although its queries leave DNAT'ed:
        sensor/telemetry/protocol.py dns_port.) A workload with no baseline knows no resolver
        (its destinations are all new; an [[allow]] domain entry then needs
        a loopback or trusted resolver)."""
        if not resolver:
            return False
        if self.trusted_ip(resolver) or ipaddress.ip_address(resolver).is_loopback:
            return True
        wb = self.workload(workload)
        return wb is not None and wb.knows_resolver(resolver)

    def known_flow(self, f: FlowView) -> bool:
        """known_destination for a flow, with its name and whether a DNS
        answer vouched for it."""
        return self.known_destination(f.workload, f.ip, f.port, f.transport, f.domain, f.name_vouched)

    def baseline_gate(self, workload: str) -> bool:
        """May a rule that compares against the baseline speak about this
        workload? Known workloads yes; unknown ones per config."""
        if self.workload(workload) is not None:
            return True
        return self.config.detection.alert_on_unknown_workload

    def high_bits(self) -> float:
        return self.config.detection.high_entropy_bits
