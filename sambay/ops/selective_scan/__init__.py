"""Mamba-1 selective scan: public entry point.

`selective_scan` picks the implementation once per call through `sambay.ops.backend.use_triton`:
the Triton kernels (`triton.py`, forward + backward) for CUDA tensors, the sequential PyTorch spec
(`reference.py`) otherwise. `chunked.py` holds the chunked parallel form in PyTorch used to check the
kernel's maths.
"""

from __future__ import annotations

import torch

from sambay.ops.backend import use_triton

from . import reference


def selective_scan(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = True,
    initial_state: torch.Tensor | None = None,
    seq_idx: torch.Tensor | None = None,
    return_final_state: bool = False,
):
    """Mamba-1 selective scan, h_t = exp(dt_t A) h_{t-1} + dt_t B_t u_t, y_t = C_t.h_t + D u_t (* silu(z_t)).

    Args:
        u: (B, T, D) input (after the causal conv); unit stride along D.
        delta: (B, T, D) time step before bias and softplus.
        A: (D, N) state matrix, negative (fp32).
        B, C: (B, T, N) input-dependent projections.
        D: (D,) skip weight or None.
        z: (B, T, D) gate or None (y is multiplied by silu(z)).
        delta_bias: (D,) added to delta before softplus, or None.
        delta_softplus: apply softplus to delta + delta_bias.
        initial_state: (B, D, N) fp32 state before the first token, or None (zeros).
        seq_idx: (B, T) int document ids; the state resets to zero where the id changes.
        return_final_state: also return the (B, D, N) fp32 state after the last token.

    Returns:
        y (B, T, D) in u's dtype, or (y, final_state). Differentiable in every float input.
    """
    # an empty input (B, T or D = 0) gives a kernel nothing to walk: the reference returns it as is
    if u.numel() > 0 and use_triton("selective_scan", u, delta, A, B, C, D, z, delta_bias, initial_state, seq_idx):
        from .triton import selective_scan as impl
    else:
        impl = reference.selective_scan
    return impl(
        u, delta, A, B, C, D=D, z=z, delta_bias=delta_bias, delta_softplus=delta_softplus,
        initial_state=initial_state, seq_idx=seq_idx, return_final_state=return_final_state,
    )


__all__ = ["selective_scan"]
