"""What the Triton kernels under `sambay/ops` share: elementwise maths, constants and host-side helpers.

Maths. On sm_90, `tl.log` compiles to a ~17-instruction accurate software log, `tl.exp` to an `ex2` wrapped
in a denormal fix-up (4 instructions) and `x / y` to a ~10-instruction IEEE division. In a scan that runs
them once per (token, channel), or once per state, that is a large share of the loop. With `FAST` the
kernels use the hardware approximations instead: `lg2.approx` and `div.approx` through libdevice's
`fast_logf` / `fast_dividef` (2 instructions each; about 2 ulp, flush-to-zero), and `tl.exp2` of a
pre-scaled argument (one `MUFU.EX2`, already flush-to-zero). The Triton interpreter has no libdevice, so
there `FAST` is off and the portable forms run: same maths, which is what the CPU tests check (`fast_math()`).

Constants. `LOG2E` and `LN2` are `tl.constexpr` globals, so jitted code reads them as `tm.LOG2E` (compiled
and interpreted alike); host code takes the float as `LOG2E.value`.

Host side. `empty` allocates kernel outputs (NaN-filled while tests set `POISON`), `unit_last` gives a tensor
the unit last-dim stride every kernel needs, `sm_count` is the launch heuristics' SM count.
"""

from __future__ import annotations

import functools
import os

import torch
import triton
import triton.language as tl
from triton.language.extra import libdevice

LOG2E = tl.constexpr(1.4426950408889634)  # log2(e): e^x = 2^(x * LOG2E), the form MUFU.EX2 computes
LN2 = tl.constexpr(0.6931471805599453)  # ln(2) = 1 / LOG2E: undoes that scaling (A = (A * LOG2E) * LN2)

# Debug switch for tests: `empty` fills every floating-point buffer with NaN first, so an element a kernel
# fails to write (or a neutral partial it forgets) shows up instead of passing on whatever memory held.
POISON = False


def empty(*shape, device, dtype) -> torch.Tensor:
    """`torch.empty` for a kernel-written buffer, or a NaN-filled one while `POISON` is set (float dtypes)."""
    if POISON and dtype.is_floating_point:
        return torch.full(shape, float("nan"), device=device, dtype=dtype)
    return torch.empty(*shape, device=device, dtype=dtype)


def unit_last(x: torch.Tensor | None) -> torch.Tensor | None:
    """x itself when its last dim has unit stride (any batch / time strides), else a contiguous copy; None
    passes through. The kernels take arbitrary leading strides but index the last dim unstrided."""
    if x is None or x.stride(-1) == 1:
        return x
    return x.contiguous()


@functools.cache
def _sm_count_at(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def sm_count(device: torch.device, default: int = 1) -> int:
    """The number of SMs of a CUDA device (cached per device index), `default` for any other device (CPU
    tensors under the interpreter). Plain Python on constant inputs: dynamo traces it when a compiled
    region calls a launch heuristic that uses it (decode attention's `default_splits`)."""
    if device.type != "cuda":
        return default
    return _sm_count_at(device.index if device.index is not None else torch.cuda.current_device())


def triton_interpreting() -> bool:
    """True when Triton kernels run in the CPU interpreter (TRITON_INTERPRET=1)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def fast_math() -> bool:
    """The `FAST` constexpr to launch kernels with: hardware approximations unless interpreting."""
    return not triton_interpreting()


@triton.jit
def exp(x):
    """e^x as one ex2 (no denormal results: they flush to 0, which no decay or softmax weight needs)."""
    return tl.exp2(x * LOG2E)


@triton.jit
def log(x, FAST: tl.constexpr):
    """Natural log of a positive normal x (`lg2.approx` when FAST)."""
    if FAST:
        r = libdevice.fast_logf(x)
    else:
        r = tl.log(x)
    return r


@triton.jit
def sigmoid(x, FAST: tl.constexpr):
    """1 / (1 + e^-x); for x << 0 the denominator overflows to inf and the result is 0, as it should be."""
    if FAST:
        r = libdevice.fast_dividef(1.0, 1.0 + exp(-x))
    else:
        r = 1.0 / (1.0 + exp(-x))
    return r


@triton.jit
def softplus(x, FAST: tl.constexpr):
    """log(1 + e^x), and x itself above torch's threshold of 20 (log1p is missing in the interpreter)."""
    return tl.where(x > 20.0, x, log(1.0 + exp(x), FAST))
