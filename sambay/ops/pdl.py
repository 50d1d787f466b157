"""Programmatic dependent launch (PDL, sm_90+) for the small decode kernels.

A decode step is a chain of short kernels, and each one pays a launch and ramp-up (2.2 us for an empty
2560-program grid on the H200) plus the DRAM latency of its first loads before any bytes flow. With PDL a
kernel is launched while the one before it on the stream is still finishing; it waits in
`griddepcontrol.wait` (`_wait_for_previous_kernel`) until that kernel's writes are visible. What a kernel
reads before the wait overlaps the previous kernel's tail, so only data the previous kernel cannot be
writing may be read there: the decode kernels read their slot-indexed state early only when the caller
says so (`early_state_load`, set by the engine's Mamba step, where the previous kernel is a GEMM).

Every kernel here waits before it lets its own dependents launch, so "the kernel before mine has finished"
also implies that every earlier kernel has. Outside sm_90+ CUDA, in the Triton interpreter, with a Triton
without `gdc_wait`, or with `SAMBAY_PDL=0`, kernels launch normally (`PDL` is False).
"""

from __future__ import annotations

import functools
import os

import torch
import triton
import triton.language as tl


@functools.cache
def _device_supports_pdl(index: int) -> bool:
    if torch.cuda.get_device_capability(index)[0] < 9:
        return False
    try:
        from triton.backends.nvidia.compiler import CUDAOptions
        from triton.language.extra.cuda import gdc_launch_dependents, gdc_wait  # noqa: F401
    except ImportError:
        return False
    return "launch_pdl" in CUDAOptions.__dataclass_fields__


def use_pdl(t: torch.Tensor) -> bool:
    """Whether kernels on `t`'s device launch with PDL (`SAMBAY_PDL=0` turns it off; read on every call)."""
    if os.environ.get("SAMBAY_PDL", "1").strip().lower() in ("0", "off", "false"):
        return False
    return t.is_cuda and _device_supports_pdl(t.device.index if t.device.index is not None else 0)


def launch_options(pdl: bool) -> dict:
    """Extra launch keywords: the option exists only in Triton builds with PDL (and not in the interpreter)."""
    return {"launch_pdl": True} if pdl else {}


@triton.jit
def _wait_for_previous_kernel():
    """Block until the previous kernel on the stream has finished and its writes are visible, then let the
    next PDL kernel launch. Call only under a `PDL` constexpr (the interpreter has no such instruction)."""
    tl.extra.cuda.gdc_wait()
    tl.extra.cuda.gdc_launch_dependents()
