"""A fake Docker Engine: a tiny HTTP server on a real unix socket."""

from __future__ import annotations

import json
import socketserver
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler
from typing import Any


class FakeDockerEngine:
    """A tiny HTTP server on a real unix socket answering
    GET /containers/json?filters={"id": [...]} and GET /containers/<id>/json
    from a dict; 404 for anything else."""

    def __init__(self, socket_path: str) -> None:
        self.socket_path = socket_path
        self.containers: dict[str, dict[str, Any]] = {}
        self.images: dict[str, dict[str, str]] = {}  # image id -> the image's own labels
        self.requests: list[str] = []
        # when set: every request waits for the gate to open (a hung engine)
        self.gate: threading.Event | None = None
        engine = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                engine.requests.append(self.path)
                if engine.gate is not None:
                    engine.gate.wait(30)
                url = urllib.parse.urlsplit(self.path)
                parts = url.path.strip("/").split("/")
                body: dict[str, Any] | list[dict[str, Any]]
                if url.path == "/containers/json":
                    # the engine's id filter is an unanchored pattern: a prefix matches too
                    ids = json.loads(urllib.parse.parse_qs(url.query).get("filters", ["{}"])[0]).get("id", [])
                    status, body = (
                        200,
                        [engine.summary(c) for c in engine.containers.values() if any(i in c["Id"] for i in ids)],
                    )
                elif (
                    len(parts) == 3
                    and parts[0] == "containers"
                    and parts[2] == "json"
                    and parts[1] in engine.containers
                ):
                    status, body = 200, engine.containers[parts[1]]
                elif len(parts) == 3 and parts[0] == "images" and urllib.parse.unquote(parts[1]) in engine.images:
                    status, body = 200, {"Config": {"Labels": engine.images[urllib.parse.unquote(parts[1])]}}
                else:
                    status, body = 404, {"message": f"No such container: {self.path}"}
                raw = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def log_message(self, *args: object) -> None:  # keep test output quiet
                pass

            def address_string(self) -> str:
                return "unix"

        class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
            daemon_threads = True

        self.server = Server(socket_path, Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def add(
        self, container_id: str, name: str, image: str, image_id: str, labels: dict[str, str] | None = None
    ) -> None:
        self.containers[container_id] = {
            "Id": container_id,
            "Name": "/" + name,
            "Image": image_id,
            "Config": {"Image": image, "Labels": labels or {}},
        }

    @staticmethod
    def summary(c: dict[str, Any]) -> dict[str, Any]:
        """A container as the engine's list shows it."""
        return {
            "Id": c["Id"],
            "Names": [c["Name"]],
            "Image": c["Config"]["Image"],
            "ImageID": c["Image"],
            "Labels": c["Config"]["Labels"],
            "State": "running",
        }

    def start(self) -> FakeDockerEngine:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=2)
