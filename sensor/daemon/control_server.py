"""The sensor's control socket: `sluice status` and `sluice top` ask here.

A unix stream socket, mode 0600, served from a background thread. Only root
peers are answered (SO_PEERCRED), whatever the file mode says.
"""

from __future__ import annotations

import os
import socket
import struct
import threading
from collections.abc import Callable
from typing import Any

from sensor.daemon import wire

Handler = Callable[[dict[str, Any]], dict[str, Any]]


class ControlServer:
    def __init__(self, path: str, handler: Handler) -> None:
        self.path = path
        self.handler = handler
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.requests = 0

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
            with conn:
                conn.settimeout(2.0)
                try:
                    cred = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
                    _pid, uid, _gid = struct.unpack("3i", cred)
                    if uid != 0:
                        wire.send(conn, {"ok": False, "error": "permission denied: root only"})
                        continue
                    req = wire.recv(conn)
                    self.requests += 1
                    try:
                        resp = self.handler(req if isinstance(req, dict) else {})
                    except Exception as e:  # a bug must not kill the server
                        resp = {"ok": False, "error": f"internal error: {e}"}
                    wire.send(conn, resp)
                except (OSError, wire.WireError, ValueError):
                    continue

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
