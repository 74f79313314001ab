"""Destinations are names: DNS answers, TLS SNI and HTTP Host per flow.

- DNS answers arrive from bpf/ingress.bpf.c (responses from source port 53
  delivered to a socket); dnspython parses them. Each cgroup keeps its own
  name -> address map with TTLs: what that container was told, CNAME chains
  followed back to the name it asked for.
- A socket's first payload, when it starts a TLS handshake or an HTTP request,
  is read longer by bpf/egress.bpf.c; the ClientHello's server_name or the
  request's Host names the flow.
- A flow's name is the best of SNI, Host, then the most recent DNS answer the
  container received for the address. Once named, a flow keeps its name.

Registered domains come from the public suffix list bundled with the
`publicsuffixlist` package (no network at run time). Private suffixes are
honoured: bucket.s3.amazonaws.com, app.herokuapp.com, user.github.io and
d123.cloudfront.net are registered domains of their own, because each is a
different tenant; for a sensor that tells "our bucket" from "someone else's
bucket", the tenant is the unit that matters.
"""

from __future__ import annotations

import ipaddress
import struct
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import dns.exception
import dns.message
import dns.name
import dns.rdatatype
import publicsuffixlist
from publicsuffixlist import PublicSuffixList

from sensor.telemetry.protocol import HTTP_PREFIXES, IPPROTO_TCP, tls_handshake

SNI = "sni"
HTTP_HOST = "http_host"
DNS_ANSWER = "dns"

# A name is kept at least this long after its answer, whatever its TTL:
# clients and connection pools keep using an address after the record
# expired (glibc does not cache, but Java, Go and curl pools do), and a
# name learned from a 5-second CDN TTL should still name the transfer that
# starts 30 s later. Expired beyond that, the address is unnamed again.
MIN_HOLD_S = 300.0
MAX_NAMES_PER_CGROUP = 4096
MAX_CGROUPS = 16384
MAX_FLOW_NAMES = 65536

_PSL: PublicSuffixList | None = None

# Multi-tenant domains the bundled public suffix list does not split
# (checked against publicsuffixlist 1.1.2.20261023): every name directly
# under one of these belongs to a different tenant. Without them a workload
# that learned one tenant's name (its partner's webhook, its own cloud VM)
# would "know" every other tenant's, an attacker's included: a request
# catcher or an out-of-band testing host registered in a minute. Added to
# the bundled list as rules of its own syntax.
TENANT_SUFFIXES = (
    "*.cloudapp.azure.com",  # <vm>.<region>.cloudapp.azure.com
    "bc.googleusercontent.com",  # Compute Engine instance names
    "glitch.me",
    "serveo.net",
    "loca.lt",
    "pipedream.net",
    "m.pipedream.net",  # <endpoint>.m.pipedream.net
    "requestcatcher.com",
    "webhook.site",
    "burpcollaborator.net",
    "oastify.com",
    "interact.sh",
    "oast.fun",
    "oast.live",
    "oast.me",
    "oast.online",
    "oast.pro",
    "oast.site",
)


# Names that answer with whatever address they spell, for any address:
# wildcard DNS services (1.2.3.4.nip.io) and Kubernetes pod records
# (6-6-6-6.default.pod.cluster.local: CoreDNS "pods insecure", the kubeadm
# default). Each such name is its own registered domain, so a learned one
# says nothing about another (a workload that learned one pod's name does
# not know an attacker's address spelled the same way).
ADDRESS_NAME_SUFFIXES = ("nip.io", "sslip.io", "xip.io", "traefik.me", "pod.cluster.local")
_UNDER_ADDRESS_NAME = tuple("." + x for x in ADDRESS_NAME_SUFFIXES)


def _psl() -> PublicSuffixList:
    global _PSL
    if _PSL is None:
        # the list bundled with the package, and the tenant suffixes above
        bundled = Path(publicsuffixlist.__file__).with_name("public_suffix_list.dat")
        _PSL = PublicSuffixList([*bundled.read_text(encoding="utf-8").splitlines(), *TENANT_SUFFIXES])
    return _PSL


