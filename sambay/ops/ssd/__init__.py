"""Mamba-2 (SSD) scan and decode step: public entry points.

Only the sequential PyTorch specification (`reference.py`) exists so far; it runs on CPU and GPU. A fast
kernel goes beside it and is chosen here through `sambay.ops.backend.use_triton`, like the other ops.
"""

from __future__ import annotations

from .reference import ssd_scan, ssd_state_update

__all__ = ["ssd_scan", "ssd_state_update"]
