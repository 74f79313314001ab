"""The emulation lab: a Docker engine client, a small image made from this
host's binaries (no registry), and a sink network namespace on
198.18.0.0/16 that containers join through veth pairs.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
import uuid
from pathlib import Path
from typing import Any

from sensor.errors import SluiceError

# Sink addresses in distinct /24s: baselines generalise destinations to
# their /24 (detection.destination_prefix_v4).
SINK_IP = "198.18.0.1"  # the "internet" host
SECOND_IP = "198.18.64.1"  # a second destination (stage two, beacons)
VAULT_IP = "198.18.128.1"  # the allowed backup destination
BRIDGE_MAC = "02:51:1c:e0:00:01"  # locally administered
SINK_SCRIPT = str(Path(__file__).with_name("sink.py"))
BASE_IMAGE = "sluice-emu/base:latest"
# The compromised-workload image: busybox and perl (an interpreter a real
# application image may well have), no openssl, no curl, no encryption tool.
BARE_IMAGE = "sluice-emu/bare:latest"
LABEL = "io.sluice.emulation"
TCP_PORTS = (4444, 9000, 9001, 9002, 9003, 9004, 9005)
HTTP_PORTS = (80, 8080, 8081)
UDP_PORTS = (5000, 5353)  # discard: datagrams are recorded, never answered
TLS_PORTS = (443, 8443)


def run(
    *cmd: str, check: bool = True, env: dict[str, str] | None = None, timeout: float = 120, input: str | None = None
) -> str:
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout, input=input)
    except FileNotFoundError:
        raise SluiceError(f"{cmd[0]} is not installed", hint="run `sudo make setup`") from None
    if check and r.returncode != 0:
        raise SluiceError(f"{' '.join(cmd[:4])}... failed ({r.returncode}): {r.stderr.strip()[:500]}")
    return r.stdout.strip()


class DockerCLI:
    """The docker command line against one engine socket."""

    def __init__(self, socket_path: str) -> None:
        self.sock = socket_path
        self.env = {**os.environ, "DOCKER_HOST": f"unix://{socket_path}"}

    def __call__(self, *args: str, check: bool = True, timeout: float = 120) -> str:
        return run("docker", *args, check=check, env=self.env, timeout=timeout)

    def reachable(self) -> bool:
        return subprocess.run(["docker", "info"], capture_output=True, env=self.env).returncode == 0


class PrivateEngine:
    """A private dockerd (own socket, data root and exec root) for the
    tests and benchmarks: nothing of the host's engine is touched. Its
    containerd listens at base/exec/containerd/containerd.sock."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.sock = str(base / "docker.sock")
        self.cli = DockerCLI(self.sock)
        self.env = self.cli.env
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.base.mkdir(parents=True, exist_ok=True)
        log = open(self.base / "dockerd.log", "ab")
        self.proc = subprocess.Popen(
            [
                "dockerd",
                "--iptables=false",
                "--bridge=none",
                "--ip-masq=false",
                f"--data-root={self.base / 'root'}",
                f"--exec-root={self.base / 'exec'}",
                f"--pidfile={self.base / 'dockerd.pid'}",
                "-H",
                f"unix://{self.sock}",
            ],
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"dockerd exited: see {self.base / 'dockerd.log'}")
            if self.cli.reachable():
                return
            time.sleep(0.3)
        raise RuntimeError("dockerd did not become ready in 60 s")

    def docker(self, *args: str, check: bool = True, timeout: float = 120) -> str:
        return self.cli(*args, check=check, timeout=timeout)

    def stop(self) -> None:
        ids = self.docker("ps", "-aq", check=False).split()
        if ids:
            self.docker("rm", "-f", *ids, check=False)
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        run("umount", "-l", str(self.base / "root" / "overlay2"), check=False)


def _s_client_help(openssl: str) -> str:
    r = subprocess.run([openssl, "s_client", "-help"], capture_output=True, text=True, timeout=30)
    return r.stdout + r.stderr


