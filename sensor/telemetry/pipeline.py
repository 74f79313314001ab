"""Decoded kernel events -> attributed counters, window views for the rules,
and documents (built by sensor/outputs/documents.py).

The pipeline never touches the kernel: it consumes raw records from any
EventSource (bcc in production, a replay in unit tests) and kernel flow
counters drained once per window. Which containers exist is the
ContainerRegistry's business; the pipeline tells it about cgroup events.

Size (~480 lines): the event handlers share the process table (procs,
exited, pending args) and the window; the process table is the next thing
to move out (to sensor/attribution/), after issue 10's /proc changes land.
"""

from __future__ import annotations

import os
import posixpath
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, replace
from typing import Any

import psutil

from sensor.attribution.containers import Attribution, Attributor
from sensor.attribution.netmap import NetMap, cgroup_tasks, forging_unseen
from sensor.attribution.registry import ContainerRegistry
from sensor.attribution.runtimesock import RuntimeSockets
from sensor.attribution.workload import workload_of
from sensor.detect.view import (
    FORKED,
    SHELLS,
    ConnectView,
    ExecView,
    FlowView,
    LifecycleView,
    OverflowView,
    ProcessRef,
    UnixConnectView,
    WindowObserver,
    WindowView,
)
from sensor.kernel.events import (
    CGROUP_MKDIR,
    CONNECT_OP_CONNECT,
    EXEC_ARGV_LEN,
    QUOTA_EVENTS,
    SAMPLE_F_FIRST,
    SAMPLE_F_NO_SOCK,
    SAMPLE_F_SOCK_START,
    SOCKET_HOOK_CGROUP,
    SOCKET_HOOK_LSM,
    SOCKET_HOOK_SEND,
    SOCKET_HOOK_SYSCALL,
    AcceptEvent,
    CgroupEvent,
    ConnectEvent,
    DecodeError,
    DnsEvent,
    ExecArgsEvent,
    ExecEvent,
    ExitEvent,
    ListenEvent,
    QuotaEvent,
    SampleEvent,
    SocketEvent,
    UnixConnectEvent,
    UnixIntoEvent,
    decode,
)
from sensor.outputs import documents
from sensor.telemetry import inbound
from sensor.telemetry.counters import (
    HIGH_ENTROPY_BITS,
    SENDER_MEMORY_WINDOWS,
    ContainerSummary,
    FlowCounters,
    FlowSummary,
    QuotaOverflow,
    WindowCounters,
)
from sensor.telemetry.flowstate import PER_CGROUP
from sensor.telemetry.names import FlowNamer
from sensor.telemetry.protocol import dns_port, transport_name
from sensor.telemetry.stage import FD_PATH, SCRIPT_FILE, runs_inline_interpreter, stage_origin
from sensor.text import safe_text

Emit = Callable[[dict[str, Any]], None]
HOST_KEY = "host"
MAX_CONNECT_VIEWS = 64  # per (cgroup, destination) per window, for the rules
MAX_EXEC_VIEWS = 16  # per (cgroup, executable) per window
# distrusted DNS owners whose namespaces are read per window (recheck_distrust),
# the time that may take, and the threads of one container read at most
MAX_DISTRUST_RECHECKS = 32
RECHECK_BUDGET_S = 0.05
MAX_RECHECK_TASKS = 4096
MANY_PROCESSES = 8192  # live processes beyond which command lines are read at 256 bytes
MAX_VIEWS_PER_CGROUP = 4096  # connects, and execs, per cgroup per window (each kind its own), all keys together
# Exited processes stay known while a flow may still name them: the window
# they exited in, the next (bytes around the flip), and as long as a flow
# remembers them as a sender; at most this many.
MAX_EXITED = 4096
EXITED_WINDOWS = SENDER_MEMORY_WINDOWS + 2
# Past the window it exited in and the next, an exited process is kept only
# to name a remembered sender: its command line shrinks to this many bytes.
EXITED_FULL_WINDOWS = 2
EXITED_CMDLINE_BYTES = 256


@dataclass(slots=True)
class ProcInfo:
    pid: int
    ppid: int | None
    name: str
    executable: str
    args: list[str] | None
    cgroup_id: int
    start_ts: float
    ref: ProcessRef | None = None  # built once, shared by every event of the process
    exit_window: int = 0  # the window (pipeline.counts["windows"]) it exited in
    lean: bool = False  # exited long enough ago that its command line was shortened


CMDLINE_TRUNCATED = "...[truncated]"


def read_cmdline(pid: int, proc: str = "/proc", max_bytes: int = 4096) -> tuple[list[str] | None, bool]:
    """(arguments, truncated?). At most max_bytes are read: a container
    decides how long its command lines are, the sensor's memory must not
    follow (a truncated list ends with CMDLINE_TRUNCATED). psutil's
    Process.cmdline() reads the whole file, so this one read stays ours."""
    try:
        with open(f"{proc}/{pid}/cmdline", "rb") as f:
            raw = f.read(max_bytes + 1)
    except OSError:
        return None, False
    if not raw:
        return None, False
    truncated = len(raw) > max_bytes
    if truncated:
        raw = raw[:max_bytes]
    args = [safe_text(a) for a in raw.rstrip(b"\0").split(b"\0")]
    if truncated:
        args.append(CMDLINE_TRUNCATED)
    return args, truncated


def kernel_args(raw: bytes) -> list[str] | None:
    """argv as the exec event carries it (NUL-separated, its first
    EXEC_ARGV_LEN bytes: a full read may be cut, and then ends with
    CMDLINE_TRUNCATED); None when the kernel read none."""
    if not raw:
        return None
    cut = len(raw) >= EXEC_ARGV_LEN and not raw.endswith(b"\0")
    args = [safe_text(a) for a in raw.rstrip(b"\0").split(b"\0")]
    return [*args, CMDLINE_TRUNCATED] if cut else args


