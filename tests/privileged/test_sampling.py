"""Payload samples by bytes, and the second read inside large packets
(issue 11, item 1), on the real kernel with the real sensor.

Traffic is real TCP over loopback from this (host) process: the egress
program at the cgroup v2 root sees it like a container's, and `sluice run
--events` writes a flow summary per (cgroup, destination, port) and
window. Each flow gets its own server port.
"""

from __future__ import annotations

import math
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from .harness import SensorProc, action, host_sensor

B = 131072  # kernel.sample_every_bytes (default)
CAP = 32  # kernel.max_samples_per_flow_window (default)
FIRST = 8  # kernel.sample_first_packets (default)
PREFIX = (
    b'POST-LOG v1 {"record": "audit", "host": "web-1", "level": "info", '
    b'"message": "chunk follows; length in the trailer, do not parse"}\n'
)


class Sink:
    """A loopback TCP server that reads and drops everything it is sent."""

    def __init__(self) -> None:
        self.srv = socket.socket()
        self.srv.bind(("127.0.0.1", 0))
        self.srv.listen()
        self.port = int(self.srv.getsockname()[1])
        self.received = 0
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def _run(self) -> None:
        c, _ = self.srv.accept()
        with c:
            while data := c.recv(1 << 20):
                self.received += len(data)

    def close(self) -> int:
        self.t.join(20)
        self.srv.close()
        return self.received


def _send(total: int, write: Callable[[int], bytes], size: int, pause: float = 0.0) -> int:
    sink = Sink()
    with socket.create_connection(("127.0.0.1", sink.port)) as c:
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sent = 0
        while sent < total:
            c.sendall(write(size))
            sent += size
            if pause:
                time.sleep(pause)
    assert sink.close() == sent
    return sink.port


def _flows(s: SensorProc, port: int) -> list[dict[str, Any]]:
    return [
        d
        for d in s.docs()
        if action(d) == "flow_summary"
        and d["destination"]["ip"] == "127.0.0.1"
        and d["destination"]["port"] == port
        and d["network"]["transport"] == "tcp"
    ]


def _wait_flows(s: SensorProc, port: int, payload: int) -> list[dict[str, Any]]:
    """The flow's summaries once they account for its payload."""
    deadline = time.monotonic() + 15
    while True:
        flows = _flows(s, port)
        if sum(f["sluice"]["payload"]["bytes"] for f in flows) >= payload:
            return flows
        assert time.monotonic() < deadline, (port, flows, s.stderr_text())
        time.sleep(0.3)


@pytest.fixture(scope="module")
def sampling_sensor(base: Path) -> Iterator[SensorProc]:
    with host_sensor(base, "sampling") as s:
        yield s


