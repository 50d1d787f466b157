"""Fused (chunked) linear + cross-entropy for large vocabularies; `reference.py` is the plain spec."""

from sambay.ops.cross_entropy.chunked import linear_cross_entropy

__all__ = ["linear_cross_entropy"]
