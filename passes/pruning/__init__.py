"""Compression by pruning: unstructured magnitude, structured channels, 2:4 semi-structured."""

from . import pass_  # noqa: F401  (registers the `prune` pass)