def test_samples_follow_the_bytes_of_a_gso_stream(sampling_sensor: SensorProc) -> None:
    """(a) Multi-megabyte transfers in 64 KiB writes (GSO-sized packets):
    samples in proportion to their bytes, within the per-flow cap."""
    s = sampling_sensor
    sizes = {"1 MiB": 1 << 20, "2.5 MiB": 5 << 19, "24 MiB": 24 << 20}
    ports = {k: _send(n, os.urandom, 65536) for k, n in sizes.items()}
    samples: dict[str, int] = {}
    for k, port in ports.items():
        flows = _wait_flows(s, port, sizes[k])
        payload = sum(f["sluice"]["payload"]["bytes"] for f in flows)
        assert sizes[k] <= payload <= sizes[k] * 1.01  # retransmissions may add a little
        # per flow and window, at most the cap, the socket's first packets
        # and the samples past the cap (the k-th once the socket has sent k
        # x 4B unsampled in the window: about sqrt(2 bytes / 4B) of them)
        assert all(
            f["sluice"]["payload"]["samples"]
            <= CAP + FIRST + math.sqrt(2 * f["sluice"]["payload"]["bytes"] / (4 * B)) + 1
            for f in flows
        ), [f["sluice"]["payload"] for f in flows]
        samples[k] = sum(f["sluice"]["payload"]["samples"] for f in flows)
        enc = sum(f["sluice"]["payload"].get("encrypted_bytes", 0) for f in flows)
        assert enc >= 0.95 * payload, (k, [f["sluice"]["payload"] for f in flows])
    # In proportion to the bytes: FIRST socket-start samples (their 8
    # packets carry at most 512 KiB), then one per B bytes on average: the
    # distance to the next point is drawn uniform in [B/2, 3B/2), so n
    # points vary by sqrt(n/12) (bounds at 4 of those). Before, a sample per
    # 64 packets left 8 or 9 samples for 1 and 2.5 MiB alike.
    for k in ("1 MiB", "2.5 MiB"):
        n_lo, n_hi = (sizes[k] - FIRST * 65536) / B, sizes[k] / B
        lo = FIRST + n_lo - 4 * math.sqrt(n_lo / 12) - 1
        hi = FIRST + n_hi + 4 * math.sqrt(n_hi / 12) + 2
        assert lo <= samples[k] <= hi, (k, samples, lo, hi)
    n_diff = (sizes["2.5 MiB"] - sizes["1 MiB"]) / B
    assert samples["2.5 MiB"] - samples["1 MiB"] >= n_diff - 4 * math.sqrt(2 * sizes["2.5 MiB"] / B / 12) - 2, samples
    # 24 MiB: bounded by the cap in each window it spans, not by its bytes
    assert samples["24 MiB"] < FIRST + sizes["24 MiB"] // B, samples


def test_cleartext_prefix_on_every_write_hides_no_ciphertext(sampling_sensor: SensorProc) -> None:
    """(b) Every 16 KiB write starts with 125 bytes of cleartext, then
    ciphertext (random bytes); paced so that each write leaves as its own
    packet, which starts with the prefix. A sample of the first 64 bytes saw
    text in every packet (before: counted plain); the second read inside the
    packet sees the ciphertext."""
    s = sampling_sensor
    assert len(PREFIX) > 100
    total = 4 << 20
    port = _send(total, lambda n: PREFIX + os.urandom(n - len(PREFIX)), 16384, pause=0.0005)
    pay = [f["sluice"]["payload"] for f in _wait_flows(s, port, total)]
    payload = sum(p["bytes"] for p in pay)
    enc = sum(p.get("encrypted_bytes", 0) for p in pay)
    # 125 of every 16,384 bytes are cleartext: over 99 % is ciphertext
    assert enc >= 0.9 * payload, pay
    assert all(p["samples"] <= CAP + FIRST for p in pay), pay


class MultiSink:
    """A loopback TCP server that accepts any number of connections and
    drops what they send."""

    def __init__(self) -> None:
        self.srv = socket.socket()
        self.srv.bind(("127.0.0.1", 0))
        self.srv.listen(64)
        self.srv.settimeout(0.2)
        self.port = int(self.srv.getsockname()[1])
        self.stop = threading.Event()
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def _drain(self, c: socket.socket) -> None:
        with c:
            while c.recv(1 << 20):
                pass

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                c, _ = self.srv.accept()
            except TimeoutError:
                continue
            threading.Thread(target=self._drain, args=(c,), daemon=True).start()

    def close(self) -> None:
        self.stop.set()
        self.t.join(5)
        self.srv.close()


def _upload_beside(port: int, total: int, decoys: list[Callable[[], None]], stop: threading.Event) -> None:
    """Random bytes, 64 KiB every 0.1 s, on one connection, while the
    decoys run in threads of their own (started 0.5 s before; `stop` ends
    them after)."""
    threads = [threading.Thread(target=d, daemon=True) for d in decoys]
    for t in threads:
        t.start()
    try:
        time.sleep(0.5)
        with socket.create_connection(("127.0.0.1", port)) as c:
            sent = 0
            while sent < total:
                c.sendall(os.urandom(65536))
                sent += 65536
                time.sleep(0.1)
    finally:
        stop.set()
        for t in threads:
            t.join(5)


