"""One place that decides which implementation of an op runs.

`SAMBAY_KERNELS` selects it:
  * unset or `auto`: CUDA tensors take the Triton fast path (when Triton is importable), CPU tensors the
    pure-PyTorch reference;
  * `reference`: the reference everywhere;
  * `triton`: Triton everywhere, also on CPU tensors (only meaningful with `TRITON_INTERPRET=1`; this is how
    CI runs the kernels).
`SAMBAY_REFERENCE_OPS` (comma-separated op names, e.g. `selective_scan,causal_conv1d`) forces the reference
for just those ops, to bisect a fault or a numerical difference to one kernel.
The choice is logged once per op, never swapped silently.
"""

from __future__ import annotations

import importlib.util
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


def _reference_ops() -> set[str]:
    return {name.strip() for name in os.environ.get("SAMBAY_REFERENCE_OPS", "").split(",") if name.strip()}


_TRITON = importlib.util.find_spec("triton") is not None  # decided once at import: traceable by torch.compile
_logged: set[tuple[str, str]] = set()


def triton_available() -> bool:
    return _TRITON


def _log_choice(op: str, backend: str) -> None:
    if (op, backend) not in _logged:
        _logged.add((op, backend))
        log.info("sambay op %s -> %s", op, backend)


def use_triton(op: str, *tensors: torch.Tensor | None) -> bool:
    """True when `op` should run its Triton implementation for these tensors."""
    mode = kernel_mode()
    if mode == "reference" or op in _reference_ops():
        choice = False
    elif mode == "triton":
        if not triton_available():
            raise RuntimeError("SAMBAY_KERNELS=triton but triton is not installed (pip install triton)")
        choice = True
    else:
        choice = triton_available() and all(t is None or t.is_cuda for t in tensors)
    if not torch.compiler.is_compiling():  # logging would break a fullgraph compile; eager runs log it once
        _log_choice(op, "triton" if choice else "reference")
    return choice
