"""Asks a running sensor over its control socket."""

from __future__ import annotations

import socket
from typing import Any

from sensor.daemon import wire
from sensor.errors import SluiceError


def request(path: str, cmd: str, timeout: float = 3.0, **args: Any) -> dict[str, Any]:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(path)
    except FileNotFoundError:
        raise SluiceError(
            f"no sensor is running (no control socket at {path})",
            hint="start one with `sudo sluice run` (or `sudo make run`)",
        ) from None
    except PermissionError:
        raise SluiceError(f"permission denied on {path}", hint="the control socket is root only: use sudo") from None
    except OSError as e:
        raise SluiceError(
            f"cannot reach the sensor at {path}: {e.strerror}", hint="the sensor may have died; check its output"
        ) from None
    try:
        wire.send(s, {"cmd": cmd, **args})
        resp = wire.recv(s)
    except (OSError, wire.WireError) as e:
        raise SluiceError(f"the sensor at {path} did not answer: {e}") from None
    finally:
        s.close()
    if not isinstance(resp, dict):
        raise SluiceError(f"unexpected answer from the sensor: {resp!r}")
    if not resp.get("ok", False):
        raise SluiceError(f"the sensor refused: {resp.get('error', 'no reason given')}")
    return resp
