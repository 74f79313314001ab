"""Where documents go: formatting, a bounded queue, and the sinks.

Detection never waits for output: emit() puts the formatted line on a
bounded queue and returns; a writer thread delivers it to every sink. When
the queue is full the line is dropped and counted (health events and
metrics report it). Sinks:
  - stdout, or a file (append; reopened on SIGHUP; optional size rotation);
    JSON lines, or the compact format for people (sensor/outputs/compact.py),
  - a unix datagram or stream socket,
  - syslog, RFC 5424 with the JSON document as the message, over
    unix:///dev/log, udp://host:port or tcp://host:port (octet counting).
"""

from __future__ import annotations

import datetime as _dt
import errno
import os
import queue
import socket
import stat
import sys
import threading
import time
from collections.abc import Callable
from typing import IO, Any, Protocol

from sensor.errors import SluiceError
from sensor.outputs import compact
from sensor.outputs.ocsf import to_ocsf
from sensor.text import json_line


class Sink(Protocol):
    errors: int
    last_error: str

    def write_line(self, line: str, doc: dict[str, Any]) -> None: ...

    def reopen(self) -> None: ...

    def close(self) -> None: ...


class JsonLineWriter:
    """stdout, or a file opened for append; one line per document: the JSON
    line, or with `compact` the document rendered for people (coloured on a
    terminal unless NO_COLOR is set; with the date in a file)."""

    def __init__(self, path: str | None, max_bytes: int = 0, backups: int = 5, compact: bool = False) -> None:
        self.path = path if path not in (None, "", "-") else None
        self.max_bytes = max_bytes
        self.backups = backups
        self.compact = compact
        self.render_fallbacks = 0
        self.lines = 0
        self.errors = 0
        self.rotations = 0
        self.last_error = ""
        # the last write failed: reopen (at most once a second) before the next one
        self._broken = False
        self._retry_at = 0.0
        self._f: IO[str] = self._open()
        self.color = compact and self.path is None and _isatty(self._f) and not os.environ.get("NO_COLOR")

    def _open(self) -> IO[str]:
        if self.path is None:
            return sys.stdout
        return open_output(self.path)

    def write(self, doc: dict[str, Any]) -> None:
        self.write_line(json_line(doc), doc)

    def write_line(self, line: str, doc: dict[str, Any] | None = None) -> None:
        if self._broken and time.monotonic() >= self._retry_at:
            # retry a failed file: it may have been removed, the disk freed
            self._broken = False
            self.reopen()
        if self.compact and doc is not None:
            try:
                line = compact.render(doc, color=self.color, date=self.path is not None)
            except (KeyError, ValueError, TypeError, AttributeError) as e:
                # a document the renderer does not understand: its JSON line
                # instead (nothing is lost), counted
                self.render_fallbacks += 1
                self.last_error = f"compact: {type(e).__name__}: {e}"
        try:
            self._f.write(line + "\n")
            self._f.flush()
            self.lines += 1
            self._broken = False
        except (OSError, ValueError, UnicodeError) as e:  # ValueError: closed file
            self.errors += 1
            self.last_error = f"{self.path or 'stdout'}: {e}"
            self._broken = self.path is not None
            self._retry_at = time.monotonic() + 1.0
            return
        if self.max_bytes and self.path is not None:
            try:
                if self._f.tell() >= self.max_bytes:
                    self._rotate()
            except OSError as e:
                self.errors += 1
                self.last_error = f"rotate {self.path}: {e}"

    def _rotate(self) -> None:
        assert self.path is not None
        for i in range(self.backups - 1, 0, -1):
            src = f"{self.path}.{i}"
            if os.path.exists(src):
                os.replace(src, f"{self.path}.{i + 1}")
        if self.backups > 0:
            os.replace(self.path, f"{self.path}.1")
        else:
            os.unlink(self.path)
        self.rotations += 1
        self.reopen()

    def reopen(self) -> None:
        if self.path is None:
            return
        try:
            new = self._open()
        except (OSError, SluiceError) as e:
            self.errors += 1
            self.last_error = f"reopen {self.path}: {e}"
            return
        old, self._f = self._f, new
        self._close(old)

    def _close(self, f: IO[str]) -> None:
        # Data left unflushed by an earlier failed write is lost here:
        # count it rather than raise out of the sensor's loop.
        try:
            f.close()
        except OSError as e:
            self.errors += 1
            self.last_error = f"close {self.path}: {e}"

    def close(self) -> None:
        if self.path is not None:
            self._close(self._f)


