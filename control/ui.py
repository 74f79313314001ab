"""What the CLI's terminal views share: rich consoles that never interpret
markup or emoji in data, terminal-safe text, sizes and rates."""

from __future__ import annotations

import os
import sys
from typing import IO

from rich.console import Console
from rich.text import Text

from sensor.outputs.terminal import safe


def is_tty(stream: IO[str] | None = None) -> bool:
    s = stream if stream is not None else sys.stdout
    try:
        return s.isatty()
    except (AttributeError, ValueError, OSError):
        return False


def color_ok(stream: IO[str] | None = None) -> bool:
    """Colour only on a terminal, and never with NO_COLOR set (no-color.org)."""
    return is_tty(stream) and not os.environ.get("NO_COLOR")


def console(stderr: bool = False, file: IO[str] | None = None) -> Console:
    """A rich console for data: markup, emoji and highlighting off, so text
    from containers is shown as text. Not a terminal: wide lines, no colour,
    so a pipe or a file gets whole rows."""
    f = file if file is not None else (sys.stderr if stderr else sys.stdout)
    tty = is_tty(f)
    return Console(
        file=f,
        stderr=stderr,
        markup=False,
        emoji=False,
        highlight=False,
        no_color=bool(os.environ.get("NO_COLOR")),
        width=None if tty else 240,
    )


def text(value: object, limit: int | None = None, style: str = "") -> Text:
    """Container-controlled text as a rich Text: escaped, never markup."""
    return Text(safe(value, limit), style=style)


def size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"  # pragma: no cover


def rate(b: float) -> str:
    return size(b) + "/s"


def duration(seconds: float) -> str:
    s = max(0, int(round(seconds)))
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s" if m else f"{s}s"
