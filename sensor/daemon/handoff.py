"""Control requests handed from the control-socket thread to the main loop,
which owns the pipeline, the kernel maps and containment: calls are queued
here and run by the loop between polls; status requests wait for the loop's
next snapshot. Also the ring of recent alerts that `alerts` requests read.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from sensor.response.containment import ContainmentError

Answer = dict[str, Any]


class Handoff:
    def __init__(self, alert_ring: int) -> None:
        self._lock = threading.Lock()
        self.loop_beat = time.monotonic()  # the main loop's last turn
        # recent alerts for `alerts` requests (sluice emulate, tooling)
        self._alerts: deque[tuple[int, dict[str, Any]]] = deque(maxlen=alert_ring)
        self._alert_seq = 0
        self._snapshot_waiters: list[threading.Event] = []
        # control requests that touch the loop's state, run by the loop
        self._calls: list[tuple[Callable[[], Answer], threading.Event, list[Answer]]] = []

    # --- any thread ------------------------------------------------------------

    def record_alert(self, doc: dict[str, Any]) -> None:
        with self._lock:
            self._alert_seq += 1
            self._alerts.append((self._alert_seq, doc))

    def alerts_since(self, since: int) -> Answer:
        with self._lock:
            items = [(n, d) for n, d in self._alerts if n > since]
            last = self._alert_seq
        return {"ok": True, "last": last, "alerts": [d for _n, d in items]}

    def call(self, fn: Callable[[], Answer], timeout: float) -> Answer:
        """Run fn on the main loop and return its answer. A call the loop
        has not started within the timeout is withdrawn: it never runs."""
        ev, out = threading.Event(), list[Answer]()
        call = (fn, ev, out)
        with self._lock:
            self._calls.append(call)
        if not ev.wait(timeout):
            with self._lock:
                if call in self._calls:  # not started: it never will be
                    self._calls.remove(call)
                    return {"ok": False, "error": f"the sensor did not answer in {timeout:.0f} s; nothing was done"}
            if not ev.wait(timeout):  # started just now: wait for its answer, the truth
                return {"ok": False, "error": f"the request started but had not finished after {2 * timeout:.0f} s"}
        return out[0]

    def wait_for_snapshot(self, timeout: float) -> bool:
        """Wait for the loop's next snapshot; False: the loop did not turn."""
        ev = threading.Event()
        with self._lock:
            self._snapshot_waiters.append(ev)
        return ev.wait(timeout)

    # --- the main loop -----------------------------------------------------------

    def serve(self, publish_snapshot: Callable[[], None]) -> None:
        """Run the queued calls; publish a snapshot if someone waits for one."""
        self.loop_beat = time.monotonic()
        with self._lock:
            calls, self._calls = self._calls, []
        for fn, ev, out in calls:
            try:
                out.append(fn())
            except ContainmentError as e:
                out.append({"ok": False, "error": str(e)})
            except Exception as e:  # an answer, never a dead control socket
                out.append({"ok": False, "error": f"{type(e).__name__}: {e}"})
            ev.set()
        with self._lock:
            waiters, self._snapshot_waiters = self._snapshot_waiters, []
        if waiters:
            publish_snapshot()
            for ev in waiters:
                ev.set()
