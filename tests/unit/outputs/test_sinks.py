"""Output sinks, the bounded queue, and syslog framing, on real sockets."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

from sensor.outputs.sinks import JsonLineWriter, Output, SyslogSink, UnixSocketSink, rfc5424, syslog_severity

DOC = {
    "@timestamp": "2026-11-22T10:00:00.000Z",
    "event": {"kind": "alert", "severity": 85, "dataset": "sluice.alert", "action": "x"},
    "message": "m",
}


class Blocking:
    """A sink that blocks until released: the queue must absorb, then drop."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.lines: list[str] = []
        self.errors = 0
        self.last_error = ""

    def write_line(self, line: str, doc: dict[str, Any]) -> None:
        self.release.wait(10)
        self.lines.append(line)

    def reopen(self) -> None:
        pass

    def close(self) -> None:
        pass


def test_emit_never_blocks_and_counts_drops() -> None:
    sink = Blocking()
    out = Output([sink], "ecs", queue_size=16)
    t0 = time.monotonic()
    for i in range(100):
        out.emit({**DOC, "n": i})
    assert time.monotonic() - t0 < 1.0, "emit blocked on a stuck sink"
    # one line is held by the blocked writer, 16 wait in the queue
    assert out.dropped == 100 - 16 - 1 or out.dropped == 100 - 16, out.dropped
    sink.release.set()
    out.close()
    assert len(sink.lines) + out.dropped == 100
    assert out.stats()["dropped_queue_full"] == out.dropped
    assert out.errors >= out.dropped


def test_close_delivers_everything_queued(tmp_path: Path) -> None:
    out = Output([JsonLineWriter(str(tmp_path / "o.jsonl"))], "ecs", queue_size=1000)
    for i in range(500):
        out.emit({**DOC, "n": i})
    out.close()
    lines = (tmp_path / "o.jsonl").read_text().splitlines()
    assert [json.loads(x)["n"] for x in lines] == list(range(500))


def test_size_rotation_keeps_backups(tmp_path: Path) -> None:
    p = tmp_path / "s.jsonl"
    w = JsonLineWriter(str(p), max_bytes=4096, backups=2)
    line = {"pad": "x" * 500}
    for _ in range(40):  # ~20 KB: several rotations
        w.write(line)
    w.close()
    assert w.rotations >= 3
    files = sorted(x.name for x in tmp_path.iterdir())
    assert files == ["s.jsonl", "s.jsonl.1", "s.jsonl.2"], files
    for f in tmp_path.iterdir():
        assert f.stat().st_size <= 4096 + 600
        for x in f.read_text().splitlines():
            assert json.loads(x) == line


def test_unix_dgram_and_stream_sinks(tmp_path: Path) -> None:
    dg_path = str(tmp_path / "dg.sock")
    dg = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    dg.bind(dg_path)
    sink = UnixSocketSink(dg_path, "dgram")
    sink.write_line('{"a":1}', {})
    sink.write_line('{"a":2}', {})
    assert dg.recv(1000) == b'{"a":1}' and dg.recv(1000) == b'{"a":2}'
    sink.close()

    st_path = str(tmp_path / "st.sock")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(st_path)
    srv.listen(1)
    got = bytearray()

    def accept() -> None:
        c, _ = srv.accept()
        while len(got) < 16:
            got.extend(c.recv(100))

    t = threading.Thread(target=accept)
    t.start()
    s2 = UnixSocketSink(st_path, "stream")
    s2.write_line('{"b":1}', {})
    s2.write_line('{"b":2}', {})
    t.join(5)
    assert bytes(got) == b'{"b":1}\n{"b":2}\n'
    s2.close()


def test_unreachable_socket_counts_errors_without_raising(tmp_path: Path) -> None:
    s = UnixSocketSink(str(tmp_path / "nobody.sock"), "dgram")
    s.write_line("x", {})
    s.write_line("y", {})
    assert s.errors == 2 and "nobody.sock" in s.last_error


def test_rfc5424_framing() -> None:
    line = json.dumps(DOC)
    msg = rfc5424(line, DOC, "node-1", "sluice", 16)
    # PRI = local0 (16) * 8 + crit (2) for a score-85 alert
    assert msg.startswith(f"<130>1 2026-11-22T10:00:00.000Z node-1 sluice {os.getpid()} sluice.alert - ")
    assert json.loads(msg.split(" - ", 1)[1]) == DOC
    assert syslog_severity({"event": {"kind": "alert", "severity": 30}}) == 5
    assert syslog_severity({"event": {"kind": "state"}}) == 6


def test_syslog_udp_and_tcp_octet_counting() -> None:
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.bind(("127.0.0.1", 0))
    s = SyslogSink(f"udp://127.0.0.1:{u.getsockname()[1]}", "h", "daemon")
    s.write_line(json.dumps(DOC), DOC)
    data = u.recv(65535).decode()
    assert data.startswith("<26>1 ") and data.endswith(json.dumps(DOC))  # daemon(3)*8 + 2

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    t = SyslogSink(f"tcp://127.0.0.1:{srv.getsockname()[1]}", "h", "local0")
    t.write_line("{}", DOC)
    t.write_line("{}", DOC)
    c, _ = srv.accept()
    c.settimeout(5)
    buf = b""
    while buf.count(b"<130>1") < 2:
        chunk = c.recv(4096)
        assert chunk, "connection closed before both frames arrived"
        buf += chunk
    frames = []
    rest = buf
    while rest:
        n, _, rest = rest.partition(b" ")
        frames.append(rest[: int(n)])
        rest = rest[int(n) :]
    assert len(frames) == 2 and all(f.startswith(b"<130>1 ") and f.endswith(b"{}") for f in frames)
