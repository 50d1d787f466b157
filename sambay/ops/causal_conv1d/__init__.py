"""Depthwise causal conv1d (Mamba's short conv) and its one-token decode update: public entry points.

Both dispatch through `sambay.ops.backend.use_triton`: Triton kernels (`triton.py`) for CUDA tensors, the
PyTorch spec (`reference.py`) otherwise.
"""

from __future__ import annotations

import torch

from sambay.ops.backend import use_triton

from . import reference


def causal_conv1d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    activation: str | None = "silu",
    initial_state: torch.Tensor | None = None,
    seq_idx: torch.Tensor | None = None,
    return_final_state: bool = False,
):
    """out[b, t, d] = act(bias[d] + sum_k weight[d, k] * x[b, t - (W-1) + k, d]), taps within one document.

    Args:
        x: (B, T, D) raw inputs (unit stride along D; batch/time strides are free).
        weight: (D, W) taps, weight[:, -1] on the current token; bias: (D,) or None.
        activation: "silu" or None.
        initial_state: (B, D, W-1) previous raw inputs, oldest first, or None (zeros).
        seq_idx: (B, T) int document ids; no tap crosses a change of id.
        return_final_state: also return the (B, D, W-1) state (last W-1 inputs of the last document).

    Returns:
        out (B, T, D) in x's dtype, or (out, final_state). Differentiable in x, weight, bias, initial_state.
    """
    if use_triton("causal_conv1d", x, weight, bias, initial_state, seq_idx):
        from .triton import causal_conv1d as impl
    else:
        impl = reference.causal_conv1d
    return impl(x, weight, bias, activation, initial_state, seq_idx, return_final_state)


def causal_conv1d_update(
    x: torch.Tensor,
    conv_state: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    activation: str | None = "silu",
    slot_idx: torch.Tensor | None = None,
) -> torch.Tensor:
    """One decode step: out = act(bias + weight . [state, x]) and the state shifts in x, in place.

    Args:
        x: (B, D) new raw input per sequence.
        conv_state: (S, D, W-1) state pool, updated in place at rows slot_idx.
        weight: (D, W); bias: (D,) or None; activation: "silu" or None.
        slot_idx: (B,) int slots (None: row b uses slot b); negative = padded row (state untouched,
            output 0). The Triton path has no host syncs and fixed shapes (CUDA-graph safe).

    Returns:
        out (B, D) in x's dtype.
    """
    if use_triton("causal_conv1d_update", x, conv_state, weight, bias, slot_idx):
        from .triton import causal_conv1d_update as impl
    else:
        impl = reference.causal_conv1d_update
    return impl(x, conv_state, weight, bias, activation, slot_idx)


__all__ = ["causal_conv1d", "causal_conv1d_update"]
