"""The sensor's own memory comes from psutil, under the /proc/self/status
names that status and bench/bench_memory.py use."""

from __future__ import annotations

from pathlib import Path

from sensor.kernel.memory import resident_kb


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
