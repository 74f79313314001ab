"""A fake Docker Engine: a tiny HTTP server on a real unix socket."""

from __future__ import annotations

import json
import socketserver
import threading
from http.server import BaseHTTPRequestHandler


class FakeDockerEngine:
    """A tiny HTTP server on a real unix socket answering
    GET /containers/<id>/json from a dict; 404 for anything else."""

    def __init__(self, socket_path: str) -> None:
        self.socket_path = socket_path
        self.containers: dict[str, dict] = {}
        self.requests: list[str] = []
        engine = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802 (http.server API)
                engine.requests.append(self.path)
                parts = self.path.strip("/").split("/")
                body: dict
                if len(parts) == 3 and parts[0] == "containers" and parts[2] == "json" \
                        and parts[1] in engine.containers:
                    status, body = 200, engine.containers[parts[1]]
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
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)

    def add(self, container_id: str, name: str, image: str, image_id: str,
            labels: dict[str, str] | None = None) -> None:
        self.containers[container_id] = {
            "Id": container_id,
            "Name": "/" + name,
            "Image": image_id,
            "Config": {"Image": image, "Labels": labels or {}},
        }

    def start(self) -> "FakeDockerEngine":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=2)
