"""Control socket: wire framing, the sensor's server, the client and the CLI."""

from __future__ import annotations

import os
import socket
import stat
import struct
import threading
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from control.cli import app
from control.client import request
from sensor import __version__
from sensor.daemon import wire
from sensor.daemon.control_server import ControlServer
from sensor.errors import SluiceError

runner = CliRunner()


# --- wire ----------------------------------------------------------------------


def test_wire_roundtrip_over_socketpair() -> None:
    a, b = socket.socketpair()
    with a, b:
        msgs = [
            {"cmd": "status"},
            {"ok": True, "nested": {"list": [1, 2.5, None, True], "bytes": b"\x00\xff"}, "s": "h\u00e9"},
            [1, 2, 3],
            "x" * 100_000,
        ]
        for m in msgs:
            wire.send(a, m)
        for m in msgs:
            assert wire.recv(b) == m


def test_wire_frame_is_length_prefixed_msgpack() -> None:
    a, b = socket.socketpair()
    with a, b:
        wire.send(a, {"k": 1})
        head = b.recv(4)
        (n,) = struct.unpack("!I", head)
        body = b.recv(n)
        assert len(body) == n
        import msgpack

        assert msgpack.unpackb(body) == {"k": 1}


def test_wire_large_frame_across_many_recvs() -> None:
    a, b = socket.socketpair()
    with a, b:
        big = {"blob": os.urandom(1 << 20)}
        t = threading.Thread(target=wire.send, args=(a, big))
        t.start()
        assert wire.recv(b) == big
        t.join()


def test_wire_closed_connection() -> None:
    a, b = socket.socketpair()
    a.close()
    with b, pytest.raises(wire.WireError, match="connection closed"):
        wire.recv(b)


def test_wire_closed_mid_frame() -> None:
    a, b = socket.socketpair()
    a.sendall(struct.pack("!I", 10) + b"abc")
    a.close()
    with b, pytest.raises(wire.WireError, match="mid-frame"):
        wire.recv(b)


def test_wire_refuses_oversized_frame() -> None:
    a, b = socket.socketpair()
    with a, b:
        a.sendall(struct.pack("!I", wire.MAX_FRAME + 1))
        with pytest.raises(wire.WireError, match="exceeds"):
            wire.recv(b)


# --- server + client -------------------------------------------------------------


SNAPSHOT: dict[str, Any] = {
    "ok": True,
    "ready": True,
    "pid": 4242,
    "host": "node-1",
    "uptime_seconds": 12.3,
    "startup_seconds": 0.8,
    "status": "ok",
    "output": "stdout",
    "events": True,
    "window_seconds": 10.0,
    "hooks": {
        "exec": "attached",
        "connect4": "attached",
        "egress": "attached",
        "lifecycle": "unavailable: no cgroup tracepoints",
    },
    "counters": {"events": 10, "exec": 2, "connect": 3, "sample": 4, "cgroup": 1, "windows": 1, "output_lines": 7},
    "drops": {"total": 0, "decode_errors": 0},
    "runtime": {"status": "ok", "docker_socket": "/var/run/docker.sock"},
    "containers_tracked": 1,
    "top": [
        {
            "container": "a0a0a0a0a0a0",
            "name": "exfil-test",
            "image": "alpine:3.20",
            "bytes_per_s": 3.5 * 1024 * 1024,
            "entropy": 7.93,
            "connects": 3,
            "execs": 2,
            "destinations": ["203.0.113.9:4444", "192.0.2.80:80"],
            "n_destinations": 7,
        },
        {
            "container": "host",
            "name": "",
            "image": "",
            "bytes_per_s": 90.0,
            "entropy": None,
            "connects": 0,
            "execs": 1,
            "destinations": [],
            "n_destinations": 0,
        },
    ],
}


class Handler:
    def __init__(self, snapshot: dict[str, Any]) -> None:
        self.snapshot = snapshot
        self.seen: list[dict[str, Any]] = []

    def __call__(self, req: dict[str, Any]) -> dict[str, Any]:
        self.seen.append(req)
        if req.get("cmd") == "boom":
            raise RuntimeError("bug")
        if req.get("cmd") in ("status", "top"):
            return self.snapshot
        return {"ok": False, "error": f"unknown command {req.get('cmd')!r}"}


@pytest.fixture
def sock_path(tmp_path: Path) -> str:
    return str(tmp_path / "run" / "sluice.sock")


@pytest.fixture
def server(sock_path: str):
    h = Handler(dict(SNAPSHOT))
    srv = ControlServer(sock_path, h)
    srv.start()
    try:
        yield srv, h
    finally:
        srv.stop()


def test_server_answers_status(server, sock_path: str) -> None:
    srv, h = server
    resp = request(sock_path, "status")
    assert resp == SNAPSHOT
    assert h.seen == [{"cmd": "status"}]
    assert srv.requests == 1
    mode = stat.S_IMODE(os.stat(sock_path).st_mode)
    assert mode == 0o600
    assert stat.S_ISSOCK(os.stat(sock_path).st_mode)


def test_server_serves_many_requests(server, sock_path: str) -> None:
    srv, _ = server
    for _ in range(5):
        assert request(sock_path, "top")["top"][0]["name"] == "exfil-test"
    assert srv.requests == 5


def test_refusal_and_handler_bug_become_errors(server, sock_path: str) -> None:
    with pytest.raises(SluiceError, match="unknown command 'nope'"):
        request(sock_path, "nope")
    with pytest.raises(SluiceError, match="internal error: bug"):
        request(sock_path, "boom")
    # the server survives both
    assert request(sock_path, "status")["ready"] is True


