"""Control-socket framing: a 4-byte big-endian length, then msgpack.

Shared by the sensor's server (sensor/daemon/control_server.py) and the CLI
client (control/client.py).

Limits are sized to what really travels. A request is a command and a few
short strings (container reference, destination, reason): the server reads
at most MAX_REQUEST bytes and unpacks them with msgpack's own limits on map,
array, string and binary lengths, so a frame of empty maps cannot make the
sensor allocate gigabytes (msgpack's defaults scale with the frame size). An
answer (status, the recent alerts) can be larger and comes from the sensor
itself: the client accepts up to MAX_FRAME. Every read has an overall
deadline, not a per-recv timeout: a peer trickling a byte a second is cut
off when its time is up.
"""

from __future__ import annotations

import socket
import struct
import time
from typing import Any

import msgpack

MAX_FRAME = 16 * 1024 * 1024  # answers, read by the client
MAX_REQUEST = 64 * 1024  # requests, read by the sensor
# msgpack limits for a request: its largest real member is a reason string
REQUEST_LIMITS = {
    "max_str_len": 16 * 1024,
    "max_bin_len": 16 * 1024,
    "max_array_len": 64,
    "max_map_len": 32,
    "max_ext_len": 0,
}


class WireError(Exception):
    pass


def send(sock: socket.socket, obj: Any, deadline: float | None = None) -> None:
    body = msgpack.packb(obj, use_bin_type=True)
    if deadline is not None:
        _arm(sock, deadline)
    sock.sendall(struct.pack("!I", len(body)) + body)


def _arm(sock: socket.socket, deadline: float) -> None:
    left = deadline - time.monotonic()
    if left <= 0:
        raise WireError("deadline passed")
    sock.settimeout(left)


def _recv_exact(sock: socket.socket, n: int, deadline: float | None = None) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        if deadline is not None:
            _arm(sock, deadline)
        try:
            chunk = sock.recv(min(n - len(buf), 1 << 20))
        except TimeoutError:
            raise WireError("deadline passed" if deadline is not None else "timed out") from None
        if not chunk:
            raise WireError("connection closed mid-frame" if buf else "connection closed")
        buf += chunk
    return bytes(buf)


def recv(sock: socket.socket, max_frame: int = MAX_FRAME, deadline: float | None = None) -> Any:
    (n,) = struct.unpack("!I", _recv_exact(sock, 4, deadline))
    if n > max_frame:
        raise WireError(f"frame of {n} bytes exceeds {max_frame}")
    return msgpack.unpackb(_recv_exact(sock, n, deadline), raw=False)


def recv_request(sock: socket.socket, deadline: float) -> Any:
    """One request, within the deadline and the request limits."""
    (n,) = struct.unpack("!I", _recv_exact(sock, 4, deadline))
    if n > MAX_REQUEST:
        raise WireError(f"request of {n} bytes exceeds {MAX_REQUEST}")
    body = _recv_exact(sock, n, deadline)
    try:
        return msgpack.unpackb(body, raw=False, strict_map_key=True, **REQUEST_LIMITS)
    except Exception as e:  # msgpack raises ValueError subclasses, and others on odd input
        raise WireError(f"not a valid request: {type(e).__name__}: {e}") from None
