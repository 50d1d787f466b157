"""Attention with an explicit boolean mask (causal, sliding window, documents, cross), GQA by broadcasting."""

from __future__ import annotations

import torch


def masked_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor,
                     scale: float | None = None) -> torch.Tensor:
    """Softmax attention.

    Args:
        q: (B, Tq, H, hs); k: (B, Tk, G, hs); v: (B, Tk, G, dv) with H a multiple of G (query head h reads
            KV head h // (H / G)).
        mask: (B or 1, 1, Tq, Tk) bool, True = may attend. A query with no allowed key returns zeros.
    Returns:
        (B, Tq, H, dv) in q's dtype; softmax in fp32.
    """
    n_rep = q.shape[2] // k.shape[2]
    if n_rep > 1:
        k = k.repeat_interleave(n_rep, dim=2)
        v = v.repeat_interleave(n_rep, dim=2)
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    scores = torch.einsum("bqhd,bkhd->bhqk", q.float(), k.float()) * scale
    scores = scores.masked_fill(~mask, float("-inf"))
    probs = torch.softmax(scores, dim=-1).nan_to_num(0.0)  # fully masked rows (padding) -> zeros, not NaN
    return torch.einsum("bhqk,bkhd->bqhd", probs, v.float()).to(q.dtype)
