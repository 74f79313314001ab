"""Strings from outside the sensor, made safe to carry and to print.

Everything Sluice reports comes from places an attacker in a container can
write to: executable paths (os.readlink, the kernel's exec tracepoint),
cgroup paths (os.walk, the mkdir tracepoint), /proc/<pid>/cmdline, labels
from the container engine, DNS names from packets. None of them is
guaranteed to be UTF-8. `safe_text` is the one door they all come through:
invalid bytes become a visible `\\xff` escape (never U+FFFD, which would hide
what the name really was, and never a lone surrogate, which cannot be
encoded and used to kill the output writer).

`json_line` is the one serialiser for documents: valid UTF-8 JSON whatever
the strings hold, with C0, DEL and C1 control characters and the Unicode
line/paragraph separators escaped so no terminal or log pipeline downstream
interprets them.
"""

from __future__ import annotations

import json
import re
from typing import Any

# Lone surrogates: what Python's os functions (surrogateescape) make of
# bytes that are not UTF-8.
_SURROGATE = re.compile("[\ud800-\udfff]")
# json.dumps escapes U+0000..U+001F itself; these it leaves raw with
# ensure_ascii=False.
_RAW_CONTROL = re.compile("[\x7f-\x9f\u2028\u2029]")


def _escape_surrogate(m: re.Match[str]) -> str:
    cp = ord(m.group(0))
    # U+DC80..U+DCFF: one undecodable byte (surrogateescape); any other lone
    # surrogate (e.g. a JSON "\\ud800" from an engine) by its code point
    return f"\\x{cp - 0xDC00:02x}" if 0xDC80 <= cp <= 0xDCFF else f"\\u{cp:04x}"


def safe_text(value: bytes | bytearray | memoryview | str) -> str:
    """A str that encodes as UTF-8: invalid bytes (or the surrogates
    os functions use for them) shown as `\\xNN`."""
    if isinstance(value, str):
        return _SURROGATE.sub(_escape_surrogate, value) if _SURROGATE.search(value) else value
    return bytes(value).decode("utf-8", "backslashreplace")


def safe_cstr(raw: bytes) -> str:
    """A NUL-terminated C string from the kernel."""
    return safe_text(raw.split(b"\0", 1)[0])


def sanitize(obj: Any) -> Any:
    """A copy of a document with every string made safe (the slow path of
    json_line, taken only when a string in it could not be encoded)."""
    if isinstance(obj, str):
        return safe_text(obj)
    if isinstance(obj, dict):
        return {sanitize(k) if isinstance(k, str) else k: sanitize(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [sanitize(v) for v in obj]
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return safe_text(obj)
    return obj


def _escape_control(m: re.Match[str]) -> str:
    return f"\\u{ord(m.group(0)):04x}"


def _default(o: Any) -> Any:
    if isinstance(o, (bytes, bytearray, memoryview)):
        return safe_text(o)
    return safe_text(str(o))


def json_line(doc: Any) -> str:
    """One document as one line of valid UTF-8 JSON, control characters
    escaped."""
    line = json.dumps(doc, separators=(",", ":"), ensure_ascii=False, default=_default)
    if _SURROGATE.search(line):
        line = json.dumps(sanitize(doc), separators=(",", ":"), ensure_ascii=False, default=_default)
    return _RAW_CONTROL.sub(_escape_control, line)
