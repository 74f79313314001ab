"""A socket the sensor keeps no state for.

The egress program keeps each socket's sampling state in the socket's BPF
storage, which the kernel charges to the socket's option memory
(net.core.optmem_max) and refuses once that is full. An unprivileged
sender fills it first: ~960 TCP MD5 keys for peers it never talks to
(TCP_MD5SIG needs no capability). Its socket is then sampled without
per-socket state: by the flow's packet count (a pace it can steer), with
no protection against decoys and no long first read. Nothing said so
(found by review). Now the kernel counts the refusals
(`socket_state_refused`) and SL-EVA-001 names the container."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.privileged.harness import SINK_IP, Docker, SensorProc, SinkNet, cid_of, run_container

UPLOAD = 2_000_000
PORT = 9002
# perl (in the test image): MD5 keys until the kernel refuses one (ENOMEM),
# then connect and upload
FILL = (
    "openssl rand {n} > /tmp/ct && perl -MSocket -e '"
    'socket(my $s, PF_INET, SOCK_STREAM, 6) or die "socket: $!"; my $k = 0;'
    "for my $i (1 .. 5000) {{"
    '  my $sa = pack("S n C4 x8", AF_INET, 0, 10, ($i >> 16) & 255, ($i >> 8) & 255, $i & 255);'
    '  my $buf = $sa . ("\\0" x (128 - length($sa))) . pack("C C S i", 0, 0, 16, 0) . ("k" x 16) . ("\\0" x 64);'
    "  setsockopt($s, 6, 14, $buf) or last; $k++ }}"
    'print STDERR "md5 keys: $k\\n"; $k > 100 or die "no keys";'
    'connect($s, pack_sockaddr_in({port}, inet_aton("{ip}"))) or die "connect: $!";'
    'open(my $f, "<", "/tmp/ct") or die; binmode $f; my $b;'
    "while (read($f, $b, 65536)) {{ syswrite($s, $b) or die }} close $s'"
)


def _eva1(d: dict[str, Any], cid: str) -> bool:
    return d["event"]["kind"] == "alert" and d.get("rule", {}).get("id") == "SL-EVA-001" and cid_of(d) == cid


def test_a_socket_whose_state_was_refused_is_named(base: Path, docker: Docker, net: SinkNet) -> None:
    s = SensorProc(base, docker.sock, name="nostate")
    s.start()
    try:
        plain = run_container(docker, net, f"openssl rand {UPLOAD} | nc -w 5 {SINK_IP} {PORT}", wait=True)
        filler = run_container(docker, net, FILL.format(n=UPLOAD, ip=SINK_IP, port=PORT), wait=True)
        a = s.wait_for(lambda d: _eva1(d, filler), what="SL-EVA-001 for the socket without state", timeout=20)
        ev = a["sluice"]["evidence"]
        assert ev["stateless_samples"] >= 1 and ev["flows_refused"] == 0, ev
        assert "per-socket state" in a["message"]
        st = json.loads(s.status("--json").stdout)
        assert st["counters"]["socket_state_refused"] >= 1, st["counters"]
        # the upload reached the sink, and its bytes are still counted
        got = [r for r in net.received() if r.get("proto") == "tcp" and r.get("port") == PORT]
        assert sum(r["bytes"] for r in got) >= 2 * UPLOAD, got
        flows = [d for d in s.docs() if d["event"]["action"] == "flow_summary" and cid_of(d) == filler]
        assert sum(d["source"]["bytes"] for d in flows) >= UPLOAD
        # an ordinary socket beside it: no such alert
        assert not [d for d in s.docs() if _eva1(d, plain)]
    finally:
        assert s.stop() == 0, s.stderr_text()
