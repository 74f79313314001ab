"""A test "internet" host: run inside a test netns, it accepts TCP on the
given ports and UDP on 53, reads everything and records what it got.

Usage: python3 sink.py STATE_FILE PORT [PORT ...]
Writes one JSON line per closed TCP connection or UDP datagram to STATE_FILE.
"""

from __future__ import annotations

import json
import selectors
import socket
import sys


def main() -> None:
    state = open(sys.argv[1], "a", buffering=1)
    sel = selectors.DefaultSelector()
    for port in map(int, sys.argv[2:]):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("0.0.0.0", port))
        s.listen(128)
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ, ("listen", port))
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.bind(("0.0.0.0", 53))
    u.setblocking(False)
    sel.register(u, selectors.EVENT_READ, ("udp", 53))
    counts: dict[socket.socket, int] = {}
    print("ready", flush=True)
    while True:
        for key, _ in sel.select():
            kind, port = key.data
            sock = key.fileobj
            if kind == "listen":
                conn, _ = sock.accept()
                conn.setblocking(False)
                counts[conn] = 0
                sel.register(conn, selectors.EVENT_READ, ("conn", port))
            elif kind == "udp":
                data, peer = sock.recvfrom(65535)
                state.write(json.dumps({"proto": "udp", "port": 53, "bytes": len(data), "peer": peer[0]}) + "\n")
            else:
                try:
                    data = sock.recv(1 << 16)
                except ConnectionError:
                    data = b""
                if data:
                    counts[sock] += len(data)
                    continue
                peer = sock.getpeername()[0] if sock.fileno() >= 0 else ""
                state.write(json.dumps({"proto": "tcp", "port": port, "bytes": counts.pop(sock), "peer": peer}) + "\n")
                sel.unregister(sock)
                sock.close()


if __name__ == "__main__":
    main()
