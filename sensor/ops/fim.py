"""File integrity of container-orchestration configuration, with fanotify.

Why fanotify: a syscall tracepoint on open/rename/unlink would put every
task on the host on the slow syscall path (bench/RESULTS.md measured +81 ns
per syscall for sys_enter_execve alone); fanotify marks on a few
directories cost nothing outside them, and still report the pid of the
process that made the change (Linux 5.9+ for FAN_REPORT_DFID_NAME, which
reports creations, renames and deletions inside the directory by name).

Each configured path is a file (its directory is watched and events are
filtered by name, so atomic saves through a temporary file and a rename are
seen) or a directory (every entry in it). Paths that do not exist are
re-checked periodically and watched once they appear.
"""

from __future__ import annotations

import ctypes as ct
import os
import struct
import time
from dataclasses import dataclass, field

FAN_CLOEXEC = 0x1
FAN_NONBLOCK = 0x2
FAN_REPORT_DFID_NAME = 0x400 | 0x800
FAN_MARK_ADD = 0x1
FAN_ATTRIB = 0x4
FAN_MODIFY = 0x2
FAN_CLOSE_WRITE = 0x8
FAN_MOVED_FROM = 0x40
FAN_MOVED_TO = 0x80
FAN_CREATE = 0x100
FAN_DELETE = 0x200
FAN_EVENT_ON_CHILD = 0x08000000
FAN_ONDIR = 0x40000000
FAN_Q_OVERFLOW = 0x4000
INFO_DFID_NAME = 2
AT_FDCWD = -100
MASK = (
    FAN_MODIFY
    | FAN_CLOSE_WRITE
    | FAN_ATTRIB
    | FAN_MOVED_FROM
    | FAN_MOVED_TO
    | FAN_CREATE
    | FAN_DELETE
    | FAN_EVENT_ON_CHILD
    | FAN_ONDIR
)

# (bit, operation) in the order they are reported
OPERATIONS = (
    (FAN_CREATE, "creation"),
    (FAN_MODIFY, "change"),
    (FAN_CLOSE_WRITE, "change"),
    (FAN_ATTRIB, "attributes"),
    (FAN_MOVED_FROM, "rename_from"),
    (FAN_MOVED_TO, "rename_to"),
    (FAN_DELETE, "deletion"),
)

_libc = ct.CDLL(None, use_errno=True)
_libc.fanotify_mark.argtypes = [ct.c_int, ct.c_uint, ct.c_uint64, ct.c_int, ct.c_char_p]
_libc.name_to_handle_at.argtypes = [ct.c_int, ct.c_char_p, ct.c_void_p, ct.POINTER(ct.c_int), ct.c_int]


class FimUnavailable(OSError):
    pass


@dataclass
class FimEvent:
    path: str
    operations: list[str]
    pid: int
    ts: float


@dataclass
class _Dir:
    path: str
    names: set[str] | None  # None: every entry
    handle: bytes = b""


def dir_handle(path: str) -> bytes:
    """handle_type + f_handle of a directory, as fanotify reports it."""
    buf = ct.create_string_buffer(8 + 128)
    struct.pack_into("=Ii", buf, 0, 128, 0)
    mount_id = ct.c_int()
    if _libc.name_to_handle_at(AT_FDCWD, path.encode(), buf, ct.byref(mount_id), 0) != 0:
        e = ct.get_errno()
        raise OSError(e, os.strerror(e), path)
    nbytes, htype = struct.unpack_from("=Ii", buf, 0)
    return struct.pack("=i", htype) + buf.raw[8 : 8 + nbytes]


