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
"""

from __future__ import annotations

import ctypes

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