def shorten_args(args: list[str], max_bytes: int) -> list[str]:
    """A command line cut to about max_bytes characters (arguments and their
    separators), ending with CMDLINE_TRUNCATED when something was cut."""
    out: list[str] = []
    n = 0
    for a in args:
        if a == CMDLINE_TRUNCATED:
            out.append(a)
            break
        if n + len(a) > max_bytes:
            out.append(a[: max(0, max_bytes - n)])
            out.append(CMDLINE_TRUNCATED)
            break
        out.append(a)
        n += len(a) + 1
    return out


# /proc/<pid>/root (or self's) in front of a path names the same file
_PROC_ROOT = re.compile(r"^/proc/(?:self|thread-self|[0-9]+)/root(?=/)")


def canonical_path(filename: str) -> str:
    """`filename` spelled as one path: /proc/<pid>/root prefixes dropped,
    "//", "/./" and "/../" collapsed (lexically: symlinks are not
    followed). Relative paths stay relative."""
    f = filename
    while (g := _PROC_ROOT.sub("", f)) != f:
        f = g
    if f.startswith("/"):
        return "/" + posixpath.normpath(f).lstrip("/")
    return posixpath.normpath(f) if f else f


SELF_EXE = frozenset({"/proc/self/exe", "/proc/thread-self/exe"})


def resolve_executable(pid: int, filename: str) -> str:
    """The exec'd file; /proc/self/exe (busybox applets, runc) and fd paths
    (/proc/self/fd/N, /dev/fd/N: memfd and fexecve payloads) resolved to the
    file they name, as seen from the process's own mount namespace (a memfd
    reads "/memfd:NAME (deleted)"). A path as the caller spelled it is not
    the file: `./nc`, `//tmp/nc`, `/./tmp/nc` and `/proc/self/root/tmp/nc`
    all ran /tmp/nc past rules that compare paths (review). A relative or
    non-canonical one is the kernel's name for the process's executable when
    the process still runs it (the same base name), else spelled
    canonically (canonical_path)."""
    if filename in SELF_EXE or FD_PATH.match(filename):
        try:
            return safe_text(psutil.Process(pid).exe()) or filename
        except psutil.Error:
            return filename
    canonical = canonical_path(filename)
    if canonical == filename and filename.startswith("/"):
        return filename
    try:
        exe = safe_text(psutil.Process(pid).exe())
    except psutil.Error:
        exe = ""
    if exe.startswith("/") and posixpath.basename(exe.removesuffix(" (deleted)")) == posixpath.basename(canonical):
        return exe
    return canonical


def _same_exe(a: int, b: int) -> bool:
    """Do processes a and b run the same file (a fork that exec'd nothing)?"""
    try:
        sa, sb = os.stat(f"/proc/{a}/exe"), os.stat(f"/proc/{b}/exe")
    except OSError:
        return False
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