@lru_cache(maxsize=65536)
def registered_domain(name: str) -> str:
    """The registrable domain of a host name (public suffix list, private
    suffixes honoured): a.b.example.co.uk -> example.co.uk,
    x.mybucket.s3.amazonaws.com -> mybucket.s3.amazonaws.com. A name that is
    itself a public suffix (or a single label) is returned as it is."""
    n = name.lower().rstrip(".")
    if not n:
        return n
    if n.endswith(_UNDER_ADDRESS_NAME):
        return n
    try:
        rd = _psl().privatesuffix(n)
    except (ValueError, UnicodeError):
        rd = None
    return rd or n


@lru_cache(maxsize=65536)
def public_suffix(name: str) -> str | None:
    """The public suffix of a name (co.uk, s3.amazonaws.com), or None."""
    try:
        return _psl().publicsuffix(name.lower().rstrip(".")) or None
    except (ValueError, UnicodeError):
        return None


def split_domain(name: str) -> tuple[str, str]:
    """(registered domain, subdomain part) of a name."""
    n = name.lower().rstrip(".")
    rd = registered_domain(n)
    sub = n[: -len(rd)].rstrip(".") if n.endswith(rd) and n != rd else ""
    return rd, sub


# --- DNS answers -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Answer:
    name: str  # the name the client asked for
    address: str
    ttl: int
    chain: tuple[str, ...] = ()  # CNAME targets from the asked name to the address owner


