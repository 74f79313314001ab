"""Sluice: an eBPF host sensor for data leaving containers."""

from __future__ import annotations


def _version() -> str:
    """The version is written once, in pyproject.toml: read from the
    installed package's metadata, or from pyproject.toml next to this
    package when it runs from a source tree that was never installed."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("sluice")
    except PackageNotFoundError:
        import tomllib
        from pathlib import Path

        try:
            with open(Path(__file__).resolve().parent.parent / "pyproject.toml", "rb") as f:
                return str(tomllib.load(f)["project"]["version"])
        except (OSError, KeyError, tomllib.TOMLDecodeError):
            return "0+unknown"


__version__ = _version()
