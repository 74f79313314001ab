#!/usr/bin/env python3
"""Startup: from `sluice run` (default config) to its control socket
answering, the sensor's own setup time (`startup_seconds`), and bcc's
compile of the assembled BPF source on its own. Optionally alternates with
another checkout (`--other PATH`, started with PYTHONPATH=PATH from the same
venv) so that both trees meet the same machine state.

Usage (root): .venv/bin/python bench/bench_startup.py [--rounds N] [--other PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import SLUICE, Sensor

ROOT = Path(__file__).resolve().parent.parent


def compile_seconds() -> float:
    """bcc's compile (and load of the tracepoint programs) of every unit the
    default config loads, in this process, as the loader assembles it."""
    from bcc import BPF  # root-only import, after argument parsing

    from sensor.config import default_config
    from sensor.kernel.hooks import UNITS, assemble_source, bpf_dir
    from sensor.kernel.loader import cflags

    root = bpf_dir()
    text = assemble_source(root, [u.source for u in UNITS])
    t = time.monotonic()
    b = BPF(text=text.encode(), cflags=cflags(default_config().kernel, True, root))
    dt = time.monotonic() - t
    b.cleanup()
    return dt


def one_start(tree: Path | None) -> tuple[float, float]:
    env_before = os.environ.get("PYTHONPATH")
    command: tuple[str, ...] = (SLUICE,)
    if tree is not None:
        os.environ["PYTHONPATH"] = str(tree)
        # the other tree's own entry point, whatever the venv's script names
        entry = "control.entry" if (tree / "control" / "entry.py").exists() else "control.cli"
        command = (sys.executable, "-P", "-c", f"import sys; sys.argv[0] = 'sluice'; from {entry} import main; main()")
    try:
        with tempfile.TemporaryDirectory() as d, Sensor(Path(d), command=command) as s:
            return s.ready_s, float(s.status()["startup_seconds"])
    finally:
        if tree is not None:
            if env_before is None:
                del os.environ["PYTHONPATH"]
            else:
                os.environ["PYTHONPATH"] = env_before


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--other", type=Path, help="another checkout to alternate with")
    args = ap.parse_args()
    trees: list[tuple[str, Path | None]] = [("this", None)]
    if args.other:
        trees.append((str(args.other), args.other.resolve()))
    res: dict[str, dict[str, list[float]]] = {n: {"ready_s": [], "setup_s": []} for n, _ in trees}
    compiles = []
    for _ in range(args.rounds):
        for name, tree in trees:
            ready, setup = one_start(tree)
            res[name]["ready_s"].append(ready)
            res[name]["setup_s"].append(setup)
        compiles.append(compile_seconds())
    out: dict[str, object] = {
        name: {
            "ready_s_median": round(statistics.median(r["ready_s"]), 2),
            "ready_s_range": [round(min(r["ready_s"]), 2), round(max(r["ready_s"]), 2)],
            "setup_s_median": round(statistics.median(r["setup_s"]), 2),
            "before_setup_s_median": round(
                statistics.median(a - b for a, b in zip(r["ready_s"], r["setup_s"], strict=True)), 2
            ),
        }
        for name, r in res.items()
    }
    out["bpf_compile_s_median (this tree)"] = round(statistics.median(compiles), 2)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
