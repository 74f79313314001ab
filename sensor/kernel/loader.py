"""Compiles, loads and attaches the BPF programs with bcc; drains them.

The only module that imports bcc. It implements source.EventSource.
"""

from __future__ import annotations

import ctypes as ct
import errno
import mmap
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sensor.config import KernelSection
from sensor.errors import SluiceError
from sensor.kernel import bpfsys, btf, events, precompile, unixconnect
from sensor.kernel.hooks import (
    PACKET_GUARD_FUNCTION,
    PACKET_GUARD_TRACEPOINT,
    PACKET_SEND_BTF_FUNCTION,
    PACKET_SEND_TP_FUNCTION,
    PACKET_SEND_TP_LAYOUT,
    PACKET_SEND_TRACEPOINT,
    UNITS,
    UNIX_CONNECT_HOOK,
    UNIX_INTO_HOOK,
    UNIX_INTO_MISSING,
    UNIX_INTO_PROGRAMS,
    UNIX_SENDMSG_HOOK,
    BpfUnit,
    assemble_source,
    bpf_dir,
    wanted_units,
)
from sensor.kernel.memory import release_compiler_memory
from sensor.kernel.probe import ProbeReport, syscall_args_problem, tracepoint_layout_problem, units_available
from sensor.kernel.progstats import ProgramCost, read_costs, tracepoint_hook
from sensor.kernel.ringbuf import RingReader
from sensor.kernel.source import RecordSink
from sensor.telemetry.counters import FlowCounters, QuotaOverflow

try:
    from bcc import BPF  # Debian python3-bpfcc; not on PyPI
except ImportError as _e:  # pragma: no cover - depends on the host
    BPF = None
    _BCC_ERROR = str(_e)

# Programs that read the old generation right before the flip finish within
# microseconds; waiting this long before draining it loses nothing.
GEN_FLIP_GRACE_S = 0.002
# sl_clock is rewritten at a poll at least this long after the last write.
CLOCK_EVERY_NS = 50_000_000

_STAT_NAMES = {
    **{events.STAT_SUBMITTED + t: f"submitted_{n}" for t, n in events.EVENT_NAMES.items()},
    **{events.STAT_DROPPED + t: f"dropped_{n}" for t, n in events.EVENT_NAMES.items()},
    events.STAT_FLOW_MAP_FULL: "flow_map_full",
    events.STAT_FLOW_BYTES_UNTRACKED: "flow_bytes_untracked",
    events.STAT_PARENT_MAP_FULL: "parent_map_full",
    events.STAT_UDP_SEND_DEDUPED: "udp_sends_deduplicated",
    events.STAT_EGRESS_PACKETS: "egress_packets",
    events.STAT_DNS_TRUNCATED: "dns_responses_truncated",
    events.STAT_DNS_CAPPED: "dns_responses_capped",
    events.STAT_EXECD_MAP_FULL: "execd_map_full",
    events.STAT_IPV4_FRAGMENTS: "ipv4_fragments",
    events.STAT_CONTAIN_FOLLOWED: "containment_followed_cgroups",
    events.STAT_CONTAIN_MAP_FULL: "containment_map_full",
    events.STAT_SOCKETS_DENIED: "raw_sockets_denied",
    events.STAT_SOCKET_DEDUPED: "raw_socket_events_deduplicated",
    events.STAT_FLOW_QUOTA_REFUSED: "flow_quota_refused",
    events.STAT_EVENT_QUOTA_REFUSED: "event_quota_refused",
    events.STAT_ACCEPT_DEDUPED: "accepts_deduplicated",
    events.STAT_ACCEPT_NO_LISTENER: "accepts_listener_unknown",
    events.STAT_PACKET_KILLED: "packet_socket_processes_killed",
    events.STAT_SOCK_STATE_REFUSED: "socket_state_refused",
    events.STAT_UNIX_DENIED: "unix_refused",
    events.STAT_UNIX_INTO_DENIED: "unix_into_refused",
}

# The smallest BPF LSM program, `r0 = 0; exit` on socket_create: does this
# kernel let one load and attach? Assembled rather than compiled: a bcc
# compile of the same one line took 0.9-1.0 s of the sensor's ~3 s start
# (bench/RESULTS.md, startup), the BTF lookup of the hook 0.12 s.
_LSM_PROBE_HOOK = "bpf_lsm_socket_create"
_LSM_PROBE_CODE = bytes([0xB7, 0, 0, 0, 0, 0, 0, 0, 0x95, 0, 0, 0, 0, 0, 0, 0])
SECURITYFS = "/sys/kernel/security"
ISO_NO_LOOPBACK = 1  # bpf/lib/contain.bpf.h SL_ISO_NO_LOOPBACK
GUARD_ATTACHED = "attached (a container is contained: its AF_PACKET sockets are refused by SIGKILL)"
GUARD_DETACHED = "detached (attached only while a container is contained)"


