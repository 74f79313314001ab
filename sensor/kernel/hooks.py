"""The kernel hooks Sluice uses, declared as data.

Each BPF source file is one unit: it is compiled in only when every
tracepoint it needs exists, and each of its cgroup programs is attached at
the cgroup v2 root. The loader and `sluice status` read this table; nothing
else decides what gets attached.
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from sensor.kernel import bpfsys


@dataclass(frozen=True)
class CgroupProgram:
    hook: str  # name reported in status and health
    function: str  # function in the BPF source
    prog_type: str  # "CGROUP_SKB" | "CGROUP_SOCK_ADDR" | "SOCK_OPS" (bcc.BPF attribute)
    attach_type: int


@dataclass(frozen=True)
class BpfUnit:
    name: str
    source: str  # file under bpf/
    tracepoints: tuple[str, ...] = ()  # "category:event", auto-attached by bcc
    cgroup_programs: tuple[CgroupProgram, ...] = ()
    required: bool = True  # sensor refuses to start without it
    what: str = ""  # what is lost when it is unavailable


UNITS: tuple[BpfUnit, ...] = (
    BpfUnit(
        "exec",
        "exec.bpf.c",
        tracepoints=("sched:sched_process_exec", "sched:sched_process_fork", "sched:sched_process_exit"),
        what="process exec/exit events and exec counts",
    ),
    BpfUnit(
        "connect",
        "connect.bpf.c",
        cgroup_programs=(
            CgroupProgram("connect4", "sl_connect4", "CGROUP_SOCK_ADDR", bpfsys.CGROUP_INET4_CONNECT),
            CgroupProgram("connect6", "sl_connect6", "CGROUP_SOCK_ADDR", bpfsys.CGROUP_INET6_CONNECT),
            CgroupProgram("sendmsg4", "sl_sendmsg4", "CGROUP_SOCK_ADDR", bpfsys.CGROUP_UDP4_SENDMSG),
            CgroupProgram("sendmsg6", "sl_sendmsg6", "CGROUP_SOCK_ADDR", bpfsys.CGROUP_UDP6_SENDMSG),
        ),
        what="connect events (destinations with pid and process name)",
    ),
    BpfUnit(
        "egress",
        "egress.bpf.c",
        cgroup_programs=(CgroupProgram("egress", "sl_egress", "CGROUP_SKB", bpfsys.CGROUP_INET_EGRESS),),
        what="egress bytes per flow and payload entropy",
    ),
    # After egress: it uses egress.bpf.c's IPv6 extension header walk.
    BpfUnit(
        "ingress",
        "ingress.bpf.c",
        cgroup_programs=(CgroupProgram("ingress", "sl_ingress", "CGROUP_SKB", bpfsys.CGROUP_INET_INGRESS),),
        required=False,
        what="bytes received per flow and DNS answers (flows are named by SNI and Host only)",
    ),
    BpfUnit(
        "socket",
        "socket.bpf.c",
        # the BPF LSM socket_create hook replaces this one where it loads
        # (see loader.lsm_problem)
        cgroup_programs=(
            CgroupProgram("sock_create", "sl_sock_create", "CGROUP_SOCK", bpfsys.CGROUP_INET_SOCK_CREATE),
        ),
        required=False,
        what="raw/packet socket reports, and their refusal in contained containers",
    ),
    # After socket (it calls sl_on_raw_socket). Left out where the BPF LSM
    # socket hook loads: that one sees AF_PACKET sockets at creation.
    BpfUnit(
        "packet",
        "packet.bpf.c",
        tracepoints=("sock:sock_send_length",),  # attached by the loader (PACKET_SEND_*)
        required=False,
        what="AF_PACKET sends reported, and contained senders killed, without the BPF LSM hook",
    ),
    BpfUnit(
        "listen",
        "listen.bpf.c",
        cgroup_programs=(
            CgroupProgram("bind4", "sl_bind4", "CGROUP_SOCK_ADDR", bpfsys.CGROUP_INET4_BIND),
            CgroupProgram("bind6", "sl_bind6", "CGROUP_SOCK_ADDR", bpfsys.CGROUP_INET6_BIND),
            CgroupProgram("sockops", "sl_sockops", "SOCK_OPS", bpfsys.CGROUP_SOCK_OPS),
        ),
        required=False,
        what="listeners (bind, listen) and inbound TCP connections per container",
    ),
    BpfUnit(
        "lifecycle",
        "lifecycle.bpf.c",
        tracepoints=("cgroup:cgroup_mkdir", "cgroup:cgroup_rmdir"),
        required=False,
        what="container start/stop events (containers are still attributed by walking cgroupfs)",
    ),
)

# One more cgroup program is not in this table: connect_unix (unix-socket
# connects with their path, Linux 6.7+). bcc cannot compile it (it calls a
# kfunc), so sensor/kernel/unixconnect.py assembles it and the loader attaches
# it after the units above, reporting it as hook "connect_unix".
UNIX_CONNECT_HOOK = "connect_unix"
# Its sibling on the cgroup sendmsg_unix hook (a datagram sent to a unix
# address without a connect) only refuses an isolated container's sends, and
# records nothing (hook "sendmsg_unix").
UNIX_SENDMSG_HOOK = "sendmsg_unix"

# socket.bpf.c's unix LSM programs: compiled where the kernel's BTF gives
# a socket's cgroup, loaded and attached by the loader (not by bcc) where
# BPF LSM programs load; hook "unix_into_lsm". (LSM hook in the kernel's
# BTF, function.)
UNIX_INTO_HOOK = "unix_into_lsm"
UNIX_INTO_PROGRAMS = (
    ("bpf_lsm_unix_stream_connect", "sl_unix_into_connect"),
    ("bpf_lsm_unix_may_send", "sl_unix_into_send"),
)
UNIX_INTO_MISSING = (
    "connects and datagrams into an isolated container's unix sockets from outside it, and its datagrams out "
    "over sockets connected before its isolation, are NOT refused"
)

# Nor is the packet guard (bpf/socket.bpf.c, sl_packet_guard): the loader
# attaches it to this syscall tracepoint only while some container is
# contained and the BPF LSM socket hook is unavailable, because any syscall
# tracepoint slows every syscall on the host.
PACKET_GUARD_TRACEPOINT = "syscalls:sys_enter_socket"
PACKET_GUARD_FUNCTION = "sl_packet_guard"

# The packet unit's program is not auto-attached either: the loader attaches
# sl_pktsend_btf as a tp_btf program where the kernel's BTF allows
# (cheaper per send), else sl_pktsend_tp on the classic tracepoint
# (bpf/packet.bpf.c says why).
PACKET_SEND_TRACEPOINT = "sock:sock_send_length"
PACKET_SEND_BTF_FUNCTION = "sl_pktsend_btf"
PACKET_SEND_TP_FUNCTION = "sl_pktsend_tp"
# the classic record's layout the program reads (checked against tracefs)
PACKET_SEND_TP_LAYOUT = {"family": (16, 2), "protocol": (18, 2)}

EXEC_ARGS_UNIT = BpfUnit(
    "exec_args",
    "exec_args.bpf.c",
    tracepoints=("syscalls:sys_enter_execve",),
    required=False,
    what="process arguments captured in the kernel (falls back to /proc/<pid>/cmdline)",
)


def wanted_units(exec_args: str) -> tuple[BpfUnit, ...]:
    """The units a configuration asks for (kernel.exec_args adds one)."""
    return UNITS + ((EXEC_ARGS_UNIT,) if exec_args == "tracepoint" else ())


def bpf_dir() -> Path:
    """Where the BPF sources are: $SLUICE_BPF_DIR, the source tree, or the
    installed data directory."""
    env = os.environ.get("SLUICE_BPF_DIR")
    candidates = [Path(env)] if env else []
    candidates += [Path(__file__).resolve().parents[2] / "bpf", Path(sys.prefix) / "share" / "sluice" / "bpf"]
    for c in candidates:
        if (c / "sluice_events.h").is_file():
            return c
    raise FileNotFoundError(f"BPF sources not found in {', '.join(map(str, candidates))}")


_INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"\s*$')


def assemble_source(root: Path, files: list[str]) -> str:
    """One program text from several files, local includes inlined once.

    bcc rewrites map method calls (map.lookup(), ringbuf_reserve(), ...) and
    generates tracepoint argument structs only in the main text, not in
    #include'd files, so project headers are inlined here. System headers
    (<...>) are left to the compiler.
    """
    seen: set[Path] = set()

    def inline(path: Path) -> str:
        out = [f"/* ---- {path.relative_to(root)} ---- */\n"]
        for line in path.read_text().splitlines(keepends=True):
            m = _INCLUDE.match(line)
            if not m:
                out.append(line)
                continue
            target = (path.parent / m.group(1)).resolve()
            if not target.exists():
                target = (root / m.group(1)).resolve()
            if target not in seen:
                seen.add(target)
                out.append(inline(target))
        return "".join(out)

    parts = []
    for f in files:
        p = (root / f).resolve()
        seen.add(p)
        parts.append(inline(p))
    return "\n".join(parts)
