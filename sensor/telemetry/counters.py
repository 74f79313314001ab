"""Per-container and per-flow counters over one window.

Kernel flow counters (bytes, packets, connects) are drained once per window;
payload samples, exec and connect events arrive in between. close() joins
them into FlowSummary and ContainerSummary records: the input of outputs,
`sluice top` and, later, detection.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sensor.telemetry.classify import ByteClasses, FlowClassifier, datagram_protocol
from sensor.telemetry.entropy import ByteHistogram
from sensor.telemetry.flowstate import PER_CGROUP, FlowTable, Interner
from sensor.telemetry.protocol import (
    DNS,
    HTTP,
    HTTP_PREFIXES,
    IPPROTO_UDP,
    SSH,
    SSH_BANNER,
    SSH_BANNER_CUT,
    TLS,
    dns_port,
    dns_qname,
    dns_query,
    protocol_hint,
    split_http,
    ssh_start,
    ssh_transport_packet,
)

# sock_protocols' value for a socket whose first packet was an SSH
# identification line alone, until its next packet names it (_ssh_decide)
SSH_PENDING = "ssh?"
MAX_SSH_LINE_RESENDS = 2
MAX_SSH_PENDING_PER_FLOW = 64

# A flow: (cgroup id, destination ip, destination port, transport number)
FlowKey = tuple[int, str, int, int]

# Bits per byte at or above which a sample looks encrypted or compressed: the
# one definition; [detection] high_entropy_bits in default.toml documents it
# (tests/unit/test_config.py checks they agree) and may override it.
HIGH_ENTROPY_BITS = 7.0


@dataclass(frozen=True, slots=True)
class FlowCounters:
    """One kernel flow-map entry, decoded."""

    cgroup_id: int
    daddr: str
    dport: int
    protocol: int
    bytes: int
    packets: int
    payload_bytes: int
    connects: int
    first_ns: int
    last_ns: int
    samples: int
    # what the destination sent back (bpf/ingress.bpf.c); 0 without it
    rx_bytes: int = 0
    rx_packets: int = 0
    rx_payload_bytes: int = 0

    @property
    def key(self) -> FlowKey:
        return (self.cgroup_id, self.daddr, dns_port(self.daddr, self.dport), self.protocol)


@dataclass(frozen=True, slots=True)
class QuotaOverflow:
    """A cgroup over its fair share in one window (bpf/lib/common.bpf.h):
    flow entries and events the kernel refused, and the traffic to the
    destinations it reached past the flow quota (aggregated, still counted);
    or whose sockets the kernel sampled without per-socket state
    (stateless_samples: their storage was refused, bpf/egress.bpf.c
    sl_sock_state_of); or over its share of the window's views in user
    space (views_refused)."""

    cgroup_id: int
    flows_refused: int
    events_refused: int
    bytes: int
    packets: int
    connects: int
    flow_quota: int
    event_quota: int
    stateless_samples: int = 0
    # events the rules' view of the window refused past the cgroup's share
    # (unique listeners, inbound peers, unix paths, destinations, programs;
    # sensor/telemetry/pipeline.py _view_keep): counted, not looked at
    views_refused: int = 0


@dataclass(slots=True)
class FlowSummary:
    key: FlowKey
    bytes: int
    packets: int
    payload_bytes: int
    connects: int
    samples: int
    sampled_bytes: int
    entropy: float | None
    protocol_hint: str | None
    pid: int | None
    comm: str | None
    # what the socket's first payload (or HTTP body) started with, if it is a
    # known compressed format: "gzip", "zstd", "zip", ...
    compression: str | None = None
    body_entropy: float | None = None  # HTTP bodies only
    body_sampled_bytes: int = 0
    dns_names: list[tuple[str, bool]] = field(default_factory=list)  # (name, complete)
    high_entropy_bits: float = HIGH_ENTROPY_BITS
    # what the destination sent back (ingress); 0 when the hook is missing
    rx_bytes: int = 0
    rx_packets: int = 0
    rx_payload_bytes: int = 0
    # the destination's name (sensor/telemetry/names.py) and where it came
    # from: "sni", "http_host" or "dns"; SNI and Host also on their own
    domain: str | None = None
    domain_source: str | None = None
    # the resolver whose DNS answer to the container gave the name, or
    # agrees with its SNI or Host (sensor/telemetry/names.py
    # FlowNamer.vouched); "" when no answer vouches for it
    name_resolver: str = ""
    sni: str | None = None
    http_host: str | None = None

    # The processes whose sockets sent on the flow (pid, comm, payload bytes
    # their samples stand for in this window), the most bytes since first
    # seen first. Every socket's first payload packets are sampled, so every
    # socket that sent is here once its connect (or UDP send) was seen; a
    # sender stays listed for SENDER_MEMORY_WINDOWS after its last sample (a
    # long-lived socket past its sampled prefix keeps sending unsampled).
    # `unattributed_bytes`: samples of sockets whose owner is not known.
    senders: list[tuple[int, str, int]] = field(default_factory=list)
    unattributed_bytes: int = 0

    # The window's payload split by the protocol hint of the socket each
    # sample came from ("" when a socket's first bytes named none): hint ->
    # (payload bytes, opaque bytes), in the proportions of the sampled bytes
    # (weighted) each hint's sockets stood for. Sockets of one container to
    # one destination can speak different protocols: an HTTP upload beside
    # a raw encrypted stream, or a decoy connection opened to relabel the
    # flow. Empty when the summary was not built from samples; then
    # `protocol_hint` stands for the whole flow.
    by_protocol: dict[str, tuple[int, int]] = field(default_factory=dict)

    # Payload bytes per class (sensor.telemetry.classify), estimated from
    # this window's samples weighted by the bytes each stands for; None when
    # the summary was not built from classified samples (then the flow is
    # judged as a whole, by entropy and compression).
    byte_classes: ByteClasses | None = None

    @property
    def encrypted_bytes(self) -> int:
        """Payload bytes of this window counted as encrypted (ciphertext,
        encoded randomness, compression headers that did not decode)."""
        if self.byte_classes is not None:
            return self.byte_classes.opaque()
        return self.payload_bytes if self.high_entropy and self.compression is None else 0

    @property
    def name_vouched(self) -> bool:
        """The name came from, or agrees with, a DNS answer the container
        received and could not have forged (not only the client's own SNI
        or Host). Whether the workload knows that resolver is the
        detector's question (sensor/detect/view.py FlowView.name_vouched)."""
        return bool(self.name_resolver)

    def protocols(self) -> set[str | None]:
        """The protocol hints the flow's sending sockets had (None: none named)."""
        if self.by_protocol:
            return {h or None for h in self.by_protocol}
        return {self.protocol_hint}

    def protocol_split(self) -> dict[str, dict[str, int]]:
        """For a flow whose sockets spoke more than one protocol: payload
        and encrypted bytes per protocol ("unknown": no hint), for alerts
        and flow documents; {} otherwise."""
        if len(self.by_protocol) < 2:
            return {}
        return {h or "unknown": {"bytes": b, "encrypted_bytes": o} for h, (b, o) in sorted(self.by_protocol.items())}

    def payload_of(self, hint: str | None) -> int:
        """Payload bytes of this window sent by sockets with this hint."""
        if self.by_protocol:
            return self.by_protocol.get(hint or "", (0, 0))[0]
        return self.payload_bytes if self.protocol_hint == hint else 0

    def opaque_of(self, hint: str | None) -> int:
        """Encrypted bytes of this window sent by sockets with this hint."""
        if self.by_protocol:
            return self.by_protocol.get(hint or "", (0, 0))[1]
        return self.encrypted_bytes if self.protocol_hint == hint else 0

    @property
    def cgroup_id(self) -> int:
        return self.key[0]

    @property
    def high_entropy(self) -> bool:
        return self.entropy is not None and self.entropy >= self.high_entropy_bits

    @property
    def encrypted_like(self) -> bool:
        """Some of this window's payload is counted as encrypted."""
        return self.encrypted_bytes > 0

    @property
    def upload_ratio(self) -> float | None:
        """Payload sent per payload byte received (None without ingress
        counts or without payload sent): megabytes up and kilobytes down is
        what exfiltration looks like; an API call is closer to 1."""
        if not self.payload_bytes:
            return None
        if not self.rx_payload_bytes and not self.rx_packets:
            return None  # no ingress counts for this flow (hook missing or nothing back)
        return self.payload_bytes / max(self.rx_payload_bytes, 1)


