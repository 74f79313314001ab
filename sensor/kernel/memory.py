"""Give back what compiling the BPF programs used.

bcc compiles with clang/LLVM inside the sensor process: the compile leaves
about 40 MB of freed heap and 75 MB of touched compiler code resident, none
of which the running sensor needs. After loading:
  - malloc_trim(0) returns the freed heap to the kernel;
  - MADV_DONTNEED on the executable (r-xp) mappings of libLLVM, libclang
    and libbcc drops their pages from this process: text is file-backed and
    unmodified, so any page needed later is simply read again (what the
    kernel does under memory pressure anyway). Writable or read-only data
    mappings are left alone: RELRO pages hold relocations.
Measured here: resident set 160 MB -> 47 MB after load (bench/RESULTS.md).

While running, HeapTrimmer gives back what a burst left free in glibc's
heap (a flood's window frees tens of thousands of objects at once; glibc
keeps the pages resident until asked): at a window's close, at most every
TRIM_EVERY_S, when the arenas hold more than TRIM_MIN_FREE_BYTES free.
"""

from __future__ import annotations

import ctypes
import time
from collections.abc import Callable

import psutil

MADV_DONTNEED = 4
_LIBS = ("libLLVM", "libclang", "libbcc")


def resident_kb() -> dict[str, int]:
    """This process's resident memory in kB, under the names of
    /proc/self/status: VmRSS (all), RssFile (file-backed and shared pages,
    which here includes shmem) and RssAnon (the rest). psutil reads
    /proc/self/statm."""
    m = psutil.Process().memory_info()
    return {"VmRSS": m.rss // 1024, "RssAnon": (m.rss - m.shared) // 1024, "RssFile": m.shared // 1024}


# A trim walks the arenas' free chunks (about a millisecond here for a
# 64 MB heap): not more often than this.
TRIM_EVERY_S = 30.0
# Free bytes in the arenas below which a trim is not worth it.
TRIM_MIN_FREE_BYTES = 4 << 20


class _MallInfo2(ctypes.Structure):
    # glibc >= 2.33 (struct mallinfo2, all size_t)
    _fields_ = [
        (n, ctypes.c_size_t)
        for n in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def _glibc() -> tuple[Callable[[], int], Callable[[], int]] | None:
    """(free bytes in the arenas, malloc_trim) from glibc; None elsewhere
    (musl has neither: the trimmer then does nothing)."""
    libc = ctypes.CDLL(None)
    try:
        mallinfo2 = libc.mallinfo2
        trim = libc.malloc_trim
    except AttributeError:
        return None
    mallinfo2.restype = _MallInfo2
    mallinfo2.argtypes = []
    trim.restype = ctypes.c_int
    trim.argtypes = [ctypes.c_size_t]
    return (lambda: int(mallinfo2().fordblks)), (lambda: int(trim(0)))


class HeapTrimmer:
    """Decides when to hand free heap back to the kernel, and does it.
    free_bytes, trim, rss_kb and clock are injectable (unit tests)."""

    def __init__(
        self,
        every_s: float = TRIM_EVERY_S,
        min_free_bytes: int = TRIM_MIN_FREE_BYTES,
        funcs: tuple[Callable[[], int], Callable[[], int]] | None = None,
        rss_kb: Callable[[], int] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.every_s = every_s
        self.min_free_bytes = min_free_bytes
        self._funcs = funcs if funcs is not None else _glibc()
        self._rss_kb = rss_kb or (lambda: resident_kb()["VmRSS"])
        self._clock = clock
        self._next = clock() + every_s
        self.trims = 0
        self.released_kb = 0  # resident kB given back, all trims together

    @property
    def available(self) -> bool:
        return self._funcs is not None

    def maybe_trim(self) -> bool:
        """Call at a window's close: trims when due and worth it."""
        now = self._clock()
        if self._funcs is None or now < self._next:
            return False
        self._next = now + self.every_s
        free_bytes, trim = self._funcs
        if free_bytes() < self.min_free_bytes:
            return False
        before = self._rss_kb()
        trim()
        self.trims += 1
        self.released_kb += max(0, before - self._rss_kb())
        return True

    def stats(self) -> dict[str, int | bool]:
        return {"heap_trims": self.trims, "heap_trim_released_kb": self.released_kb, "heap_trim": self.available}


def release_compiler_memory() -> int:
    """Returns the kB of resident memory given back."""
    before = resident_kb().get("VmRSS", 0)
    libc = ctypes.CDLL(None, use_errno=True)
    try:
        libc.malloc_trim(0)
    except AttributeError:  # not glibc
        pass
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    with open("/proc/self/maps") as f:
        maps = f.read().splitlines()
    for line in maps:
        parts = line.split()
        if len(parts) >= 6 and parts[1] == "r-xp" and any(lib in parts[5] for lib in _LIBS):
            start, end = (int(x, 16) for x in parts[0].split("-"))
            libc.madvise(start, end - start, MADV_DONTNEED)
    return before - resident_kb().get("VmRSS", 0)