def open_output(path: str) -> IO[str]:
    """An output file for append: created 0600 (documents name processes,
    containers and destinations), never through a symlink (O_NOFOLLOW: a
    link planted in a shared directory must not redirect the sensor's
    writes, as root, to another file), and only a regular file (or a
    pipe or character device such as /dev/stdout)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        mode = os.fstat(fd).st_mode
        if not (stat.S_ISREG(mode) or stat.S_ISFIFO(mode) or stat.S_ISCHR(mode)):
            raise SluiceError(f"{path} is not a regular file", hint="give a file path to --output")
        return open(fd, "a", encoding="utf-8", errors="backslashreplace", buffering=1)
    except BaseException:
        os.close(fd)
        raise


class _SocketSink:
    """A datagram or stream socket that reconnects at most once a second;
    failures are counted, never raised."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.errors = 0
        self.last_error = ""
        self._sock: socket.socket | None = None
        self._next_try = 0.0

    def _new_socket(self) -> tuple[socket.socket, Any]:
        raise NotImplementedError

    def _connect(self) -> socket.socket | None:
        if self._sock is not None:
            return self._sock
        if time.monotonic() < self._next_try:
            return None
        self._next_try = time.monotonic() + 1.0
        s = None
        try:
            s, addr = self._new_socket()
            s.settimeout(2.0)
            s.connect(addr)
        except OSError as e:
            if s is not None:
                s.close()
            self.last_error = f"{self.target}: {e}"
            return None
        self._sock = s
        return s

    def _send(self, data: bytes, stream: bool) -> None:
        s = self._connect()
        if s is None:
            self.errors += 1
            return
        try:
            s.sendall(data) if stream else s.send(data)
        except OSError as e:
            self.errors += 1
            self.last_error = f"{self.target}: {e}"
            self.close()

    def reopen(self) -> None:
        self.close()

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


class UnixSocketSink(_SocketSink):
    """Each line to a unix socket: one datagram per line, or newline
    separated on a stream."""

    def __init__(self, path: str, kind: str = "dgram") -> None:
        super().__init__(path)
        self.path, self.kind = path, kind

    def _new_socket(self) -> tuple[socket.socket, Any]:
        st = socket.SOCK_DGRAM if self.kind == "dgram" else socket.SOCK_STREAM
        return socket.socket(socket.AF_UNIX, st), self.path

    def write_line(self, line: str, doc: dict[str, Any]) -> None:
        stream = self.kind == "stream"
        self._send((line + "\n").encode() if stream else line.encode(), stream)


FACILITIES = {
    "kern": 0,
    "user": 1,
    "daemon": 3,
    "auth": 4,
    "syslog": 5,
    "authpriv": 10,
    **{f"local{i}": 16 + i for i in range(8)},
}


def syslog_severity(doc: dict[str, Any]) -> int:
    """RFC 5424 severity: alerts by score, health info, telemetry info."""
    ev = doc.get("event", {})
    if ev.get("kind") == "alert":
        score = int(ev.get("severity", 50))
        return 2 if score >= 80 else 3 if score >= 60 else 4 if score >= 40 else 5
    return 6


def rfc5424(line: str, doc: dict[str, Any], hostname: str, app: str, facility: int) -> str:
    pri = facility * 8 + syslog_severity(doc)
    ts = doc.get("@timestamp") or _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    msgid = (doc.get("event", {}).get("dataset") or "sluice").replace(" ", "_")[:32]
    return f"<{pri}>1 {ts} {hostname or '-'} {app} {os.getpid()} {msgid} - {line}"


class SyslogSink(_SocketSink):
    def __init__(self, target: str, hostname: str, facility: str = "local0", app: str = "sluice") -> None:
        super().__init__(target)
        self.hostname = hostname
        self.facility = FACILITIES[facility]
        self.app = app
        scheme, _, rest = target.partition("://")
        self.scheme = scheme
        if scheme == "unix":
            self.addr: Any = rest
        else:
            host, _, port = rest.rpartition(":")
            self.addr = (host.strip("[]"), int(port))

    def _new_socket(self) -> tuple[socket.socket, Any]:
        if self.scheme == "unix":
            return socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM), self.addr
        fam = socket.AF_INET6 if ":" in self.addr[0] else socket.AF_INET
        return socket.socket(fam, socket.SOCK_DGRAM if self.scheme == "udp" else socket.SOCK_STREAM), self.addr

    def write_line(self, line: str, doc: dict[str, Any]) -> None:
        msg = rfc5424(line, doc, self.hostname, self.app, self.facility).encode()
        if self.scheme == "tcp":
            self._send(b"%d " % len(msg) + msg, True)  # RFC 6587 octet counting
        else:
            self._send(msg, False)


def ecs_line(doc: dict[str, Any]) -> str:
    return json_line(doc)


FORMATS: dict[str, Callable[[dict[str, Any]], str]] = {
    "ecs": ecs_line,
    "ocsf": lambda doc: ecs_line(to_ocsf(doc)),
    "compact": ecs_line,  # for the socket and syslog sinks; the line writer renders its own
}


def _isatty(f: IO[str]) -> bool:
    try:
        return f.isatty()
    except (AttributeError, ValueError, OSError):
        return False


def resolve_format(fmt: str, path: str | None) -> str:
    """ "auto": compact when the lines go to stdout and stdout is a terminal
    (a person is reading), ECS otherwise (a shipper, a pipe, a file, a test)."""
    if fmt != "auto":
        return fmt
    return "compact" if path in (None, "", "-") and _isatty(sys.stdout) else "ecs"


