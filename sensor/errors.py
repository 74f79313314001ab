"""Errors that reach the operator: what is wrong and what to do about it."""

from __future__ import annotations


class SluiceError(Exception):
    """A failure with a one-line cause and a hint; the CLI prints both."""

    exit_code = 2

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message}\n  hint: {self.hint}" if self.hint else self.message


class ConfigError(SluiceError):
    """A configuration file that cannot be used, with file and line."""

    def __init__(self, message: str, path: str = "", line: int | None = None, hint: str = "") -> None:
        where = f"{path}:{line}: " if path and line else (f"{path}: " if path else "")
        super().__init__(where + message, hint)
        self.path = path
        self.line = line
