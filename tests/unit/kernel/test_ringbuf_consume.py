"""RingReader.consume on a ring laid out in plain memory (no BPF map): the
record walk and the per-call limit. The mmap'd reader is exercised for real
by the privileged tests and bench/bench_drain.py."""

from __future__ import annotations

import ctypes
import struct

from sensor.kernel.ringbuf import BUSY, DISCARD, HDR, MAX_RECORDS_PER_CONSUME, RingReader

SIZE = 1 << 16


class FakeRing:
    """Producer side: appends records as the kernel lays them out."""

    def __init__(self) -> None:
        self.data = bytearray(2 * SIZE)
        self.reader = RingReader.__new__(RingReader)  # no map fd, no mmap, no epoll
        self.reader.size, self.reader.mask = SIZE, SIZE - 1
        self.reader._cons = ctypes.c_uint64(0)
        self.reader._prod = ctypes.c_uint64(0)
        self.reader._mv = memoryview(self.data)
        self.reader.consumed = 0

    def push(self, payload: bytes, flags: int = 0) -> None:
        prod = self.reader._prod.value
        assert prod + HDR + len(payload) - self.reader._cons.value <= SIZE, "test ring full"
        off = prod & (SIZE - 1)
        rec = struct.pack("<II", len(payload) | flags, 0) + payload
        self.data[off : off + len(rec)] = rec  # the second mapping: no wrap in these tests
        self.reader._prod.value = prod + ((len(payload) + HDR + 7) & ~7)


def test_every_record_in_order_and_discarded_ones_skipped() -> None:
    r = FakeRing()
    for i in range(10):
        r.push(f"rec{i}".encode(), DISCARD if i == 3 else 0)
    got: list[bytes] = []
    assert r.reader.consume(got.append) == 9
    assert got == [f"rec{i}".encode() for i in range(10) if i != 3]
    assert r.reader._cons.value == r.reader._prod.value


def test_a_record_still_being_written_stops_the_walk() -> None:
    r = FakeRing()
    r.push(b"a")
    r.push(b"b", BUSY)
    r.push(b"c")
    got: list[bytes] = []
    assert r.reader.consume(got.append) == 1 and got == [b"a"]


def test_a_producer_that_keeps_up_cannot_hold_the_reader() -> None:
    """Each record handed out makes the producer add one more: without a
    limit the walk would never end (the sensor's loop would close no window
    and answer no status for as long as a flood lasts)."""
    r = FakeRing()
    for _ in range(8):
        r.push(b"x" * 8)
    calls = 0

    def sink(_b: bytes) -> None:
        nonlocal calls
        calls += 1
        if r.reader._prod.value - r.reader._cons.value < SIZE - 64:
            r.push(b"x" * 8)
        if calls > 10 * MAX_RECORDS_PER_CONSUME:
            raise AssertionError("consume did not return")

    # the fake ring has no wrap-around: keep it short of the end
    assert r.reader.consume(sink, limit=1000) == 1000
    assert r.reader._prod.value > r.reader._cons.value, "records remain for the next call"
    assert r.reader.consume(sink, limit=500) == 500