def _stat_ppid(pid: int) -> int:
    """The parent of `pid` from /proc/<pid>/stat, 0 when unknown: one read
    (psutil's Process costs ~10x more, and this runs at container execs
    whose parent the sensor did not see exec: bench_drain's exec replay
    fell from 102k to 23k events/s with it)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return int(f.read().rsplit(b")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return 0


def _comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


def read_ppid(pid: int) -> int | None:
    return _stat_ppid(pid) or None  # (one /proc read, as psutil's ppid() did, without its Process)


class Pipeline:
    def __init__(
        self,
        attributor: Attributor,
        emit: Emit,
        host_name: str,
        events: bool,
        monotonic_to_wall: Callable[[int], float],
        max_processes: int = 65536,
        observers: list[WindowObserver] | None = None,
        netmap: NetMap | None = None,
        high_entropy_bits: float = HIGH_ENTROPY_BITS,
        max_cmdline_bytes: int = 4096,
        registry: ContainerRegistry | None = None,
        sample_bytes: int = 64,
        sample_every: int = 64,
        sample_first_packets: int = 8,
        flow_state_per_cgroup: int = PER_CGROUP,
    ) -> None:
        self.max_cmdline_bytes = max_cmdline_bytes
        self.attributor = attributor
        self.emit = emit
        self.host_name = host_name
        self.events = events
        self.to_wall = monotonic_to_wall
        self.window = WindowCounters(
            high_entropy_bits=high_entropy_bits,
            sample_every=sample_every,
            per_cgroup=flow_state_per_cgroup,
            first_packets=sample_first_packets,
        )
        # flows named by SNI, Host and DNS answers
        self.names = FlowNamer(owners=self._name_owners)
        # unix connects to the node's runtime sockets, by identity (the
        # runner adds the configured Docker socket)
        self.runtime_sockets = RuntimeSockets()
        # container id -> its latest connect to a runtime socket (inbound.py)
        self.runtime_callers: dict[str, UnixConnectView] = {}
        # a socket's first payload comes longer (names); entropy, byte classes
        # and protocol state see the usual sample length (kernel.sample_bytes)
        self.sample_bytes = sample_bytes
        self.observers: list[WindowObserver] = list(observers or [])
        self.netmap = netmap
        self._view = WindowView(0.0, 0.0)
        self._view_counts: dict[tuple[Any, ...], int] = {}
        self._views_refused: dict[int, int] = {}  # cgroup id -> events past its view share
        self.procs: OrderedDict[int, ProcInfo] = OrderedDict()
        # Exited processes stay known for a while: their flows are
        # summarised at the end of the window, after they are gone.
        self.exited: OrderedDict[int, ProcInfo] = OrderedDict()
        self.max_processes = max_processes
        self._pending_args: dict[int, list[str]] = {}
        # which containers exist; removed ones stay resolvable until the
        # window holding their last bytes is summarised (expire() below)
        self.registry = registry if registry is not None else ContainerRegistry(attributor)
        self.registry.subscribe(on_cgroups_removed=self.window.forget_cgroups)
        self.registry.subscribe(
            on_cgroups_removed=self.names.forget_cgroups,
            on_removed=lambda lives: self.names.forget_owners({life.info.id for life in lives}),
        )
        if netmap is not None:
            self.registry.subscribe(on_removed=netmap.containers_removed)
        self._stateless: dict[int, int] = {}  # cgroup id -> samples without socket state, this window
        self.counts: dict[str, int] = {
            "events": 0,
            "decode_errors": 0,
            "exec": 0,
            "exit": 0,
            "connect": 0,
            "sample": 0,
            "cgroup": 0,
            "exec_args": 0,
            "dns": 0,
            "socket": 0,
            "quota": 0,
            "documents": 0,
            "windows": 0,
            "view_events_capped": 0,
            "cmdline_truncated": 0,
            "senders_capped": 0,  # a flow's senders past MAX_SENDERS_PER_FLOW (their bytes unattributed)
            "ssh_unverified": 0,  # SSH sockets whose packet after the identification line was not seen
            # samples of sockets the kernel kept no state for (their storage refused: SL-EVA-001)
            "stateless_samples": 0,
            "listen": 0,
            "accept": 0,
            "unix_connect": 0,
            "unix_connect_host": 0,
            # per-flow knowledge (owner, protocol, byte classes) forgotten to its caps
            "flow_state_evictions": 0,
            # cgroups whose port 53 bind or raw socket the kernel could not report
            "forgers_unreported": 0,
            # containers holding such a socket when the sensor started
            "forgers_at_start": 0,
            "forgers_at_start_unread": 0,
            "forgers_rechecked": 0,  # distrusted containers whose namespaces were read again
            "forgers_recheck_deferred": 0,  # rechecks left to the next window (time budget)
        }
        self.last_decode_error = ""
        self.top: list[dict[str, Any]] = []
        # _ancestry's /proc reads of parents no exec of which was seen, this window
        self._unseen_parents: dict[int, tuple[int, str]] = {}
        self._handlers: dict[type, Callable[[Any], None]] = {
            ExecEvent: self._on_exec,
            ExitEvent: self._on_exit,
            ExecArgsEvent: self._on_exec_args,
            ConnectEvent: self._on_connect,
            SampleEvent: self._on_sample,
            CgroupEvent: self._on_cgroup,
            DnsEvent: self._on_dns,
            SocketEvent: self._on_socket,
            QuotaEvent: self._on_quota,
            # listeners, inbound connections, unix connects: sensor/telemetry/inbound.py
            ListenEvent: lambda ev: inbound.on_listen(self, ev),
            AcceptEvent: lambda ev: inbound.on_accept(self, ev),
            UnixConnectEvent: lambda ev: inbound.on_unix_connect(self, ev),
            UnixIntoEvent: lambda ev: inbound.on_unix_into(self, ev),
        }
        # told of every cgroup that reports going over a quota (the source
        # reads its counts when the window closes)
        self.on_quota: Callable[[int], None] = lambda _cgroup_id: None
        self._recheck_turn = 0  # where recheck_distrust's next turn starts
        # set by the runner from the source (EventSource.counts_received):
        # without ingress counts, flow documents leave them out, not zero
        self.counts_received = True

    # --- input -------------------------------------------------------------

    def handle_raw(self, raw: bytes) -> None:
        self.counts["events"] += 1
        try:
            ev = decode(raw)
        except DecodeError as e:
            self.counts["decode_errors"] += 1
            self.last_decode_error = str(e)
            return
        self._handlers[type(ev)](ev)

    def _out(self, doc: dict[str, Any]) -> None:
        self.counts["documents"] += 1
        self.emit(doc)

    # --- processes ---------------------------------------------------------

    def _remember(self, p: ProcInfo) -> None:
        self.procs[p.pid] = p
        self.procs.move_to_end(p.pid)
        while len(self.procs) > self.max_processes:
            self.procs.popitem(last=False)

    def _self_exe(self, pid: int, ppid: int | None) -> str | None:
        """What /proc/self/exe named at an exec whose process is gone before
        /proc/<pid>/exe was read (busybox runs its applets so, and they are
        short-lived): the file the process ran before, its own earlier exec
        or, a fork not exec'd yet, its parent's. Left as "/proc/self/exe",
        busybox's nc was two executables at random, and an alert's
        suppression key (and an allow entry by executable) with it. The
        parent's, read now, is right unless it exec'd again since; its own
        earlier exec comes first (a fork has none: its record is its
        parent's until it execs)."""
        own = self.procs.get(pid)
        if own is not None and own.executable and own.executable not in SELF_EXE:
            return own.executable  # (an exec'd process re-running itself: review)
        if ppid:
            # the parent's file as the kernel names it (/bin/busybox, not the
            # /bin/sh symlink its exec spelled), as for a process still there
            exe = resolve_executable(ppid, "/proc/self/exe")
            if exe not in SELF_EXE:
                return exe
            q = self.procs.get(ppid)
            if q is not None and q.executable and q.executable not in SELF_EXE:
                return q.executable
        return None

    def _on_exec_args(self, ev: ExecArgsEvent) -> None:
        self.counts["exec_args"] += 1
        self._pending_args[ev.hdr.pid] = list(ev.args)
        if len(self._pending_args) > 4096:  # args whose exec failed
            self._pending_args.pop(next(iter(self._pending_args)))

    def _on_exec(self, ev: ExecEvent) -> None:
        self.counts["exec"] += 1
        pid = ev.hdr.pid
        args = self._pending_args.pop(pid, None) or self._pending_args.pop(ev.old_pid, None)
        args_source = "tracepoint" if args is not None else "procfs"
        if args is None:
            # with many live processes, read less of each: what the table of
            # live processes holds stays bounded (8192 x 4 KiB + the rest x 256 B)
            cap = self.max_cmdline_bytes if len(self.procs) < MANY_PROCESSES else min(self.max_cmdline_bytes, 256)
            args, truncated = read_cmdline(pid, max_bytes=cap)
            self.counts["cmdline_truncated"] += truncated
            # The kernel's copy (bpf/exec.bpf.c, where it has BTF) is this
            # exec's own: the process may have exited before /proc was read
            # (curl | sh of a one-line stage; review) or exec'd again since
            # (`exec sh -c` as a piped script's first line: its cmdline is
            # the next program's). /proc's stands when it says the same, or
            # is longer where the kernel's was cut.
            kargs = kernel_args(ev.argv)
            if kargs is not None and args != kargs:
                cut = kargs[-1] == CMDLINE_TRUNCATED
                if args is None or not cut or args[: len(kargs) - 2] != kargs[:-2]:
                    args, args_source = kargs, "kernel"
        ppid = ev.ppid or read_ppid(pid)
        ts = self.to_wall(ev.hdr.ktime_ns)
        exe = resolve_executable(pid, ev.filename)
        if exe in SELF_EXE:
            exe = self._self_exe(pid, ppid) or exe
        p = ProcInfo(pid, ppid, ev.comm, exe, args, ev.hdr.cgroup_id, ts)
        self._remember(p)
        self.window.add_exec(ev.hdr.cgroup_id)
        attr = self.attributor.attribute(ev.hdr.cgroup_id)
        if attr.container is not None:
            ref = self._process_ref(p)
            if ev.gppid and ppid == ev.ppid:
                # the kernel's, read at the exec (a subshell that only forked
                # is gone milliseconds after its fetch, before user space
                # could read /proc: measured)
                q = self.procs.get(ppid) or self.exited.get(ppid)
                g = self.procs.get(ev.gppid) or self.exited.get(ev.gppid)
                ref.gppid = ev.gppid
                if not ev.parent_execd:
                    ref.parent = FORKED if g is not None and g.name in SHELLS else ""
                else:
                    ref.parent = q.name if q is not None else ""
            self._ancestry(ref)  # (else from the exec table and /proc)
        origin = stage_origin(pid, ev.filename, p.executable, args, lambda: self._siblings(p), stdin_mode=ev.stdin_mode)
        # a script file is kept like any exec (one key per script: many
        # runs of one interpreter do not crowd out a new script)
        script = origin.path if origin is not None and origin.kind == SCRIPT_FILE else ""
        special = origin is not None and not script
        # an interpreter running its command line (SL-C2-001's inline stage)
        # has a share of its own: busybox's applets are all /bin/busybox, and
        # 16 of them in a window crowded `sh -c "$(wget ...)"` out (review)
        share = script
        if not special and not script and runs_inline_interpreter(p.executable, args):
            share = "\0inline"
        if special or self.view_keep(("e", ev.hdr.cgroup_id, p.executable, share), MAX_EXEC_VIEWS):
            ex = ExecView(ts, attr, workload_of(attr), self._ancestry(self._process_ref(p)))
            if origin is not None:
                ex.origin, ex.writers, ex.script = origin.kind, origin.writers, script
            self._view.execs.append(ex)
        if not self.events:
            return
        source = args_source if args is not None else "unavailable"
        self._out(documents.process_start(self.host_name, ts, attr, self._process_ref(p), source))

    def _siblings(self, p: ProcInfo) -> list[int]:
        """Running processes of p's cgroup with p's parent (the other side of
        a shell pipeline), newest first, and the parent itself."""
        out = [
            q.pid
            for q in reversed(self.procs.values())
            if q.ppid == p.ppid and q.pid != p.pid and q.cgroup_id == p.cgroup_id
        ]
        return out + ([p.ppid] if p.ppid else [])

    def view_keep(self, key: tuple[Any, ...], cap: int, total_cap: int = MAX_VIEWS_PER_CGROUP) -> bool:
        """Bound what one window hands to the rules: the first `cap` events
        per key ((kind, cgroup, what): connects per destination, execs per
        executable, listens per port, unix connects per path, ...), and
        `total_cap` views of a kind per cgroup. The rules need no more (a
        beacon is a few connects per window; a chain needs the first connect
        to each destination) and a flood must not stall the reader while
        the window closes. Each cgroup has its own share, so one cannot
        crowd out another's; going over its share of views is counted per
        cgroup and is an alert (SL-EVA-001): 256 decoy unix paths before a
        docker.sock connect would otherwise hide that connect."""
        n = self._view_counts.get(key, 0)
        if n >= cap:  # a repeat past its key's share: counted only
            self.counts["view_events_capped"] += 1
            return False
        total_key = ("n", key[0], key[1])  # a churn of keys cannot grow the cgroup's views
        total = self._view_counts.get(total_key, 0)
        if total >= total_cap:
            self.counts["view_events_capped"] += 1
            self._views_refused[key[1]] = self._views_refused.get(key[1], 0) + 1
            return False
        self._view_counts[key] = n + 1
        self._view_counts[total_key] = total + 1
        return True

    @staticmethod
    def _process_ref(p: ProcInfo) -> ProcessRef:
        if p.ref is None:
            p.ref = ProcessRef(p.pid, p.name, p.executable, p.args, p.ppid)
        return p.ref

    def _ancestry(self, ref: ProcessRef) -> ProcessRef:
        """ref with its grandparent and its parent's name, looked up
        once (from the exec table, else the grandparent from /proc while the
        parent lives: a subshell that only forked, `$(curl | cat)`, is in
        no exec table). For the views the stage rule reads."""
        if ref.gppid is None and ref.ppid:
            q = self.procs.get(ref.ppid) or self.exited.get(ref.ppid)
            if q is not None:
                ref.gppid, ref.parent = q.ppid or 0, q.name  # (comm: a busybox applet's own name)
            else:
                # one /proc read per such parent per window (the execs of one
                # shell share it; a pid comes back only after ~4M others)
                known = self._unseen_parents.get(ref.ppid)
                if known is None:
                    gppid = _stat_ppid(ref.ppid)
                    # no exec seen: a fork of its own parent (the same
                    # program), or one that predates the sensor (another
                    # program); FORKED only for a shell's
                    forked = gppid and _same_exe(ref.ppid, gppid) and _comm(gppid) in SHELLS
                    known = self._unseen_parents[ref.ppid] = (gppid, FORKED if forked else "")
                ref.gppid, ref.parent = known
        return ref

    def _on_exit(self, ev: ExitEvent) -> None:
        self.counts["exit"] += 1
        p = self.procs.pop(ev.hdr.pid, None)
        if p is not None:
            p.exit_window = self.counts["windows"]
            self.exited[p.pid] = p
            while len(self.exited) > MAX_EXITED:
                self.exited.popitem(last=False)
        if not self.events:
            return
        ts = self.to_wall(ev.hdr.ktime_ns)
        attr = self.attributor.attribute(ev.hdr.cgroup_id)
        ref, started = (self._process_ref(p), p.start_ts) if p is not None else (None, None)
        self._out(documents.process_end(self.host_name, ts, attr, ref, started, ev.hdr.pid, ev.comm))

    # --- network -------------------------------------------------------------

    def _on_connect(self, ev: ConnectEvent) -> None:
        self.counts["connect"] += 1
        key = (ev.hdr.cgroup_id, ev.daddr, ev.dport, ev.protocol)
        self.window.set_owner(key, ev.hdr.pid, ev.comm, ev.sock_cookie)
        ts = self.to_wall(ev.hdr.ktime_ns)
        attr = self.attributor.attribute(ev.hdr.cgroup_id)
        p = self.procs.get(ev.hdr.pid) or self.exited.get(ev.hdr.pid)
        ref = self._process_ref(p) if p is not None else ProcessRef(ev.hdr.pid, ev.comm)
        domain, resolver = self.names.dns_answer(ev.hdr.cgroup_id, ev.daddr, ts) or (None, "")
        if self.view_keep(("c", ev.hdr.cgroup_id, ev.daddr, ev.dport, ev.protocol), MAX_CONNECT_VIEWS):
            self._view.connects.append(
                ConnectView(
                    ts,
                    attr,
                    workload_of(attr),
                    ev.daddr,
                    ev.dport,
                    transport_name(ev.protocol),
                    self._ancestry(ref),
                    domain=domain,
                    name_resolver=resolver,
                )
            )
        if not self.events:
            return
        action = "connection_attempted" if ev.op == CONNECT_OP_CONNECT else "udp_send"
        proc = self._known_process(ev.hdr.pid, ev.comm)
        transport = transport_name(ev.protocol)
        self._out(
            documents.connection(
                self.host_name,
                ts,
                attr,
                action,
                proc,
                ev.daddr,
                ev.dport,
                transport,
                ev.sock_cookie,
                domain,
                resolver,
            )
        )

    def _known_process(self, pid: int, comm: str) -> dict[str, Any]:
        """process.* from the exec table, else what the event and /proc say."""
        p = self.procs.get(pid) or self.exited.get(pid)
        if p is not None:
            return documents.process_fields(self._process_ref(p))
        return documents.process_brief(ProcessRef(pid, comm, ppid=read_ppid(pid)))

    def _on_sample(self, ev: SampleEvent) -> None:
        self.counts["sample"] += 1
        if ev.flags & SAMPLE_F_NO_SOCK:
            # the kernel could not keep this socket's state (its option
            # memory full): paced by the flow's packets, a pace the sender
            # can steer; named per container at the window's close
            self.counts["stateless_samples"] += 1
            cg = ev.hdr.cgroup_id
            self._stateless[cg] = self._stateless.get(cg, 0) + 1
        key = (ev.hdr.cgroup_id, ev.daddr, dns_port(ev.daddr, ev.dport), ev.protocol)
        in_start = bool(ev.flags & SAMPLE_F_SOCK_START)
        first = in_start and ev.sock_pkt_index == 0
        data = ev.data
        if first:
            self.names.on_first_payload(key, data)
        full = data
        if ev.flags & SAMPLE_F_FIRST:
            data = data[: self.sample_bytes]
        self.window.add_sample(
            key,
            data,
            first,
            ev.payload_len,
            in_start,
            ev.sock_cookie,
            ev.span_bytes,
            ev.second,
            ev.second_off,
            first_read=full if first else b"",
            sock_index=ev.sock_pkt_index,
        )

    def _name_owners(self, cgroup_id: int) -> tuple[int | str, ...]:
        """A cgroup and its container's id (when attributed): whom a DNS
        distrust covers (sensor/telemetry/names.py FlowNamer.distrust)."""
        c = self.attributor.attribute(cgroup_id).container
        return (cgroup_id, c.id) if c is not None else (cgroup_id,)

    def _on_dns(self, ev: DnsEvent) -> None:
        """A DNS response a container received: its name -> address map."""
        self.counts["dns"] += 1
        self.names.on_dns(ev.hdr.cgroup_id, ev.data, ev.protocol, self.to_wall(ev.hdr.ktime_ns), ev.saddr)

    # --- raw sockets and quotas --------------------------------------------------

    _FAMILIES = {2: "AF_INET", 10: "AF_INET6", 17: "AF_PACKET"}
    _TYPES = {1: "SOCK_STREAM", 2: "SOCK_DGRAM", 3: "SOCK_RAW", 10: "SOCK_PACKET"}
    # hook -> (sluice.socket.hook, (message when allowed, when denied))
    _SOCKET_HOOKS = {
        SOCKET_HOOK_LSM: ("lsm", ("created", "refused")),
        SOCKET_HOOK_CGROUP: ("cgroup_sock_create", ("created", "refused")),
        SOCKET_HOOK_SYSCALL: ("sys_enter_socket", ("created", "process killed at creation")),
        SOCKET_HOOK_SEND: ("sock_send_length", ("sent on", "process killed after its first send on")),
    }

    def _on_socket(self, ev: SocketEvent) -> None:
        """A raw or packet socket (bpf/socket.bpf.c): sends that no egress
        program sees (AF_PACKET) or that forge headers. Reported for every
        container, always; on the host only with telemetry on."""
        self.counts["socket"] += 1
        # it can send a DNS "response" from any address and port to itself
        self.names.distrust(ev.hdr.cgroup_id, "raw or packet socket")
        attr = self.attributor.attribute(ev.hdr.cgroup_id)
        if attr.container is None and not self.events:
            return
        ts = self.to_wall(ev.hdr.ktime_ns)
        fam = self._FAMILIES.get(ev.family, str(ev.family))
        # the send hook does not know the type (0)
        typ = self._TYPES.get(ev.type, str(ev.type)) if ev.type else "unknown"
        who = (attr.container.name or attr.container.id[:12]) if attr.container else "the host"
        hook, verb = self._SOCKET_HOOKS.get(ev.hook, ("unknown", ("created", "refused")))
        message = (
            f"{verb[1] if ev.denied else verb[0]}: a raw socket ({fam}, {typ}) in {who} "
            f"({ev.comm or 'pid ' + str(ev.hdr.pid)})" + (" (the container is contained)" if ev.denied else "")
        )
        proc = self._known_process(ev.hdr.pid, ev.comm)
        self._out(documents.raw_socket(self.host_name, ts, attr, proc, fam, typ, ev.protocol, ev.denied, hook, message))

    def scan_existing_forgers(self, proc: str = "/proc") -> None:
        """Containers running before the sensor started (a restart, or one
        the attacker caused): a socket on port 53, raw or packet in their
        network namespaces was made before the sensor could see it, and
        distrusts their DNS answers as one it saw would. Every thread of the
        container is read (cgroup_tasks), as the recheck does: a process
        whose main thread exited is a zombie leader with nothing to read,
        and the first pid of cgroup.procs was all this scan read before.
        Not strict (forging_unseen): only a finding distrusts."""
        for life in list(self.registry.running.values()):
            d = self.attributor.cgroup_dir(self.attributor.attribute(life.cgroup_id))
            tasks = cgroup_tasks(d, MAX_RECHECK_TASKS) if d is not None else None
            if tasks is None and d is not None and cgroup_tasks(d) is not None:
                # readable, but more threads than a recheck reads: a
                # container must not hide a forging socket behind numbers
                why: str | None = f"more than {MAX_RECHECK_TASKS} threads to read"
            elif tasks is None:
                self.counts["forgers_at_start_unread"] += 1
                continue
            else:
                why = forging_unseen(tasks, proc, strict=False)
            if why is not None:
                self.counts["forgers_at_start"] += 1
                self.names.distrust(life.cgroup_id, f"{why} when the sensor started")

    def recheck_distrust(self, proc: str = "/proc") -> None:
        """Distrusted containers (and cgroups) whose every network namespace
        holds no socket that could forge DNS answers any more, read from
        /proc (netmap.forging_unseen: every thread, every socket table,
        every socket held): their answers received from then on vouch again
        (FlowNamer.clear). One on the host's network namespace, or that
        cannot be read, stays distrusted; so does one that holds such a
        socket. A socket made after a read was reported when it was made,
        which distrusts again.

        The time a clear takes effect is read after the reads, on the
        kernel's clock (answers are stamped with it): a forging socket alive
        then was seen. At most MAX_DISTRUST_RECHECKS owners and
        RECHECK_BUDGET_S seconds per window, in turn, so that owners that
        never clear (or are slow to read) cannot keep the others from their
        turn, nor stall the window."""
        owners = self.names.uncleared()
        if not owners:
            return
        t0 = time.monotonic()
        first = self._recheck_turn % len(owners)
        verdicts: dict[str, bool] = {}  # cgroup directory -> clean, within this pass
        checked = 0
        for owner in (owners + owners)[first : first + min(len(owners), MAX_DISTRUST_RECHECKS)]:
            if checked and time.monotonic() - t0 > RECHECK_BUDGET_S:
                self.counts["forgers_recheck_deferred"] += 1
                break
            checked += 1
            d = self._owner_dir(owner)
            if d is None:
                continue
            clean = verdicts.get(d)
            if clean is None:
                self.counts["forgers_rechecked"] += 1
                tasks = cgroup_tasks(d, MAX_RECHECK_TASKS)
                clean = verdicts[d] = tasks is not None and forging_unseen(tasks, proc) is None
            if clean:
                self.names.clear(owner, self.to_wall(time.monotonic_ns()))
        self._recheck_turn += checked

    def _owner_dir(self, owner: Hashable) -> str | None:
        """The cgroup directory a distrust owner's processes are read from:
        its container's (all of its cgroups) when known, else its own."""
        cg: int | None = None
        if isinstance(owner, str):
            life = self.registry.get(owner)
            cg = life.cgroup_id if life is not None else None
        elif isinstance(owner, int):
            c = self.attributor.attribute(owner).container
            life = self.registry.get(c.id) if c is not None else None
            cg = life.cgroup_id if life is not None else owner
        return self.attributor.cgroup_dir(self.attributor.attribute(cg)) if cg is not None else None

    def note_unreported(self, cgroup_ids: list[int]) -> None:
        """Cgroups whose port 53 bind or raw/packet socket the kernel could
        not report (event quota, full ring buffer): they could forge DNS
        answers as well as one that was reported."""
        for cg in cgroup_ids:
            self.counts["forgers_unreported"] += 1
            self.names.distrust(cg, "a port 53 bind or raw socket went unreported (event quota or full buffer)")

    def _on_quota(self, ev: QuotaEvent) -> None:
        self.counts["quota"] += 1
        if ev.kind == QUOTA_EVENTS:
            # its bind or raw-socket events may be among those refused
            self.names.distrust(ev.hdr.cgroup_id, "kernel events lost to its quota")
        self.on_quota(ev.hdr.cgroup_id)

    # --- containers ----------------------------------------------------------

    def _on_cgroup(self, ev: CgroupEvent) -> None:
        self.counts["cgroup"] += 1
        ts = self.to_wall(ev.hdr.ktime_ns)
        if ev.op == CGROUP_MKDIR:
            self._on_cgroup_mkdir(ev, ts)
        else:
            self._on_cgroup_rmdir(ev, ts)

    def _on_cgroup_mkdir(self, ev: CgroupEvent, ts: float) -> None:
        new = self.registry.cgroup_created(ev.hdr.cgroup_id, ev.path, ts)
        if new is None:
            return  # not a container, or a sub-cgroup of a known one
        _life, attr = new
        clients = inbound.open_runtime_clients(self, attr) if self.runtime_callers else ()
        self._view.lifecycle.append(LifecycleView(ts, attr, workload_of(attr), "start", None, clients))
        if self.events:
            self._out(documents.container_start(self.host_name, ts, attr))

    def _on_cgroup_rmdir(self, ev: CgroupEvent, ts: float) -> None:
        life = self.registry.cgroup_removed(ev.hdr.cgroup_id, ev.path)
        if life is None:
            return  # a sub-cgroup or a host cgroup: a running container stays known
        attr = Attribution(ev.hdr.cgroup_id, ev.path, life.info)
        inbound.forget_runtime_caller(self, life.info.id)
        lifetime = ts - life.started if life.started is not None else None
        self._view.lifecycle.append(LifecycleView(ts, attr, workload_of(attr), "stop", lifetime))
        if self.events:
            self._out(documents.container_stop(self.host_name, ts, attr, life.started))

    def attribute_pid(self, pid: int) -> tuple[Attribution, str, ProcessRef | None]:
        """Attribution, workload and process of a pid (for non-BPF sources
        such as file integrity events): its cgroup from /proc, its process
        from the exec table (which still knows short-lived processes)."""
        cgid = 0
        try:
            with open(f"/proc/{pid}/cgroup") as f:
                path = next((line.split(":", 2)[2].strip() for line in f if line.startswith("0::")), "/")
            cgid = self.attributor.cgroup_id_of(path)
        except (OSError, StopIteration):
            p = self.procs.get(pid) or self.exited.get(pid)
            cgid = p.cgroup_id if p else 0
        attr = self.attributor.attribute(cgid)
        p = self.procs.get(pid) or self.exited.get(pid)
        if p is not None:
            ref: ProcessRef | None = self._process_ref(p)
        elif not pid:
            ref = None
        else:
            try:
                exe = safe_text(psutil.Process(pid).exe())
                args, _t = read_cmdline(pid, max_bytes=self.max_cmdline_bytes)
                ref = ProcessRef(pid, exe.rsplit("/", 1)[-1], exe, args, read_ppid(pid))
            except psutil.Error:
                ref = ProcessRef(pid, "") if pid else None
        return attr, workload_of(attr), ref

    # --- windows -------------------------------------------------------------

    def _with_user_overflows(self, overflows: list[QuotaOverflow]) -> list[QuotaOverflow]:
        """The kernel's overflows of the window, with each cgroup's samples
        taken without socket state and its events past its view share (a
        cgroup with only those is one more overflow)."""
        stateless, self._stateless = self._stateless, {}
        refused, self._views_refused = self._views_refused, {}
        by_cg = {o.cgroup_id: o for o in overflows}
        for cg in sorted(stateless.keys() | refused.keys()):
            o = by_cg.get(cg) or QuotaOverflow(cg, 0, 0, 0, 0, 0, 0, 0)
            by_cg[cg] = replace(
                o, stateless_samples=stateless.get(cg, o.stateless_samples), views_refused=refused.get(cg, 0)
            )
        return list(by_cg.values())

    def close_window(
        self, flows: list[FlowCounters], start: float, end: float, overflows: list[QuotaOverflow] | None = None
    ) -> tuple[list[FlowSummary], dict[str, ContainerSummary]]:
        """Join kernel counters with samples; emit summaries; reset.
        `overflows`: cgroups over their fair share; the traffic they sent
        past their flow quota counts in their container's totals."""
        self.counts["windows"] += 1
        self._unseen_parents.clear()
        self.recheck_distrust()
        overflows = self._with_user_overflows(overflows or [])
        summaries, execs, hists = self.window.close(flows)
        self.counts["senders_capped"] = self.window.senders_capped
        self.counts["ssh_unverified"] = self.window.ssh_unverified
        for s in summaries:
            named = self.names.name(s.key, end)
            if named is not None:
                s.domain, s.domain_source = named
                s.name_resolver = self.names.vouched(s.key, named[0], named[1], end)
            s.sni, s.http_host = self.names.sni(s.key), self.names.host(s.key)
        per: dict[str, ContainerSummary] = {}
        attrs: dict[int, Attribution] = {}

        def attr_of(cgid: int) -> Attribution:
            a = attrs.get(cgid)
            if a is None:
                a = attrs[cgid] = self.attributor.attribute(cgid)
            return a

        def key_of(a: Attribution) -> str:
            return a.container.id if a.container else HOST_KEY

        for s in summaries:
            a = attr_of(s.cgroup_id)
            c = per.setdefault(key_of(a), ContainerSummary())
            c.cgroup_ids.add(s.cgroup_id)
            c.bytes += s.bytes
            c.packets += s.packets
            c.payload_bytes += s.payload_bytes
            c.connects += s.connects
            c.flows += 1
            c.destinations.add(f"{s.key[1]}:{s.key[2]}")
            c.high_entropy_bytes += s.encrypted_bytes
            h = hists.get(s.key)
            if h is not None:
                c.histogram.merge(h)
            if self.events:
                proc = self._known_process(s.pid, s.comm or "") if s.pid is not None else None
                self._out(documents.flow_summary(self.host_name, s, a, proc, start, end, self.counts_received))
        for cgid, n in execs.items():
            a = attr_of(cgid)
            c = per.setdefault(key_of(a), ContainerSummary())
            c.cgroup_ids.add(cgid)
            c.execs += n
        over_views = []
        for o in overflows or []:
            a = attr_of(o.cgroup_id)
            c = per.setdefault(key_of(a), ContainerSummary())
            c.cgroup_ids.add(o.cgroup_id)
            c.bytes += o.bytes
            c.packets += o.packets
            c.connects += o.connects
            over_views.append(OverflowView(o, a, workload_of(a)))
        self._view.overflows = over_views
        if self.events:
            for _key, c in per.items():
                a = attr_of(next(iter(c.cgroup_ids)))
                self._out(documents.container_summary(self.host_name, c, a, start, end))
        self._update_top(per, attrs, end - start)
        self._notify(summaries, attr_of, start, end)
        # what was removed in this window is summarised: its owners forget it
        self.registry.expire()
        self._expire_exited()
        self.counts["flow_state_evictions"] = self.window.state_evictions()
        return summaries, per

    def _expire_exited(self) -> None:
        """Processes that exited before the last EXITED_WINDOWS windows are
        forgotten: every window that could name them is summarised."""
        oldest = self.counts["windows"] - EXITED_WINDOWS
        while self.exited and next(iter(self.exited.values())).exit_window < oldest:
            self.exited.popitem(last=False)
        lean = self.counts["windows"] - EXITED_FULL_WINDOWS
        for p in self.exited.values():  # oldest first
            if p.exit_window >= lean:
                break
            if not p.lean:
                p.lean = True
                if p.args is not None:
                    p.args = shorten_args(p.args, EXITED_CMDLINE_BYTES)
                    p.ref = None  # rebuilt with the short command line when asked

    def _notify(
        self, summaries: list[FlowSummary], attr_of: Callable[[int], Attribution], start: float, end: float
    ) -> None:
        """Hand the window to the learner and the rules."""
        view, self._view = self._view, WindowView(end, end)
        self._view_counts = {}
        view.start, view.end = start, end
        for c in view.connects:
            # a distrust that arrived after the connect covers it too
            if c.name_resolver and self.names.distrusted(c.attr.cgroup_id, c.ts) is not None:
                c.name_resolver = ""
        if not self.observers:
            return
        flows = []
        for s in summaries:
            a = attr_of(s.cgroup_id)
            proc = self._flow_process(s.pid, s.comm or "") if s.pid is not None else None
            fv = FlowView(s, a, workload_of(a), s.key[1], s.key[2], transport_name(s.key[3]), process=proc)
            fv.senders = [self._flow_process(pid, comm) for pid, comm, _n in s.senders]
            flows.append(fv)
        if self.netmap is not None:
            self._resolve_peers(flows)
        inbound.resolve_accept_peers(self, view)
        view.flows = flows
        for o in self.observers:
            o.on_window(view)

    def _flow_process(self, pid: int, comm: str) -> ProcessRef:
        """A flow's process: from the exec table when known, else what the
        connect event said."""
        p = self.procs.get(pid) or self.exited.get(pid)
        return self._process_ref(p) if p is not None else ProcessRef(pid, comm)

    def _resolve_peers(self, flows: list[FlowView]) -> None:
        assert self.netmap is not None
        for f in flows:  # learn the addresses of containers active now
            c = f.attr.container
            if c is None or self.netmap.has(c.id):
                continue
            cgroup_dir = self.attributor.cgroup_dir(f.attr)
            if cgroup_dir is not None:
                self.netmap.refresh(c.id, cgroup_dir)
        for f in flows:
            peer_id = self.netmap.container_of(f.ip)
            if peer_id is None:
                continue
            life = self.registry.get(peer_id)
            if life is not None:
                f.peer = life.attribution()
                f.peer_workload = workload_of(f.peer)

    def _update_top(self, per: dict[str, ContainerSummary], attrs: dict[int, Attribution], seconds: float) -> None:
        rows: list[dict[str, Any]] = []
        for key, c in per.items():
            a = attrs[next(iter(c.cgroup_ids))] if c.cgroup_ids & attrs.keys() else None
            info = a.container if a else None
            rows.append(
                {
                    "container": key[:12] if info else HOST_KEY,
                    "name": (info.name or "") if info else "",
                    "image": (info.image_name or "") if info else "",
                    "bytes_per_s": c.bytes / seconds if seconds > 0 else 0.0,
                    "entropy": c.entropy,
                    "connects": c.connects,
                    "execs": c.execs,
                    "destinations": sorted(c.destinations)[:5],
                    "n_destinations": len(c.destinations),
                }
            )
        rows.sort(key=lambda r: r["bytes_per_s"], reverse=True)
        self.top = rows


def monotonic_to_wall_factory() -> Callable[[int], float]:
    """Map bpf_ktime_get_ns (CLOCK_MONOTONIC) to wall-clock seconds."""
    offset = time.time() - time.monotonic()

    def conv(ktime_ns: int) -> float:
        return ktime_ns / 1e9 + offset

    return conv