def lsm_problem() -> str:
    """Why BPF LSM programs cannot be used here ("" when they can): bpf must
    be among the active LSMs (securityfs, mounted when missing), and the
    kernel must accept the program (lockdown, for one, may refuse it)."""
    lsm_file = f"{SECURITYFS}/lsm"
    if not os.path.exists(lsm_file):
        os.system(f"mountpoint -q {SECURITYFS} || mount -t securityfs none {SECURITYFS} 2>/dev/null")
    try:
        with open(lsm_file) as f:
            active = f.read().strip().split(",")
    except OSError as e:
        return f"cannot read {lsm_file} ({e.strerror})"
    if "bpf" not in active:
        return f"bpf is not an active LSM ({','.join(active)}; boot with lsm=...,bpf)"
    hook = (btf.KIND_FUNC, _LSM_PROBE_HOOK)
    try:
        found = btf.find({hook})
    except btf.BtfUnavailable as e:
        return f"BPF LSM programs need the kernel's BTF: {e}"
    if hook not in found:
        return f"kernel BTF has no {_LSM_PROBE_HOOK} (the LSM hook Sluice attaches)"
    prog = link = -1
    try:
        prog = bpfsys.prog_load(
            bpfsys.BPF_PROG_TYPE_LSM, _LSM_PROBE_CODE, "sl_lsm_probe", bpfsys.LSM_MAC, found[hook].type_id
        )
        link = bpfsys.raw_tracepoint_open(prog)  # attached (allows everything) until closed below
    except bpfsys.BpfError as e:
        step = "BPF_PROG_LOAD" if prog < 0 else "BPF_RAW_TRACEPOINT_OPEN"
        reason = f"{errno.errorcode.get(e.errno or 0, e.errno)} from bpf({step})"
        if e.errno == errno.EPERM:
            reason += " although root"
            try:
                with open(f"{SECURITYFS}/lockdown") as f:
                    reason += f"; kernel lockdown: {f.read().strip()}"
            except OSError:
                pass
        if e.log:
            reason += f"; verifier: {e.log}"
        return f"the kernel refused a BPF LSM program ({reason})"
    finally:
        for fd in (link, prog):
            if fd >= 0:
                os.close(fd)
    return ""


def kernel_version(release: str) -> tuple[int, int]:
    """(major, minor) of a kernel release string such as "6.1.0-18-amd64"."""
    parts = release.split(".")
    try:
        return int(parts[0]), int("".join(c for c in parts[1].split("-")[0] if c.isdigit()) or 0)
    except (IndexError, ValueError):
        return (0, 0)


def cflags(cfg: KernelSection, use_ringbuf: bool, root: Path, kernel_release: str = "") -> list[str]:
    """Configuration enters BPF as -D constants at load time."""
    flags = [
        f"-I{root}",
        f"-DSL_RINGBUF_PAGES={cfg.ring_buffer_pages}",
        f"-DSL_FLOW_ENTRIES={cfg.flow_map_entries}",
        f"-DSL_PID_ENTRIES={cfg.pid_map_entries}",
        f"-DSL_SAMPLE_BYTES={cfg.sample_bytes}",
        f"-DSL_SAMPLE_FIRST_PACKETS={cfg.sample_first_packets}",
        f"-DSL_SAMPLE_EVERY={cfg.sample_every}",
        f"-DSL_SAMPLE_EVERY_BYTES={cfg.sample_every_bytes}",
        f"-DSL_SAMPLE_MAX_PER_FLOW_WINDOW={cfg.max_samples_per_flow_window}",
        f"-DSL_SAMPLE_MAX_DNS_PER_FLOW_WINDOW={cfg.max_dns_samples_per_flow_window}",
        f"-DSL_UDP_DEDUP_NS={cfg.udp_send_dedup_ms * 1_000_000}ULL",
        f"-DSL_FLOW_QUOTA={cfg.flow_quota_per_cgroup}",
        f"-DSL_EVENT_QUOTA={cfg.event_quota_per_cgroup}",
        # /proc/<pid>/cgroup lists the v2 hierarchy as id 0
        "-DSL_CGROUP2_HIERARCHY=0",
        "-Wno-unused-function",
        "-Wno-macro-redefined",
    ]
    if use_ringbuf:
        flags.append("-DSL_USE_RINGBUF=1")
    if not cfg.count_received:
        flags.append("-DSL_COUNT_RX=0")
    # bpf_sk_storage_get takes any socket pointer from 5.11; before, only a
    # full socket (one more helper call per packet).
    if kernel_version(kernel_release or os.uname().release) < (5, 11):
        flags.append("-DSL_SK_STORAGE_NEEDS_FULLSOCK=1")
    return flags


def _name(fn: Any) -> str:
    n = fn.name
    return n.decode() if isinstance(n, bytes) else str(n)


class _Attachment:
    def __init__(self, hook: str, fn: object, attach_type: int, cgroup_fd: int, link_fd: int | None) -> None:
        self.hook, self.fn, self.attach_type = hook, fn, attach_type
        self.cgroup_fd, self.link_fd = cgroup_fd, link_fd

    def detach(self) -> None:
        if self.link_fd is not None:
            os.close(self.link_fd)  # a link detaches when its last fd closes
        else:
            BPF.detach_func(self.fn, self.cgroup_fd, self.attach_type)


