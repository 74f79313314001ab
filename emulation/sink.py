"""The lab's "internet": run inside a network namespace, it plays the far
end of every scenario and records what it received.

    python3 sink.py STATE_FILE --tcp 9000,9001 --http 80,8080 --tls 443,8443 \
        --cert CERT --key KEY --stage2 FILE

- TCP ports: read until EOF (a discard server).
- HTTP ports (and TLS ports, after the handshake): answer requests with 200;
  GET /stage2 returns the given file (the multi-stage scenario's payload).
  A connection that does not start with an HTTP request is read to EOF.
- UDP 53: answer every DNS query with NXDOMAIN, so resolvers do not wait.
Writes one JSON line per connection or datagram to STATE_FILE. Standalone:
standard library only.
"""

from __future__ import annotations

import argparse
import json
import socket
import ssl
import struct
import threading

_METHODS = (b"GET ", b"POST ", b"PUT ", b"HEAD ", b"DELETE ", b"PATCH ", b"OPTIONS ")


class Sink:
    def __init__(self, state: str, stage2: bytes) -> None:
        self.state = open(state, "a", buffering=1)
        self.stage2 = stage2
        self.lock = threading.Lock()

    def record(self, **kw: object) -> None:
        with self.lock:
            self.state.write(json.dumps(kw) + "\n")

    def serve_tcp(self, port: int, mode: str, ctx: ssl.SSLContext | None) -> None:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("0.0.0.0", port))
        s.listen(128)
        while True:
            conn, peer = s.accept()
            threading.Thread(target=self._conn, args=(conn, peer, port, mode, ctx), daemon=True).start()

    def _conn(
        self, conn: socket.socket, peer: tuple[str, int], port: int, mode: str, ctx: ssl.SSLContext | None
    ) -> None:
        total = 0
        try:
            conn.settimeout(30)
            if ctx is not None:
                conn = ctx.wrap_socket(conn, server_side=True)
            # enough bytes to tell an HTTP request line from raw data: a
            # short first read must not turn a request into a discard
            # (the client would wait for a reply that never comes)
            first = b""
            while len(first) < 8:
                more = conn.recv(65536)
                if not more:
                    break
                first += more
            total = len(first)
            if mode == "http" and first.startswith(_METHODS):
                total = self._http(conn, first)
            else:
                while True:
                    data = conn.recv(65536)
                    if not data:
                        break
                    total += len(data)
        except (OSError, ssl.SSLError):
            pass
        finally:
            self.record(proto="tls" if ctx else "tcp", port=port, bytes=total, peer=peer[0])
            try:
                conn.close()
            except OSError:
                pass

    def _http(self, conn: socket.socket, buf: bytes) -> int:
        total = len(buf)
        while b"\r\n\r\n" not in buf:
            more = conn.recv(65536)
            if not more:
                return total
            buf += more
            total += len(more)
        head, _, body = buf.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            k, _, v = line.partition(b":")
            if k.strip().lower() == b"content-length":
                length = int(v.strip() or 0)
        got = len(body)
        while got < length:
            more = conn.recv(65536)
            if not more:
                break
            got += len(more)
            total += len(more)
        reply = self.stage2 if head.split(b" ")[1:2] == [b"/stage2"] else b"ok\n"
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(reply) + reply)
        return total

    def serve_dns(self) -> None:
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        u.bind(("0.0.0.0", 53))
        while True:
            data, peer = u.recvfrom(65535)
            self.record(proto="udp", port=53, bytes=len(data), peer=peer[0])
            if len(data) >= 12:
                # NXDOMAIN: same id, QR + RD + RA, rcode 3, question echoed
                qd = struct.unpack("!H", data[4:6])[0]
                u.sendto(data[:2] + b"\x81\x83" + struct.pack("!HHHH", qd, 0, 0, 0) + data[12:], peer)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("state")
    ap.add_argument("--tcp", default="")
    ap.add_argument("--http", default="")
    ap.add_argument("--tls", default="")
    ap.add_argument("--cert")
    ap.add_argument("--key")
    ap.add_argument("--stage2")
    a = ap.parse_args()
    stage2 = open(a.stage2, "rb").read() if a.stage2 else b"#!/bin/sh\n"
    sink = Sink(a.state, stage2)

    def ports(s: str) -> list[int]:
        return [int(p) for p in s.split(",") if p]

    threads = [threading.Thread(target=sink.serve_dns, daemon=True)]
    for p in ports(a.tcp):
        threads.append(threading.Thread(target=sink.serve_tcp, args=(p, "raw", None), daemon=True))
    for p in ports(a.http):
        threads.append(threading.Thread(target=sink.serve_tcp, args=(p, "http", None), daemon=True))
    if a.tls:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(a.cert, a.key)
        for p in ports(a.tls):
            threads.append(threading.Thread(target=sink.serve_tcp, args=(p, "http", ctx), daemon=True))
    for t in threads:
        t.start()
    print("ready", flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
