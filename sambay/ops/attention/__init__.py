"""Attention entry point used by the model's training / full-sequence forward."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from sambay.ops.attention.reference import masked_attention


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """q (B, Tq, H, hs), k (B, Tk, G, hs), v (B, Tk, G, dv), mask (B|1, 1, Tq, Tk) bool -> (B, Tq, H, dv).

    Every query must have at least one allowed key (true for causal self/cross attention); use
    `masked_attention` for masks with empty rows.
    """
    out = F.scaled_dot_product_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask,
        enable_gqa=q.shape[2] != k.shape[2],
    )
    return out.transpose(1, 2)


__all__ = ["attention", "masked_attention"]


from sambay.ops.attention.decode import decode_attention, decode_diff_attention  # noqa: E402
from sambay.ops.attention.prefill import prefill_attention  # noqa: E402

__all__ += ["decode_attention", "decode_diff_attention", "prefill_attention"]
