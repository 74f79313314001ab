"""Consume a BPF ring buffer through mmap, without a callback per record.

bcc's ring buffer API calls back into Python once per record through
ctypes, which costs more than decoding the record. This reader maps the
buffer the way libbpf does and walks the records in one Python loop:

  page 0 (read-write): consumer position, advanced as records are consumed
  page 1 (read-only):  producer position
  then the data area, mapped twice in a row so that a record that wraps
  around the end can be sliced contiguously.

Each record starts with an 8-byte header: a u32 length whose bit 31 says
"still being written" (stop there) and bit 30 "discarded" (skip), and a
u32 page offset. Records are 8-byte aligned. Wake-ups come from epoll on
the map fd, as with libbpf's ring_buffer__poll.

Memory ordering: on x86-64 (TSO) plain loads observe the kernel's
release-ordered header after the record's data. Other architectures can
use bcc's reader instead (kernel.ring_buffer_reader = "bcc").
"""

from __future__ import annotations

import mmap
import select
import struct
from typing import Callable

BUSY = 1 << 31
DISCARD = 1 << 30
HDR = 8
_U64 = struct.Struct("<Q")
_U32 = struct.Struct("<I")


class RingReader:
    def __init__(self, map_fd: int, size: int) -> None:
        if size & (size - 1):
            raise ValueError("ring buffer size must be a power of two")
        page = mmap.PAGESIZE
        self.size = size
        self.mask = size - 1
        self.cons = mmap.mmap(map_fd, page, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE, offset=0)
        self.prod = mmap.mmap(map_fd, page + 2 * size, mmap.MAP_SHARED, mmap.PROT_READ, offset=page)
        self.data = memoryview(self.prod)
        self.data_off = page
        self.epoll = select.epoll()
        self.epoll.register(map_fd, select.EPOLLIN)
        self.consumed = 0

    def consume(self, sink: Callable[[bytes], None]) -> int:
        cons = _U64.unpack_from(self.cons, 0)[0]
        prod = _U64.unpack_from(self.prod, 0)[0]
        data, base, mask = self.data, self.data_off, self.mask
        n = 0
        while cons < prod:
            off = base + (cons & mask)
            head = _U32.unpack_from(data, off)[0]
            if head & BUSY:
                break
            length = head & ~(BUSY | DISCARD)
            if not head & DISCARD:
                sink(bytes(data[off + HDR:off + HDR + length]))
                n += 1
            cons += (length + HDR + 7) & ~7
            _U64.pack_into(self.cons, 0, cons)   # frees the space for the kernel at once
            if cons >= prod:
                prod = _U64.unpack_from(self.prod, 0)[0]
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
        self.data.release()
        self.prod.close()
        self.cons.close()
