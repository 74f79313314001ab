"""What the running kernel and host offer, checked before anything loads.

Fatal problems (not root, no bcc, no kernel build tree, no tracefs, no cgroup
v2) raise SluiceError with the fix. Missing optional features are reported
in the startup health event instead of failing late.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass, field
from typing import Any

from sensor.attribution.cgroups import cgroup_mode, find_cgroup2_mount
from sensor.errors import SluiceError
from sensor.kernel import bpfsys
from sensor.kernel.hooks import BpfUnit

TRACEFS_CANDIDATES = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")


@dataclass
class ProbeReport:
    kernel_release: str
    btf: bool
    build_tree: str | None
    tracefs: str | None
    tracefs_mounted_by_sluice: bool
    cgroup2_mount: str | None
    cgroup_mode: str
    ringbuf: bool
    tracepoints: dict[str, bool] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "kernel_release": self.kernel_release,
            "btf": self.btf,
            "build_tree": self.build_tree,
            "tracefs": self.tracefs,
            "tracefs_mounted_by_sluice": self.tracefs_mounted_by_sluice,
            "cgroup2_mount": self.cgroup2_mount,
            "cgroup_mode": self.cgroup_mode,
            "ring_buffer": self.ringbuf,
            "tracepoints": dict(self.tracepoints),
        }


def find_tracefs() -> str | None:
    for path in TRACEFS_CANDIDATES:
        if os.path.isdir(os.path.join(path, "events")):
            return path
    return None


def mount_tracefs() -> str:
    target = TRACEFS_CANDIDATES[0]
    r = subprocess.run(["mount", "-t", "tracefs", "nodev", target], capture_output=True, text=True)
    if r.returncode != 0 or find_tracefs() is None:
        raise SluiceError(
            f"tracefs is not mounted and mounting it at {target} failed: {r.stderr.strip()}",
            hint=f"mount it yourself: mount -t tracefs nodev {target}",
        )
    return target


def tracepoint_exists(tracefs: str, tp: str) -> bool:
    cat, name = tp.split(":", 1)
    return os.path.exists(os.path.join(tracefs, "events", cat, name, "format"))


def tracepoint_fields(format_text: str) -> dict[str, tuple[int, int]]:
    """name -> (offset, size) from a tracefs event's `format` file."""
    out = {}
    for line in format_text.splitlines():
        parts = dict(
            (k.strip(), v.strip()) for k, _, v in (p.partition(":") for p in line.strip().split(";")) if v.strip()
        )
        decl, off, size = parts.get("field"), parts.get("offset"), parts.get("size")
        if decl and off and size and off.isdigit() and size.isdigit():
            name = decl.split()[-1].split("[")[0].lstrip("*")
            out[name] = (int(off), int(size))
    return out


def tracepoint_layout_problem(tracefs: str | None, tp: str, layout: dict[str, tuple[int, int]]) -> str:
    """Why a BPF program that reads a classic tracepoint's record at a fixed
    layout (field -> (offset, size)) cannot be used ("" when it can)."""
    if tracefs is None:
        return "tracefs is not mounted"
    category, _, event = tp.partition(":")
    try:
        with open(os.path.join(tracefs, "events", category, event, "format")) as f:
            fields = tracepoint_fields(f.read())
    except OSError as e:
        return f"tracepoint {tp} not readable ({e.strerror})"
    for name, want in layout.items():
        if fields.get(name) != want:
            return f"tracepoint {tp}: field {name} at {fields.get(name)}, expected {want}"
    return ""


def syscall_args_problem(tracefs: str | None, tp: str, args: tuple[str, ...]) -> str:
    """Why a BPF program that reads a syscalls:sys_enter_* tracepoint's
    arguments at the fixed layout (8 bytes each from offset 16, as struct
    syscall_trace_enter has them) cannot be used ("" when it can)."""
    return tracepoint_layout_problem(tracefs, tp, {name: (16 + 8 * i, 8) for i, name in enumerate(args)})


def units_available(report: ProbeReport, units: tuple[BpfUnit, ...]) -> tuple[list[BpfUnit], dict[str, str]]:
    """Units whose tracepoints all exist, and why the others are left out."""
    ok, missing = [], {}
    for u in units:
        absent = [tp for tp in u.tracepoints if not report.tracepoints.get(tp, False)]
        if absent:
            missing[u.name] = f"tracepoint {', '.join(absent)} not in this kernel"
        else:
            ok.append(u)
    return ok, missing


def probe(mount: bool, units: tuple[BpfUnit, ...]) -> ProbeReport:
    """Inspect the host; mount tracefs when allowed and missing."""
    release = os.uname().release
    build = f"/lib/modules/{release}/build"
    with open("/proc/self/mountinfo") as f:
        mountinfo = f.read()
    tracefs = find_tracefs()
    mounted = False
    if tracefs is None and mount and os.geteuid() == 0:
        tracefs = mount_tracefs()
        mounted = True
    try:
        cg2: str | None = find_cgroup2_mount(mountinfo)
    except SluiceError:
        cg2 = None
    report = ProbeReport(
        kernel_release=release,
        btf=os.path.exists("/sys/kernel/btf/vmlinux"),
        build_tree=os.path.realpath(build) if os.path.isdir(build) else None,
        tracefs=tracefs,
        tracefs_mounted_by_sluice=mounted,
        cgroup2_mount=cg2,
        cgroup_mode=cgroup_mode(mountinfo),
        ringbuf=bpfsys.ringbuf_supported() if os.geteuid() == 0 else False,
    )
    for u in units:
        for tp in u.tracepoints:
            report.tracepoints[tp] = tracefs is not None and tracepoint_exists(tracefs, tp)
    return report


def require_root() -> None:
    if os.geteuid() != 0:
        raise SluiceError(
            "Sluice must run as root (it loads BPF programs and attaches them to cgroups)",
            hint="run it with sudo, e.g. sudo make run or sudo .venv/bin/sluice run",
        )


def require_runnable(report: ProbeReport) -> None:
    """Raise for what makes loading impossible, with the fix."""
    if report.build_tree is None:
        raise SluiceError(
            f"no kernel build tree at /lib/modules/{report.kernel_release}/build "
            "(bcc compiles the BPF programs at load time against it)",
            hint="run `sudo make setup`: it installs linux-headers and links the build tree",
        )
    if report.tracefs is None:
        raise SluiceError(
            "tracefs is not mounted",
            hint="mount -t tracefs nodev /sys/kernel/tracing (or set kernel.mount_tracefs = true)",
        )
    if report.cgroup2_mount is None:
        find_cgroup2_mount("")  # raises the explained error
