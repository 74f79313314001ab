"""Consume a BPF ring buffer through mmap, without a callback per record.

bcc's ring buffer API calls back into Python once per record through
ctypes, which costs more than decoding the record. This reader maps the
buffer the way libbpf does and walks the records in one Python loop:

  page 0 (read-write): consumer position, advanced as records are consumed
  page 1 (read-only):  producer position
  then the data area, mapped twice in a row so that a record that wraps
  around the end can be read contiguously.

Each record starts with an 8-byte header: a u32 length whose bit 31 says
"still being written" (stop there) and bit 30 "discarded" (skip), and a
u32 page offset. Records are 8-byte aligned. Wake-ups come from epoll on
the map fd, as with libbpf's ring_buffer__poll.

The regions are mapped with libc's mmap so that the positions can be read
and written as single aligned 8-byte accesses (c_uint64 at the address).
Writing the consumer position with struct.pack_into and an explicit byte
order packs it byte by byte: the kernel then saw half-written positions,
judged the buffer full and refused reservations (~7 lost records a second
at 20,000/s, found by bench/bench_drain.py).

Memory ordering: on x86-64 (TSO) plain loads observe the kernel's
release-ordered header after the record's data. Other architectures can
use bcc's reader instead (kernel.ring_buffer_reader = "bcc").
"""

from __future__ import annotations

import ctypes
import mmap
import os
import select
import struct
from collections.abc import Callable

BUSY = 1 << 31
DISCARD = 1 << 30
HDR = 8
# ~0.1-0.2 s of decoding and pipeline work (bench_drain: 110k-150k records
# per sensor CPU second); poll() returns at once while records remain
MAX_RECORDS_PER_CONSUME = 16384
_U32 = struct.Struct("<I").unpack_from

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_MAP_FAILED = ctypes.c_void_p(-1).value


def _map(fd: int, length: int, prot: int, offset: int) -> int:
    addr = _libc.mmap(None, length, prot, mmap.MAP_SHARED, fd, offset)
    if addr in (None, _MAP_FAILED):
        e = ctypes.get_errno()
        raise OSError(e, f"mmap of the ring buffer: {os.strerror(e)}")
    return int(addr)


class RingReader:
    def __init__(self, map_fd: int, size: int) -> None:
        if size & (size - 1):
            raise ValueError("ring buffer size must be a power of two")
        page = mmap.PAGESIZE
        self.size, self.mask, self.page = size, size - 1, page
        self._cons_addr = _map(map_fd, page, mmap.PROT_READ | mmap.PROT_WRITE, 0)
        self._prod_len = page + 2 * size
        self._prod_addr = _map(map_fd, self._prod_len, mmap.PROT_READ, page)
        self._cons = ctypes.c_uint64.from_address(self._cons_addr)
        self._prod = ctypes.c_uint64.from_address(self._prod_addr)
        # the data area (mapped twice in a row) as one memoryview: a record
        # that wraps is contiguous in it; reads are plain loads, no ctypes call
        self._mv = memoryview((ctypes.c_char * (2 * size)).from_address(self._prod_addr + page)).cast("B")
        self.epoll = select.epoll()
        self.epoll.register(map_fd, select.EPOLLIN)
        self.consumed = 0

    def consume(self, sink: Callable[[bytes], None], limit: int = MAX_RECORDS_PER_CONSUME) -> int:
        """Hand the records in the buffer to sink, at most `limit` of them
        (discarded ones count): producers that keep up with the reader would
        otherwise keep it here, and the sensor's loop, which closes windows
        and answers status between calls, would stall for the flood."""
        cons, prod = self._cons.value, self._prod.value
        mv, mask, head_of = self._mv, self.mask, _U32
        n = seen = 0
        while cons < prod and seen < limit:
            seen += 1
            off = cons & mask
            head = head_of(mv, off)[0]
            if head & BUSY:
                break
            length = head & ~(BUSY | DISCARD)
            if not head & DISCARD:
                sink(mv[off + HDR : off + HDR + length].tobytes())
                n += 1
            cons += (length + HDR + 7) & ~7
            self._cons.value = cons  # one 8-byte store: frees the space at once
            if cons >= prod:
                prod = self._prod.value
        self.consumed += n
        return n

    def poll(self, timeout_ms: int, sink: Callable[[bytes], None]) -> int:
        n = self.consume(sink)
        if n:
            return n
        self.epoll.poll(timeout_ms / 1000.0)
        return self.consume(sink)

    def close(self) -> None:
        self.epoll.close()
        self._mv.release()
        _libc.munmap(ctypes.c_void_p(self._prod_addr), self._prod_len)
        _libc.munmap(ctypes.c_void_p(self._cons_addr), self.page)