def _from_wire(wire: bytes) -> dns.message.Message:
    """Parse a DNS message; a response cut short (SL_DNS_MAX, or a TCP
    segment) is parsed as far as its complete answer records go: the
    authority and additional sections are dropped first, then answers from
    the end, until what is left parses."""
    try:
        return dns.message.from_wire(wire, ignore_trailing=True)
    except (dns.exception.DNSException, ValueError, struct.error):
        if len(wire) < 12:
            raise
    qd, an = struct.unpack("!HH", wire[4:8])

    def parse(n: int) -> dns.message.Message | None:
        fixed = wire[:4] + struct.pack("!HHHH", qd, n, 0, 0) + wire[12:]
        try:
            return dns.message.from_wire(fixed, ignore_trailing=True)
        except (dns.exception.DNSException, ValueError, struct.error):
            return None

    # The answer count is the sender's to write (65535 in a 512-byte
    # packet): at most as many records as fit (11 bytes each at least:
    # a one-byte name and the fixed fields), and the most that parse found
    # by bisection (if n answers parse, so do fewer): a handful of parses
    # per response, not one per claimed answer.
    best = parse(0)
    if best is None:
        raise ValueError("no complete question in the response")
    lo, hi = 0, min(an, (len(wire) - 12) // 11)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        m = parse(mid)
        if m is None:
            hi = mid - 1
        else:
            lo, best = mid, m
    return best


def parse_dns_answers(data: bytes, transport: int) -> list[Answer]:
    """Address records of a DNS response, each named by the question it
    answers (CNAME chains followed). Raises ValueError when `data` is not a
    DNS response."""
    wire = data[2:] if transport == IPPROTO_TCP else data
    try:
        msg = _from_wire(wire)
    except (dns.exception.DNSException, ValueError, struct.error) as e:
        raise ValueError(f"not a DNS response: {e}") from None
    if not msg.flags & 0x8000:  # QR
        raise ValueError("a DNS query, not a response")
    cname: dict[dns.name.Name, dns.name.Name] = {}
    for rrset in msg.answer:
        if rrset.rdtype == dns.rdatatype.CNAME:
            for rd in rrset:
                cname[rrset.name] = rd.target
    out: list[Answer] = []
    for q in msg.question:
        # follow the chain from the asked name; bounded against loops
        chain: list[dns.name.Name] = []
        cur = q.name
        for _ in range(16):
            nxt = cname.get(cur)
            if nxt is None or nxt in chain:
                break
            chain.append(nxt)
            cur = nxt
        owners = {q.name, *chain}
        asked = q.name.to_text(omit_final_dot=True).lower()
        for rrset in msg.answer:
            if rrset.rdtype not in (dns.rdatatype.A, dns.rdatatype.AAAA) or rrset.name not in owners:
                continue
            for rd in rrset:
                out.append(
                    Answer(
                        asked,
                        str(ipaddress.ip_address(rd.address)),
                        int(rrset.ttl),
                        tuple(c.to_text(omit_final_dot=True).lower() for c in chain),
                    )
                )
    return out


# Registered domains remembered per address (a CDN address answers for
# many); the oldest goes first.
MAX_VOUCHED_PER_ADDRESS = 8


class NameMap:
    """Per cgroup: address -> (name, expiry, resolver), from the answers it
    received, and the registered domains any answer (the name asked or a
    CNAME on the way) gave that address, with their expiry and the resolver
    that answered: what vouches for a name a client only claimed (SNI,
    Host). An answer added with resolver "" (its cgroup could have forged
    it, FlowNamer.distrust) names an address but vouches for nothing.
    Bounded (oldest forgotten first); expired entries are dropped on read."""

    def __init__(self, min_hold_s: float = MIN_HOLD_S, max_names: int = MAX_NAMES_PER_CGROUP) -> None:
        self.min_hold_s = min_hold_s
        self.max_names = max_names
        # address -> (name, expiry, resolver, received at)
        self._by_cg: OrderedDict[int, OrderedDict[str, tuple[str, float, str, float]]] = OrderedDict()
        # address -> registered domain -> (expiry, resolver, received at)
        self._vouched: dict[int, OrderedDict[str, dict[str, tuple[float, str, float]]]] = {}

    def add(self, cgroup_id: int, answers: list[Answer], now: float, resolver: str) -> None:
        m = self._by_cg.get(cgroup_id)
        if m is None:
            m = self._by_cg[cgroup_id] = OrderedDict()
            while len(self._by_cg) > MAX_CGROUPS:
                oldest, _names = self._by_cg.popitem(last=False)
                self._vouched.pop(oldest, None)
        self._by_cg.move_to_end(cgroup_id)
        v = self._vouched.get(cgroup_id)
        if v is None:
            v = self._vouched[cgroup_id] = OrderedDict()
        for a in answers:
            until = now + max(float(a.ttl), self.min_hold_s)
            m[a.address] = (a.name, until, resolver, now)
            m.move_to_end(a.address)
            if not resolver:
                continue
            doms = v.get(a.address)
            if doms is None:
                doms = v[a.address] = {}
            else:
                v.move_to_end(a.address)
            for n in (a.name, *a.chain):
                d = registered_domain(n)
                doms.pop(d, None)
                doms[d] = (until, resolver, now)
            while len(doms) > MAX_VOUCHED_PER_ADDRESS:
                del doms[next(iter(doms))]
        while len(m) > self.max_names:
            m.popitem(last=False)
        while len(v) > self.max_names:
            v.popitem(last=False)

    def vouches(self, cgroup_id: int, address: str, name: str, now: float) -> tuple[str, float] | None:
        """(resolver, received at) of the answer to this cgroup (not
        expired) that gave `address` a name of `name`'s registered domain;
        None when none did."""
        per = self._vouched.get(cgroup_id)
        doms = per.get(address) if per is not None else None
        if not doms:
            return None
        e = doms.get(registered_domain(name))
        return (e[1], e[2]) if e is not None and e[0] >= now else None

    def lookup(self, cgroup_id: int, address: str, now: float) -> tuple[str, str, float] | None:
        """(name, resolver, received at) of the latest answer for the
        address; resolver "" when that answer vouches for nothing."""
        m = self._by_cg.get(cgroup_id)
        if not m:
            return None
        e = m.get(address)
        if e is None:
            return None
        if e[1] < now:
            del m[address]
            return None
        return e[0], e[2], e[3]

    def forget(self, cgroup_ids: set[int]) -> None:
        for cg in cgroup_ids:
            self._by_cg.pop(cg, None)
            self._vouched.pop(cg, None)

    def __len__(self) -> int:
        return sum(len(m) for m in self._by_cg.values())


# --- TLS ClientHello server_name ------------------------------------------------
#
# Parsed by hand: no maintained Python library parses a *partial* ClientHello
# (dpkt and scapy want whole records; the kernel hands us at most
# SL_FIRST_MAX bytes of the first write). The walk is bounds-checked at every
# step and gives up (None) on anything it does not understand.


def tls_sni(data: bytes) -> str | None:
    """The server_name of a ClientHello at the start of `data`, or None
    (not a ClientHello, no SNI, or cut before the SNI is complete)."""
    h, _cut = tls_handshake(data)
    if len(h) < 4 or h[0] != 0x01:  # handshake type ClientHello
        return None
    p = 4 + 2 + 32  # handshake header, legacy_version, random
    if p >= len(h):
        return None
    p += 1 + h[p]  # session id
    if p + 2 > len(h):
        return None
    p += 2 + int.from_bytes(h[p : p + 2], "big")  # cipher suites
    if p >= len(h):
        return None
    p += 1 + h[p]  # compression methods
    if p + 2 > len(h):
        return None
    end = min(len(h), p + 2 + int.from_bytes(h[p : p + 2], "big"))
    p += 2
    while p + 4 <= end:
        etype = int.from_bytes(h[p : p + 2], "big")
        elen = int.from_bytes(h[p + 2 : p + 4], "big")
        body = h[p + 4 : p + 4 + elen]
        if etype == 0:  # server_name
            if len(body) < elen or len(body) < 5:
                return None  # cut short
            q = 2  # server_name_list length
            while q + 3 <= len(body):
                ntype = body[q]
                nlen = int.from_bytes(body[q + 1 : q + 3], "big")
                name = body[q + 3 : q + 3 + nlen]
                if len(name) < nlen:
                    return None
                if ntype == 0:  # host_name
                    return _hostname(name)
                q += 3 + nlen
            return None
        p += 4 + elen
    return None


def _hostname(raw: bytes) -> str | None:
    try:
        s = raw.decode("ascii").strip().lower().rstrip(".")
    except UnicodeDecodeError:
        return None
    if not s or len(s) > 253 or any(c in s for c in " /\\@\0\r\n\t"):
        return None
    return s


# --- HTTP Host --------------------------------------------------------------------


def http_host(data: bytes) -> str | None:
    """The host a cleartext HTTP request names: its Host header, else the
    authority of an absolute-form or CONNECT request target. Port removed."""
    if not data.startswith(HTTP_PREFIXES) or data.startswith(b"HTTP/"):
        return None
    head = data.split(b"\r\n\r\n", 1)[0]
    lines = head.split(b"\r\n")
    for line in lines[1:]:
        k, sep, v = line.partition(b":")
        if sep and k.strip().lower() == b"host":
            return _strip_port(v.strip())
    parts = lines[0].split(b" ")
    if len(parts) >= 2:
        target = parts[1]
        if b"://" in target:
            target = target.split(b"://", 1)[1].split(b"/", 1)[0]
            return _strip_port(target.rpartition(b"@")[2])
        if parts[0] == b"CONNECT":
            return _strip_port(target)
    return None


def _strip_port(v: bytes) -> str | None:
    if v.startswith(b"["):  # [v6]:port
        v = v[1:].split(b"]", 1)[0]
    elif v.count(b":") == 1:
        v = v.split(b":", 1)[0]
    return _hostname(v)


def is_ip_literal(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        return False


# --- the per-flow namer ----------------------------------------------------------------

FlowKey = tuple[int, str, int, int]


class _LRU(OrderedDict):  # type: ignore[type-arg]
    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit

    def put(self, key: object, value: object) -> None:
        self[key] = value
        self.move_to_end(key)
        while len(self) > self.limit:
            self.popitem(last=False)


class FlowNamer:
    """Names flows: SNI, else Host, else the container's latest DNS answer
    for the address. Counts what it could not parse.

    A DNS answer vouches for a name only when its container could not have
    written it. A container that binds port 53 or creates a raw or packet
    socket can send itself a "response" from any address it can bind
    (127.0.0.11, a resolver's address with IP_TRANSPARENT: Docker grants
    CAP_NET_RAW) on port 53; one that lost kernel events to its quota may
    have done so unseen. Its answers (`distrust`), those received before
    the distrust too, name addresses but vouch for nothing, until the
    sensor has read every network namespace of the container and found no
    such socket left (`clear`, from the pipeline's rescan): answers received
    from then on vouch again, those from before never do, and a new report
    distrusts it again. Which resolver answered is kept with
    each vouch: the detector also requires the workload to have learned it
    (sensor/detect/rule.py Context.resolver_known), so a resolver the
    attacker runs elsewhere vouches for nothing either."""

    def __init__(
        self, min_hold_s: float = MIN_HOLD_S, owners: Callable[[int], tuple[Hashable, ...]] = lambda cg: (cg,)
    ) -> None:
        self.dns = NameMap(min_hold_s)
        # what a distrust is kept under, for a cgroup: the cgroup, and its
        # container when known (a forger in one of a container's cgroups
        # can answer a socket in another)
        self.owners = owners
        self._sni: _LRU = _LRU(MAX_FLOW_NAMES)
        self._host: _LRU = _LRU(MAX_FLOW_NAMES)
        # a flow keeps its DNS name: key -> (name, resolver, received at)
        self._dns_named: _LRU = _LRU(MAX_FLOW_NAMES)
        # a flow keeps the vouch its claimed name once had (a long-lived
        # connection outlives the answer's hold time), while the name
        # stays: key -> (name, resolver, received at)
        self._vouched_name: _LRU = _LRU(MAX_FLOW_NAMES)
        # cgroup or container -> [why its DNS answers vouch for nothing,
        # since when they vouch again (None: not yet)]
        self._distrusted: _LRU = _LRU(MAX_CGROUPS)
        self.counts: dict[str, int] = {
            "dns_responses": 0,
            "dns_answers": 0,
            "dns_unparsed": 0,
            "dns_answers_unvouched": 0,  # from a distrusted cgroup
            "dns_distrusted_cgroups": 0,
            "dns_distrust_cleared": 0,  # found with no forging socket left
            "sni": 0,
            "http_host": 0,
        }

    def distrust(self, cgroup_id: int, reason: str) -> bool:
        """From now on the DNS answers of the cgroup, and of every cgroup of
        its container, vouch for nothing (it could forge them), whenever
        they were received. True the first time, and again for one that had
        been cleared."""
        new = False
        for k in self.owners(cgroup_id):
            e = self._distrusted.get(k)
            if e is None:
                self._distrusted.put(k, [reason, None])
                new = True
            elif e[1] is not None:
                e[0], e[1] = reason, None
                self._distrusted.move_to_end(k)  # active again: last to be evicted
                new = True
        if new:
            self.counts["dns_distrusted_cgroups"] += 1
        return new

    def distrusted(self, cgroup_id: int, at: float | None = None) -> str | None:
        """Why the cgroup's DNS answers received at `at` (None: from now on)
        vouch for nothing, or None when they vouch."""
        if not self._distrusted:
            return None  # the common case, without asking whose the cgroup is
        for k in self.owners(cgroup_id):
            e = self._distrusted.get(k)
            if isinstance(e, list) and (e[1] is None or (at is not None and at < e[1])):
                return str(e[0])
        return None

    def uncleared(self) -> list[Hashable]:
        """The owners (cgroup ids, container ids) still distrusted from now
        on: what the pipeline's rescan looks at, oldest distrust first."""
        return [k for k, e in self._distrusted.items() if e[1] is None]

    def clear(self, owner: Hashable, since: float) -> None:
        """The rescan read every network namespace of this owner at `since`
        and found no socket that could forge answers: its answers received
        from then on vouch again. Those from before never do."""
        e = self._distrusted.get(owner)
        if isinstance(e, list) and e[1] is None:
            e[1] = since
            self.counts["dns_distrust_cleared"] += 1

    def on_dns(self, cgroup_id: int, data: bytes, transport: int, now: float, resolver: str) -> list[Answer]:
        """A DNS response `resolver` (its source address) sent the cgroup."""
        self.counts["dns_responses"] += 1
        try:
            answers = parse_dns_answers(data, transport)
        except ValueError:
            self.counts["dns_unparsed"] += 1
            return []
        self.counts["dns_answers"] += len(answers)
        if answers:
            if self.distrusted(cgroup_id, now) is not None:
                self.counts["dns_answers_unvouched"] += len(answers)
                resolver = ""
            self.dns.add(cgroup_id, answers, now, resolver)
        return answers

    def on_first_payload(self, key: FlowKey, data: bytes) -> None:
        """A socket's first payload: SNI or Host, when it has one."""
        if not data:
            return
        if data[0] == 0x16:
            sni = tls_sni(data)
            if sni and not is_ip_literal(sni):  # an address is not a name
                self.counts["sni"] += 1
                self._sni.put(key, sni)
        elif data.startswith(HTTP_PREFIXES):
            host = http_host(data)
            if host and not is_ip_literal(host):
                self.counts["http_host"] += 1
                self._host.put(key, host)

    def sni(self, key: FlowKey) -> str | None:
        v = self._sni.get(key)
        return v if isinstance(v, str) else None

    def host(self, key: FlowKey) -> str | None:
        v = self._host.get(key)
        return v if isinstance(v, str) else None

    def vouched(self, key: FlowKey, name: str, source: str, now: float) -> str:
        """The resolver that vouches for a flow's name ("" when none does).
        A DNS name is vouched for by the answer that gave it; an SNI or
        Host (anything inside the container can send any) by an answer the
        container received that gave the address a name of the same
        registered domain."""
        # Each vouch is judged by when its answer arrived: a distrust covers
        # what the cgroup received before it was known too (an AF_PACKET
        # socket is reported after its first send returns, and a frame sent
        # on loopback is delivered during that send), until it is cleared.
        if source == DNS_ANSWER:
            kept = self._dns_named.get(key)
        else:
            kept = self._vouched_name.get(key)
            if not (isinstance(kept, tuple) and kept[0] == name and self.distrusted(key[0], kept[2]) is None):
                # none kept, or one a distrust covers: a later answer may vouch
                got = self.dns.vouches(key[0], key[1], name, now)
                kept = (name, *got) if got is not None else None
                if kept is not None:
                    self._vouched_name.put(key, kept)
        if not (isinstance(kept, tuple) and kept[0] == name and kept[1]):
            return ""
        return "" if self.distrusted(key[0], kept[2]) is not None else str(kept[1])

    def dns_answer(self, cgroup_id: int, address: str, now: float) -> tuple[str, str] | None:
        """(name, resolver) of the cgroup's latest answer for the address;
        resolver "" when it vouches for nothing."""
        e = self.dns.lookup(cgroup_id, address, now)
        if e is None:
            return None
        if e[1] and self.distrusted(cgroup_id, e[2]) is not None:
            return e[0], ""
        return e[0], e[1]

    def name(self, key: FlowKey, now: float) -> tuple[str, str] | None:
        """(name, source) of a flow: source is "sni", "http_host" or "dns"."""
        sni = self.sni(key)
        if sni:
            return sni, SNI
        host = self.host(key)
        if host:
            return host, HTTP_HOST
        if key[2] == 53:
            # the resolver itself: named by what it answered, it would take
            # the name of whatever it resolved to its own address
            return None
        e = self.dns.lookup(key[0], key[1], now)
        if e is not None:
            self._dns_named.put(key, e)
            return e[0], DNS_ANSWER
        kept = self._dns_named.get(key)
        return (kept[0], DNS_ANSWER) if isinstance(kept, tuple) else None

    def forget_owners(self, container_ids: set[str]) -> None:
        """Removed containers: their distrust goes with them (others' stays
        under the cap, not pushed out by the churn of gone ones)."""
        for cid in container_ids:
            self._distrusted.pop(cid, None)

    def forget_cgroups(self, ids: set[int]) -> None:
        self.dns.forget(ids)
        for cg in ids:
            self._distrusted.pop(cg, None)
        for t in (self._sni, self._host, self._dns_named, self._vouched_name):
            for k in [k for k in t if k[0] in ids]:
                del t[k]