@dataclass(slots=True)
class ContainerSummary:
    cgroup_ids: set[int] = field(default_factory=set)
    bytes: int = 0
    packets: int = 0
    payload_bytes: int = 0
    high_entropy_bytes: int = 0
    connects: int = 0
    execs: int = 0
    flows: int = 0
    destinations: set[str] = field(default_factory=set)
    histogram: ByteHistogram = field(default_factory=ByteHistogram)

    @property
    def entropy(self) -> float | None:
        return self.histogram.entropy()


MAX_DNS_NAMES_PER_FLOW = 512
# The protocol of a TCP socket whose start the sensor did not see, while a
# window fills (named at its close)
UNSEEN = "?"
# Distinct sending processes remembered per flow and window; the bytes of
# any more count as unattributed (and in `senders_capped`).
MAX_SENDERS_PER_FLOW = 16
# How long (windows) a flow's sender is remembered after its last sample.
SENDER_MEMORY_WINDOWS = 60


@dataclass(slots=True)
class _FlowSamples:
    """What one window's payload samples of a flow showed."""

    hist: ByteHistogram = field(default_factory=ByteHistogram)
    body: ByteHistogram = field(default_factory=ByteHistogram)
    dns_names: list[tuple[str, bool]] = field(default_factory=list)
    classes: ByteClasses = field(default_factory=ByteClasses)
    senders: dict[int, list[Any]] = field(default_factory=dict)  # pid -> [comm, bytes]
    unattributed: int = 0
    # protocol hint of the sending socket ("" for none) -> [weighted sample
    # bytes, of which opaque], as added to `classes`
    protocols: dict[str, list[float]] = field(default_factory=dict)