def build_image(
    docker: DockerCLI,
    workdir: Path,
    tags: list[str] | None = None,
    bare_tags: list[str] | None = None,
    perl: bool = False,
) -> None:
    """A busybox image with openssl (and curl when the host has it) and a
    text file, imported with `docker import`: no registry needed; with
    `perl`, perl too (its base library only). With `bare_tags`, also
    BARE_IMAGE: the same without openssl and curl, with perl."""
    root = workdir / "rootfs"
    if root.exists():
        shutil.rmtree(root)
    for d in ("bin", "etc", "tmp", "proc", "sys", "dev", "mnt/data", "usr/bin", "data", "etc/ssl/certs"):
        (root / d).mkdir(parents=True, exist_ok=True)
    busybox = shutil.which("busybox")
    if busybox is None:
        raise SluiceError("busybox is not installed", hint="apt-get install busybox-static (sudo make setup)")
    shutil.copy2(busybox, root / "bin/busybox")
    for a in run(busybox, "--list").split():
        if a != "busybox" and not (root / "bin" / a).exists():
            os.symlink("busybox", root / "bin" / a)
    for name in ("openssl", "curl"):
        binary = shutil.which(name)
        if binary is None:
            if name == "openssl":
                raise SluiceError("openssl is not installed", hint="apt-get install openssl (sudo make setup)")
            continue
        if name == "openssl" and "-nocommands" not in _s_client_help(binary):
            raise SluiceError(
                f"{binary} has no s_client -nocommands (OpenSSL 3.0 or later): the lab's TLS uploads would stop "
                "at a random byte",
                hint="install OpenSSL 3 (sudo make setup)",
            )
        shutil.copy2(binary, root / "usr/bin" / name)
        for lib in run("ldd", binary).split():
            if lib.startswith("/"):
                dst = root / lib.lstrip("/")
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(os.path.realpath(lib), dst)
    (root / "etc/passwd").write_text("root:x:0:0:root:/:/bin/sh\n")
    text = Path("/usr/share/common-licenses/GPL-3")
    (root / "data/text.txt").write_bytes(
        text.read_bytes() if text.exists() else b"The quick brown fox jumps over the lazy dog. " * 800
    )
    if perl:
        _add_perl(root)
    tar = workdir / "rootfs.tar"
    with tarfile.open(tar, "w") as t:
        t.add(root, arcname=".")
    docker("import", "-c", "ENV PATH=/usr/bin:/bin", str(tar), BASE_IMAGE)
    for tag in tags or []:
        docker("tag", BASE_IMAGE, tag)
    if bare_tags:
        _bare(root)
        with tarfile.open(tar, "w") as t:
            t.add(root, arcname=".")
        docker("import", "-c", "ENV PATH=/usr/bin:/bin", str(tar), BARE_IMAGE)
        for tag in bare_tags:
            docker("tag", BARE_IMAGE, tag)


PERL_BASE = "/usr/lib/x86_64-linux-gnu/perl-base"


def _bare(root: Path) -> None:
    """The image root without encryption tools, with perl."""
    for name in ("openssl", "curl"):
        (root / "usr/bin" / name).unlink(missing_ok=True)
    _add_perl(root)


def _add_perl(root: Path) -> None:
    perl = shutil.which("perl")
    if perl is None or not Path(PERL_BASE).is_dir():
        raise SluiceError("perl is not installed", hint="apt-get install perl-base (part of every Debian)")
    shutil.copy2(perl, root / "usr/bin/perl")
    for lib in run("ldd", perl).split():
        if lib.startswith("/"):
            dst = root / lib.lstrip("/")
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(os.path.realpath(lib), dst)
    dst = root / PERL_BASE.lstrip("/")
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(PERL_BASE, dst, symlinks=True)


