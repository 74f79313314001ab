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


def __getattr__(name: str) -> str:
    """`__version__`, read on first use (PEP 562): importlib.metadata costs
    ~40 ms that the BPF compile's early start should not wait for."""
    if name == "__version__":
        v = _version()
        globals()["__version__"] = v
        return v
    raise AttributeError(f"module 'sensor' has no attribute {name!r}")
