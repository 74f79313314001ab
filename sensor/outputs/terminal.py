"""Text from containers made safe to print on a terminal.

Container names, labels, images, command lines, file paths and destination
names are chosen by whoever runs the container. Printed raw, an ESC (CSI,
OSC: set the window title, write the clipboard, hyperlinks), a C1 control
(U+009B is a one-byte CSI on many terminals), a carriage return, bidi
overrides or invisible characters could rewrite what an operator sees.

`safe()` escapes every character Python's `str.isprintable()` refuses, which
is every control (C0, DEL, C1), format (bidi overrides, zero-width, tags),
separator other than the ASCII space (line and paragraph separators, exotic
spaces), surrogate, private-use and unassigned code point, as a visible
`\\xNN`, `\\uNNNN` or `\\UNNNNNNNN`. Kept here instead of a library because
rich strips only BEL, BS, VT, FF and CR (`rich.control.strip_control_codes`)
and passes ESC through; every terminal view of Sluice (the compact output
format, `top`, `alerts`, `baseline show`, progress) goes through this one
function. (sensor/text.py makes the same strings safe to carry: valid
UTF-8, undecodable bytes as `\\xNN`; this module makes them safe to show.)
"""

from __future__ import annotations

from sensor.text import safe_text

ELLIPSIS = "\u2026"


def _escape(c: str) -> str:
    o = ord(c)
    if o < 0x100:
        return f"\\x{o:02x}"
    if o < 0x10000:
        return f"\\u{o:04x}"
    return f"\\U{o:08x}"


def safe(text: object, limit: int | None = None) -> str:
    """`text` as one terminal-safe line; at most `limit` characters of the
    original (an ellipsis marks the cut)."""
    s = safe_text(text if isinstance(text, str) else str(text))  # undecodable bytes as \xNN first
    if limit is not None and len(s) > limit:
        s = s[: max(0, limit - 1)] + ELLIPSIS
    if s.isprintable():  # the common case: nothing to escape
        return s
    return "".join(c if c.isprintable() else _escape(c) for c in s)
