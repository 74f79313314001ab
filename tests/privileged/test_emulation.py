"""`sluice emulate` end to end: the real CLI learns benign workloads with a
real sensor, runs every scenario in real containers against the sink netns,
and the scorecard must show every attack detected and no benign alert.
This is also the end-to-end proof of the detection rules (issue: detection
engine): each attack raises its rule with the attacking container's id."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

from emulation.lab import BRIDGE_MAC, LABEL, SINK_IP
from emulation.scenarios import TWINS

from .harness import SLUICE, Docker, SinkNet, run_container

LATENCY_BUDGET_S = 5.0
SHORTCUTS = {"SL-EXF-005", "SL-EXF-006"}


def _config(base: Path, docker: Docker, name: str) -> Path:
    cfg = base / f"{name}.toml"
    cfg.write_text(f'[sensor]\ncontrol_socket = "{base}/{name}-ctl.sock"\n[runtime]\ndocker_socket = "{docker.sock}"\n')
    return cfg


def _lab_leftovers(docker: Docker) -> tuple[list[str], list[str]]:
    """Containers of `sluice emulate` runs (not the other tests' containers,
    which the harness labels with run id "tests") and lab netns."""
    rows = docker.docker(
        "ps", "-a", "--filter", f"label={LABEL}", "--format", f'{{{{.ID}}}} {{{{.Label "{LABEL}"}}}}'
    ).splitlines()
    containers = [r.split()[0] for r in rows if r.split()[1:] != ["tests"]]
    netns = [
        n
        for n in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split()
        if n.startswith("slsink") and not n.endswith(")")
    ]
    return containers, netns


def test_emulate_all_scorecard(base: Path, docker: Docker) -> None:
    before_ns = set(_lab_leftovers(docker)[1])
    r = subprocess.run(
        [SLUICE, "emulate", "run", "all", "--json", "-c", str(_config(base, docker, "emu"))],
        capture_output=True,
        text=True,
        timeout=900,
    )
    scores = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    (base / "scorecard.json").write_text(r.stdout)
    assert r.returncode == 0, f"scorecard failed:\n{r.stdout}\n{r.stderr[-4000:]}"
    by = {s["scenario"]: s for s in scores}
    assert len(by) == 48, sorted(by)
    attacks = [s for s in scores if s["expected"]]
    assert len(attacks) == 36
    # compromised-workload mode: inside the learned web application, no
    # encryption tool, no short lifetime; each evasion class, and a twin of
    # every container-mode attack, caught by a content, volume, destination
    # or behaviour rule (never the shortcuts), the benign look-alikes silent
    cw = [s for s in scores if s["mode"] == "compromised"]
    assert len(cw) == 27, cw
    (webapp,) = set.intersection(*(set(s["containers"]) for s in cw))  # every one runs inside it
    for s in cw:
        assert not set(s["expected"]) & SHORTCUTS, s
        # the web application itself never raises a shortcut rule; containers
        # the intruder starts through its Docker socket are fresh, short-lived
        # containers, where SL-EXF-005 is right (the twins do not expect it)
        assert not set(s["rules_by_container"].get(webapp, [])) & SHORTCUTS, s
    # a twin of every container-mode attack, by the same rules minus the shortcuts
    for t in TWINS:
        assert by[t.name]["mode"] == "compromised" and by[t.twin]["mode"] == "container", t.name
        assert set(by[t.twin]["expected"]) - SHORTCUTS <= set(by[t.name]["expected"]), t.name
    # the db's short-lived client is a container on this node, not "outside"
    assert "SL-C2-006" not in by["inter-container-pivot"]["rules_fired"], by["inter-container-pivot"]
    assert "SL-C2-006" not in by["cw-inter-container-pivot"]["rules_fired"], by["cw-inter-container-pivot"]
    for s in attacks:
        assert s["result"] == "detected", s
        assert set(s["expected"]) <= set(s["rules_fired"]), s
        assert s["latency_seconds"] is not None and s["latency_seconds"] <= LATENCY_BUDGET_S, s
        assert s["alert_ids"] and s["containers"]
    for s in scores:
        if s["attack"] == "benign":
            assert s["result"] == "silent" and not s["rules_fired"], s
    assert by["slow-exfil"]["result"] in ("blind-spot", "detected-bonus")
    assert by["cw-slow-exfil"]["result"] in ("blind-spot", "detected-bonus")
    # every rule is proven by at least one scenario
    fired = {r for s in attacks for r in s["expected"]}
    assert fired == {f"SL-EXF-00{i}" for i in range(1, 7)} | {f"SL-C2-00{i}" for i in range(1, 10)}
    # the sibling started through the Docker socket is linked to its creator
    sib = by["docker-socket-sibling"]
    assert len(sib["containers"]) == 2, sib
    containers, netns = _lab_leftovers(docker)
    assert not containers, "lab containers left behind"
    assert set(netns) <= before_ns, "lab netns left behind"


def _lab_dirs_and_procs() -> tuple[set[str], list[str]]:
    dirs = {str(p) for p in Path("/tmp").glob("sluice-emulate-*")}
    procs = subprocess.run(["pgrep", "-f", "sluice-emulate-"], capture_output=True, text=True).stdout.split()
    return dirs, procs


def test_emulate_ctrl_c_cleans_up(base: Path, docker: Docker) -> None:
    before_ns = set(_lab_leftovers(docker)[1])
    before_dirs, _ = _lab_dirs_and_procs()
    p = subprocess.Popen(
        [SLUICE, "emulate", "run", "all", "-c", str(_config(base, docker, "emu-int"))],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # interrupt once lab containers are running
        if _lab_leftovers(docker)[0]:
            break
        time.sleep(0.3)
    assert _lab_leftovers(docker)[0], "the lab never started a container"
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 130, (p.returncode, err[-2000:])
    assert "cleaned up" in err
    containers, netns = _lab_leftovers(docker)
    assert not containers and set(netns) <= before_ns
    # no lab sensor left running (attached) and no work directory left behind
    dirs, procs = _lab_dirs_and_procs()
    assert not procs, subprocess.run(
        ["ps", "-o", "pid,args", "-p", ",".join(procs)], capture_output=True, text=True
    ).stdout
    assert dirs <= before_dirs, dirs - before_dirs


def test_emulate_attach_scores_against_the_running_sensor(base: Path, docker: Docker) -> None:
    """--attach: no lab sensor; the running sensor (no baseline: every
    workload is new) must raise the scenario's rule."""
    from .harness import SensorProc

    s = SensorProc(base, docker.sock, name="attach")
    s.start()
    try:
        r = subprocess.run(
            [SLUICE, "emulate", "run", "encrypted-raw-tcp", "--attach", "--json", "-c", str(s.config)],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert r.returncode == 0, r.stdout + r.stderr[-3000:]
        (score,) = [json.loads(x) for x in r.stdout.splitlines() if x.startswith("{")]
        assert score["result"] == "detected" and "SL-EXF-002" in score["rules_fired"]
        assert "scoring against the running sensor" in r.stderr
        alerts = [d for d in s.docs() if d["event"]["kind"] == "alert" and d["rule"]["id"] == "SL-EXF-002"]
        assert any(d["event"]["id"] in score["alert_ids"] for d in alerts)
    finally:
        assert s.stop() == 0
    assert not _lab_leftovers(docker)[0]


def _bridge_mac(net: SinkNet) -> str:
    out = subprocess.run(
        ["ip", "-n", net.ns, "-o", "link", "show", "br0"], capture_output=True, text=True, check=True
    ).stdout
    return out.split("link/ether", 1)[1].split()[0]


def test_sink_keeps_its_mac_while_containers_come_and_go(docker: Docker, net: SinkNet) -> None:
    """A Linux bridge without a set MAC takes the lowest MAC of its ports, so
    a veth coming or going would change the sink's MAC under the ARP cache
    of a running container, whose packets then go nowhere for seconds (a
    learn-phase client hung this way). A long-lived container must still
    reach the sink after others came and went."""
    assert _bridge_mac(net) == BRIDGE_MAC
    # the long-lived client talks to the sink, waits while others come and go, talks again
    a = run_container(
        docker,
        net,
        f"echo first | nc {SINK_IP} 9001; until [ -e /tmp/.again ]; do usleep 50000; done; "
        f"echo second | nc -w 5 {SINK_IP} 9001",
        wait=False,
    )
    try:
        for _ in range(3):
            run_container(docker, net, f"echo churn | nc {SINK_IP} 9001", rm=True)
            assert _bridge_mac(net) == BRIDGE_MAC
        docker.docker("exec", a, "touch", "/tmp/.again")
        assert docker.docker("wait", a, timeout=30) == "0"
    finally:
        docker.docker("rm", "-f", a, check=False)
    assert _bridge_mac(net) == BRIDGE_MAC
