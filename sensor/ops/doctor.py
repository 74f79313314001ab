"""`sluice doctor`: a preflight that says what works, what is degraded,
and how to fix it. It loads the BPF programs (and detaches them again) so
that "works" means the verifier of this kernel accepted them."""

from __future__ import annotations

import os
import socket
from dataclasses import asdict, dataclass
from typing import Any

from sensor.config import Config
from sensor.errors import SluiceError

OK, DEGRADED, FAIL = "ok", "degraded", "fail"


@dataclass
class Check:
    name: str
    status: str
    detail: str
    fix: str = ""


def _kernel_version() -> tuple[int, int]:
    rel = os.uname().release.split("-")[0].split(".")
    try:
        return int(rel[0]), int(rel[1])
    except (ValueError, IndexError):
        return (0, 0)


def _pattern_dir(pattern: str) -> str:
    """The fixed directory part of a bundle pattern (before any {id} or glob)."""
    parts = []
    for comp in pattern.split("/"):
        if "{id}" in comp or any(c in comp for c in "*?["):
            break
        parts.append(comp)
    return "/".join(parts) or "/"


def _docker_ping(path: str, timeout: float) -> str | None:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(path)
        s.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
        return s.recv(200).decode(errors="replace").split("\r\n", 1)[0]
    except OSError as e:
        return f"error: {e.strerror or e}"
    finally:
        s.close()


def run_checks(cfg: Config, load_programs: bool = True) -> list[Check]:
    from sensor.kernel.hooks import wanted_units
    from sensor.kernel.probe import probe

    checks: list[Check] = []
    add = checks.append
    root = os.geteuid() == 0
    add(
        Check(
            "root",
            OK if root else FAIL,
            "running as root" if root else f"running as uid {os.geteuid()}",
            "" if root else "run `sudo sluice doctor`",
        )
    )
    major, minor = _kernel_version()
    kv = f"{os.uname().release}"
    add(
        Check(
            "kernel",
            OK if (major, minor) >= (5, 9) else DEGRADED if (major, minor) >= (5, 8) else FAIL,
            f"Linux {kv}",
            ""
            if (major, minor) >= (5, 9)
            else "Linux 5.9+ has everything Sluice uses (ring buffer 5.8, cgroup links 5.7, fanotify names 5.9)",
        )
    )
    try:
        import bcc  # noqa: F401

        add(Check("bcc", OK, "python3-bpfcc importable"))
        have_bcc = True
    except ImportError as e:
        add(
            Check(
                "bcc",
                FAIL,
                f"not importable: {e}",
                "apt-get install python3-bpfcc; run from a venv made with --system-site-packages (sudo make setup)",
            )
        )
        have_bcc = False
    units = wanted_units(cfg.kernel.exec_args)
    try:
        rep = probe(cfg.kernel.mount_tracefs and root, units)
    except SluiceError as e:
        add(Check("tracefs", FAIL, e.message, e.hint))
        return checks
    add(
        Check(
            "btf",
            OK if rep.btf else DEGRADED,
            "/sys/kernel/btf/vmlinux present" if rep.btf else "no BTF",
            "" if rep.btf else "not needed by Sluice today; a BTF kernel allows CO-RE builds later",
        )
    )
    add(
        Check(
            "kernel build tree",
            OK if rep.build_tree else FAIL,
            rep.build_tree or f"/lib/modules/{kv}/build missing",
            "" if rep.build_tree else "sudo make setup (installs linux-headers and links the build tree)",
        )
    )
    add(
        Check(
            "tracefs",
            OK if rep.tracefs else FAIL,
            (rep.tracefs or "not mounted") + (" (mounted now by doctor)" if rep.tracefs_mounted_by_sluice else ""),
            "" if rep.tracefs else "mount -t tracefs nodev /sys/kernel/tracing",
        )
    )
    add(
        Check(
            "cgroup v2",
            OK if rep.cgroup2_mount else FAIL,
            f"{rep.cgroup_mode} hierarchy, cgroup2 at {rep.cgroup2_mount}" if rep.cgroup2_mount else "no cgroup2 mount",
            ""
            if rep.cgroup2_mount
            else "mount -t cgroup2 none /sys/fs/cgroup/unified (or boot with the unified hierarchy)",
        )
    )
    add(
        Check(
            "ring buffer",
            OK if rep.ringbuf else DEGRADED,
            "BPF ring buffer available" if rep.ringbuf else "no ring buffer: the perf buffer is used",
            "" if rep.ringbuf else "Linux 5.8+ for the ring buffer",
        )
    )
    for tp, ok in rep.tracepoints.items():
        add(
            Check(
                f"tracepoint {tp}",
                OK if ok else (FAIL if tp.startswith("sched") else DEGRADED),
                "present" if ok else "missing",
                "" if ok else "a kernel with this tracepoint",
            )
        )
    if load_programs and root and have_bcc and rep.build_tree and rep.tracefs and rep.cgroup2_mount:
        checks += _load_check(cfg, rep)
    rt = cfg.runtime.docker_socket
    if os.path.exists(rt):
        pong = _docker_ping(rt, cfg.runtime.timeout_seconds) or ""
        good = "200" in pong
        add(
            Check(
                "docker engine",
                OK if good else DEGRADED,
                f"{rt}: {pong}",
                "" if good else "container metadata (name, image, labels) needs a reachable Docker Engine API",
            )
        )
    else:
        add(
            Check(
                "docker engine",
                DEGRADED,
                f"{rt} absent: containers are attributed by id only",
                "set runtime.docker_socket if dockerd listens elsewhere",
            )
        )
    bundle_dirs = [d for d in (_pattern_dir(p) for p in cfg.runtime.oci_bundles) if os.path.isdir(d)]
    for name, path in (("containerd", "/run/containerd/containerd.sock"), ("cri-o", "/var/run/crio/crio.sock")):
        if not os.path.exists(path):
            continue
        if bundle_dirs:
            add(
                Check(
                    name,
                    OK,
                    f"{path} present; pod, namespace, container and image from the OCI bundles "
                    f"under {', '.join(bundle_dirs)}",
                )
            )
        else:
            add(
                Check(
                    name,
                    DEGRADED,
                    f"{path} present, but no directory of runtime.oci_bundles exists: its "
                    "containers are attributed by id only",
                    "point runtime.oci_bundles at the runtime's bundle directories (state dir, usually /run)",
                )
            )
    from sensor.detect.rules.fim001_orchestration_config import Settings as FimSettings
    from sensor.ops.fim import FimUnavailable, FimWatcher

    fim = cfg.rule("SL-FIM-001", FimSettings)
    w = FimWatcher(list(fim.paths), root=fim.host_root)
    try:
        w.start()
        watching = sum(1 for v in w.status.values() if v.startswith("watching"))
        add(
            Check(
                "config integrity (fanotify)", OK, f"{watching}/{len(w.status)} configured paths exist and are watched"
            )
        )
    except FimUnavailable as e:
        add(Check("config integrity (fanotify)", DEGRADED, e.strerror or str(e), "Linux 5.9+ with fanotify"))
    finally:
        w.close()
    return checks


