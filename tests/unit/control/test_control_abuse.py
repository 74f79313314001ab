"""The control plane under abuse (issue 10, finding 5): slow clients do not
delay `status`, frames and msgpack are limited to what requests really are,
a request that timed out is never executed, and a stalled main loop makes
`status` say "not ready"."""

from __future__ import annotations

import socket
import struct
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from control.client import request
from sensor.config import load_config
from sensor.daemon import wire
from sensor.daemon.control_server import ControlServer
from sensor.daemon.runner import Sensor
from sensor.errors import SluiceError
from sensor.kernel.probe import ProbeReport


def _handler(req: dict[str, Any]) -> dict[str, Any]:
    return {"ok": True, "ready": True, "echo": req.get("cmd")}


@pytest.fixture
def server(tmp_path: Path):
    path = str(tmp_path / "ctl.sock")
    srv = ControlServer(path, _handler)
    srv.start()
    try:
        yield srv, path
    finally:
        srv.stop()


def _trickler(path: str, stop: threading.Event) -> None:
    """A hostile client: one byte a second of a frame that never ends."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    frame = struct.pack("!I", 1000) + b"\x81" * 1000
    try:
        for b in frame:
            if stop.wait(1.0):
                break
            s.send(bytes([b]))
    except OSError:
        pass
    finally:
        s.close()


def test_three_slow_clients_do_not_delay_status(server: Any) -> None:
    srv, path = server
    stop = threading.Event()
    slow = [threading.Thread(target=_trickler, args=(path, stop), daemon=True) for _ in range(3)]
    for t in slow:
        t.start()
    time.sleep(0.3)  # all three connected and trickling
    try:
        for _ in range(3):
            t0 = time.monotonic()
            assert request(path, "status", timeout=1.0)["echo"] == "status"
            assert time.monotonic() - t0 < 0.9  # on main: the 2 s per-client timeout, times three
        time.sleep(2.2)  # past the request deadline: the tricklers are cut off and counted
        assert srv.stats()["clients_timed_out"] >= 3
    finally:
        stop.set()


def _raw(path: str, data: bytes) -> Any:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(3.0)
    s.connect(path)
    with s:
        s.sendall(data)
        return wire.recv(s)


def test_oversized_request_frame_is_refused_unread(server: Any) -> None:
    srv, path = server
    resp = _raw(path, struct.pack("!I", 16 * 1024 * 1024))  # 16 MiB announced
    assert resp["ok"] is False and "exceeds" in resp["error"]
    assert request(path, "status")["ok"]


def test_a_request_of_empty_maps_is_refused_by_msgpack_limits(server: Any) -> None:
    srv, path = server
    n = 60_000  # fits in a request frame; an array of 60,000 empty maps is no request
    body = b"\xdd" + struct.pack("!I", n) + b"\x80" * n
    resp = _raw(path, struct.pack("!I", len(body)) + body)
    assert resp["ok"] is False and "not a valid request" in resp["error"]
    assert srv.stats()["bad_requests"] == 1
    assert request(path, "status")["ok"]


def _sensor(tmp_path: Path) -> Sensor:
    cfg = tmp_path / "sluice.toml"
    cfg.write_text(f'[sensor]\ncontrol_socket = "{tmp_path}/c.sock"\n[output]\npath = "{tmp_path}/out.jsonl"\n')
    report = ProbeReport(
        kernel_release="6.1.0-test",
        btf=True,
        build_tree="/x",
        tracefs="/sys/kernel/tracing",
        tracefs_mounted_by_sluice=False,
        cgroup2_mount=str(tmp_path),
        cgroup_mode="unified",
        ringbuf=True,
        tracepoints={},
    )
    s = Sensor(load_config(cfg), report=report)
    s.ready = True  # as after setup(); the main loop is not turning
    return s


def test_a_request_that_timed_out_is_never_executed(tmp_path: Path) -> None:
    s = _sensor(tmp_path)
    ran: list[int] = []

    def work() -> dict[str, Any]:
        ran.append(1)
        return {"ok": True}

    resp = s._call_in_loop(work, timeout=0.1)
    assert resp["ok"] is False and "nothing was done" in resp["error"]
    s._serve_snapshot_requests()  # the loop turns, late
    assert ran == []
    s.output.close()


def test_status_is_not_ready_when_the_main_loop_is_stalled(tmp_path: Path) -> None:
    s = _sensor(tmp_path)
    s._snapshot = {"ok": True, "ready": True, "status": "ok"}
    snap = s.fresh_snapshot(timeout=0.2)
    assert snap["ready"] is False and "main loop" in snap["not_ready"]
    # the loop turning again answers with a fresh, ready snapshot
    t = threading.Timer(0.05, s._serve_snapshot_requests)
    t.start()
    assert s.fresh_snapshot(timeout=2.0).get("ready") is True
    t.join()
    s.output.close()


def test_client_still_reads_large_answers() -> None:
    a, b = socket.socketpair()
    with a, b:
        big = {"alerts": [{"m": "x" * 1000}] * 2000}
        t = threading.Thread(target=wire.send, args=(a, big))
        t.start()
        assert wire.recv(b) == big
        t.join()


def test_an_oversized_string_in_a_request_is_refused(server: Any) -> None:
    _srv, path = server
    with pytest.raises(SluiceError, match="unknown|refused"):
        request(path, "status", timeout=1.0, blob="x" * 20_000)
