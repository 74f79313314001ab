"""A container held still while containment reads and cuts what it holds.

A sweep that reads a process's descriptors and then acts on one races
that process: it can move the descriptor to another number (dup2, a decoy
at the old one) or hand it to another process between the read and the
act. Frozen by the cgroup v2 freezer (cgroup.freeze, Linux 5.2+; present
in the unified hierarchy of a hybrid mount too), its tasks run no code
until thawed, and pidfd_getfd(2) still takes a duplicate of a frozen
task's descriptor. The freeze is asked for and its completion
(cgroup.events "frozen 1") waited for up to FREEZE_WAIT_S: a task in an
uninterruptible sleep delays it, and the sweep then goes on unfrozen, with
its retries (what `frozen` yields says which).

A cgroup the runtime froze already (`docker pause`) is left frozen; one
frozen here is thawed when the sweep ends, on errors too. A sensor killed
in between leaves the container frozen (it is being isolated: that errs on
the closed side), and a marker file says so: the next start thaws it
(`thaw_leftovers`). The runtime's own unpause would refuse ("not paused"):
by hand, `echo 0 > <cgroup>/cgroup.freeze`.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager

FREEZE_WAIT_S = 0.5


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


def _write(path: str, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


def is_frozen(cgroup_dir: str) -> bool:
    """Whether the cgroup's tasks are all frozen (cgroup.events)."""
    try:
        return "frozen 1" in _read(os.path.join(cgroup_dir, "cgroup.events")).splitlines()
    except OSError:
        return False


def _marker(marker_dir: str, cgroup_dir: str) -> str:
    return os.path.join(marker_dir, hashlib.sha256(cgroup_dir.encode()).hexdigest()[:32])


def thaw_leftovers(marker_dir: str) -> list[str]:
    """Thaw the cgroups a sensor froze and did not thaw (it was killed
    mid-sweep); returns them."""
    try:
        names = os.listdir(marker_dir)
    except OSError:
        return []
    out = []
    for name in names:
        m = os.path.join(marker_dir, name)
        try:
            cgroup_dir = _read(m).strip()
            if cgroup_dir.startswith("/") and os.path.isfile(os.path.join(cgroup_dir, "cgroup.freeze")):
                _write(os.path.join(cgroup_dir, "cgroup.freeze"), "0")
                out.append(cgroup_dir)
            os.unlink(m)
        except OSError:
            continue
    return out


@contextmanager
def frozen(cgroup_dir: str | None, wait_s: float = FREEZE_WAIT_S, marker_dir: str | None = None) -> Iterator[str]:
    """Freeze a cgroup (and its sub-cgroups) for the body of the `with`.
    Yields "" when its tasks are frozen, else why not (no cgroup.freeze:
    a v1-only host or a gone cgroup; or the freeze did not complete in
    wait_s). With marker_dir, a marker file names the cgroup while it is
    frozen here."""
    if not cgroup_dir:
        yield "its cgroup is not known"
        return
    path = os.path.join(cgroup_dir, "cgroup.freeze")
    marker = _marker(marker_dir, cgroup_dir) if marker_dir else None
    try:
        already = _read(path).strip() == "1"
        if not already:
            if marker:
                os.makedirs(os.path.dirname(marker), mode=0o700, exist_ok=True)
                _write(marker, cgroup_dir)
            _write(path, "1")
    except OSError as err:
        yield f"its cgroup could not be frozen ({err.strerror or err})"
        return
    try:
        deadline = time.monotonic() + wait_s
        while not is_frozen(cgroup_dir) and time.monotonic() < deadline:
            time.sleep(0.002)
        yield "" if is_frozen(cgroup_dir) else f"its cgroup did not freeze within {wait_s} s"
    finally:
        if not already:
            try:
                _write(path, "0")
            except OSError:
                pass  # (gone meanwhile)
            if marker:
                try:
                    os.unlink(marker)
                except OSError:
                    pass
