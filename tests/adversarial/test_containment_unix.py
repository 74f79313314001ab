"""An isolated container with the runtime's socket mounted into it: before,
`sluice isolate` dropped its packets but it could still `docker run` a new
container (host network, no containment) through /var/run/docker.sock and
carry on from there. Now the connect_unix program refuses an isolated
container's connects to unix sockets by path (under any name: a symlink is
refused too), and to abstract names when its network namespace is shared.

The real sensor, the real kernel, a real dockerd and its CLI."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from ..privileged.harness import IMAGE, Docker, SensorProc, action, cid_of, sluice_cli

HERE = Path(__file__).parent
DOCKER_CLI = os.path.realpath(shutil.which("docker") or "/usr/bin/docker")
SOCK = "/var/run/docker.sock"
DGRAM = "/run/host-dgram.sock"
REFUSED = "Operation not permitted"  # strerror(EPERM), as curl -v prints it


def _exec(docker: Docker, cid: str, script: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["docker", "exec", cid, "sh", "-c", script], capture_output=True, text=True, timeout=60, env=docker.env
    )


def _curl(docker: Docker, cid: str, where: str) -> str:
    """curl -v's account of a connect to `where` (--unix-socket PATH or
    --abstract-unix-socket NAME): the errno of a failed connect is in it."""
    r = _exec(docker, cid, f"curl -sv --max-time 2 {where} http://x/_ping 2>&1")
    return r.stdout + r.stderr


def _containers(docker: Docker) -> set[str]:
    return set(docker.docker("ps", "-a", "--no-trunc", "-q").split())


def _denied(d: dict[str, object], cid: str, path: str) -> bool:
    return (
        action(d) == "unix_socket_connect"
        and cid_of(d) == cid
        and d["sluice"]["unix"] == {"path": path, "denied": True}  # type: ignore[index]
    )


def _send_datagram(docker: Docker, cid: str, text: str) -> subprocess.CompletedProcess[str]:
    """A datagram to DGRAM by address, no connect (sendmsg_unix's case)."""
    perl = (
        "use Socket; socket(my $s, AF_UNIX, SOCK_DGRAM, 0) or die; "
        f'send($s, "{text}", 0, pack_sockaddr_un("{DGRAM}")) or die "send: $!\\n"'
    )
    return _exec(docker, cid, f"perl -e '{perl}'")


def _received(sink: socket.socket) -> list[bytes]:
    got = []
    while True:
        try:
            got.append(sink.recv(4096))
        except BlockingIOError:
            return got


def test_an_isolated_container_cannot_drive_the_runtime_through_its_socket(base: Path, docker: Docker) -> None:
    s = SensorProc(base, docker.sock, name="unixiso")
    s.start()
    # a host daemon's datagram socket mounted into the container (as /dev/log would be)
    host_dgram = base / f"dg-{uuid.uuid4().hex[:6]}.sock"
    sink = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sink.bind(str(host_dgram))
    sink.setblocking(False)
    mounts = ["-v", f"{docker.sock}:{SOCK}", "-v", f"{DOCKER_CLI}:/usr/bin/docker:ro", "-v", f"{host_dgram}:{DGRAM}"]
    cid = docker.docker("run", "-d", "--network", "none", *mounts, IMAGE, "sleep", "600")
    children: set[str] = set()
    try:
        r = _send_datagram(docker, cid, "before")
        assert r.returncode == 0 and _received(sink) == [b"before"], (r.stderr, _received(sink))
        # before the isolation the socket works, and the connect is seen
        r = _exec(docker, cid, f"docker -H unix://{SOCK} version --format '{{{{.Server.Version}}}}'")
        assert r.returncode == 0, r.stderr
        seen = s.wait_for(
            lambda d: action(d) == "unix_socket_connect" and cid_of(d) == cid, what="the connect before isolation"
        )
        assert seen["sluice"]["unix"]["denied"] is False
        assert seen["event"]["type"] == ["connection", "start"]

        out = sluice_cli(s, "isolate", cid[:12], "--reason", "runtime socket test")
        assert "unix sockets by path" in out and "are refused" in out, out
        before = _containers(docker)
        r = _exec(docker, cid, f"docker -H unix://{SOCK} run -d --network host {IMAGE} sleep 60")
        children = _containers(docker) - before
        assert r.returncode != 0, f"an isolated container started a container through {SOCK}: {r.stdout}"
        assert not children, "a container was created from inside the isolated one"
        assert "operation not permitted" in r.stderr.lower(), r.stderr
        d = s.wait_for(lambda d: _denied(d, cid, SOCK), what="the refused connect's document")
        assert d["event"]["type"] == ["connection", "denied"] and d["event"]["outcome"] == "failure"

        # a datagram by address, no connect: refused too, and nothing arrives
        r = _send_datagram(docker, cid, "SECRET-AFTER-ISOLATION")
        assert r.returncode != 0 and "Operation not permitted" in r.stderr, (r.returncode, r.stderr)
        assert _received(sink) == []

        # another name for the same socket: the path is refused, whatever it names
        assert REFUSED in _curl(docker, cid, f"--unix-socket {SOCK}")
        _exec(docker, cid, f"ln -sf {SOCK} /tmp/engine")
        assert REFUSED in _curl(docker, cid, "--unix-socket /tmp/engine")
        s.wait_for(lambda d: _denied(d, cid, "/tmp/engine"), what="the symlink's refused connect")
        # its network namespace is its own: abstract names there are its own
        # (nothing listens: refused by the peer, not by the sensor)
        got = _curl(docker, cid, f"--abstract-unix-socket sl-{uuid.uuid4().hex[:8]}")
        assert "Connection refused" in got and REFUSED not in got, got
        counters = json.loads(s.status("--json").stdout)["counters"]
        assert counters["unix_refused"] >= 4, counters

        # released: the socket works again
        sluice_cli(s, "release", cid[:12])
        r = _exec(docker, cid, f"docker -H unix://{SOCK} version --format '{{{{.Server.Version}}}}'")
        assert r.returncode == 0, r.stderr
        assert _send_datagram(docker, cid, "after").returncode == 0 and _received(sink) == [b"after"]
    finally:
        sink.close()
        for c in [cid, *children]:
            subprocess.run(["docker", "rm", "-f", c], capture_output=True, env=docker.env, timeout=60)
        assert s.stop() == 0


def test_host_network_isolation_refuses_abstract_names_too(base: Path, docker: Docker) -> None:
    """A container in the host's network namespace shares its abstract unix
    names with every host daemon (containerd's shims listened on such
    names: CVE-2020-15257). Isolated, it reaches none of them."""
    name = f"sl-host-{uuid.uuid4().hex[:8]}"
    listener = subprocess.Popen(
        [
            "python3",
            "-c",
            f"import socket,time; s=socket.socket(socket.AF_UNIX); s.bind('\\0{name}'); s.listen(); time.sleep(120)",
        ]
    )
    s = SensorProc(base, docker.sock, name="unixisohost")
    s.start()
    cid = docker.docker("run", "-d", "--network", "host", IMAGE, "sleep", "600")
    try:
        # the host's abstract socket is reachable from the container
        got = _curl(docker, cid, f"--abstract-unix-socket {name}")
        assert "Connected to" in got, got
        s.wait_for(lambda d: action(d) == "unix_socket_connect" and cid_of(d) == cid, what="a document about it")
        out = sluice_cli(s, "isolate", cid[:12])
        assert "by path and to abstract names and datagrams sent to an address are refused" in out, out
        assert REFUSED in _curl(docker, cid, f"--abstract-unix-socket {name}")
        s.wait_for(lambda d: _denied(d, cid, "@" + name), what="the refused abstract connect")
    finally:
        listener.kill()
        subprocess.run(["docker", "rm", "-f", cid], capture_output=True, env=docker.env, timeout=60)
        assert s.stop() == 0


def _wait_output(docker: Docker, cid: str, path: str, want: str, timeout: float = 20) -> str:
    deadline = time.monotonic() + timeout
    while True:
        out = _exec(docker, cid, f"cat {path}").stdout
        if want in out or time.monotonic() > deadline:
            return out
        time.sleep(0.1)


def _outcome(docker: Docker, cid: str, path: str, timeout: float = 15) -> str:
    deadline = time.monotonic() + timeout
    while True:
        out = _exec(docker, cid, f"cat {path}").stdout
        if out.count("\n") >= 2 or time.monotonic() > deadline:
            return out
        time.sleep(0.1)


def test_connections_opened_before_the_isolation_are_cut(base: Path, docker: Docker) -> None:
    """Two processes connect to the mounted docker.sock before the
    isolation; one keeps its descriptor, the other parks it in an
    SCM_RIGHTS message to itself (no process holds it in /proc). After the
    isolation neither gets an answer through it: the sweep shut both
    connections down (the parked one from dockerd's end)."""
    exe, rot = base / "unixhide", base / "unixrotate"
    subprocess.run(["gcc", "-O2", "-static", "-o", str(exe), str(HERE / "unixhide.c")], check=True)
    subprocess.run(["gcc", "-O2", "-static", "-pthread", "-o", str(rot), str(HERE / "unixrotate.c")], check=True)
    s = SensorProc(base, docker.sock, name="unixcut")
    s.start()
    mounts = ["-v", f"{docker.sock}:{SOCK}", "-v", f"{exe}:/unixhide:ro", "-v", f"{rot}:/unixrotate:ro"]
    script = (
        f"/unixrotate {SOCK} /tmp/go > /tmp/rotating 2>&1 & "
        f"/unixhide {SOCK} held /tmp/go > /tmp/held 2>&1 & "
        f"/unixhide {SOCK} parked /tmp/go > /tmp/parked 2>&1 & "
        f"/unixhide {SOCK} held /tmp/control > /tmp/control.out 2>&1 & sleep 600"
    )
    cid = docker.docker("run", "-d", "--network", "none", *mounts, IMAGE, "sh", "-c", script)
    try:
        for f in ("/tmp/held", "/tmp/parked", "/tmp/control.out", "/tmp/rotating"):
            assert "ready" in _wait_output(docker, cid, f, "ready"), f
        # the control connection answers before the isolation: the test's own check
        _exec(docker, cid, "touch /tmp/control")
        assert "answer: HTTP/1.0 200 OK" in _wait_output(docker, cid, "/tmp/control.out", "answer:")
        s.wait_for(lambda d: action(d) == "unix_socket_connect" and cid_of(d) == cid, what="the connects")

        out = sluice_cli(s, "isolate", cid[:12])
        # (the rotating one moves its descriptor and leaves decoys behind:
        # the sweep checks each duplicate is the socket before it cuts)
        assert "3 unix connections it had to peers outside it cut" in out, out
        _exec(docker, cid, "touch /tmp/go")
        # each prints one line after "ready": an answer, an error or eof
        got = {f: _outcome(docker, cid, f) for f in ("/tmp/held", "/tmp/parked", "/tmp/rotating")}
        for o in got.values():
            assert "answer:" not in o and ("error:" in o or "eof" in o), got
    finally:
        subprocess.run(["docker", "rm", "-f", cid], capture_output=True, env=docker.env, timeout=60)
        assert s.stop() == 0


def _cgroup2(docker: Docker, cid: str) -> Path:
    """The container's cgroup v2 directory."""
    pid = docker.docker("inspect", "-f", "{{.State.Pid}}", cid).strip()
    rel = next(x[3:] for x in Path(f"/proc/{pid}/cgroup").read_text().splitlines() if x.startswith("0::"))
    mount = next(x.split()[1] for x in Path("/proc/mounts").read_text().splitlines() if x.split()[2] == "cgroup2")
    return Path(f"{mount}{rel}")


def _cgroup_events(docker: Docker, cid: str) -> str:
    """The container's cgroup.events (cgroup v2: its "frozen" line)."""
    return (_cgroup2(docker, cid) / "cgroup.events").read_text()


def _paused(docker: Docker, cid: str) -> bool:
    """Whether the container's tasks are frozen: by the cgroup v2 freezer,
    or by v1's (`docker pause` on a hybrid host, this one, uses v1's)."""
    if "frozen 1" in _cgroup_events(docker, cid).splitlines():
        return True
    pid = docker.docker("inspect", "-f", "{{.State.Pid}}", cid).strip()
    v1 = [x.split(":", 2)[2] for x in Path(f"/proc/{pid}/cgroup").read_text().splitlines() if ":freezer:" in x]
    return bool(v1) and Path(f"/sys/fs/cgroup/freezer{v1[0]}/freezer.state").read_text().strip() == "FROZEN"


def test_a_connection_passed_between_processes_is_cut_with_the_container_frozen(base: Path, docker: Docker) -> None:
    """Two processes hand a docker.sock connection back and forth in
    SCM_RIGHTS messages, each closing its copy once sent: a sweep that reads
    who holds it and then takes a duplicate loses that race nearly every
    time (CI's run of 8cc4c89 saw a faster mover beat all 64 tries, and the
    fallback walk for dockerd's end run out of time). The container is
    frozen while it is swept, so the connection stays where the read found
    it; the container runs again afterwards."""
    rot = base / "unixrotate"
    subprocess.run(["gcc", "-O2", "-static", "-pthread", "-o", str(rot), str(HERE / "unixrotate.c")], check=True)
    s = SensorProc(base, docker.sock, name="unixpass")
    s.start()
    mounts = ["-v", f"{docker.sock}:{SOCK}", "-v", f"{rot}:/unixrotate:ro"]
    script = f"/unixrotate {SOCK} /tmp/go pass > /tmp/passing 2>&1 & sleep 600"
    cid = docker.docker("run", "-d", "--network", "none", *mounts, IMAGE, "sh", "-c", script)
    try:
        assert "ready" in _wait_output(docker, cid, "/tmp/passing", "ready")
        s.wait_for(lambda d: action(d) == "unix_socket_connect" and cid_of(d) == cid, what="the connect")
        out = sluice_cli(s, "isolate", cid[:12])
        assert "1 unix connection it had to peers outside it cut" in out, out
        assert "the container held frozen meanwhile" in out and "NOT cut" not in out, out
        assert "frozen 0" in _cgroup_events(docker, cid).splitlines()  # thawed
        _exec(docker, cid, "touch /tmp/go")
        got = _outcome(docker, cid, "/tmp/passing")
        assert "answer:" not in got and ("error:" in got or "eof" in got), got
    finally:
        subprocess.run(["docker", "rm", "-f", cid], capture_output=True, env=docker.env, timeout=60)
        assert s.stop() == 0


def test_a_paused_container_stays_paused_after_its_sweep(base: Path, docker: Docker) -> None:
    """The sweep thaws only what it froze: a container the runtime paused
    is left paused. `docker pause` uses cgroup v1's freezer on this hybrid
    host and v2's (the sweep's) on a v2-only one: both are set here, as
    each runtime would."""
    s = SensorProc(base, docker.sock, name="unixpaused")
    s.start()
    cid = docker.docker("run", "-d", "-v", f"{docker.sock}:{SOCK}", "--network", "none", IMAGE, "sleep", "600")
    try:
        s.wait_for(lambda d: action(d) == "container_start" and cid_of(d) == cid, what="its start")
        docker.docker("pause", cid)
        (_cgroup2(docker, cid) / "cgroup.freeze").write_text("1")
        sluice_cli(s, "isolate", cid[:12])
        assert (_cgroup2(docker, cid) / "cgroup.freeze").read_text().strip() == "1"
        assert _paused(docker, cid)
        (_cgroup2(docker, cid) / "cgroup.freeze").write_text("0")
        docker.docker("unpause", cid)
        assert _exec(docker, cid, "echo alive").stdout.strip() == "alive"
    finally:
        subprocess.run(["docker", "rm", "-f", cid], capture_output=True, env=docker.env, timeout=60)
        assert s.stop() == 0


def test_a_connection_into_the_container_from_the_host_is_cut(base: Path, docker: Docker) -> None:
    """A host process connected to the container's listener on a shared
    volume before the isolation. The accepted socket the container holds
    lives in the host's network namespace (the connecting socket's), where
    the sweep did not look: the connection stayed open. Now the host end
    reads EOF once the container is isolated."""
    s, shared, mounts = _listener_setup(base, docker, "unixinto")
    script = "/unixlisten /shared/l.sock > /tmp/l.out 2>&1 & sleep 600"
    cid = docker.docker("run", "-d", "--network", "none", *mounts, IMAGE, "sh", "-c", script)
    host = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        assert "ready" in _wait_output(docker, cid, "/tmp/l.out", "ready")
        host.connect(str(shared / "l.sock"))
        assert "accepted" in _wait_output(docker, cid, "/tmp/l.out", "accepted")
        host.settimeout(0.5)
        try:  # open, and silent: the test's own check
            got_before = host.recv(16)
        except TimeoutError:
            got_before = None
        assert got_before is None
        out = sluice_cli(s, "isolate", cid[:12])
        assert "1 unix connection it had to peers outside it cut" in out and "NOT cut" not in out, out
        host.settimeout(5)
        assert host.recv(16) == b""  # EOF: the container's end was shut down
    finally:
        host.close()
        subprocess.run(["docker", "rm", "-f", cid], capture_output=True, env=docker.env, timeout=60)
        assert s.stop() == 0


def _listener_setup(base: Path, docker: Docker, name: str) -> tuple[SensorProc, Path, list[str]]:
    """A sensor, a directory to share with containers, and the mounts that
    give them it and tests/adversarial/unixlisten.c (built static)."""
    exe = base / "unixlisten"
    subprocess.run(["gcc", "-O2", "-static", "-o", str(exe), str(HERE / "unixlisten.c")], check=True)
    shared = base / f"shared-{name}"
    shared.mkdir()
    s = SensorProc(base, docker.sock, name=name)
    s.start()
    return s, shared, ["-v", f"{shared}:/shared", "-v", f"{exe}:/unixlisten:ro"]


def _perl_connect(docker: Docker, cid: str, peer: str, listen: str = "") -> str:
    """perl in the container: a stream connect to `peer` (a path, or
    "\\0name" for an abstract name), after listening on `listen` when
    given; prints "connected" or why not."""
    script = "use IO::Socket::UNIX; "
    if listen:
        script += f'my $l = IO::Socket::UNIX->new(Local => "{listen}", Listen => 1) or die "listen: $!\\n"; '
    script += f'IO::Socket::UNIX->new(Peer => "{peer}") or die "connect: $!\\n"; print "connected\\n"'
    r = _exec(docker, cid, f"perl -e '{script}' 2>&1")
    return r.stdout + r.stderr


def _refused_into(d: dict[str, Any], cid: str, pid: int | None = None) -> bool:
    return (
        action(d) == "unix_socket_connect_into"
        and cid_of(d) == cid
        and (pid is None or d["process"]["pid"] == pid)
        and d["event"]["outcome"] == "failure"
    )


def test_new_connects_into_the_isolated_container_are_refused_or_cut(base: Path, docker: Docker) -> None:
    """Its listener on a volume shared with the host and with another
    container. Before, only connections open at the isolation were cut: an
    accomplice connected anew and read what the container wrote to the
    accepted socket. Where the BPF LSM loads, the unix_stream_connect
    program refuses the connect (it judges the listener's cgroup, not the
    caller's) and each refusal is a document naming the caller; the
    container's own connects inside it still work. Where it does not (this
    machine's kernel refuses every BPF trampoline program), the connect
    succeeds and is cut at the next window, every window, and said so. The
    release lets connects in again."""
    s, shared, mounts = _listener_setup(base, docker, "unixintonew")
    lsm = json.loads(s.status("--json").stdout)["hooks"]["unix_into_lsm"]
    assert lsm == "attached" or lsm.startswith("unavailable: "), lsm
    # each listener accepts one connection and keeps it: l.sock's is taken
    # before the isolation, m.sock's is for a connect after it
    script = (
        "/unixlisten /shared/l.sock > /tmp/l.out 2>&1 & "
        "while true; do /unixlisten /shared/m.sock >> /tmp/m.out 2>&1; done & sleep 600"
    )
    cid = docker.docker("run", "-d", "--network", "none", *mounts, IMAGE, "sh", "-c", script)
    other = docker.docker("run", "-d", "--network", "none", "-v", f"{shared}:/shared", IMAGE, "sleep", "600")
    path = str(shared / "l.sock")
    try:
        assert "ready" in _wait_output(docker, cid, "/tmp/l.out", "ready")
        first = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        first.connect(path)  # before: the host connects (the test's own check)
        first.close()
        assert _perl_connect(docker, other, "/shared/l.sock") == "connected\n"
        msg = sluice_cli(s, "isolate", cid[:12])
        if lsm == "attached":
            assert "connects and datagrams into its unix sockets from outside it" in msg and "NOT" not in msg, msg
            host = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                with pytest.raises(PermissionError):
                    host.connect(path)
            finally:
                host.close()
            d = s.wait_for(lambda d: _refused_into(d, cid, os.getpid()), what="the host's refused connect")
            assert d["sluice"]["unix"]["peer"] == {"host": True}, d["sluice"]
            assert "isolated" in d["message"] and f"pid {os.getpid()}" in d["message"], d["message"]
            out = _perl_connect(docker, other, "/shared/l.sock")
            assert REFUSED in out, out
            d = s.wait_for(lambda d: _refused_into(d, cid) and d["sluice"]["unix"]["peer"]["host"] is False)
            assert d["sluice"]["unix"]["peer"]["container"]["id"] == other, d["sluice"]
            counters = json.loads(s.status("--json").stdout)["counters"]
            assert counters["unix_into_refused"] >= 2 and counters["unix_into_events"] >= 2, counters
        else:
            assert "cut at each window" in msg and "NOT refused" in msg, msg
            # connected in well after the isolation and its one sweep again
            # (windows of 1 s here; m.sock's listener accepts): cut within a
            # window or two, and said so
            time.sleep(3)
            host = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                host.connect(str(shared / "m.sock"))
                host.settimeout(10)
                assert host.recv(16) == b""  # EOF: the container's end was shut down
            finally:
                host.close()
            d = s.wait_for(
                lambda d: (
                    action(d) == "containment_followed"
                    and cid_of(d) == cid
                    and "swept again: 1 unix connection" in d["message"]
                ),
                what="the cut of the connection made into it",
            )
        # its own: an abstract name in its own namespace (its connects by
        # path are refused by connect_unix, as before)
        assert _perl_connect(docker, cid, "\\0sl-own", listen="\\0sl-own") == "connected\n"
        sluice_cli(s, "release", cid[:12])
        again = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            again.connect(path)  # whole again (the backlog has room: unixlisten accepted once)
        finally:
            again.close()
    finally:
        subprocess.run(["docker", "rm", "-f", cid, other], capture_output=True, env=docker.env, timeout=60)
        assert s.stop() == 0


DGRAM_PL = r"""
use IO::Socket::UNIX; use Socket;
$| = 1;
my $in = IO::Socket::UNIX->new(Type => SOCK_DGRAM, Local => "/shared/d.sock") or die "bind: $!\n";
my $out = IO::Socket::UNIX->new(Type => SOCK_DGRAM, Peer => "/shared/h.sock") or die "connect: $!\n";
print "ready\n";
until (-e "/tmp/go") { select(undef, undef, undef, 0.05) }
print defined(send($out, "leak", 0)) ? "sent\n" : "send: $!\n";
sleep 600;
"""


def test_datagrams_across_the_isolation(base: Path, docker: Docker) -> None:
    """A datagram socket the container connected to a host socket before
    its isolation sends nothing after it (the isolation's sweep
    disconnects it; where the BPF LSM loads, the unix_may_send program
    refuses it too). A datagram from the host to the container's bound
    socket has no connect to refuse: the unix_may_send program refuses it
    and says so where the BPF LSM loads; elsewhere the isolation message
    says it is not refused."""
    shared = base / "shared-dgram"
    shared.mkdir()
    (shared / "d.pl").write_text(DGRAM_PL)
    s = SensorProc(base, docker.sock, name="unixdgram")
    s.start()
    lsm = json.loads(s.status("--json").stdout)["hooks"]["unix_into_lsm"]
    host_in = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    host_in.bind(str(shared / "h.sock"))
    host_in.settimeout(1.0)
    cid = docker.docker(
        "run",
        "-d",
        "--network",
        "none",
        "-v",
        f"{shared}:/shared",
        IMAGE,
        "sh",
        "-c",
        "perl /shared/d.pl > /tmp/d.out 2>&1",
    )
    host_out = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        assert "ready" in _wait_output(docker, cid, "/tmp/d.out", "ready")
        host_out.sendto(b"before", str(shared / "d.sock"))  # the test's own check: it reaches the container
        msg = sluice_cli(s, "isolate", cid[:12])
        if lsm == "attached":
            with pytest.raises(PermissionError):
                host_out.sendto(b"after", str(shared / "d.sock"))
            d = s.wait_for(lambda d: action(d) == "unix_socket_send_into" and cid_of(d) == cid, what="the send into")
            assert d["process"]["pid"] == os.getpid() and d["sluice"]["unix"]["peer"] == {"host": True}, d
        else:
            assert "datagrams into its unix sockets are NOT refused" in msg, msg
        assert _exec(docker, cid, "touch /tmp/go").returncode == 0
        out = _wait_output(docker, cid, "/tmp/d.out", "send")
        assert "send: " in out and "sent" not in out, out
        with pytest.raises(TimeoutError):
            print(host_in.recv(16))  # nothing arrived
    finally:
        host_in.close()
        host_out.close()
        subprocess.run(["docker", "rm", "-f", cid], capture_output=True, env=docker.env, timeout=60)
        assert s.stop() == 0
