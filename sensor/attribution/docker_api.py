"""A minimal Docker Engine API client over its unix socket (stdlib only)."""

from __future__ import annotations

import http.client
import json
import socket
import urllib.parse
from typing import Any, cast


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

    def container_summary(self, container_id: str) -> dict[str, Any]:
        """One container's entry in the container list: name, image, image
        id and labels. The list is served from the engine's in-memory view
        without the container's lock, so it answers in milliseconds while
        the container is still starting; `/containers/<id>/json` waits for
        the start to finish (~0.2 s here, measured), which would stall the
        sensor's drain loop on every container start."""
        q = urllib.parse.quote(json.dumps({"id": [container_id]}))
        for c in self.get(f"/containers/json?all=1&filters={q}"):
            if c.get("Id") == container_id:  # the engine's id filter is a pattern match
                return cast(dict[str, Any], c)
        raise NotFound(container_id)

    def image_labels(self, image_id: str) -> dict[str, str]:
        """The labels an image carries (its Config.Labels): what every
        container of it shows unless the container sets its own."""
        data = self.get(f"/images/{urllib.parse.quote(image_id, safe='')}/json")
        labels = (data.get("Config") or {}).get("Labels") if isinstance(data, dict) else None
        return {str(k): str(v) for k, v in labels.items()} if isinstance(labels, dict) else {}
