"""Sensor start/stop hygiene and its non-default modes, on the real kernel."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

from sensor.attribution.cgroups import find_cgroup2_mount
from sensor.kernel import bpfsys
from sensor.kernel.hooks import UNITS

from .harness import IMAGE, SINK_IP, SLUICE, Docker, SensorProc, SinkNet, action, cid_of, run_container

ATTACH_TYPES = sorted({cp.attach_type for u in UNITS for cp in u.cgroup_programs})


def _cgroup_progs() -> dict[int, set[int]]:
    root = find_cgroup2_mount()
    return {t: set(bpfsys.cgroup_prog_ids(root, t)) for t in ATTACH_TYPES}


def _all_prog_ids() -> set[int]:
    out = subprocess.run(["bpftool", "-j", "prog", "show"], capture_output=True, text=True, check=True).stdout
    return {p["id"] for p in json.loads(out)}


def test_sigint_detaches_every_program(base: Path, docker: Docker) -> None:
    before_cg, before_all = _cgroup_progs(), _all_prog_ids()
    s = SensorProc(base, docker.sock, name="sigint")
    s.start()
    during_cg, during_all = _cgroup_progs(), _all_prog_ids()
    mine = during_all - before_all
    assert mine, "the sensor loaded no program?"
    for t in ATTACH_TYPES:
        assert len(during_cg[t] - before_cg[t]) == 1, (t, during_cg[t], before_cg[t])
    assert s.stop(signal.SIGINT) == 0, s.stderr_text()
    assert _cgroup_progs() == before_cg
    assert not (_all_prog_ids() & mine), "programs still loaded after SIGINT"
    assert not Path(s.ctl).exists(), "control socket left behind"
    stop = [d for d in s.docs() if action(d) == "sensor_stop"]
    assert len(stop) == 1 and stop[0]["event"]["kind"] == "state"


def test_sighup_reopens_the_output_file(base: Path, docker: Docker) -> None:
    """logrotate moves the file, SIGHUP makes the sensor write a new one."""
    s = SensorProc(base, docker.sock, name="sighup")
    s.start()
    try:
        rotated = s.out.with_suffix(".1")
        s.out.rename(rotated)
        assert s.proc is not None
        s.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 15
        while not (s.out.exists() and s.out.stat().st_size > 0):
            subprocess.run(["/bin/true"])  # an exec event to write
            assert time.monotonic() < deadline, "no new output file after SIGHUP"
            time.sleep(0.2)
        assert s.proc.poll() is None
        for line in s.out.read_text().splitlines():
            json.loads(line)
        assert any(json.loads(x)["event"]["action"] == "sensor_start" for x in rotated.read_text().splitlines())
    finally:
        assert s.stop() == 0


def test_sigkill_leaves_nothing_attached(base: Path, docker: Docker) -> None:
    """cgroup programs are held by bpf links: they go with the process."""
    before = _cgroup_progs()
    s = SensorProc(base, docker.sock, name="sigkill")
    s.start()
    assert _cgroup_progs() != before
    s.stop(signal.SIGKILL)
    assert _cgroup_progs() == before


def test_perf_buffer_tracepoint_args_and_unreachable_runtime(base: Path, docker: Docker, net: SinkNet) -> None:
    """The fallbacks: perf buffer instead of ring buffer, argv captured at
    sys_enter_execve, and no container runtime to ask for metadata."""
    s = SensorProc(
        base,
        str(base / "no-such-docker.sock"),
        name="modes",
        extra_config='[kernel]\nforce_perf_buffer = true\nexec_args = "tracepoint"\n',
    )
    s.start()
    try:
        st = json.loads(s.status("--json").stdout)
        assert st["hooks"]["buffer"] == "perf buffer"
        assert st["hooks"]["syscalls:sys_enter_execve"] == "attached"
        n = 100_000
        cid = run_container(
            docker, net, f"openssl rand -hex 4 >/dev/null; head -c {n} /dev/urandom | nc {SINK_IP} 9003"
        )
        ex = s.wait_for(
            lambda d: action(d) == "exec" and cid_of(d) == cid and d["process"]["executable"] == "/usr/bin/openssl",
            what="openssl exec",
        )
        # argv from the kernel, even for a process that lives microseconds
        assert ex["process"]["args"] == ["openssl", "rand", "-hex", "4"]
        assert ex["sluice"]["process"]["args_source"] == "tracepoint"
        # no runtime: the container id is kept, name and image are unknown
        assert ex["container"]["id"] == cid and "image" not in ex["container"]
        s.wait_for(
            lambda d: action(d) == "runtime_status" and d["sluice"]["health"]["runtime"]["status"] == "unreachable",
            what="runtime health event",
        )
        s.settle()
        flows = [
            d for d in s.docs() if action(d) == "flow_summary" and cid_of(d) == cid and d["destination"]["port"] == 9003
        ]
        assert n <= sum(f["sluice"]["payload"]["bytes"] for f in flows) <= n * 1.01  # retransmissions
    finally:
        assert s.stop() == 0


def test_non_root_gets_a_clear_error(base: Path) -> None:
    r = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", SLUICE, "run"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 2
    assert "must run as root" in r.stderr and "sudo" in r.stderr


def test_bad_config_names_file_and_line(base: Path) -> None:
    bad = base / "bad.toml"
    bad.write_text("[sensor]\nwindow_seconds = 10\n\n[kernel]\nsample_bytes = 4096\n")
    r = subprocess.run([SLUICE, "run", "-c", str(bad)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 2
    assert f"{bad}:5:" in r.stderr and "sample_bytes" in r.stderr
    assert "Traceback" not in r.stderr  # the early compile met the same error first, silently


def test_image_is_the_test_image(docker: Docker) -> None:
    assert docker.docker("image", "inspect", "-f", "{{.Id}}", IMAGE).startswith("sha256:")


def test_doctor_reports_every_hook_and_exits_by_verdict(base: Path, docker: Docker) -> None:
    cfg = base / "doctor.toml"
    cfg.write_text(f'[runtime]\ndocker_socket = "{docker.sock}"\n')
    r = subprocess.run([SLUICE, "doctor", "--json", "-c", str(cfg)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    checks = {c["name"]: c for c in map(json.loads, r.stdout.splitlines())}
    for hook in (
        "egress",
        "connect4",
        "connect6",
        "sendmsg4",
        "sendmsg6",
        "sched:sched_process_exec",
        "cgroup:cgroup_mkdir",
    ):
        assert checks[f"hook {hook}"]["status"] == "ok", checks[f"hook {hook}"]
    assert checks["docker engine"]["status"] == "ok" and "OK" in checks["docker engine"]["detail"]
    assert checks["kernel build tree"]["status"] == "ok" and checks["cgroup v2"]["status"] == "ok"
    # the load check detached what it loaded
    assert not [
        p
        for p in json.loads(subprocess.run(["bpftool", "-j", "prog", "show"], capture_output=True, text=True).stdout)
        if p.get("name") == "sl_egress" and p["id"] not in _all_prog_ids_of_running_sensors()
    ]
    nobody = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", SLUICE, "doctor", "--no-load"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert nobody.returncode == 1 and "cannot run here" in nobody.stdout
    assert "sudo sluice doctor" in nobody.stdout


def _all_prog_ids_of_running_sensors() -> set[int]:
    """Programs of sensors other tests keep running (the session sensor)."""
    root = find_cgroup2_mount()
    return {i for t in ATTACH_TYPES for i in bpfsys.cgroup_prog_ids(root, t)}


def test_the_assembled_lsm_probe_agrees_with_a_bcc_compiled_lsm_program(base: Path) -> None:
    """The loader probes BPF LSM with two hand-assembled instructions (a bcc
    compile of the same program took a third of the start). Both must get
    the same answer from this kernel: both attach, or both are refused."""
    from bcc import BPF

    from sensor.kernel.loader import lsm_problem

    try:
        BPF(text=b"LSM_PROBE(socket_create, int family, int type, int protocol, int kern) { return 0; }").cleanup()
        compiled = ""
    except Exception as e:
        compiled = str(e) or type(e).__name__
    assembled = lsm_problem()
    assert (compiled == "") == (assembled == ""), (compiled, assembled)
    if assembled:
        assert assembled.startswith("the kernel refused a BPF LSM program") or "not an active LSM" in assembled
    names = subprocess.run(["bpftool", "prog", "show"], capture_output=True, text=True, check=True).stdout
    assert "sl_lsm_probe" not in names, "the probe stayed loaded"


def test_sluice_run_begins_its_bpf_compile_before_the_cli_loads(base: Path, docker: Docker) -> None:
    """`sluice run` starts bcc's compile first (control/entry.py) and the
    loader takes its result: the status says so. (Every other test that
    starts `sluice run` then runs on the early-compiled programs.)"""
    s = SensorProc(base, docker.sock, name="early")
    s.start()
    try:
        st = json.loads(s.status("--json").stdout)
        assert st["bpf_compile"]["early"] is True, st["bpf_compile"]
        assert st["bpf_compile"]["seconds"] > 0
        assert "begun before the CLI loaded" in s.status().stdout
        assert all(v == "attached" for k, v in st["hooks"].items() if k in ("egress", "connect4", "ingress")), st
    finally:
        s.stop()


def test_an_early_compile_is_used_only_for_the_same_plan_and_closed_otherwise(base: Path) -> None:
    """In this process, the real compile: an early compile for another
    [kernel] table (another sample size, so other compiler flags) is
    closed, its programs unloaded, and the loader compiles its own; one for
    the same configuration is taken as it is and delivers events."""
    from sensor.config import default_config
    from sensor.kernel import events as E
    from sensor.kernel import precompile
    from sensor.kernel.loader import BccSource
    from sensor.kernel.probe import probe

    def start(records: list[bytes]) -> tuple[BccSource, set[int]]:
        before = _all_prog_ids()
        src = BccSource(default_config().kernel, probe(True, UNITS))
        src.start(records.append)
        return src, _all_prog_ids() - before

    plain, plain_ids = start([])
    plain.close()
    assert plain_ids and not plain.compiled_early

    other = base / "other-kernel.toml"
    other.write_text("[kernel]\nsample_bytes = 32\n")
    precompile.begin(str(other))
    assert precompile._thread is not None, "no early compile began"
    mismatched, ids = start([])
    try:
        assert not mismatched.compiled_early
        assert len(ids) == len(plain_ids), "the discarded early compile left programs loaded"
    finally:
        mismatched.close()

    precompile.begin(None)  # the embedded defaults, as the loader's
    assert precompile._thread is not None, "no early compile began"
    records: list[bytes] = []
    early, ids = start(records)
    try:
        assert early.compiled_early and early.compile_seconds > 0
        assert len(ids) == len(plain_ids)
        child = subprocess.Popen(["/bin/true"])
        child.wait()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            early.poll(100)
            execs = [e for e in map(E.decode, records) if isinstance(e, E.ExecEvent) and e.hdr.pid == child.pid]
            if execs:
                break
        assert execs, "no exec event from the early-compiled programs"
    finally:
        early.close()
    assert not (_all_prog_ids() & ids), "programs left after close"
