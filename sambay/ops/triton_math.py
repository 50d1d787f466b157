"""Elementwise maths shared by the Triton kernels, in the cheapest form the GPU offers.

On sm_90, `tl.log` compiles to a ~17-instruction accurate software log, `tl.exp` to an `ex2` wrapped in a
denormal fix-up (4 instructions) and `x / y` to a ~10-instruction IEEE division. In a scan that runs them
once per (token, channel), or once per state, that is a large share of the loop. With `FAST` the kernels
use the hardware approximations instead: `lg2.approx` and `div.approx` through libdevice's `fast_logf` /
`fast_dividef` (2 instructions each; about 2 ulp, flush-to-zero), and `tl.exp2` of a pre-scaled argument
(one `MUFU.EX2`, already flush-to-zero). The Triton interpreter has no libdevice, so there `FAST` is off
and the portable forms run: same maths, which is what the CPU tests check (`fast_math()`).
"""

from __future__ import annotations

import os

import triton
import triton.language as tl
from triton.language.extra import libdevice

LOG2E = 1.4426950408889634
LN2 = 0.6931471805599453


def triton_interpreting() -> bool:
    """True when Triton kernels run in the CPU interpreter (TRITON_INTERPRET=1)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def fast_math() -> bool:
    """The `FAST` constexpr to launch kernels with: hardware approximations unless interpreting."""
    return not triton_interpreting()


@triton.jit
def exp(x):
    """e^x as one ex2 (no denormal results: they flush to 0, which no decay or softmax weight needs)."""
    return tl.exp2(x * 1.4426950408889634)


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
