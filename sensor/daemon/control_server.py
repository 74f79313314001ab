"""The sensor's control socket: `sluice status` and `sluice top` ask here.

A unix stream socket, mode 0600. Only root peers are answered
(SO_PEERCRED), whatever the file mode says. Each client is served by its own
thread with one overall deadline for its request and one for its answer, so
a slow or hostile client never delays another (`sluice status` is the
DaemonSet's liveness probe); at most MAX_CLIENTS are served at once, the
next ones are told the sensor is busy. Requests are read within the limits
of sensor.daemon.wire.
"""

from __future__ import annotations

import os
import socket
import struct
import threading
import time
from collections.abc import Callable
from typing import Any

from sensor.daemon import wire

Handler = Callable[[dict[str, Any]], dict[str, Any]]

MAX_CLIENTS = 16
REQUEST_DEADLINE_S = 2.0  # to read a request, from accept
ANSWER_DEADLINE_S = 5.0  # to write the answer


class ControlServer:
    def __init__(self, path: str, handler: Handler) -> None:
        self.path = path
        self.handler = handler
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._slots = threading.BoundedSemaphore(MAX_CLIENTS)
        self._lock = threading.Lock()
        self.requests = 0
        self.clients_timed_out = 0
        self.clients_refused_busy = 0
        self.bad_requests = 0

    def start(self) -> None:
        os.makedirs(os.path.dirname(self.path), mode=0o755, exist_ok=True)
        if os.path.exists(self.path):
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                probe.connect(self.path)
            except OSError:
                os.unlink(self.path)  # stale socket of a sensor that died
            else:
                probe.close()
                from sensor.errors import SluiceError

                raise SluiceError(
                    f"another sensor is serving {self.path}",
                    hint="stop it first, or set sensor.control_socket to another path",
                )
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            s.bind(self.path)
        finally:
            os.umask(old)
        os.chmod(self.path, 0o600)
        s.listen(8)
        s.settimeout(0.2)
        self._sock = s
        self._thread = threading.Thread(target=self._serve, name="sluice-control", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        assert self._sock is not None
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if not self._slots.acquire(blocking=False):
                self._busy(conn)
                continue
            try:
                threading.Thread(target=self._client, args=(conn,), name="sluice-control-client", daemon=True).start()
            except RuntimeError:  # no thread to be had: answer nothing rather than die
                self._slots.release()
                conn.close()

    def _busy(self, conn: socket.socket) -> None:
        with self._lock:
            self.clients_refused_busy += 1
        with conn:
            try:
                wire.send(conn, {"ok": False, "error": "busy: too many control clients"}, time.monotonic() + 0.2)
            except (OSError, wire.WireError):
                pass

    def _client(self, conn: socket.socket) -> None:
        try:
            with conn:
                self._serve_one(conn)
        finally:
            self._slots.release()

    def _serve_one(self, conn: socket.socket) -> None:
        deadline = time.monotonic() + REQUEST_DEADLINE_S
        try:
            cred = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
            _pid, uid, _gid = struct.unpack("3i", cred)
            if uid != 0:
                wire.send(conn, {"ok": False, "error": "permission denied: root only"}, deadline)
                return
            req = wire.recv_request(conn, deadline)
        except wire.WireError as e:
            with self._lock:
                if "deadline" in str(e):
                    self.clients_timed_out += 1
                else:
                    self.bad_requests += 1
            if "deadline" not in str(e) and "closed" not in str(e):
                self._answer(conn, {"ok": False, "error": str(e)})
            return
        except OSError:
            return
        with self._lock:
            self.requests += 1
        try:
            resp = self.handler(req if isinstance(req, dict) else {})
        except Exception as e:  # a bug must not kill the server
            resp = {"ok": False, "error": f"internal error: {e}"}
        self._answer(conn, resp)

    @staticmethod
    def _answer(conn: socket.socket, resp: dict[str, Any]) -> None:
        try:
            wire.send(conn, resp, time.monotonic() + ANSWER_DEADLINE_S)
        except (OSError, wire.WireError):
            pass

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {
                "requests": self.requests,
                "clients_timed_out": self.clients_timed_out,
                "clients_refused_busy": self.clients_refused_busy,
                "bad_requests": self.bad_requests,
            }

    def stop(self) -> None:
        self._stop.set()
        if self._sock is not None:
            self._sock.close()
        if self._thread is not None:
            self._thread.join(timeout=2)
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
