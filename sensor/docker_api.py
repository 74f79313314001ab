"""A minimal Docker Engine API client over its unix socket (stdlib only)."""

from __future__ import annotations

import http.client
import json
import socket
from typing import Any


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        s.connect(self._path)
        self.sock = s


class DockerError(Exception):
    """The engine could not be reached or answered with an error."""


class NotFound(DockerError):
    pass


class DockerClient:
    def __init__(self, socket_path: str, timeout: float = 1.0) -> None:
        self.socket_path = socket_path
        self.timeout = timeout

    def get(self, path: str) -> Any:
        conn = _UnixHTTPConnection(self.socket_path, self.timeout)
        try:
            conn.request("GET", path, headers={"Host": "docker"})
            resp = conn.getresponse()
            body = resp.read()
        except (OSError, http.client.HTTPException) as e:
            raise DockerError(f"{self.socket_path}: {e}") from None
        finally:
            conn.close()
        if resp.status == 404:
            raise NotFound(path)
        if resp.status >= 400:
            raise DockerError(f"{path}: HTTP {resp.status}")
        return json.loads(body)

    def inspect_container(self, container_id: str) -> dict[str, Any]:
        return self.get(f"/containers/{container_id}/json")

    def inspect_image(self, image_id: str) -> dict[str, Any]:
        return self.get(f"/images/{image_id}/json")
