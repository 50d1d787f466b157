"""Mamba-1 decode step (one token per sequence slot): public entry point.

The step is split around x_proj (a GEMM that needs the post-conv x):
    x  = causal_conv1d_update(x_raw, conv_state, conv_w, conv_b, "silu", slot_idx)   # sambay.ops.causal_conv1d
    dt, B, C = x_proj / dt_proj(x)                                                    # GEMMs, outside
    y  = selective_state_update(x, dt, A, B, C, D, z, dt_bias, ssm_state, slot_idx)  # this op
Both kernels index the state pools by slot, update them in place and are CUDA-graph safe.
"""

from __future__ import annotations

import torch

from sambay.ops.backend import use_triton

from . import reference


def selective_state_update(
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None,
    z: torch.Tensor | None,
    dt_bias: torch.Tensor | None,
    ssm_state: torch.Tensor,
    slot_idx: torch.Tensor | None = None,
    dt_softplus: bool = True,
) -> torch.Tensor:
    """h = exp(dt A) h + dt B x in place at ssm_state[slot_idx[b]]; returns y = (C.h + D x) * silu(z).

    Args:
        x: (B, D) post-conv input; dt: (B, D) before dt_bias/softplus.
        A: (D, N); B, C: (B, N); D: (D,) or None; z: (B, D) or None; dt_bias: (D,) or None.
        ssm_state: (S, D, N) fp32 state pool, unit stride along N.
        slot_idx: (B,) int32/int64 slots (None: row b uses slot b); negative = padded row (state untouched,
            y = 0). Slots must be distinct.

    Returns:
        y (B, D) in x's dtype.
    """
    if use_triton("selective_state_update", x, dt, A, B, C, D, z, dt_bias, ssm_state, slot_idx):
        from .triton import selective_state_update as impl
    else:
        impl = reference.selective_state_update
    return impl(x, dt, A, B, C, D, z, dt_bias, ssm_state, slot_idx, dt_softplus)


__all__ = ["selective_state_update"]