class BccSource:
    def __init__(self, cfg: KernelSection, report: ProbeReport) -> None:
        if BPF is None:
            raise SluiceError(
                f"the bcc Python module is not importable ({_BCC_ERROR})",
                hint="install Debian's python3-bpfcc (sudo make setup) and run from a venv "
                "made with --system-site-packages",
            )
        self.cfg = cfg
        self.report = report
        self.use_ringbuf = report.ringbuf and not cfg.force_perf_buffer
        self.b: BPF | None = None
        self._attachments: list[_Attachment] = []
        self._cgroup_fd: int | None = None
        self._epoch = 0  # sl_gen[0]: the window epoch; its low bit is the flow generation
        self._clock_written = 0  # time.monotonic_ns() when sl_clock[0] was last written
        self._closed_epoch = 0  # the epoch the last drain_flows() closed
        self.lsm = ""  # "" when the BPF LSM socket hook is attached, else why not
        self._overflow: list[FlowCounters] = []
        self._quota_cgroups: set[int] = set()
        self.quota_charge_full = 0  # sl_quota_charge updates refused (map full)
        self._unix_prog_fd: int | None = None
        self._unix_sendmsg_fd: int | None = None
        self._lost = 0
        self.status: dict[str, str] = {}
        self.units: list[BpfUnit] = []
        self._ring: RingReader | None = None
        self.released_kb = 0
        self._sink: RecordSink = lambda _r: None
        self._stats_fd: int | None = None
        self._guard_ready = False  # sl_packet_guard loaded and attachable
        self._guard_attached = False
        # the AF_PACKET send report as a tp_btf program: (program fd, attach fd)
        self._packet_btf: tuple[int, int] | None = None
        # the unix_stream_connect and unix_may_send LSM programs: (prog, link) fds
        self._unix_into_fds: list[int] = []
        self._unix_into_layout: btf.UnixIntoLayout | None = None
        # decided by plan()
        self._socket_unit = self._packet = False
        self._packet_layout: btf.SockSendLayout | None = None
        self._no_btf = ""
        self.compile_seconds = 0.0  # bcc's compile, wherever it ran
        self.compiled_early = False  # by sensor/kernel/precompile.py, while the CLI loaded

    # --- start ---------------------------------------------------------------

    def plan(self) -> tuple[str, tuple[str, ...]]:
        """What start() compiles, decided from the configuration and the
        probe: the units (self.units, and in self.status why any is left
        out), the source text and the compiler flags. Also run by the early
        compile (sensor/kernel/precompile.py), which starts from the same
        inputs before the CLI has loaded; its result is used only for the
        same text and flags."""
        wanted = wanted_units(self.cfg.exec_args)
        if not self.cfg.packet_send_reports:
            wanted = tuple(u for u in wanted if u.name != "packet")
            for u in UNITS:
                if u.name == "packet":
                    for tp in u.tracepoints:
                        self.status[tp] = "off (kernel.packet_send_reports = false)"
        self.units, missing = units_available(self.report, wanted)
        for name, why in missing.items():
            unit = next(u for u in wanted if u.name == name)
            if unit.required:
                raise SluiceError(
                    f"required hook unit {name!r} unavailable: {why}",
                    hint="Sluice needs sched and cgroup tracepoints (Linux 5.8+)",
                )
            for tp in unit.tracepoints:
                self.status[tp] = f"unavailable: {why}"
        # one pass over the kernel's BTF for the LSM probe, the send report
        # and connect_unix (each then finds its types in btf's memo)
        btf.prefetch(
            {
                (btf.KIND_FUNC, _LSM_PROBE_HOOK),
                *btf.SOCK_SEND_TYPES,
                *unixconnect.BTF_TYPES,
                *btf.EXEC_TYPES,
                *btf.UNIX_INTO_TYPES,
            }
        )
        root = bpf_dir()
        flags = cflags(self.cfg, self.use_ringbuf, root, self.report.kernel_release)
        # the exec event's argv and stdin, from the kernel (offsets from its BTF)
        try:
            x = btf.exec_layout()
            flags += [
                "-DSL_EXEC_BTF=1",
                f"-DSL_OFF_TASK_MM={x.task_mm}",
                f"-DSL_OFF_TASK_FILES={x.task_files}",
                f"-DSL_OFF_MM_ARG_START={x.mm_arg_start}",
                f"-DSL_OFF_MM_ARG_END={x.mm_arg_end}",
                f"-DSL_OFF_FILES_FDT={x.files_fdt}",
                f"-DSL_OFF_FDT_FD={x.fdt_fd}",
                f"-DSL_OFF_FILE_INODE={x.file_inode}",
                f"-DSL_OFF_INODE_MODE={x.inode_mode}",
            ]
            self.status["sched:sched_process_exec argv"] = "read in the kernel (offsets from its BTF)"
        except btf.BtfUnavailable as e:
            self.status["sched:sched_process_exec argv"] = (
                f"from /proc only: {e}; a process gone before it is read has no command line"
            )
        self._socket_unit = any(u.name == "socket" for u in self.units)
        if self._socket_unit:
            self.lsm = lsm_problem()
            if not self.lsm:
                flags.append("-DSL_SOCKET_LSM=1")
            flags += self._unix_into_flags()
        if any(u.name == "packet" for u in self.units) and not self._socket_unit:
            self.units = [u for u in self.units if u.name != "packet"]  # it needs socket.bpf.c
            for tp in next(u for u in wanted if u.name == "packet").tracepoints:
                self.status[tp] = "unavailable: the socket unit is not loaded"
        self._packet = any(u.name == "packet" for u in self.units)  # after the removal above
        self._packet_layout, self._no_btf = None, ""
        if self._packet:
            self._packet_layout, self._no_btf = self._packet_send_layout()
            if self._packet_layout is not None:
                flags += [
                    "-DSL_PACKET_BTF=1",
                    f"-DSL_SKC_FAMILY_OFF={self._packet_layout.family_offset}",
                    f"-DSL_SK_PROTOCOL_OFF={self._packet_layout.protocol_offset}",
                ]
        return assemble_source(root, [u.source for u in self.units]), tuple(flags)

    def compile(self, plan: tuple[str, tuple[str, ...]]) -> None:
        """bcc's compile of a plan, which also loads and attaches the
        tracepoint programs (most of the start: bench/bench_startup.py)."""
        text, flags = plan
        t = time.monotonic()
        try:
            self.b = BPF(text=text.encode(), cflags=list(flags))
        except Exception as e:
            raise SluiceError(
                f"compiling or loading the BPF programs failed: {e}",
                hint="the compiler output above says why; check that the kernel build tree "
                "(/lib/modules/$(uname -r)/build) comes from `sudo make setup`",
            ) from None
        self.compile_seconds = round(time.monotonic() - t, 3)

    def start(self, sink: RecordSink) -> dict[str, str]:
        plan = self.plan()
        early = precompile.take(plan)
        if early is not None:
            self.b, self.compile_seconds = early
            self.compiled_early = True
        else:
            self.compile(plan)
        packet, socket_unit = self._packet, self._socket_unit
        for u in self.units:
            for tp in u.tracepoints:
                if tp != PACKET_SEND_TRACEPOINT:
                    self.status[tp] = "attached"
        if packet:
            self._attach_packet_send(self._packet_layout, self._no_btf)
        if socket_unit:
            # bcc attached lsm__socket_create when it was compiled in
            self.status["socket_lsm"] = (
                "attached"
                if not self.lsm
                else f"unavailable: {self.lsm}; raw inet sockets are handled by cgroup sock_create; "
                + (
                    "AF_PACKET sockets are reported at their first send (sock:sock_send_length) and, "
                    f"while a container is contained, its processes are killed when they create one "
                    f"({PACKET_GUARD_TRACEPOINT})"
                    if packet
                    else "AF_PACKET sockets are not reported (kernel.packet_send_reports = false or "
                    "sock:sock_send_length missing); while a container is contained, its processes are killed "
                    f"when they create one ({PACKET_GUARD_TRACEPOINT})"
                )
            )
            self._init_packet_guard()
        self._tick_clock()  # before the programs that read it are attached
        assert self.b is not None
        # the per-CPU caches' hash seed (bpf/lib/common.bpf.h): unknown to
        # a sender, so it can neither aim collisions nor forge an entry check
        self.b["sl_seed"][ct.c_int(0)] = ct.c_uint64(int.from_bytes(os.urandom(8), "little"))
        self._attach_cgroup_programs()
        self._attach_unix_connect()
        self._attach_unix_into()
        self._open_buffer(sink)
        if self.cfg.bpf_stats:
            try:
                self._stats_fd = bpfsys.enable_stats()
                self.status["bpf_stats"] = "on (held by the sensor)"
            except bpfsys.BpfError as e:
                self.status["bpf_stats"] = f"unavailable: {e.strerror}"
        self.released_kb = release_compiler_memory()
        # the live dict, not a copy: the packet guard's entry follows containment
        return self.status

    def _unix_into_flags(self) -> list[str]:
        """Compile the unix_stream_connect and unix_may_send LSM programs
        (bpf/socket.bpf.c: connects and datagrams into an isolated
        container, datagrams out of one, refused) where the kernel's BTF
        gives a socket's cgroup; _attach_unix_into loads them."""
        try:
            self._unix_into_layout = btf.unix_into_layout()
        except btf.BtfUnavailable as e:
            self._unix_into_layout = None
            self.status[UNIX_INTO_HOOK] = f"unavailable: {e}; {UNIX_INTO_MISSING}"
            return []
        x = self._unix_into_layout
        return [
            "-DSL_UNIX_INTO_BTF=1",
            f"-DSL_OFF_SOCKET_SK={x.socket_sk}",
            f"-DSL_OFF_SOCKET_TYPE={x.socket_type}",
            f"-DSL_OFF_SK_CGROUP={x.sk_cgroup}",
            f"-DSL_OFF_CGROUP_KN={x.cgroup_kn}",
            f"-DSL_OFF_KN_ID={x.kn_id}",
            f"-DSL_OFF_KN_PARENT={x.kn_parent}",
        ]

    def _attach_unix_into(self) -> None:
        """Load and attach the two LSM programs bcc compiled, where the BPF
        LSM is available (self.lsm empty). Loaded here, not by bcc
        (LSM_PROBE): a kernel that refuses them leaves the sensor running,
        and the status says why."""
        if self._unix_into_layout is None or self.b is None:
            return
        if self.lsm:
            self.status[UNIX_INTO_HOOK] = f"unavailable: {self.lsm}; {UNIX_INTO_MISSING}"
            return
        hooks = {(btf.KIND_FUNC, h) for h, _fn in UNIX_INTO_PROGRAMS}
        try:
            found = btf.find(hooks)
            for hook, fn in UNIX_INTO_PROGRAMS:
                code = self.b.dump_func(fn.encode())
                fd = bpfsys.prog_load(
                    bpfsys.BPF_PROG_TYPE_LSM, code, fn, bpfsys.LSM_MAC, found[(btf.KIND_FUNC, hook)].type_id
                )
                self._unix_into_fds.append(fd)
                self._unix_into_fds.append(bpfsys.raw_tracepoint_open(fd))
        except Exception as e:  # bpf(2) refused; BTF; bcc's dump_func (raises Exception)
            for fd in reversed(self._unix_into_fds):
                os.close(fd)
            self._unix_into_fds = []
            if isinstance(e, bpfsys.BpfError):
                why = f"the kernel refused the program ({e.strerror}{': ' + e.log if e.log else ''})"
            else:
                why = f"the program could not be prepared ({e})"
            self.status[UNIX_INTO_HOOK] = f"unavailable: {why}; {UNIX_INTO_MISSING}"
            return
        self.status[UNIX_INTO_HOOK] = "attached"

    # --- the AF_PACKET send report (bpf/packet.bpf.c) -------------------------

    def _packet_send_layout(self) -> tuple[btf.SockSendLayout | None, str]:
        """The kernel BTF the tp_btf send report needs, or why it is not used."""
        if self.cfg.packet_send_hook == "tracepoint":
            return None, "kernel.packet_send_hook = tracepoint"
        try:
            return btf.sock_send_layout(), ""
        except btf.BtfUnavailable as e:
            return None, str(e)

    def _attach_packet_send(self, layout: btf.SockSendLayout | None, no_btf: str) -> None:
        """tp_btf where it loads, else the classic tracepoint; the status says
        which, and why not the cheaper one."""
        assert self.b is not None
        tp = PACKET_SEND_TRACEPOINT
        if layout is not None:
            fd = -1
            try:
                # bcc compiled it (maps are this process's fds); bcc 0.26
                # cannot load a tp_btf program, so bpf(2) does
                code = self.b.dump_func(PACKET_SEND_BTF_FUNCTION.encode())
                fd = bpfsys.prog_load(
                    bpfsys.BPF_PROG_TYPE_TRACING,
                    code,
                    PACKET_SEND_BTF_FUNCTION,
                    bpfsys.TRACE_RAW_TP,
                    layout.btf_id,
                )
                self._packet_btf = (fd, bpfsys.raw_tracepoint_open(fd))
                self.status[tp] = "attached (tp_btf)"
                return
            except bpfsys.BpfError as e:
                if fd >= 0:
                    os.close(fd)
                no_btf = f"the kernel refused the tp_btf program ({e.strerror}{': ' + e.log if e.log else ''})"
        problem = tracepoint_layout_problem(self.report.tracefs, tp, PACKET_SEND_TP_LAYOUT)
        if problem:
            self.status[tp] = f"unavailable: {problem}"
            return
        try:
            self.b.load_func(PACKET_SEND_TP_FUNCTION.encode(), BPF.TRACEPOINT)
            self.b.attach_tracepoint(tp=tp.encode(), fn_name=PACKET_SEND_TP_FUNCTION.encode())
        except Exception as e:
            self.status[tp] = f"unavailable: {e}"
            return
        self.status[tp] = f"attached (tracepoint; not tp_btf: {no_btf})"

    # --- the AF_PACKET guard (bpf/socket.bpf.c sl_packet_guard) ---------------

    def _init_packet_guard(self) -> None:
        """Verify the guard at start (a verifier problem shows now, not at
        the first containment); it is attached by _packet_guard_switch."""
        assert self.b is not None
        tp = PACKET_GUARD_TRACEPOINT
        if not self.lsm:
            self.status[tp] = "not needed (the BPF LSM socket hook refuses AF_PACKET sockets)"
            return
        problem = syscall_args_problem(self.report.tracefs, tp, ("family", "type", "protocol"))
        if problem:
            self.status[tp] = f"unavailable: {problem}"
            return
        try:
            self.b.load_func(PACKET_GUARD_FUNCTION.encode(), BPF.TRACEPOINT)
        except Exception as e:
            self.status[tp] = f"unavailable: verifier rejected it ({e})"
            return
        self._guard_ready = True
        self.status[tp] = GUARD_DETACHED

    def _packet_guard_switch(self) -> None:
        """Attach the guard while some container is contained (its id or a
        cgroup in the containment maps), detach it when none is: a syscall
        tracepoint costs every syscall on the host (bench/RESULTS.md)."""
        if not self._guard_ready or self.b is None:
            return
        want = any(True for _ in self.b["sl_contain_ids"].keys()) or any(True for _ in self.b["sl_contain_cg"].keys())
        if want == self._guard_attached:
            return
        tp = PACKET_GUARD_TRACEPOINT
        try:
            if want:
                self.b.attach_tracepoint(tp=tp.encode(), fn_name=PACKET_GUARD_FUNCTION.encode())
            else:
                self.b.detach_tracepoint(tp.encode())
        except Exception as e:
            # retried at the next containment change
            self.status[tp] = f"unavailable: {'attaching' if want else 'detaching'} failed ({e})"
            return
        self._guard_attached = want
        self.status[tp] = GUARD_ATTACHED if want else GUARD_DETACHED

    def _attach_cgroup_programs(self) -> None:
        assert self.b is not None and self.report.cgroup2_mount
        self._cgroup_fd = os.open(self.report.cgroup2_mount, os.O_RDONLY | os.O_DIRECTORY)
        for u in self.units:
            for cp in u.cgroup_programs:
                if cp.hook == "sock_create" and not self.lsm:
                    self.status[cp.hook] = "not needed (the BPF LSM socket hook sees every family)"
                    continue
                try:
                    fn = self.b.load_func(cp.function.encode(), getattr(BPF, cp.prog_type), None, cp.attach_type)
                except Exception as e:
                    self.status[cp.hook] = f"unavailable: verifier rejected it ({e})"
                    continue
                try:
                    link = bpfsys.link_create(fn.fd, self._cgroup_fd, cp.attach_type)
                    self._attachments.append(_Attachment(cp.hook, fn, cp.attach_type, self._cgroup_fd, link))
                    self.status[cp.hook] = "attached"
                except bpfsys.BpfError as e:
                    if e.errno not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
                        self.status[cp.hook] = f"unavailable: {e.strerror}"
                        continue
                    # Kernels before 5.7 have no cgroup links: plain attach,
                    # sharing the cgroup with other programs (ALLOW_MULTI).
                    try:
                        BPF.attach_func(fn, self._cgroup_fd, cp.attach_type, bpfsys.BPF_F_ALLOW_MULTI)
                    except Exception as e2:
                        self.status[cp.hook] = f"unavailable: {e2}"
                        continue
                    self._attachments.append(_Attachment(cp.hook, fn, cp.attach_type, self._cgroup_fd, None))
                    self.status[cp.hook] = "attached (prog_attach)"
        if not self.cfg.count_received and self.status.get("ingress", "").startswith("attached"):
            self.status["ingress"] += " (DNS answers only: kernel.count_received = false)"
        if not self._attachments:
            raise SluiceError(
                "no cgroup program could be attached",
                hint="see the hook statuses; Sluice needs cgroup_skb and cgroup sock_addr programs (Linux 5.8+)",
            )

    def _attach_unix_connect(self) -> None:
        """connect(2) to unix sockets, with the path (runtime sockets). Linux
        6.7+ and the ring buffer; assembled outside bcc (see unixconnect.py).
        Degrades to a status line when unavailable."""
        hook = UNIX_CONNECT_HOOK
        assert self.b is not None and self._cgroup_fd is not None
        if not self.use_ringbuf:
            self.status[hook] = "unavailable: needs the BPF ring buffer"
            return
        try:
            layout = unixconnect.kernel_layout()
        except unixconnect.UnixConnectUnavailable as e:
            self.status[hook] = f"unavailable: {e}"
            return
        b = self.b
        contain = unixconnect.ContainMaps(
            b["sl_contain_on"].map_fd, b["sl_contain_levels"].map_fd, b["sl_contain_cg"].map_fd, b["sl_isolated"].map_fd
        )
        stats_fd = b["sl_stats"].map_fd
        self._unix_prog_fd = self._attach_assembled(
            hook,
            bpfsys.CGROUP_UNIX_CONNECT,
            "; cgroup connect_unix needs Linux 6.7+",
            lambda: unixconnect.load(
                layout,
                b["sl_events"].map_fd,
                stats_fd,
                b["sl_quota"].map_fd,
                b["sl_quota_charge"].map_fd,
                b["sl_gen"].map_fd,
                self.cfg.event_quota_per_cgroup,
                contain,
            ),
        )
        if self._unix_prog_fd is not None:
            # the refusal of an isolated container's addressed unix datagrams
            self._unix_sendmsg_fd = self._attach_assembled(
                UNIX_SENDMSG_HOOK,
                bpfsys.CGROUP_UNIX_SENDMSG,
                "",
                lambda: unixconnect.load_refusal(layout, stats_fd, contain),
            )

    def _attach_assembled(self, hook: str, attach_type: int, hint: str, load: Callable[[], int]) -> int | None:
        """Load one of unixconnect's assembled programs and link it to the
        cgroup root; its fd, or None with the reason in the hook's status."""
        assert self._cgroup_fd is not None
        try:
            fd = load()
        except unixconnect.UnixConnectUnavailable as e:
            self.status[hook] = f"unavailable: {e}"
            return None
        try:
            link = bpfsys.link_create(fd, self._cgroup_fd, attach_type)
        except bpfsys.BpfError as e:
            os.close(fd)
            self.status[hook] = f"unavailable: attach failed ({e.strerror}{hint})"
            return None
        self._attachments.append(_Attachment(hook, None, attach_type, self._cgroup_fd, link))
        self.status[hook] = "attached"
        return fd

    def _open_buffer(self, sink: RecordSink) -> None:
        assert self.b is not None
        table = self.b["sl_events"]
        if self.use_ringbuf and self.cfg.ring_buffer_reader == "mmap":
            self._ring = RingReader(table.map_fd, self.cfg.ring_buffer_pages * mmap.PAGESIZE)
            self._sink = sink
            self.status["buffer"] = "ring buffer"
        elif self.use_ringbuf:

            def on_ring(_ctx: object, data: int, size: int) -> int:
                sink(ct.string_at(data, size))
                return 0

            table.open_ring_buffer(on_ring)
            self.status["buffer"] = "ring buffer (bcc reader)"
        else:

            def on_perf(_cpu: int, data: int, size: int) -> None:
                sink(ct.string_at(data, size))

            def on_lost(n: int) -> None:
                self._lost += n

            table.open_perf_buffer(on_perf, page_cnt=self.cfg.ring_buffer_pages, lost_cb=on_lost)
            self.status["buffer"] = "perf buffer"

    # --- run -----------------------------------------------------------------

    def _tick_clock(self) -> None:
        """sl_clock[0] = CLOCK_MONOTONIC ns (the kernel's bpf_ktime_get_ns
        clock), at most every CLOCK_EVERY_NS: the coarse clock of the
        per-packet deduplication (bpf/lib/common.bpf.h)."""
        now = time.monotonic_ns()
        if self.b is not None and now - self._clock_written >= CLOCK_EVERY_NS:
            self.b["sl_clock"][ct.c_int(0)] = ct.c_uint64(now)
            self._clock_written = now

    def poll(self, timeout_ms: int) -> int:
        assert self.b is not None
        self._tick_clock()
        if self._ring is not None:
            n = self._ring.poll(timeout_ms, self._sink)
        elif self.use_ringbuf:
            n = self.b.ring_buffer_poll(timeout_ms)
        else:
            n = self.b.perf_buffer_poll(timeout_ms)
        return max(int(n or 0), 0)

    def drain_flows(self, final: bool = False) -> list[FlowCounters]:
        """Flip the generation, then read and delete the old one's entries.

        final=True drains both generations (shutdown). The window epoch (not
        only the generation bit) advances, so sockets' cached flow slots
        (egress.bpf.c) go stale at the flip.
        """
        assert self.b is not None
        self._closed_epoch = self._epoch
        old = self._epoch & 1
        self._epoch = (self._epoch + 1) & 0xFFFFFFFF
        self.b["sl_gen"][ct.c_int(0)] = ct.c_uint32(self._epoch)
        time.sleep(GEN_FLIP_GRACE_S)
        table = self.b["sl_flows"]
        vals = self.b["sl_flow_vals"]
        out: list[FlowCounters] = []
        self._overflow = []
        keys = [k for k in table.keys() if final or k.gen == old]
        for k in keys:
            try:
                slot = table[k]
                v = vals[ct.c_int(slot.value)].v
                del table[k]
            except KeyError:
                continue
            target = out
            if k.flags & events.FLOW_F_OVER_QUOTA:
                # a cgroup's new destinations past its quota, aggregated
                target = self._overflow
                self._quota_cgroups.add(k.cgroup_id)
            target.append(
                FlowCounters(
                    k.cgroup_id,
                    events.format_addr(bytes(k.daddr)),
                    k.dport,
                    k.protocol,
                    v.bytes,
                    v.packets,
                    v.payload_bytes,
                    v.connects,
                    v.first_ns,
                    v.last_ns,
                    v.samples,
                    v.rx_bytes,
                    v.rx_packets,
                    v.rx_payload_bytes,
                )
            )
        # Its slots are free again: the kernel zeroes a slot when it hands
        # it out, and no socket cache from this window survives the flip.
        nxt = self.b["sl_flow_next"]
        for g in (0, 1) if final else (old,):
            nxt[ct.c_int(g)] = ct.c_uint32(0)
        return out

    def note_quota_event(self, cgroup_id: int) -> None:
        """A cgroup reported going over a quota (SL_EV_QUOTA) this window."""
        self._quota_cgroups.add(cgroup_id)

    def set_quota_charge(self, cgroup_id: int, container_cgroup_id: int) -> None:
        """sl_quota_charge (bpf/lib/common.bpf.h): the cgroup's quotas are
        its container's. A full map is counted; the cgroup is then charged
        itself, as before this map existed."""
        if self.b is None:
            return
        t = self.b["sl_quota_charge"]
        try:
            t[t.Key(cgroup_id)] = t.Leaf(container_cgroup_id)
        except Exception:  # bcc raises a bare Exception when the map is full
            self.quota_charge_full += 1

    def forget_quota_charges(self, cgroup_ids: set[int]) -> None:
        if self.b is None:
            return
        t = self.b["sl_quota_charge"]
        for c in cgroup_ids:
            try:
                del t[t.Key(c)]
            except KeyError:
                pass

    def unreported_cgroups(self) -> list[int]:
        """Drain sl_unreported: cgroups a bind to port 53 or raw/packet
        socket of which went unreported. Keys are read, then deleted: one
        marked again in between was already read."""
        if self.b is None:
            return []
        table = self.b["sl_unreported"]
        cgs = [int(k.value) for k in table.keys()]
        for cg in cgs:
            try:
                del table[table.Key(cg)]
            except KeyError:
                pass  # evicted meanwhile
        return cgs

    def quota_overflows(self) -> list[QuotaOverflow]:
        """The cgroups over their flow or event quota in the window the last
        drain_flows() closed: refused counts and the aggregated traffic."""
        if self.b is None:
            return []
        cgs, self._quota_cgroups = self._quota_cgroups, set()
        if not cgs:
            return []
        gen = self._closed_epoch & 1
        table = self.b["sl_quota"]
        agg: dict[int, list[int]] = {}
        for f in self._overflow:
            a = agg.setdefault(f.cgroup_id, [0, 0, 0])
            a[0] += f.bytes
            a[1] += f.packets
            a[2] += f.connects
        out = []
        for cg in sorted(cgs):
            try:
                q = table[table.Key(cg)]
                flows_over, events_over = int(q.flows_over[gen]), int(q.events_over[gen])
            except KeyError:
                flows_over = events_over = 0  # evicted from the LRU map: only the traffic is known
            nbytes, packets, connects = agg.get(cg, [0, 0, 0])
            out.append(
                QuotaOverflow(
                    cg,
                    flows_over,
                    events_over,
                    nbytes,
                    packets,
                    connects,
                    self.cfg.flow_quota_per_cgroup,
                    self.cfg.event_quota_per_cgroup,
                )
            )
        return out

    def kernel_stats(self) -> dict[str, int]:
        if self.b is None:
            return {}
        t = self.b["sl_stats"]
        return {name: int(t.sum(ct.c_int(i)).value) for i, name in _STAT_NAMES.items()}

    def lost_records(self) -> int:
        return self._lost

    def counts_received(self) -> bool:
        return self.cfg.count_received and self.status.get("ingress", "").startswith("attached")

    def compile_info(self) -> dict[str, float | bool]:
        return {"seconds": self.compile_seconds, "early": self.compiled_early}

    def program_costs(self) -> list[ProgramCost]:
        if self.b is None:
            return []
        # connect_unix is not a bcc function (fn None): it is added by its fd
        hooks = {_name(a.fn): a.hook for a in self._attachments if a.fn is not None}
        hooks[PACKET_GUARD_FUNCTION] = PACKET_GUARD_TRACEPOINT
        hooks[PACKET_SEND_TP_FUNCTION] = PACKET_SEND_TRACEPOINT
        progs = {}
        for fn in list(self.b.funcs.values()):
            name = _name(fn)
            progs[name] = (hooks.get(name) or tracepoint_hook(name), int(fn.fd))
        if self._unix_prog_fd is not None:
            progs["sl_connect_unix"] = (UNIX_CONNECT_HOOK, self._unix_prog_fd)
        if self._unix_sendmsg_fd is not None:
            progs["sl_sendmsg_unix"] = (UNIX_SENDMSG_HOOK, self._unix_sendmsg_fd)
        if self._packet_btf is not None:
            progs[PACKET_SEND_BTF_FUNCTION] = (PACKET_SEND_TRACEPOINT + " (tp_btf)", self._packet_btf[0])
        for (hook, fn), fd in zip(UNIX_INTO_PROGRAMS, self._unix_into_fds[::2], strict=False):
            progs[fn] = (hook + " (LSM)", fd)
        return read_costs(progs)

    # --- containment (maps of bpf/lib/contain.bpf.h) --------------------------

    def _contain_switch(self) -> None:
        """The kernel checks the maps only while some entry exists."""
        assert self.b is not None
        on = any(True for _ in self.b["sl_isolated"].keys()) or any(True for _ in self.b["sl_blocked"].keys())
        self.b["sl_contain_on"][ct.c_int(0)] = ct.c_uint32(1 if on else 0)

    @staticmethod
    def _set(table: Any, key: Any, leaf: Any, on: bool) -> None:
        if on:
            table[key] = leaf
        else:
            try:
                del table[key]
            except KeyError:
                pass

    def set_isolated(self, handle: int, on: bool, no_loopback: bool = False) -> None:
        assert self.b is not None
        t = self.b["sl_isolated"]
        k = t.Key(handle)
        leaf = t.Leaf()
        if on:
            try:  # setting it again (the loopback flag) keeps its count
                leaf.dropped = t[k].dropped
            except KeyError:
                pass
            leaf.flags = ISO_NO_LOOPBACK if no_loopback else 0
        self._set(t, k, leaf, on)
        self._contain_switch()
        self._packet_guard_switch()

    def _block_key(self, handle: int, ip: str) -> Any:
        assert self.b is not None
        k = self.b["sl_blocked"].Key()
        k.handle = handle
        ct.memmove(ct.addressof(k.daddr), events.parse_addr(ip), 16)
        return k

    def set_blocked(self, handle: int, ip: str, on: bool) -> None:
        assert self.b is not None
        t = self.b["sl_blocked"]
        self._set(t, self._block_key(handle, ip), t.Leaf(0), on)
        self._contain_switch()
        self._packet_guard_switch()

    def set_contained_cgroup(self, cgroup_id: int, handle: int, level: int, on: bool) -> None:
        """Map a cgroup (and, through ancestors, its sub-cgroups) of a
        contained container to its handle."""
        assert self.b is not None
        t = self.b["sl_contain_cg"]
        self._set(t, t.Key(cgroup_id), t.Leaf(handle), on)
        if on and 0 < level <= 12:
            lv = self.b["sl_contain_levels"]
            cur = int(lv[ct.c_int(0)].value)
            lv[ct.c_int(0)] = ct.c_uint32(cur | (1 << level))
        self._packet_guard_switch()

    def set_contained_container(self, container_id: str, handle: int, on: bool) -> None:
        """The cgroups the runtime creates for this container id from now
        on get the handle in the kernel, at creation (cgroup_mkdir)."""
        assert self.b is not None
        t = self.b["sl_contain_ids"]
        k = t.Key()
        raw = container_id.encode()[:64].ljust(64, b"\0")
        ct.memmove(ct.addressof(k), raw, 64)
        self._set(t, k, t.Leaf(handle), on)
        self._packet_guard_switch()

    def contained_cgroups(self) -> dict[int, int]:
        """cgroup id -> handle, as the kernel has them (including the cgroups
        cgroup_mkdir added)."""
        if self.b is None:
            return {}
        return {int(k.value): int(v.value) for k, v in self.b["sl_contain_cg"].items()}

    def containment_counts(self) -> tuple[dict[int, int], dict[tuple[int, str], int]]:
        if self.b is None:
            return {}, {}
        iso = {int(k.value): int(v.dropped) for k, v in self.b["sl_isolated"].items()}
        blk = {
            (int(k.handle), events.format_addr(bytes(k.daddr))): int(v.value) for k, v in self.b["sl_blocked"].items()
        }
        return iso, blk

    def close(self) -> None:
        if self._guard_attached and self.b is not None:
            try:
                self.b.detach_tracepoint(PACKET_GUARD_TRACEPOINT.encode())
            except Exception:
                pass
            self._guard_attached = False
        if self._stats_fd is not None:
            os.close(self._stats_fd)
            self._stats_fd = None
        for a in self._attachments:
            try:
                a.detach()
            except Exception:
                pass
        self._attachments = []
        if self._unix_prog_fd is not None:
            os.close(self._unix_prog_fd)
            self._unix_prog_fd = None
        if self._unix_sendmsg_fd is not None:
            os.close(self._unix_sendmsg_fd)
            self._unix_sendmsg_fd = None
        for fd in reversed(self._unix_into_fds):
            os.close(fd)
        self._unix_into_fds = []
        if self._packet_btf is not None:
            for fd in reversed(self._packet_btf):
                os.close(fd)
            self._packet_btf = None
        if self._ring is not None:
            self._ring.close()
            self._ring = None
        if self._cgroup_fd is not None:
            os.close(self._cgroup_fd)
            self._cgroup_fd = None
        if self.b is not None:
            self.b.cleanup()
            self.b = None
