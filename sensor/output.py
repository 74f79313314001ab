"""Line-delimited JSON to stdout or a file.

One object per line, flushed per line. A file is opened for append and
reopened on request (SIGHUP, after logrotate moved it). A write that fails is
counted and reported, never silently dropped from the books.
"""

from __future__ import annotations

import json
import sys
from typing import IO, Any


class JsonLineWriter:
    def __init__(self, path: str | None) -> None:
        self.path = path if path not in (None, "", "-") else None
        self.lines = 0
        self.errors = 0
        self.last_error = ""
        self._f: IO[str] = self._open()

    def _open(self) -> IO[str]:
        if self.path is None:
            return sys.stdout
        return open(self.path, "a", encoding="utf-8", buffering=1)

    def write(self, doc: dict[str, Any]) -> None:
        line = json.dumps(doc, separators=(",", ":"), ensure_ascii=False, default=str)
        try:
            self._f.write(line + "\n")
            self._f.flush()
            self.lines += 1
        except OSError as e:
            self.errors += 1
            self.last_error = str(e)

    def reopen(self) -> None:
        if self.path is None:
            return
        try:
            new = self._open()
        except OSError as e:
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