def test_stop_removes_the_socket(sock_path: str) -> None:
    srv = ControlServer(sock_path, Handler(SNAPSHOT))
    srv.start()
    assert os.path.exists(sock_path)
    srv.stop()
    assert not os.path.exists(sock_path)
    with pytest.raises(SluiceError, match="no sensor is running"):
        request(sock_path, "status")


def test_second_server_on_a_live_socket_is_refused(server, sock_path: str) -> None:
    with pytest.raises(SluiceError, match="another sensor is serving"):
        ControlServer(sock_path, Handler(SNAPSHOT)).start()
    assert request(sock_path, "status")["ok"] is True


def test_stale_socket_is_replaced(sock_path: str) -> None:
    os.makedirs(os.path.dirname(sock_path))
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(sock_path)
    s.close()  # bound, never listening: a dead sensor's socket
    srv = ControlServer(sock_path, Handler(SNAPSHOT))
    srv.start()
    try:
        assert request(sock_path, "status")["host"] == "node-1"
    finally:
        srv.stop()


def test_client_errors(tmp_path: Path) -> None:
    with pytest.raises(SluiceError, match="no sensor is running") as ei:
        request(str(tmp_path / "missing.sock"), "status")
    assert "sluice run" in ei.value.hint
    # a server that closes without answering
    path = str(tmp_path / "mute.sock")
    lsn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    lsn.bind(path)
    lsn.listen(1)

    def mute() -> None:
        c, _ = lsn.accept()
        wire.recv(c)
        c.close()

    t = threading.Thread(target=mute)
    t.start()
    try:
        with pytest.raises(SluiceError, match="did not answer"):
            request(path, "status", timeout=2)
    finally:
        t.join()
        lsn.close()


# --- CLI -------------------------------------------------------------------------


def config_for(tmp_path: Path, sock: str) -> str:
    p = tmp_path / "sluice.toml"
    p.write_text(f'[sensor]\ncontrol_socket = "{sock}"\n')
    return str(p)


def test_cli_version() -> None:
    r = runner.invoke(app, ["version"])
    assert r.exit_code == 0
    assert r.output.strip() == f"sluice {__version__}"


def test_cli_status_without_sensor(tmp_path: Path) -> None:
    cfg = config_for(tmp_path, str(tmp_path / "nobody.sock"))
    r = runner.invoke(app, ["status", "-c", cfg])
    assert r.exit_code != 0
    assert "no sensor is running" in r.output
    assert str(tmp_path / "nobody.sock") in r.output


def test_cli_status_ready(tmp_path: Path, server, sock_path: str) -> None:
    r = runner.invoke(app, ["status", "-c", config_for(tmp_path, sock_path)])
    assert r.exit_code == 0, r.output
    assert "sluice ready" in r.output and "pid 4242" in r.output and "host node-1" in r.output
    for hook, st in SNAPSHOT["hooks"].items():
        line = next(ln for ln in r.output.splitlines() if ln.strip().startswith(hook + " "))
        assert st in line
    assert "exec=2" in r.output and "output_lines=7" in r.output
    assert "containers tracked: 1" in r.output


def test_cli_status_json(tmp_path: Path, server, sock_path: str) -> None:
    import json

    r = runner.invoke(app, ["status", "--json", "-c", config_for(tmp_path, sock_path)])
    assert r.exit_code == 0
    assert json.loads(r.stdout)["hooks"] == SNAPSHOT["hooks"]


def test_cli_status_not_ready_exits_1(tmp_path: Path, server, sock_path: str) -> None:
    _, h = server
    h.snapshot = {**SNAPSHOT, "ready": False}
    r = runner.invoke(app, ["status", "-c", config_for(tmp_path, sock_path)])
    assert r.exit_code == 1
    assert "sluice starting" in r.output


def test_cli_status_bad_config(tmp_path: Path) -> None:
    p = tmp_path / "bad.toml"
    p.write_text('[sensor]\ncontrol_socket = "relative.sock"\n')
    r = runner.invoke(app, ["status", "-c", str(p)])
    assert r.exit_code == 2
    assert f"{p}:2:" in r.output


def test_cli_run_bad_config_fails_before_the_kernel(tmp_path: Path) -> None:
    p = tmp_path / "bad.toml"
    p.write_text("[sensor]\nwindow_seconds = 10\n\n[kernel]\nsample_bytes = 4096\n")
    r = runner.invoke(app, ["run", "-c", str(p)])
    assert r.exit_code == 2
    assert f"{p}:5:" in r.output
    assert "kernel.sample_bytes" in r.output
    assert "sluice: error:" in r.stderr


def test_cli_run_missing_config(tmp_path: Path) -> None:
    r = runner.invoke(app, ["run", "-c", str(tmp_path / "nope.toml")])
    assert r.exit_code == 2
    assert "file not found" in r.output


def test_cli_status_says_stalled_and_why(tmp_path: Path, server, sock_path: str) -> None:
    _, h = server
    why = "the main loop has not answered for 1.4 s (last snapshot shown)"
    h.snapshot = {**SNAPSHOT, "ready": False, "status": "stalled", "not_ready": why}
    r = runner.invoke(app, ["status", "-c", config_for(tmp_path, sock_path)])
    assert r.exit_code == 1
    assert "sluice stalled" in r.output and f"not ready: {why}" in r.output and "status: stalled" in r.output