class SinkNet:
    """A netns with a bridge holding the sink addresses, and the sink."""

    def __init__(self, workdir: Path, stage2: bytes = b"#!/bin/sh\n") -> None:
        self.workdir = workdir
        self.ns = f"slsink{uuid.uuid4().hex[:6]}"
        self.state = workdir / "sink.jsonl"
        self.zone = workdir / "zone.json"  # the sink's DNS names (set_names)
        self.stage2 = stage2
        self.proc: subprocess.Popen[bytes] | None = None
        self._hosts = itertools.count(10)

    def start(self) -> None:
        w = self.workdir
        run(
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=sink.lab",
            "-days",
            "2",
            "-keyout",
            str(w / "sink.key"),
            "-out",
            str(w / "sink.crt"),
        )
        (w / "stage2").write_bytes(self.stage2)
        run("ip", "netns", "add", self.ns)
        run("ip", "-n", self.ns, "link", "set", "lo", "up")
        # A fixed MAC: a bridge without one takes the lowest MAC of its ports,
        # so each container veth that comes or goes would change the sink's
        # MAC under the ARP caches of running containers (their packets then
        # go nowhere until the neighbour entry expires).
        run("ip", "-n", self.ns, "link", "add", "br0", "address", BRIDGE_MAC, "type", "bridge")
        for ip in (SINK_IP, SECOND_IP, VAULT_IP):
            run("ip", "-n", self.ns, "addr", "add", f"{ip}/16", "dev", "br0")
        run("ip", "-n", self.ns, "link", "set", "br0", "up")
        self.proc = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                self.ns,
                sys.executable,
                SINK_SCRIPT,
                str(self.state),
                "--tcp",
                ",".join(map(str, TCP_PORTS)),
                "--http",
                ",".join(map(str, HTTP_PORTS)),
                "--tls",
                ",".join(map(str, TLS_PORTS)),
                "--udp",
                ",".join(map(str, UDP_PORTS)),
                "--cert",
                str(w / "sink.crt"),
                "--key",
                str(w / "sink.key"),
                "--stage2",
                str(w / "stage2"),
                "--zone",
                str(self.zone),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if b"ready" not in line:
            raise SluiceError(f"the lab's sink did not start: {line.decode(errors='replace')}")

    def attach(self, pid: int) -> str:
        """Give the network namespace of `pid` an eth0 on the sink bridge."""
        n = next(self._hosts)
        ip = f"198.18.{n // 250 + 1}.{n % 250 + 2}"  # 198.18.1.x-198.18.63.x: clients
        tag = uuid.uuid4().hex[:6]
        host_end, cont_end = f"slh{tag}", f"slc{tag}"
        run("ip", "link", "add", host_end, "type", "veth", "peer", "name", cont_end)
        run("ip", "link", "set", cont_end, "netns", str(pid))
        run("ip", "link", "set", host_end, "netns", self.ns)
        run("ip", "-n", self.ns, "link", "set", host_end, "master", "br0", "up")
        nse = ("nsenter", "-t", str(pid), "-n")
        run(*nse, "ip", "link", "set", cont_end, "name", "eth0")
        run(*nse, "ip", "addr", "add", f"{ip}/16", "dev", "eth0")
        run(*nse, "ip", "link", "set", "eth0", "up")
        run(*nse, "ip", "link", "set", "lo", "up")
        return ip

    def set_names(self, names: dict[str, list[str]]) -> None:
        """What the sink's DNS server answers from now on (name -> A records),
        written atomically; the sink re-reads it on every query."""
        cur = json.loads(self.zone.read_text()) if self.zone.exists() else {}
        cur.update(names)
        tmp = self.zone.with_suffix(".tmp")
        tmp.write_text(json.dumps(cur))
        os.replace(tmp, self.zone)

    def received(self) -> list[dict[str, Any]]:
        if not self.state.exists():
            return []
        return [json.loads(x) for x in self.state.read_text().splitlines() if x.strip()]

    def stop(self) -> str:
        """Stop the sink and delete the netns; returns a problem, if any."""
        if self.proc:
            self.proc.kill()
            self.proc.wait()
            self.proc = None
        err = ""
        for _ in range(10):
            r = subprocess.run(["ip", "netns", "del", self.ns], capture_output=True, text=True)
            if r.returncode == 0 or self.ns not in run("ip", "netns", "list", check=False):
                return ""
            err = r.stderr.strip()
            time.sleep(0.3)
        return f"could not delete netns {self.ns}: {err}"


