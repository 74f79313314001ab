#!/usr/bin/env python3
"""Alert latency: from the end of the window in which the activity
completed to the alert line being readable in the output file.

The activity: a raw encrypted-looking TCP stream from the host to a fresh
loopback port (rule SL-EXF-002; every port is a new suppression key), at
random moments. The alert's @timestamp is the end of its window; the bench
tails the file and notes when each alert line arrives. Usage (root):
    .venv/bin/python bench/bench_latency.py [--alerts 15] [--window 5]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import statistics
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Sensor


def stream_once() -> None:
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    c = socket.create_connection(srv.getsockname())
    conn, _ = srv.accept()
    c.sendall(os.urandom(150_000))
    c.close()
    while conn.recv(1 << 16):
        pass
    conn.close()
    srv.close()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--alerts", type=int, default=15)
    ap.add_argument("--window", type=float, default=5.0)
    a = ap.parse_args()
    if os.geteuid() != 0:
        print("bench_latency: run as root", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="sluice-lat-"))
    arrivals: list[tuple[float, dict[str, Any]]] = []
    stop = threading.Event()

    def tail(path: Path) -> None:
        while not path.exists():
            time.sleep(0.01)
        with open(path) as f:
            buf = ""
            while not stop.is_set():
                chunk = f.read()
                if not chunk:
                    time.sleep(0.005)
                    continue
                now = time.time()
                buf += chunk
                *lines, buf = buf.split("\n")
                for line in lines:
                    d = json.loads(line)
                    if d["event"]["kind"] == "alert":
                        arrivals.append((now, d))

    with Sensor(work, f"window_seconds = {a.window}\n") as s:
        t = threading.Thread(target=tail, args=(s.out,), daemon=True)
        t.start()
        for _ in range(a.alerts):
            time.sleep(random.uniform(0.5, a.window))
            stream_once()
        time.sleep(a.window + 3)
        stop.set()
    lat = []
    for now, d in arrivals:
        if d["rule"]["id"] != "SL-EXF-002":
            continue
        end = datetime.strptime(d["@timestamp"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()
        lat.append(now - end)
    lat.sort()
    p95 = lat[max(0, int(round(0.95 * len(lat))) - 1)] if lat else None
    print(
        json.dumps(
            {
                "window_seconds": a.window,
                "alerts": len(lat),
                "latency_after_window_s": {
                    "median": round(statistics.median(lat), 3) if lat else None,
                    "p95": round(p95, 3) if p95 is not None else None,
                    "max": round(lat[-1], 3) if lat else None,
                },
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
