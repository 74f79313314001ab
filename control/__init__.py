"""Sluice control plane: the `sluice` command line."""