_STOP = object()


class Output:
    """Formats documents and hands them to the writer thread."""

    def __init__(self, sinks: list[Sink], fmt: str = "ecs", queue_size: int = 10000) -> None:
        self.sinks = sinks
        self.format = FORMATS[fmt]
        self.queue: queue.Queue[Any] = queue.Queue(maxsize=queue_size)
        self.dropped = 0
        self.format_errors = 0
        self.written = 0
        # A sink that raises something unexpected is counted against that
        # sink and skipped for that line; the others still get it.
        self.sink_exceptions = 0
        # The writer thread is restarted (and counted) if it ever stops;
        # health reports it from the moment it is seen stopped.
        self.writer_restarts = 0
        self.writer_problem = ""
        # called (once per restart) so the sensor can say so at once
        self.on_writer_restart: Callable[[], None] | None = None
        self._closing = False
        self._reopen = threading.Event()
        self._thread = self._start_writer()

    def _start_writer(self) -> threading.Thread:
        t = threading.Thread(target=self._run, name="sluice-output", daemon=True)
        t.start()
        return t

    def writer_alive(self) -> bool:
        """Is the writer running? If it stopped, say so and start another."""
        if self._thread.is_alive() or self._closing:
            return True
        self.writer_restarts += 1
        self.writer_problem = f"the output writer stopped ({self.writer_restarts} restart(s))"
        self._thread = self._start_writer()
        if self.on_writer_restart is not None:
            self.on_writer_restart()
        return False

    def emit(self, doc: dict[str, Any]) -> None:
        try:
            line = self.format(doc)
        except Exception:  # a document that cannot be written is counted, never raised
            self.format_errors += 1
            return
        self.writer_alive()
        try:
            self.queue.put_nowait((line, doc))
        except queue.Full:
            self.dropped += 1

    def reopen(self) -> None:
        self._reopen.set()

    def _run(self) -> None:
        while True:
            item = self.queue.get()
            if self._reopen.is_set():
                self._reopen.clear()
                for s in self.sinks:
                    try:
                        s.reopen()
                    except Exception as e:
                        self.sink_exceptions += 1
                        s.last_error = f"reopen: {type(e).__name__}: {e}"
            if item is _STOP:
                return
            line, doc = item
            for s in self.sinks:
                try:
                    s.write_line(line, doc)
                except Exception as e:  # one sink's bug must not silence the others
                    self.sink_exceptions += 1
                    s.errors = getattr(s, "errors", 0) + 1
                    s.last_error = f"{type(s).__name__}: {type(e).__name__}: {e}"
            self.written += 1

    def flush(self, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while self.queue.unfinished_tasks and not self.queue.empty() and time.monotonic() < deadline:
            time.sleep(0.01)

    def close(self, timeout: float = 10.0) -> None:
        """Deliver what is queued, then close the sinks."""
        self.writer_alive()
        self._closing = True
        try:
            self.queue.put(_STOP, timeout=timeout)
        except queue.Full:
            self.dropped += self.queue.qsize()
        self._thread.join(timeout)
        for s in self.sinks:
            s.close()

    def stats(self) -> dict[str, Any]:
        return {
            "written": self.written,
            "queued": self.queue.qsize(),
            "dropped_queue_full": self.dropped,
            "format_errors": self.format_errors,
            "sink_exceptions": self.sink_exceptions,
            "writer": "running" if self.writer_alive() else "restarted",
            "writer_restarts": self.writer_restarts,
            "sink_errors": {type(s).__name__: s.errors for s in self.sinks},
            # compact lines written as JSON because the renderer failed on the document
            "compact_fallbacks": sum(getattr(s, "render_fallbacks", 0) for s in self.sinks),
            "last_error": next((s.last_error for s in self.sinks if s.last_error), ""),
        }

    @property
    def errors(self) -> int:
        return self.dropped + self.format_errors + sum(s.errors for s in self.sinks)


def build_output(cfg: Any, hostname: str) -> Output:
    """The sinks an [output] config section asks for."""
    fmt = resolve_format(cfg.format, cfg.path)
    try:
        sinks: list[Sink] = [JsonLineWriter(cfg.path, cfg.max_bytes, cfg.backups, compact=fmt == "compact")]
    except OSError as e:
        hint = (
            "it must not be a symlink (outputs are never written through one)"
            if e.errno == errno.ELOOP
            else "check that the directory exists and root can write to it"
        )
        raise SluiceError(f"cannot open output {cfg.path}: {e.strerror}", hint=hint) from None
    if cfg.socket:
        sinks.append(UnixSocketSink(cfg.socket, cfg.socket_type))
    if cfg.syslog:
        sinks.append(SyslogSink(cfg.syslog, hostname, cfg.syslog_facility))
    return Output(sinks, fmt, cfg.queue_size)
