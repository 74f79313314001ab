"""Per-workload baselines: what each workload normally does.

Everything here is mergeable (histograms add, sets union), so baselines
learned on many nodes merge into one fleet baseline exactly. Files are
msgpack, versioned, written atomically; a corrupt or newer file is refused
and never overwritten.

A baseline decides what is normal, so a file is checked before it is
believed: at most MAX_FILE_BYTES, every value in its range (counts not
negative, entropy 0..8, destination keys that parse, tables within their
caps), so a rule never meets a value it cannot handle. Files shared across
a fleet can be signed: with a key file (any secret bytes, e.g. 32 random
ones, readable by root only) the file is written as an envelope holding the
baseline and its HMAC-SHA256, and a reader given the key refuses a file
whose signature is missing or wrong (`baseline merge --key` checks every
input).

Destinations are names (version 2): a flow that had a name (SNI, HTTP Host,
DNS answer) is learned as its registered domain + port + transport, with the
addresses it used kept alongside (bounded); only flows that never had a name
are learned by address. Version 1 files (addresses only) load: their
workloads are marked `by_address`, and a named flow of such a workload is
also known when its address is (so an upgrade raises nothing new), until the
workload is relearned (`sluice baseline reset`, then learn).

Size (~460 lines): the model, its merge, its checks and its file format
stay together so that a field and its validation change in one place; the
file format (load/save/signing) is the part to move if it grows.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import math
import os
import re
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import msgpack

from sensor.errors import SluiceError

FORMAT = "sluice-baseline"
VERSION = 2  # 2: destinations by registered domain (1: by address; migrated on load)
DEFAULT_PATH = "/var/lib/sluice/baseline.msgpack"
MAX_DESTINATIONS = 4096
MAX_EXECUTABLES = 4096
MAX_PEERS = 1024
MAX_FILE_BYTES = 256 * 1024 * 1024
MAX_WORKLOADS = 100_000
MAX_BIN = 512  # LogHist.bin_of(2**127) = 509
SIGNED_FORMAT = "sluice-baseline-signed"
MAX_ADDRESSES_PER_DESTINATION = 32  # addresses kept per named destination
# a registered domain as a destination key (lower case, dot-separated labels)
_HOSTNAME = re.compile(r"^(?=.{1,253}$)[a-z0-9_]([a-z0-9_-]{0,62})(\.[a-z0-9_]([a-z0-9_-]{0,62}))*$")
MAX_LISTENERS = 1024  # listen ports, inbound (port, peer class) pairs, unix sockets, spawned workloads


def _bounded_table(w: dict[str, Any], name: str) -> dict[str, int]:
    """An optional name -> count table (absent in files written before it
    existed), refused beyond MAX_LISTENERS entries like the others."""
    t = w.get(name, {})
    if not isinstance(t, dict):
        raise ValueError(f"{name} must be a table")
    if len(t) > MAX_LISTENERS:
        raise ValueError(f"{len(t)} {name}, more than the {MAX_LISTENERS} a baseline keeps")
    return {str(k): _count(v) for k, v in t.items()}


class BaselineError(SluiceError):
    pass


class LogHist:
    """Counts of non-negative values in quarter-octave bins (mergeable)."""

    __slots__ = ("bins", "n")

    def __init__(self, bins: dict[int, int] | None = None) -> None:
        self.bins: dict[int, int] = dict(bins or {})
        self.n = sum(self.bins.values())

    @staticmethod
    def bin_of(v: float) -> int:
        return 0 if v <= 0 else int(4 * math.log2(v + 1)) + 1

    @staticmethod
    def upper(b: int) -> float:
        return 0.0 if b <= 0 else 2 ** (b / 4) - 1

    def add(self, v: float, count: int = 1) -> None:
        b = self.bin_of(v)
        self.bins[b] = self.bins.get(b, 0) + count
        self.n += count

    def merge(self, other: LogHist) -> None:
        for b, c in other.bins.items():
            self.bins[b] = self.bins.get(b, 0) + c
        self.n += other.n

    def quantile(self, q: float) -> float:
        """Upper edge of the bin holding the q-quantile (0 when empty)."""
        if not self.n:
            return 0.0
        rank = q * self.n
        acc = 0
        for b in sorted(self.bins):
            acc += self.bins[b]
            if acc >= rank:
                return self.upper(b)
        return self.upper(max(self.bins))

    def to_wire(self) -> dict[int, int]:
        return dict(self.bins)


@dataclass
class DestStats:
    windows: int = 0
    bytes: int = 0
    encrypted_bytes: int = 0
    max_entropy: float = 0.0
    protocols: set[str] = field(default_factory=set)
    # named destinations: addresses they resolved to (bounded)
    addresses: set[str] = field(default_factory=set)

    def add_address(self, ip: str) -> None:
        if ip in self.addresses or len(self.addresses) < MAX_ADDRESSES_PER_DESTINATION:
            self.addresses.add(ip)

    def merge(self, o: DestStats) -> None:
        self.windows += o.windows
        self.bytes += o.bytes
        self.encrypted_bytes += o.encrypted_bytes
        self.max_entropy = max(self.max_entropy, o.max_entropy)
        self.protocols |= o.protocols
        for a in sorted(o.addresses):
            self.add_address(a)

    def to_wire(self) -> list[Any]:
        return [
            self.windows,
            self.bytes,
            self.encrypted_bytes,
            self.max_entropy,
            sorted(self.protocols),
            sorted(self.addresses),
        ]

    @classmethod
    def from_wire(cls, w: list[Any]) -> DestStats:
        # version 1 entries have no address list (w[5])
        addrs = {str(ipaddress.ip_address(x)) for x in w[5]} if len(w) > 5 else set()
        if len(addrs) > MAX_ADDRESSES_PER_DESTINATION:
            raise ValueError(f"{len(addrs)} addresses for one destination, more than {MAX_ADDRESSES_PER_DESTINATION}")
        d = cls(_count(w[0]), _count(w[1]), _count(w[2]), float(w[3]), {str(x) for x in w[4]}, addrs)
        if not 0.0 <= d.max_entropy <= 8.0:
            raise ValueError(f"entropy {d.max_entropy!r} outside 0..8")
        return d


def _count(v: Any) -> int:
    """A count from a file: an integer, not negative."""
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise ValueError(f"{v!r} is not a count")
    return v


def _hist(w: Any) -> LogHist:
    bins = {int(k): _count(v) for k, v in w.items()}
    if any(not 0 <= b <= MAX_BIN for b in bins):
        raise ValueError("histogram bin out of range")
    return LogHist(bins)


def _time(v: Any) -> float:
    t = float(v)
    if not math.isfinite(t) or t < 0:
        raise ValueError(f"time {v!r} out of range")
    return t


def _dest_key_ok(k: Any) -> str:
    host, port, transport = str(k).split("|")
    if not _is_ip(host) and not _HOSTNAME.match(host):  # an address or a registered domain
        raise ValueError(f"destination {k!r}: not an address or a domain name")
    if not 0 <= int(port) <= 65535 or not transport:
        raise ValueError(f"destination {k!r} out of range")
    return str(k)


def dest_key(host: str, port: int, transport: str) -> str:
    """Key of a learned destination: an address, or a registered domain."""
    return f"{host}|{port}|{transport}"


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


def _prefix(ip: str, v4: int, v6: int) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    a = ipaddress.ip_address(ip)
    return ipaddress.ip_network(f"{ip}/{v4 if a.version == 4 else v6}", strict=False)


@lru_cache(maxsize=65536)
def _addr(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(text)


def _bounded_add(d: dict[str, Any], key: str, limit: int) -> bool:
    return key in d or len(d) < limit


@dataclass
class WorkloadBaseline:
    windows: int = 0
    egress_bytes: LogHist = field(default_factory=LogHist)
    encrypted_bytes: LogHist = field(default_factory=LogHist)
    destinations: dict[str, DestStats] = field(default_factory=dict)
    executables: dict[str, int] = field(default_factory=dict)
    peers: dict[str, int] = field(default_factory=dict)
    lifetimes: LogHist = field(default_factory=LogHist)
    starts_per_window: LogHist = field(default_factory=LogHist)
    hours: list[int] = field(default_factory=lambda: [0] * 24)
    first_seen: float = 0.0
    last_seen: float = 0.0
    dropped: int = 0  # observations not kept because a bounded table was full
    # learned from a version 1 file (destinations by address only) and not
    # yet by name: named flows fall back to address matching
    by_address: bool = False
    # inbound side and the container runtime (all optional on the wire: files
    # written before these existed read as empty)
    listen_ports: dict[str, int] = field(default_factory=dict)  # "tcp/8080" -> windows seen
    inbound: dict[str, int] = field(default_factory=dict)  # "tcp/8080|external" -> connections
    unix_sockets: dict[str, int] = field(default_factory=dict)  # socket file name -> connects
    spawned: dict[str, int] = field(default_factory=dict)  # workloads it started through a runtime

    # --- learning -------------------------------------------------------------

    def seen(self, ts: float) -> None:
        self.first_seen = ts if not self.first_seen else min(self.first_seen, ts)
        self.last_seen = max(self.last_seen, ts)

    def add_destination(
        self,
        key: str,
        nbytes: int,
        encrypted: int,
        entropy: float | None,
        proto: str | None,
        address: str | None = None,
    ) -> None:
        """address: for a named destination, the address the name resolved to
        (kept, bounded, so that a later unnamed flow to it is known)."""
        if not _bounded_add(self.destinations, key, MAX_DESTINATIONS):
            self.dropped += 1
            return
        d = self.destinations.setdefault(key, DestStats())
        if address:
            d.add_address(address)
        d.windows += 1
        d.bytes += nbytes
        d.encrypted_bytes += encrypted
        if entropy is not None:
            d.max_entropy = max(d.max_entropy, entropy)
        if proto:
            d.protocols.add(proto)

    def add_executable(self, path: str) -> None:
        if _bounded_add(self.executables, path, MAX_EXECUTABLES):
            self.executables[path] = self.executables.get(path, 0) + 1
        else:
            self.dropped += 1

    def add_peer(self, workload: str) -> None:
        if _bounded_add(self.peers, workload, MAX_PEERS):
            self.peers[workload] = self.peers.get(workload, 0) + 1
        else:
            self.dropped += 1

    def add_count(self, table: dict[str, int], key: str, n: int = 1) -> None:
        """Count into one of the bounded inbound/runtime tables."""
        if _bounded_add(table, key, MAX_LISTENERS):
            table[key] = table.get(key, 0) + n
        else:
            self.dropped += 1

    # --- questions ------------------------------------------------------------

    def knows_destination(
        self,
        ip: str,
        port: int,
        transport: str,
        prefix_v4: int = 32,
        prefix_v6: int = 128,
        domain: str | None = None,
    ) -> bool:
        """Named (domain given): is its registered domain learned for this
        port and transport? The address does not matter, unless this
        workload was learned by address only (a version 1 file).
        Unnamed: is the address, or its prefix, learned, either as an
        unnamed destination or as an address a learned name resolved to?"""
        if domain:
            from sensor.telemetry.names import registered_domain

            if dest_key(registered_domain(domain), port, transport) in self.destinations:
                return True
            if not self.by_address:
                return False
        if dest_key(ip, port, transport) in self.destinations:
            return True
        exact = prefix_v4 >= 32 and prefix_v6 >= 128
        net = None if exact else _prefix(ip, prefix_v4, prefix_v6)
        for k, d in self.destinations.items():
            khost, kport, ktr = k.split("|")
            if int(kport) != port or ktr != transport:
                continue
            if _is_ip(khost):
                if net is not None and _addr(khost) in net:
                    return True
            elif ip in d.addresses or (net is not None and any(_addr(x) in net for x in d.addresses)):
                return True
        return False

    def knows_resolver(self, address: str) -> bool:
        """Was this address learned as a DNS destination (UDP or TCP port
        53)? The address itself, not its prefix: a DNS server next to the
        learned one (the bridge's /24, the VPC subnet) is another server."""
        return any(dest_key(address, 53, t) in self.destinations for t in ("udp", "tcp"))

    def named_destinations(self) -> int:
        return sum(1 for k in self.destinations if not _is_ip(k.split("|", 1)[0]))

    def active_hour(self, hour: int) -> bool:
        return self.hours[hour] > 0

    # --- merge / wire -----------------------------------------------------------

    def merge(self, o: WorkloadBaseline) -> None:
        self.windows += o.windows
        for mine, theirs in (
            (self.egress_bytes, o.egress_bytes),
            (self.encrypted_bytes, o.encrypted_bytes),
            (self.lifetimes, o.lifetimes),
            (self.starts_per_window, o.starts_per_window),
        ):
            mine.merge(theirs)
        for k, d in o.destinations.items():
            if k in self.destinations:
                self.destinations[k].merge(d)
            elif len(self.destinations) < MAX_DESTINATIONS:
                self.destinations[k] = DestStats.from_wire(d.to_wire())
            else:
                self.dropped += 1
        for table, other, limit in (
            (self.executables, o.executables, MAX_EXECUTABLES),
            (self.peers, o.peers, MAX_PEERS),
            (self.listen_ports, o.listen_ports, MAX_LISTENERS),
            (self.inbound, o.inbound, MAX_LISTENERS),
            (self.unix_sockets, o.unix_sockets, MAX_LISTENERS),
            (self.spawned, o.spawned, MAX_LISTENERS),
        ):
            for k, c in other.items():
                if _bounded_add(table, k, limit):
                    table[k] = table.get(k, 0) + c
                else:
                    self.dropped += 1
        self.hours = [a + b for a, b in zip(self.hours, o.hours, strict=False)]
        if o.first_seen:
            self.seen(o.first_seen)
        self.last_seen = max(self.last_seen, o.last_seen)
        self.dropped += o.dropped
        # a migrated (version 1) side keeps address matching for named flows
        self.by_address = self.by_address or o.by_address

    def to_wire(self) -> dict[str, Any]:
        return {
            "windows": self.windows,
            "egress_bytes": self.egress_bytes.to_wire(),
            "encrypted_bytes": self.encrypted_bytes.to_wire(),
            "destinations": {k: d.to_wire() for k, d in self.destinations.items()},
            "executables": dict(self.executables),
            "peers": dict(self.peers),
            "lifetimes": self.lifetimes.to_wire(),
            "starts_per_window": self.starts_per_window.to_wire(),
            "hours": list(self.hours),
            "first_seen": self.first_seen,
            "last_seen": self.last_seen,
            "dropped": self.dropped,
            "by_address": self.by_address,
            "listen_ports": dict(self.listen_ports),
            "inbound": dict(self.inbound),
            "unix_sockets": dict(self.unix_sockets),
            "spawned": dict(self.spawned),
        }

    @classmethod
    def from_wire(cls, w: dict[str, Any]) -> WorkloadBaseline:
        hours = [_count(x) for x in w["hours"]]
        if len(hours) != 24:
            raise ValueError("hours must have 24 entries")
        for table, cap in (("destinations", MAX_DESTINATIONS), ("executables", MAX_EXECUTABLES), ("peers", MAX_PEERS)):
            if len(w[table]) > cap:
                raise ValueError(f"{len(w[table])} {table}, more than the {cap} a baseline keeps")
        return cls(
            windows=_count(w["windows"]),
            egress_bytes=_hist(w["egress_bytes"]),
            encrypted_bytes=_hist(w["encrypted_bytes"]),
            destinations={_dest_key_ok(k): DestStats.from_wire(v) for k, v in w["destinations"].items()},
            executables={str(k): _count(v) for k, v in w["executables"].items()},
            peers={str(k): _count(v) for k, v in w["peers"].items()},
            lifetimes=_hist(w["lifetimes"]),
            starts_per_window=_hist(w["starts_per_window"]),
            hours=hours,
            first_seen=_time(w["first_seen"]),
            last_seen=_time(w["last_seen"]),
            dropped=_count(w.get("dropped", 0)),
            by_address=bool(w.get("by_address", False)),
            listen_ports=_bounded_table(w, "listen_ports"),
            inbound=_bounded_table(w, "inbound"),
            unix_sockets=_bounded_table(w, "unix_sockets"),
            spawned=_bounded_table(w, "spawned"),
        )


@dataclass
class Baseline:
    workloads: dict[str, WorkloadBaseline] = field(default_factory=dict)
    window_seconds: float = 10.0
    nodes: set[str] = field(default_factory=set)
    created: float = field(default_factory=time.time)
    updated: float = field(default_factory=time.time)

    def resolvers(self) -> set[str]:
        """Every address some workload learned as a DNS destination."""
        out: set[str] = set()
        for wb in self.workloads.values():
            for k in wb.destinations:
                addr, port, transport = k.rsplit("|", 2)
                if port == "53" and transport in ("udp", "tcp"):
                    out.add(addr)
        return out

    def workload(self, key: str) -> WorkloadBaseline:
        wb = self.workloads.get(key)
        if wb is None:
            wb = self.workloads[key] = WorkloadBaseline()
        return wb

    def get(self, key: str) -> WorkloadBaseline | None:
        return self.workloads.get(key)

    def merge(self, o: Baseline) -> None:
        for k, wb in o.workloads.items():
            self.workload(k).merge(wb)
        self.nodes |= o.nodes
        self.created = min(self.created, o.created)
        self.updated = max(self.updated, o.updated)

    def to_wire(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": VERSION,
            "created": self.created,
            "updated": self.updated,
            "window_seconds": self.window_seconds,
            "nodes": sorted(self.nodes),
            "workloads": {k: wb.to_wire() for k, wb in self.workloads.items()},
        }

    @classmethod
    def from_wire(cls, w: Any, path: str) -> Baseline:
        if not isinstance(w, dict) or w.get("format") != FORMAT:
            raise BaselineError(
                f"{path}: not a Sluice baseline file", hint="give the path of a file written by `sluice baseline learn`"
            )
        v = w.get("version")
        if not isinstance(v, int) or v > VERSION:
            raise BaselineError(
                f"{path}: baseline format version {v!r} is newer than this Sluice reads ({VERSION})",
                hint="upgrade Sluice on this node, or learn a new baseline with this version",
            )
        try:
            if len(w["workloads"]) > MAX_WORKLOADS:
                raise ValueError(f"{len(w['workloads'])} workloads, more than {MAX_WORKLOADS}")
            window_seconds = float(w["window_seconds"])
            if not 0.5 <= window_seconds <= 3600:
                raise ValueError(f"window_seconds {window_seconds!r} outside 0.5..3600")
            workloads = {str(k): WorkloadBaseline.from_wire(x) for k, x in w["workloads"].items()}
            if v < 2:
                migrate_v1(workloads)
            return cls(
                workloads=workloads,
                window_seconds=window_seconds,
                nodes={str(n) for n in w.get("nodes", [])},
                created=_time(w["created"]),
                updated=_time(w["updated"]),
            )
        except (LookupError, TypeError, ValueError, AttributeError, OverflowError) as e:
            raise BaselineError(
                f"{path}: baseline file is corrupt ({type(e).__name__}: {e})",
                hint="restore it from a copy or learn a new one; Sluice will not overwrite it",
            ) from None


def migrate_v1(workloads: dict[str, WorkloadBaseline]) -> None:
    """Version 1 -> 2: destinations were addresses only. Keep them (they
    are what an unnamed flow is checked against) and mark each workload
    `by_address`, so that its named flows are also known by their address
    (until the workload is relearned): upgrading must not turn every known
    destination into a new one."""
    for wb in workloads.values():
        wb.by_address = True


def read_key(path: str | Path) -> bytes:
    """A signing key from its file (whitespace around it ignored)."""
    try:
        key = Path(path).read_bytes().strip()
    except OSError as e:
        raise BaselineError(f"{path}: cannot read the baseline key: {e.strerror}") from None
    if len(key) < 16:
        raise BaselineError(f"{path}: a baseline key must be at least 16 bytes", hint="e.g. head -c 32 /dev/urandom")
    return key


def _sign(key: bytes, body: bytes) -> bytes:
    return hmac.new(key, body, hashlib.sha256).digest()


def _unpack(raw: bytes, p: str) -> Any:
    try:
        return msgpack.unpackb(raw, raw=False, strict_map_key=False)
    except Exception as e:
        raise BaselineError(
            f"{p}: baseline file is corrupt (not msgpack: {e})",
            hint="restore it from a copy or learn a new one; Sluice will not overwrite it",
        ) from None


def loads(raw: bytes, p: str, key: bytes | None = None) -> Baseline:
    """A baseline from a file's bytes; with a key, only a correctly signed one."""
    if len(raw) > MAX_FILE_BYTES:
        raise BaselineError(f"{p}: larger than {MAX_FILE_BYTES} bytes, not read")
    w = _unpack(raw, p)
    if isinstance(w, dict) and w.get("format") == SIGNED_FORMAT:
        body, sig = w.get("body"), w.get("hmac_sha256")
        if not isinstance(body, bytes) or not isinstance(sig, bytes):
            raise BaselineError(f"{p}: signed baseline file is corrupt")
        if key is not None and not hmac.compare_digest(_sign(key, body), sig):
            raise BaselineError(
                f"{p}: the baseline's signature does not match the key",
                hint="the file was changed after it was signed, or signed with another key: do not use it",
            )
        w = _unpack(body, p)
    elif key is not None:
        raise BaselineError(
            f"{p}: the baseline is not signed and a key was given",
            hint="sign it by merging it with `sluice baseline merge --key` where it was learned",
        )
    return Baseline.from_wire(w, p)


def load(path: str | Path, key: bytes | None = None) -> Baseline:
    p = str(path)
    try:
        with open(p, "rb") as f:
            raw = f.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        raise BaselineError(
            f"{p}: no baseline file", hint="learn one with `sluice baseline learn --duration SECONDS`"
        ) from None
    except OSError as e:
        raise BaselineError(f"{p}: cannot read: {e.strerror}") from None
    return loads(raw, p, key)


def save(b: Baseline, path: str | Path, key: bytes | None = None) -> None:
    """Atomic: written to a temporary file in the same directory, fsynced,
    renamed over the target. With a key, signed."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    b.updated = time.time()
    data = msgpack.packb(b.to_wire(), use_bin_type=True)
    if key is not None:
        data = msgpack.packb(
            {"format": SIGNED_FORMAT, "version": VERSION, "body": data, "hmac_sha256": _sign(key, data)},
            use_bin_type=True,
        )
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", dir=p.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, p)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def merge_all(baselines: Iterable[Baseline]) -> Baseline:
    out = Baseline()
    first = True
    for b in baselines:
        if first:
            out.window_seconds, out.created, first = b.window_seconds, b.created, False
        out.merge(b)
    return out