def _load_check(cfg: Config, rep: Any) -> list[Check]:
    from sensor.kernel.loader import BccSource

    src = BccSource(cfg.kernel, rep)
    try:
        status = src.start(lambda _r: None)
    except SluiceError as e:
        return [Check("bpf programs", FAIL, e.message, e.hint)]
    finally:
        src.close()
    out = []
    for hook, st in sorted(status.items()):
        ok = st.startswith(("attached", "not needed")) or hook == "buffer"
        out.append(Check(f"hook {hook}", OK if ok else DEGRADED, st, "" if ok else "see the detail"))
    return out


def verdict(checks: list[Check]) -> str:
    if any(c.status == FAIL for c in checks):
        return FAIL
    return DEGRADED if any(c.status == DEGRADED for c in checks) else OK


def render(checks: list[Check]) -> str:
    width = max(len(c.name) for c in checks)
    lines = [f"{'CHECK':<{width}}  {'STATUS':<8}  DETAIL"]
    for c in checks:
        lines.append(f"{c.name:<{width}}  {c.status:<8}  {c.detail}")
        if c.fix:
            lines.append(f"{'':<{width}}  {'':<8}  fix: {c.fix}")
    v = verdict(checks)
    lines.append(
        {
            OK: "sluice can run here with every feature.",
            DEGRADED: "sluice can run here; the degraded items above say what is missing.",
            FAIL: "sluice cannot run here: fix the failed items above.",
        }[v]
    )
    return "\n".join(lines)


def as_dicts(checks: list[Check]) -> list[dict[str, str]]:
    return [asdict(c) for c in checks]