class WindowCounters:
    """User-space half of the counters for the window being filled."""

    def __init__(
        self,
        max_flows: int = 65536,
        high_entropy_bits: float = HIGH_ENTROPY_BITS,
        sample_every: int = 64,
        per_cgroup: int = PER_CGROUP,
        first_packets: int = 8,
    ) -> None:
        self._samples: dict[FlowKey, _FlowSamples] = {}
        # kernel.sample_first_packets: below 2, the packet after an SSH
        # line alone is never sampled as one of the socket's first
        self.first_packets = first_packets
        self.classifier = FlowClassifier(max_flows, high_entropy_bits, per_cgroup)
        self.sample_every = sample_every
        self._execs: dict[int, int] = {}
        self.high_entropy_bits = high_entropy_bits
        # Long-lived knowledge, bounded per cgroup and in all (flowstate.py).
        # The protocol each socket's first bytes named, by (flow key, socket
        # cookie); "" when they named none. Per socket, not per flow: a
        # decoy connection to the same destination must not relabel the
        # flow (an HTTP upload of ciphertext read as SSH, a raw encrypted
        # stream as TLS on 443).
        self.sock_protocols: FlowTable[str] = FlowTable(per_cgroup, max_flows)
        # TCP sockets whose first payload was an SSH identification line
        # alone (SSH_PENDING in sock_protocols and, once per such socket,
        # in the flow's starts): named SSH only if their next packet starts
        # the key exchange (_ssh_decide). Per socket: the index of that
        # packet (a retransmitted line moves it on), whether any
        # key-exchange message may come first (the line's packet went on
        # past the sample), the line's length, and the retransmissions so
        # far. A socket whose deciding packet was never seen is raw
        # (kept SSH only when kernel.sample_first_packets < 2), counted in
        # ssh_unverified.
        self.ssh_pending: FlowTable[tuple[int, bool, int, int]] = FlowTable(per_cgroup, max_flows)
        self.ssh_unverified = 0
        # Per flow: the protocols its socket starts named (sorted, "" for
        # none), which names a TCP socket whose own start the sensor did
        # not see (open before it started, or forgotten to the cap, counted
        # in state_evictions) only when every start agreed: a decoy
        # connection cannot lend its name to such a socket, it makes the
        # flow's starts disagree. And the last window's split by protocol,
        # for a window with no sample.
        self.flow_protocols: FlowTable[tuple[str, ...]] = FlowTable(per_cgroup, max_flows)
        self._start_sets: Interner[tuple[str, ...]] = Interner()
        self.last_protocols: FlowTable[tuple[tuple[str, float, float], ...]] = FlowTable(per_cgroup, max_flows)
        self._splits: Interner[tuple[tuple[str, float, float], ...]] = Interner()
        # the last process that connected, per flow
        self.owners: FlowTable[tuple[int, str]] = FlowTable(per_cgroup, max_flows)
        # The process that connected each socket, by (cgroup id, socket
        # cookie): bytes are the sender's, not the flow's last connector's
        # (an allowed executable connecting to the same destination must not
        # take over the attacker's bytes).
        self.sock_owners: FlowTable[tuple[int, str]] = FlowTable(per_cgroup, max_flows)
        self.senders_capped = 0
        # per flow: pid -> [comm, payload bytes since first seen, last window seen]
        self.recent_senders: FlowTable[dict[int, list[Any]]] = FlowTable(per_cgroup, max_flows)
        self._window_index = 0
        # (pid, name) shared by every flow of a process (a flood of
        # destinations from one process costs one tuple, not one per flow);
        # a cache, cleared when full
        self._owner_refs: Interner[tuple[int, str]] = Interner()

    def add_sample(
        self,
        key: FlowKey,
        data: bytes,
        socket_start: bool,
        payload_len: int | None = None,
        in_socket_start: bool = False,
        cookie: int = 0,
        span_bytes: int = 0,
        second: bytes = b"",
        second_off: int = 0,
        first_read: bytes = b"",
        sock_index: int = -1,
    ) -> None:
        """One payload sample; socket_start: the socket's first payload;
        payload_len: the packet's payload bytes (the sample is a prefix);
        in_socket_start: among the socket's first packets, which are all
        sampled; cookie: the sending socket's cookie (0: unknown);
        span_bytes: the payload bytes the sample stands for (the kernel's
        count since the socket's previous sample point; 0 when unknown: then
        a socket-start or DNS sample stands for its packet, any other for
        `sample_every` packets); second: a read from inside the packet at
        payload offset second_off; first_read: a socket's first payload as
        the kernel read it (up to 2 KiB for a TLS, HTTP or SSH start, of
        which `data` is the sample's prefix), for its protocol; sock_index:
        the packet's index among the socket's payload packets (-1:
        unknown)."""
        st = self._samples.get(key)
        if st is None:
            st = self._samples[key] = _FlowSamples()
        st.hist.add(data)
        if second:
            st.hist.add(second)
        _cg, _ip, port, proto = key
        plen = max(payload_len or 0, len(data) + len(second))
        weight: float
        if span_bytes > 0 and plen > 0:
            # bytes it stands for / bytes of its packet: a GSO super-packet
            # sampled after 128 KiB stands for two of its kind, a 64-byte
            # datagram after 64 packets for 64
            weight = max(span_bytes, plen) / plen
        else:
            weight = 1 if in_socket_start or socket_start or port == 53 else self.sample_every
        self._add_sender(st, key[0], cookie, round(plen * weight))
        skey = (*key, cookie)
        if port == 53:
            # DNS: the names are the payload (SL-EXF-003; the classifier
            # counts none of a query as opaque). Resolvers open a socket per
            # lookup: none is remembered, each query names itself. What is
            # not a query is raw: the port names nothing.
            hint = DNS if dns_query(data, proto, payload_len) else ""
        elif socket_start:
            start = first_read or data
            hint = protocol_hint(start, proto, port, payload_len) or datagram_protocol(data, proto) or ""
            ssh = ssh_start(start, payload_len) if hint == SSH else ""
            if ssh in (SSH_BANNER, SSH_BANNER_CUT):
                # named by its next packet; until then it vouches for no
                # other socket of the flow (_flow_hint)
                self.sock_protocols.put(skey, SSH_PENDING)
                line = payload_len if payload_len is not None else len(start)
                self.ssh_pending.put(skey, (max(sock_index, 0) + 1, ssh == SSH_BANNER_CUT, line, 0))
                self._flow_started(key, SSH_PENDING)
            else:
                self.sock_protocols.put(skey, hint)
                self._flow_started(key, hint)
            if hint == HTTP:
                _head, start, _encoding = split_http(data)
                st.body.add(start)
        else:
            known = self.sock_protocols.get(skey, touch=True)
            if known == SSH_PENDING:
                known = self._ssh_decide(key, skey, data, in_socket_start, sock_index, payload_len)
            if known is not None:
                hint = known
            elif proto == IPPROTO_UDP:
                # a datagram names itself; the socket's first one went to
                # another destination (or was forgotten): never the name a
                # decoy socket to this destination started with
                hint = datagram_protocol(data, proto) or protocol_hint(data, proto, port) or ""
            else:
                # a TCP socket whose start the sensor did not see (open
                # before it started, or forgotten to the cap): named at the
                # window's close, from the flow's socket starts (_by_protocol)
                hint = UNSEEN
            if hint == HTTP and not data.startswith(HTTP_PREFIXES):
                st.body.add(data)
        added, opaque = self.classifier.add(
            key,
            st.classes,
            data,
            plen,
            weight,
            # TLS handshake records are framing only among the first packets
            # of a socket whose hello passed its form check: a handshake
            # record header in front of each of a raw socket's first
            # packets made them framing (up to 16 KiB each)
            (socket_start or in_socket_start) and hint == TLS,
            socket_start,
            second,
            second_off,
            cookie,
        )
        # this sample's share, credited to its socket's protocol
        share = st.protocols.get(hint)
        if share is None:
            st.protocols[hint] = [added, opaque]
        else:
            share[0] += added
            share[1] += opaque
        if port == 53 or hint == DNS:
            q = dns_qname(data, proto)
            if q and len(st.dns_names) < MAX_DNS_NAMES_PER_FLOW:
                st.dns_names.append(q)

    def _ssh_decide(
        self, key: FlowKey, skey: tuple[Any, ...], data: bytes, in_start: bool, index: int, plen: int | None
    ) -> str:
        """The name of a sample of a socket whose first packet was an SSH
        identification line alone. The packet after the line decides: the
        key exchange's first (KEXINIT; any of its messages when the line's
        packet went on unseen) names the socket SSH, anything else raw from
        there on. The line sent again (a retransmission: the same length,
        at most MAX_SSH_LINE_RESENDS times) moves the decision to the
        packet after it; sent again with KEXINIT behind it, it decides.
        Samples of other packets among the socket's first ones (reordered
        by per-CPU buffers) are SSH's until then. A sample past the
        socket's first packets while undecided (the deciding one lost to a
        quota or a full buffer, or held back by a sender sending the line
        over and over) names it raw, or SSH when the kernel does not sample
        that packet (kernel.sample_first_packets < 2); ssh_unverified
        counts them."""
        pending = self.ssh_pending.get(skey)
        nxt, cut, line, resent = pending if pending is not None else (index, True, -1, 0)
        if in_start and (index == nxt or index < 0 or pending is None):
            again = ssh_start(data, plen)
            if again == SSH:
                name = SSH  # the line again, with KEXINIT behind it
            elif again and (plen is None or plen == line) and resent < MAX_SSH_LINE_RESENDS:
                self.ssh_pending.put(skey, (nxt + 1, cut, line, resent + 1))
                return SSH
            else:
                name = SSH if ssh_transport_packet(data, kexinit=not cut, payload_len=plen) else ""
        elif in_start:
            return SSH
        else:
            self.ssh_unverified += 1
            name = SSH if self.first_packets < 2 else ""
        self.ssh_pending.pop(skey)
        self.sock_protocols.put(skey, name)
        self._flow_started(key, name, decided=True)
        return name

    def add_exec(self, cgroup_id: int) -> None:
        self._execs[cgroup_id] = self._execs.get(cgroup_id, 0) + 1

    def _flow_started(self, key: FlowKey, hint: str, decided: bool = False) -> None:
        """A socket of the flow started, naming `hint`; decided: one of the
        flow's undecided SSH lines is now named `hint` (nothing when the
        flow was forgotten: its sockets are named by no start). SSH_PENDING
        (a line alone, undecided) is kept once per such socket, up to
        MAX_SSH_PENDING_PER_FLOW (past it, for good): the flow's starts
        agree on nothing while one is undecided, and they live and are
        forgotten together with the names."""
        seen = self.flow_protocols.get(key)
        if decided and seen is None:
            return
        pending = (seen or ()).count(SSH_PENDING)
        names = {h for h in seen or () if h != SSH_PENDING}
        if hint == SSH_PENDING:
            pending = min(pending + 1, MAX_SSH_PENDING_PER_FLOW)
        else:
            names.add(hint)
            if decided and 0 < pending < MAX_SSH_PENDING_PER_FLOW:
                pending -= 1
        starts = tuple(sorted(names)) + (SSH_PENDING,) * pending
        if starts != seen:
            self.flow_protocols.put(key, self._start_sets(starts))

    def _flow_hint(self, key: FlowKey) -> str:
        """The name for a flow's TCP socket whose start was not seen: the
        one every start to that destination named, else none (also while
        an SSH line of the flow is undecided)."""
        starts = self.flow_protocols.get(key)
        return starts[0] if starts is not None and len(starts) == 1 and starts[0] != SSH_PENDING else ""

    def forget_cgroups(self, ids: set[int]) -> None:
        """Removed cgroups: what was remembered about their flows goes."""
        for table in (
            self.sock_protocols,
            self.ssh_pending,
            self.flow_protocols,
            self.last_protocols,
            self.owners,
            self.sock_owners,
            self.recent_senders,
        ):
            table.forget_cgroups(ids)
        self.classifier.forget_cgroups(ids)

    def state_evictions(self) -> int:
        """Per-flow knowledge forgotten to the caps (counted in health)."""
        return (
            self.sock_protocols.evictions
            + self.ssh_pending.evictions
            + self.flow_protocols.evictions
            + self.last_protocols.evictions
            + self.owners.evictions
            + self.sock_owners.evictions
            + self.recent_senders.evictions
            + self.classifier.streams.evictions
            + self.classifier.last_mix.evictions
        )

    def set_owner(self, key: FlowKey, pid: int, comm: str, cookie: int = 0) -> None:
        shared = self._owner_refs((pid, comm))
        self.owners.put(key, shared)
        if cookie:
            self.sock_owners.put((key[0], cookie), shared)

    def _senders(self, k: FlowKey, st: _FlowSamples | None) -> list[tuple[int, str, int]]:
        """This window's senders merged into the flow's remembered ones;
        (pid, comm, bytes this window), the most bytes since first seen first."""
        now = self._window_index
        recent: dict[int, list[Any]] | None = self.recent_senders.get(k)
        if st is not None and st.senders:
            if recent is None:
                recent = {}
                self.recent_senders.put(k, recent)
            for pid, (comm, n) in st.senders.items():
                r = recent.get(pid)
                if r is not None:
                    r[0], r[1], r[2] = comm, r[1] + n, now
                else:
                    if len(recent) >= MAX_SENDERS_PER_FLOW:
                        # full: the sender with the fewest bytes goes (churning
                        # short-lived processes cannot push a big sender out)
                        least = min(recent, key=lambda q: recent[q][1])
                        if recent[least][1] > n:
                            self.senders_capped += 1
                            continue
                        del recent[least]
                        self.senders_capped += 1
                    recent[pid] = [comm, n, now]
        if not recent:
            return []
        for pid in [p for p, r in recent.items() if now - r[2] > SENDER_MEMORY_WINDOWS]:
            del recent[pid]
        this = st.senders if st is not None else {}
        order = sorted(recent.items(), key=lambda x: -x[1][1])
        return [(pid, r[0], this[pid][1] if pid in this else 0) for pid, r in order]

    def _add_sender(self, st: _FlowSamples, cgroup_id: int, cookie: int, nbytes: int) -> None:
        owner = self.sock_owners.get((cgroup_id, cookie)) if cookie else None
        if owner is None:
            st.unattributed += nbytes
            return
        pid, comm = owner
        entry = st.senders.get(pid)
        if entry is not None:
            entry[1] += nbytes
        elif len(st.senders) < MAX_SENDERS_PER_FLOW:
            st.senders[pid] = [comm, nbytes]
        else:
            self.senders_capped += 1
            st.unattributed += nbytes

    def close(
        self, flows: list[FlowCounters]
    ) -> tuple[list[FlowSummary], dict[int, int], dict[FlowKey, ByteHistogram]]:
        """Flow summaries for this window; execs per cgroup; histograms.

        Resets the window. Samples of flows the kernel did not report (a
        flow map entry lost to a full map) still yield a summary with zero
        counters, so no observation is dropped.
        """
        samples, self._samples = self._samples, {}
        execs, self._execs = self._execs, {}
        # Sum per flow: at shutdown both generations are drained at once.
        totals: dict[FlowKey, list[int]] = {}
        for f in flows:
            t = totals.setdefault(f.key, [0] * 8)
            t[0] += f.bytes
            t[1] += f.packets
            t[2] += f.payload_bytes
            t[3] += f.connects
            t[4] += f.samples
            t[5] += f.rx_bytes
            t[6] += f.rx_packets
            t[7] += f.rx_payload_bytes
        for k in samples:
            totals.setdefault(k, [0] * 8)
        out = []
        for k, t in totals.items():
            s = self._summary(k, t[0], t[1], t[2], t[3], t[4], samples.get(k))
            s.rx_bytes, s.rx_packets, s.rx_payload_bytes = t[5], t[6], t[7]
            out.append(s)
        self.classifier.end_window()
        self._window_index += 1
        return out, execs, {k: v.hist for k, v in samples.items()}

    def _summary(
        self, k: FlowKey, nbytes: int, packets: int, payload: int, connects: int, samples: int, st: _FlowSamples | None
    ) -> FlowSummary:
        owner = self.owners.get(k)
        senders = self._senders(k, st)
        if senders:  # the flow's process: the one that sent the most, not the last to connect
            owner = (senders[0][0], senders[0][1])
        classes = self.classifier.estimate(k, st.classes if st else None, payload)
        by_protocol = self._by_protocol(k, st, payload, classes.opaque())
        if by_protocol:
            # the hint whose sockets sent the most (a display name: rules
            # read by_protocol)
            top = max(sorted(by_protocol), key=lambda h: by_protocol[h][0])
            hint = top or None
        else:
            hint = self._flow_hint(k) or None
        return FlowSummary(
            key=k,
            bytes=nbytes,
            packets=packets,
            payload_bytes=payload,
            connects=connects,
            samples=samples,
            sampled_bytes=st.hist.total if st else 0,
            entropy=st.hist.entropy() if st else None,
            protocol_hint=hint,
            pid=owner[0] if owner else None,
            comm=owner[1] if owner else None,
            compression=classes.compression,
            body_entropy=st.body.entropy() if st else None,
            body_sampled_bytes=st.body.total if st else 0,
            dns_names=st.dns_names if st else [],
            high_entropy_bits=self.high_entropy_bits,
            byte_classes=classes,
            senders=senders,
            unattributed_bytes=st.unattributed if st else 0,
            by_protocol=by_protocol,
        )

    def _by_protocol(
        self, k: FlowKey, st: _FlowSamples | None, payload: int, opaque: int
    ) -> dict[str, tuple[int, int]]:
        """The window's payload and opaque bytes split by the sending
        sockets' protocol hints; a window without samples takes the last
        window's split (the classes take its mix the same way)."""
        split: tuple[tuple[str, float, float], ...] | None
        if st is not None and st.protocols:
            shares = st.protocols
            unseen = shares.pop(UNSEEN, None)
            if unseen is not None:  # named now: by every start of the window, too
                to = shares.setdefault(self._flow_hint(k), [0.0, 0.0])
                to[0] += unseen[0]
                to[1] += unseen[1]
            total = sum(v[0] for v in shares.values())
            total_opaque = sum(v[1] for v in shares.values())
            split = tuple(
                (h, v[0] / total if total > 0 else 0.0, v[1] / total_opaque if total_opaque > 0 else 0.0)
                for h, v in sorted(shares.items())
            )
            # shared: a flood of flows of one protocol stores one split
            self.last_protocols.put(k, self._splits(split))
        else:
            split = self.last_protocols.get(k)
        if not split:
            return {}
        return {h: (round(payload * fb), round(opaque * fo)) for h, fb, fo in split}
