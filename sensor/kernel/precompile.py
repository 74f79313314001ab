"""The BPF compile, started before the CLI has loaded.

bcc's compile of the sensor's programs is most of `sluice run`'s start
(~2.3 s of ~3.4 s on the reference machine: bench/bench_startup.py) and
holds no GIL while it runs. So `sluice run` starts it as its first step
(control/entry.py), in a thread, from the [kernel] table of the config
file it was given, while the main thread imports the CLI, the detection
rules and the pipeline and sets up everything else.

BccSource.start takes the result only when its own plan (the same units,
source text and compiler flags) matches; otherwise the early object is
closed and the loader compiles as before. A wrong guess costs time, never
correctness. Anything that goes wrong early (not root, a bad config, a
missing kernel feature, a compile error) is dropped here and met again,
and reported, by the main path.
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
from typing import Any

Plan = tuple[str, tuple[str, ...]]  # source text, compiler flags

_lock = threading.Lock()
_compiling = threading.Event()  # set when the compile itself begins, or the early work ends
_thread: threading.Thread | None = None
_result: tuple[Plan, Any, float] | None = None  # plan, bcc.BPF, compile seconds
_abandoned = False  # take() gave up waiting: a result that comes later is closed
# How long take() waits for the early compile (~2-3 s on the reference
# machine); past it the loader compiles on its own and says why.
TAKE_TIMEOUT_S = 120.0


def begin(config_path: str | None, wait_seconds: float = 2.0) -> None:
    """Start compiling for the config at config_path (None: the embedded
    defaults), and return once the compile itself has begun. Only as root:
    anyone else is refused by the main path.

    The wait matters: the early work (its imports, the probe) is Python and
    holds the GIL, so the main thread's imports at the same time only slow
    both down (measured: the compile began 0.5 s after the process instead
    of 0.25 s). From bcc's compile on, the GIL is free for them."""
    global _thread
    if os.geteuid() != 0:
        return
    with _lock:
        if _thread is not None:
            return
        _thread = threading.Thread(target=_work, args=(config_path,), name="sluice-precompile", daemon=True)
        _thread.start()
    atexit.register(_join_at_exit)
    _compiling.wait(wait_seconds)


def _join_at_exit() -> None:
    """A `sluice run` that exits before the loader took the result (a bad
    config, a usage error, Ctrl-C): wait for a compile still running, so
    that LLVM is not inside its work while the interpreter tears down (bcc
    closes the object itself at exit)."""
    with _lock:
        thread = _thread
    if thread is not None:
        thread.join(30)


def _work(config_path: str | None) -> None:
    try:
        # the imports the compile needs, and no more: the rule catalog and
        # the pipeline are the main thread's to import meanwhile
        from sensor.config import load_kernel_section
        from sensor.kernel.hooks import wanted_units
        from sensor.kernel.loader import BccSource
        from sensor.kernel.probe import probe, require_runnable

        kcfg = load_kernel_section(config_path)
        report = probe(kcfg.mount_tracefs, wanted_units(kcfg.exec_args))
        require_runnable(report)
        src = BccSource(kcfg, report)
        plan = src.plan()
        _compiling.set()
        src.compile(plan)
        _deliver(plan, src.b, src.compile_seconds)
    except Exception:  # the main path meets it again and reports it
        return
    finally:
        _compiling.set()


def _deliver(plan: Plan, b: Any, seconds: float) -> None:
    """Hand the compiled object to take(), or close it when take() has
    given up on it (the loader compiled on its own)."""
    global _result
    with _lock:
        if not _abandoned:
            _result = (plan, b, seconds)
            return
    b.cleanup()


def take(plan: Plan, timeout: float = TAKE_TIMEOUT_S) -> tuple[Any, float] | None:
    """The early compile's bcc.BPF object and its compile seconds, when it
    compiled this plan; None when there was none, it failed, or it compiled
    something else (then it is closed: its tracepoints detached, its maps
    freed). Waits for a compile still running, up to `timeout` seconds;
    past that the compile is abandoned (closed when it ends) and None is
    returned, with a warning."""
    global _thread, _result, _abandoned
    with _lock:
        thread = _thread
    if thread is None:
        return None
    thread.join(timeout)
    with _lock:
        if thread.is_alive():
            _abandoned = True
            _thread = None
            print(
                f"sluice: warning: the early BPF compile did not finish in {timeout:.0f} s; compiling again",
                file=sys.stderr,
            )
            return None
        got, _result, _thread = _result, None, None
    if got is None:
        return None
    early_plan, b, seconds = got
    if early_plan != plan:
        b.cleanup()
        return None
    return b, seconds
