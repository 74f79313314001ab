"""Sluice: an eBPF host sensor for data leaving containers."""

__version__ = "0.1.0"
