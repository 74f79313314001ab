"""The sensor's own memory comes from psutil, under the /proc/self/status
names that status and bench/bench_memory.py use."""

from __future__ import annotations

from pathlib import Path

from sensor.kernel.memory import HeapTrimmer, resident_kb


def test_resident_memory_matches_proc_status() -> None:
    mine = resident_kb()
    status = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        k, _, v = line.partition(":")
        if k in ("VmRSS", "RssAnon", "RssFile", "RssShmem"):
            status[k] = int(v.split()[0])
    assert set(mine) == {"VmRSS", "RssAnon", "RssFile"}
    # the two reads are a moment apart: allow a little drift
    assert abs(mine["VmRSS"] - status["VmRSS"]) <= max(2048, status["VmRSS"] // 20)
    assert abs(mine["RssFile"] - (status["RssFile"] + status["RssShmem"])) <= 2048
    assert abs(mine["RssAnon"] + mine["RssFile"] - mine["VmRSS"]) <= 1  # kB rounding


class _Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_heap_trimmer_trims_when_due_and_worth_it() -> None:
    clock, free, rss, calls = _Clock(), [0], [50_000], []

    def trim() -> int:
        calls.append(clock.t)
        rss[0] -= 3000
        return 1

    t = HeapTrimmer(
        every_s=30, min_free_bytes=4 << 20, funcs=(lambda: free[0], trim), rss_kb=lambda: rss[0], clock=clock
    )
    free[0] = 64 << 20
    assert not t.maybe_trim()  # not due yet: the first one comes every_s after start
    clock.t += 30
    assert t.maybe_trim() and calls == [1030.0]
    clock.t += 10
    assert not t.maybe_trim()  # at most one per every_s
    clock.t += 20
    free[0] = 1 << 20  # due, but too little free to be worth a trim
    assert not t.maybe_trim() and len(calls) == 1
    clock.t += 30
    free[0] = 8 << 20
    assert t.maybe_trim() and len(calls) == 2
    assert t.stats() == {"heap_trims": 2, "heap_trim_released_kb": 6000, "heap_trim": True}


def test_heap_trimmer_without_glibc_does_nothing() -> None:
    t = HeapTrimmer(every_s=0)
    t._funcs = None  # what _glibc() returns on musl
    assert not t.maybe_trim() and not t.available and t.stats()["heap_trims"] == 0


def test_heap_trimmer_calls_glibc_here() -> None:
    """On this glibc host the real functions are found and a trim runs."""
    t = HeapTrimmer(every_s=0, min_free_bytes=0)
    assert t.available and t.maybe_trim() and t.trims == 1 and t.released_kb >= 0