def parse_events(buf: bytes, now: float) -> list[tuple[bytes, str, int, int]]:
    """(dir handle, name, mask, pid) for each event record in `buf`."""
    out = []
    off = 0
    while off + 24 <= len(buf):
        event_len, _vers, _res, meta_len, mask, _fd, pid = struct.unpack_from("=IBBHQii", buf, off)
        if event_len < 24:
            break
        info_off, end = off + meta_len, off + event_len
        while info_off + 4 <= end:
            itype, _pad, ilen = struct.unpack_from("=BBH", buf, info_off)
            if ilen == 0:
                break
            if itype == INFO_DFID_NAME:
                hbytes, htype = struct.unpack_from("=Ii", buf, info_off + 12)
                handle = struct.pack("=i", htype) + buf[info_off + 20 : info_off + 20 + hbytes]
                name = (
                    buf[info_off + 20 + hbytes : info_off + ilen].split(b"\0", 1)[0].decode("utf-8", "backslashreplace")
                )
                out.append((handle, name, mask, pid))
            info_off += ilen
        if mask & FAN_Q_OVERFLOW:
            out.append((b"", "", mask, pid))
        off += event_len
    return out


@dataclass
class FimWatcher:
    paths: list[str]
    # Where the host's root is mounted when the sensor runs in a container
    # (e.g. "/host"): paths are watched under it and reported without it.
    root: str = ""
    fd: int = -1
    dirs: dict[bytes, _Dir] = field(default_factory=dict)
    status: dict[str, str] = field(default_factory=dict)
    overflows: int = 0
    events: int = 0

    def start(self) -> None:
        fd = _libc.fanotify_init(FAN_CLOEXEC | FAN_NONBLOCK | FAN_REPORT_DFID_NAME, os.O_RDONLY)
        if fd < 0:
            e = ct.get_errno()
            raise FimUnavailable(e, f"fanotify_init: {os.strerror(e)} (needs Linux 5.9+ and CAP_SYS_ADMIN)")
        self.fd = fd
        self.rescan()

    def _targets(self) -> list[tuple[str, str, set[str] | None]]:
        out: list[tuple[str, str, set[str] | None]] = []
        root = self.root.rstrip("/")
        for p in self.paths:
            local = root + p
            if p.endswith("/") or os.path.isdir(local):
                out.append((p, local.rstrip("/") or "/", None))
            else:
                out.append((p, os.path.dirname(local) or "/", {os.path.basename(p)}))
        return out

    def rescan(self) -> None:
        """Watch configured paths that exist now (again after a delete)."""
        for p, d, names in self._targets():
            if not os.path.isdir(d):
                self.status[p] = "absent (checked again periodically)"
                continue
            try:
                h = dir_handle(d)
            except OSError as e:
                self.status[p] = f"unavailable: {e.strerror}"
                continue
            known = self.dirs.get(h)
            if known is None:
                if _libc.fanotify_mark(self.fd, FAN_MARK_ADD, MASK, AT_FDCWD, d.encode()) != 0:
                    err = ct.get_errno()
                    self.status[p] = f"unavailable: fanotify_mark: {os.strerror(err)}"
                    continue
                self.dirs[h] = _Dir(d, names, h)
            elif known.names is not None:
                known.names = None if names is None else known.names | names
            self.status[p] = "watching (fanotify)"

    def read(self) -> list[FimEvent]:
        if self.fd < 0:
            return []
        out: list[FimEvent] = []
        now = time.time()
        while True:
            try:
                buf = os.read(self.fd, 65536)
            except BlockingIOError:
                break
            if not buf:
                break
            for handle, name, mask, pid in parse_events(buf, now):
                if mask & FAN_Q_OVERFLOW:
                    self.overflows += 1
                    continue
                d = self.dirs.get(handle)
                if d is None or (d.names is not None and name not in d.names):
                    continue
                ops = list(dict.fromkeys(op for bit, op in OPERATIONS if mask & bit))
                if not ops:
                    continue
                self.events += 1
                path = os.path.join(d.path, name)
                if self.root and path.startswith(self.root.rstrip("/") + "/"):
                    path = path[len(self.root.rstrip("/")) :]
                out.append(FimEvent(path, ops, pid, now))
        return out

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
