"""One place that decides which implementation of an op runs.

`SAMBAY_KERNELS` selects it:
  * unset or `auto`: CUDA tensors take the Triton fast path (when Triton is importable), CPU tensors the
    pure-PyTorch reference;
  * `reference`: the reference everywhere;
  * `triton`: Triton everywhere, also on CPU tensors (only meaningful with `TRITON_INTERPRET=1`; this is how
    CI runs the kernels).
The choice is logged once per op, never swapped silently.
"""

from __future__ import annotations

import functools
import logging
import os

import torch

log = logging.getLogger("sambay.ops")
_MODES = ("auto", "reference", "triton")


def kernel_mode() -> str:
    mode = os.environ.get("SAMBAY_KERNELS", "auto").strip().lower() or "auto"
    if mode not in _MODES:
        raise ValueError(f"SAMBAY_KERNELS={mode!r} is not one of {', '.join(_MODES)}")
    return mode


@functools.cache
def triton_available() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


@functools.cache
def _log_choice(op: str, backend: str) -> None:
    log.info("sambay op %s -> %s", op, backend)


def use_triton(op: str, *tensors: torch.Tensor | None) -> bool:
    """True when `op` should run its Triton implementation for these tensors."""
    mode = kernel_mode()
    if mode == "reference":
        choice = False
    elif mode == "triton":
        if not triton_available():
            raise RuntimeError("SAMBAY_KERNELS=triton but triton is not installed (pip install triton)")
        choice = True
    else:
        choice = triton_available() and all(t is None or t.is_cuda for t in tensors)
    _log_choice(op, "triton" if choice else "reference")
    return choice