class Lab:
    """Containers started here are labelled with the run id and removed by
    cleanup(), whatever happened."""

    def __init__(self, docker: DockerCLI, net: SinkNet, run_id: str) -> None:
        self.docker = docker
        self.net = net
        self.run_id = run_id
        self.kept: dict[str, str] = {}  # image -> id of its long-lived container (start(keep=True))
        self.kept_ips: dict[str, str] = {}  # id of a kept container -> its address on the sink network

    def start(
        self,
        image: str,
        script: str,
        *,
        network: bool = True,
        rm: bool = False,
        volumes: tuple[str, ...] = (),
        name: str | None = None,
        keep: bool = False,
    ) -> tuple[str, str | None]:
        """Start `script` (busybox sh) in a new container; it begins only once
        the network is attached. Returns (container id, its ip). keep: a
        long-lived workload that survives cleanup() between the learn and
        detect phases (cleanup(kept=True) removes it)."""
        gate = "until [ -e /tmp/.go ]; do usleep 20000; done; " if network else ""
        label = f"{self.run_id}-kept" if keep else self.run_id
        args = ["run", "-d", "--network", "none", "--label", f"{LABEL}={label}"]
        if rm:
            args.append("--rm")
        if name:
            args += ["--name", name]
        for v in volumes:
            args += ["-v", v]
        cid = self.docker(*args, image, "sh", "-c", gate + script)
        ip = None
        if network:
            pid = int(self.docker("inspect", "-f", "{{.State.Pid}}", cid))
            ip = self.net.attach(pid)
            self.docker("exec", cid, "touch", "/tmp/.go")
        return cid, ip

    def wait(self, cid: str, timeout: float = 120) -> int:
        try:
            out = self.docker("wait", cid, check=False, timeout=timeout)
        except subprocess.TimeoutExpired:
            logs = self.docker("logs", "--tail", "5", cid, check=False)
            self.docker("rm", "-f", cid, check=False)
            raise SluiceError(
                f"container {cid[:12]} did not finish in {timeout:.0f} s (removed); last output: {logs!r}"
            ) from None
        try:
            return int(out)
        except ValueError:
            return 0  # a --rm container already gone

    def run(self, image: str, script: str, **kw: Any) -> str:
        cid, _ = self.start(image, script, **kw)
        self.wait(cid)
        return cid

    def exec(self, cid: str, script: str, timeout: float = 120) -> int:
        """Run `script` (busybox sh) inside a running container, as an
        intruder with a shell in it would; returns its exit status."""
        try:
            r = subprocess.run(
                ["docker", "exec", cid, "sh", "-c", script],
                capture_output=True,
                text=True,
                timeout=timeout,
                env=self.docker.env,
            )
        except subprocess.TimeoutExpired:
            raise SluiceError(f"docker exec in {cid[:12]} did not finish in {timeout:.0f} s") from None
        return r.returncode

    def cleanup(self, timeout: float = 15.0, kept: bool = False) -> list[str]:
        """Remove every container of this run and wait until they are gone;
        returns any that could not be removed. Repeated passes: a `docker
        run` interrupted by Ctrl-C can still be creating its container, and
        a --rm container can be mid-removal, while a pass lists them."""
        deadline = time.monotonic() + timeout
        empty_passes = 0
        ids: list[str] = []
        labels = [self.run_id] + ([f"{self.run_id}-kept"] if kept else [])
        while time.monotonic() < deadline:
            ids = [
                i
                for lb in labels
                for i in self.docker("ps", "-aq", "--filter", f"label={LABEL}={lb}", check=False).split()
            ]
            if not ids:
                empty_passes += 1
                if empty_passes >= 2:
                    return []
            else:
                empty_passes = 0
                self.docker("rm", "-f", *ids, check=False)
            time.sleep(0.5)
        return ids


def wait_until(pred: Any, timeout: float, interval: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(interval)
    return bool(pred())
