"""The lab's "internet": run inside a network namespace, it plays the far
end of every scenario and records what it received.

    python3 sink.py STATE_FILE --tcp 9000,9001 --http 80,8080 --tls 443,8443 \
        --udp 5000 --cert CERT --key KEY --stage2 FILE

- TCP ports: read until EOF (a discard server).
- HTTP ports (and TLS ports, after the handshake): answer requests with 200;
  a TLS port whose client does not start with a handshake record is read
  to EOF as raw TCP.
  GET /stage2 returns the given file (the multi-stage scenario's payload).
  A connection that does not start with an HTTP request is read to EOF.
- HTTP GET /bytes/N: N bytes back (what a download looks like).
- UDP 53: a DNS server for the names in the --zone file (JSON, name ->
  addresses; re-read on every query, so a test can move a name): A queries
  get A records (TTL 5 s), other types of a known name an empty answer, any
  other name NXDOMAIN.
- UDP ports (--udp): discard datagrams, one record per burst.
Writes one JSON line per connection or datagram to STATE_FILE (a TCP
connection: an "accept" line when it is accepted, one when it ends). Standalone:
standard library only.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import ssl
import struct
import threading
import time

_TLS_RECORD = re.compile(rb"\x16\x03[\x00-\x04]")  # handshake record, TLS 1.0-1.3 (SSL 3.0)


def _peek(conn: socket.socket, n: int, wait_s: float = 2.0) -> bytes:
    """Up to n bytes without taking them (a socket with a timeout is
    non-blocking underneath: MSG_WAITALL would not wait; review)."""
    deadline = time.monotonic() + wait_s
    got = conn.recv(n, socket.MSG_PEEK)
    while got and len(got) < n and time.monotonic() < deadline:
        time.sleep(0.005)
        got = conn.recv(n, socket.MSG_PEEK)
    return got


_METHODS = (b"GET ", b"POST ", b"PUT ", b"HEAD ", b"DELETE ", b"PATCH ", b"OPTIONS ")


IP_PKTINFO = 8  # linux/in.h; the socket module has it from Python 3.12


class Sink:
    def __init__(self, state: str, stage2: bytes, zone: str | None = None) -> None:
        self.state = open(state, "a", buffering=1)
        self.stage2 = stage2
        self.zone = zone
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
            # at once, not when the connection ends: a connection cut off
            # mid-stream (containment) ends only at the 30 s read timeout,
            # and a test counting connections must not see it arrive late
            self.record(proto="accept", port=port, bytes=0, peer=peer[0], at=time.time())
            threading.Thread(target=self._conn, args=(conn, peer, port, mode, ctx), daemon=True).start()

    def _conn(
        self, conn: socket.socket, peer: tuple[str, int], port: int, mode: str, ctx: ssl.SSLContext | None
    ) -> None:
        total = 0
        try:
            conn.settimeout(30)
            # a TLS port takes raw bytes too (an intruder without a TLS tool
            # streams ciphertext to 443): no handshake record, no handshake.
            # A record header, not its first byte: random data starts with
            # 0x16 once in 256 runs, and its handshake failed and reset the
            # stream (CI: cw-seed-mounted-data missed, 0.06 s)
            if ctx is not None and _TLS_RECORD.match(_peek(conn, 3)):
                conn = ctx.wrap_socket(conn, server_side=True)
            elif ctx is not None:
                ctx = None
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
        target = (head.split(b" ")[1:2] or [b""])[0]
        if target == b"/stage2":
            reply = self.stage2
        elif target.startswith(b"/bytes/") and target[7:].isdigit():
            reply = b"d" * min(int(target[7:]), 64 << 20)
        else:
            reply = b"ok\n"
        out = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(reply) + reply
        conn.sendall(out)
        self.record(proto="http-reply", port=0, bytes=len(out), path=target.decode(errors="replace"))
        return total

    def serve_dns(self) -> None:
        """Answers from the address it was asked on (IP_PKTINFO): the sink
        has several, and a client's connected socket takes replies only
        from the address it asked."""
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        u.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
        u.bind(("0.0.0.0", 53))
        while True:
            data, anc, _flags, peer = u.recvmsg(65535, socket.CMSG_SPACE(12))
            self.record(proto="udp", port=53, bytes=len(data), peer=peer[0])
            if len(data) < 12:
                continue
            reply = self._dns_answer(data)
            # struct in_pktinfo {ifindex; spec_dst; addr}: reply from addr
            asked = [c[2][8:12] for c in anc if c[0] == socket.IPPROTO_IP and c[1] == IP_PKTINFO]
            src = [(socket.IPPROTO_IP, IP_PKTINFO, struct.pack("=I4s4s", 0, asked[0], bytes(4)))] if asked else []
            u.sendmsg([reply], src, 0, peer)
            self.record(proto="dns-reply", port=53, bytes=len(reply), peer=peer[0])

    def _names(self) -> dict[str, list[str]]:
        if not self.zone or not os.path.exists(self.zone):
            return {}
        try:
            with open(self.zone) as f:
                return {str(k).lower(): list(v) for k, v in json.load(f).items()}
        except (OSError, ValueError):
            return {}

    def _dns_answer(self, q: bytes) -> bytes:
        """One question: the zone's A records, an empty answer, or
        NXDOMAIN; same id, QR + RD + RA, the question echoed."""
        labels: list[str] = []
        i = 12
        while i < len(q) and q[i] != 0 and len(labels) < 64:
            labels.append(q[i + 1 : i + 1 + q[i]].decode("ascii", "replace"))
            i += 1 + q[i]
        qend = i + 5
        qtype = struct.unpack("!H", q[i + 1 : i + 3])[0] if len(q) >= qend else 0
        name = ".".join(labels).lower()
        question = q[12:qend]
        addrs = self._names().get(name)
        if addrs is None:
            return q[:2] + b"\x81\x83" + struct.pack("!HHHH", 1, 0, 0, 0) + question
        rrs = b""
        n = 0
        if qtype == 1:
            for a in addrs:
                rrs += b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 5, 4) + socket.inet_aton(a)
                n += 1
        return q[:2] + b"\x81\x80" + struct.pack("!HHHH", 1, n, 0, 0) + question + rrs

    def serve_udp(self, port: int) -> None:
        """Discard datagrams (so a sender sees no port-unreachable)."""
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        u.bind(("0.0.0.0", port))
        total, peer = 0, ("", 0)
        while True:
            u.settimeout(2.0 if total else None)
            try:
                data, peer = u.recvfrom(65535)
                total += len(data)
            except TimeoutError:  # a quiet sender: one record per burst
                self.record(proto="udp", port=port, bytes=total, peer=peer[0])
                total = 0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("state")
    ap.add_argument("--tcp", default="")
    ap.add_argument("--http", default="")
    ap.add_argument("--tls", default="")
    ap.add_argument("--udp", default="")
    ap.add_argument("--cert")
    ap.add_argument("--key")
    ap.add_argument("--stage2")
    ap.add_argument("--zone")
    a = ap.parse_args()
    stage2 = open(a.stage2, "rb").read() if a.stage2 else b"#!/bin/sh\n"
    sink = Sink(a.state, stage2, a.zone)

    def ports(s: str) -> list[int]:
        return [int(p) for p in s.split(",") if p]

    threads = [threading.Thread(target=sink.serve_dns, daemon=True)]
    for p in ports(a.tcp):
        threads.append(threading.Thread(target=sink.serve_tcp, args=(p, "raw", None), daemon=True))
    for p in ports(a.udp):
        threads.append(threading.Thread(target=sink.serve_udp, args=(p,), daemon=True))
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