def test_decoy_connections_do_not_use_up_an_uploads_samples(sampling_sensor: SensorProc) -> None:
    """Decoy connections to the upload's destination, back to back from
    three threads, each sending 8 small plaintext packets (a socket's first
    packets are always sampled): they fill a flow's 32 samples within the
    first milliseconds of every window, before the slow upload beside them
    reaches its first sample point, and the window's ciphertext was judged
    by the decoys alone (before: the sockets' first packets counted toward
    the cap; this test failed then). The upload keeps its paced samples."""
    s = sampling_sensor
    sink = MultiSink()
    stop = threading.Event()

    def decoys() -> None:
        while not stop.is_set():
            with socket.create_connection(("127.0.0.1", sink.port)) as d:
                d.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                for i in range(FIRST):
                    d.sendall(b"status line %d: all good here\n" % i)

    total = 4 << 20
    _upload_beside(sink.port, total, [decoys] * 3, stop)
    flows = _wait_flows(s, sink.port, total)
    sink.close()
    pay = [f["sluice"]["payload"] for f in flows]
    enc = sum(p.get("encrypted_bytes", 0) for p in pay)
    # measured: 0.999 of the upload counted encrypted, every window with a
    # quarter MiB of it at 0.95 or more; with the sockets' first packets
    # charged to the cap, 0.86 overall and windows at 0.62 and 0.74
    assert enc >= 0.95 * total, (enc, total, pay)
    for p in pay:
        if p["bytes"] >= 256 << 10:
            assert p.get("encrypted_bytes", 0) >= 0.85 * p["bytes"], pay


def test_a_decoy_of_many_tiny_packets_does_not_hide_an_upload(sampling_sensor: SensorProc) -> None:
    """One decoy connection to the upload's destination sends tiny
    plaintext packets as fast as it can: its packet-paced sample points
    (one per ~64 packets) fill the flow's 32 capped samples within
    milliseconds of every window, and the upload's own points were refused
    for the rest of it; the window's bytes were judged by the decoy's
    samples (measured: 0.39 of the upload counted encrypted). A socket
    whose points were refused until it had sent 4 x sample_every_bytes
    unsampled now gets a sample past the cap that stands for all of them,
    so each socket's bytes are judged by its own payload."""
    s = sampling_sensor
    sink = MultiSink()
    stop = threading.Event()
    decoy_sent = [0]

    def decoy() -> None:
        with socket.create_connection(("127.0.0.1", sink.port)) as d:
            d.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            while not stop.is_set():
                decoy_sent[0] += d.send(b"status: all good\n")

    total = 4 << 20
    _upload_beside(sink.port, total, [decoy], stop)
    flows = _wait_flows(s, sink.port, total + decoy_sent[0])
    sink.close()
    pay = [f["sluice"]["payload"] for f in flows]
    enc = sum(p.get("encrypted_bytes", 0) for p in pay)
    samples = sum(p["samples"] for p in pay)
    print(
        f"tiny-packet decoy: {enc / total:.3f} of the upload counted encrypted, decoy {decoy_sent[0]} B, {samples} samples"
    )
    # measured 0.89-1.08 (0.39 before); what is missing is mostly the
    # upload's last bytes after its last sample (under 4B: 12.5 % here),
    # which no later sample of the closed socket stands for
    assert enc >= 0.75 * total, (enc, total, decoy_sent[0], samples, pay)
    # and the decoy's cleartext is not counted as ciphertext either (all of
    # it would be 1.7x the upload and more; measured 0.89-1.08: bytes left
    # unsampled at a window's end are judged by the flow's samples)
    assert decoy_sent[0] > total // 2, decoy_sent
    assert enc <= 1.25 * total, (enc, total, decoy_sent[0], pay)
