"""Decode attention: ONE query token per sequence over a KV cache (full cache, shared KV, or SWA ring).

    decode_attention(q, k_cache, v_cache, cache_lens, slot_idx=None, scale=None) -> (B, H, dv)
    decode_diff_attention(q, k_cache, v_cache, cache_lens, slot_idx=None, scale=None) -> 2 x (B, H/2, 2·dv)

CUDA tensors run the split-K Triton kernel (`decode_triton`), everything else the PyTorch reference
(`decode_reference`); `sambay.ops.backend.use_triton` makes the choice (SAMBAY_KERNELS).
"""

from __future__ import annotations

import torch

from sambay.ops.backend import use_triton

from . import decode_reference


def decode_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, cache_lens: torch.Tensor,
                     slot_idx: torch.Tensor | None = None, scale: float | None = None,
                     block_table: torch.Tensor | None = None) -> torch.Tensor:
    """softmax(scale · q kᵀ) v over the first cache_lens[b] keys of cache row slot_idx[b], GQA.

    Args:
        q: (B, H, hs), unit stride on hs (any other strides, e.g. q[:, 0::2]).
        k_cache: (S, G, N, hs); v_cache: (S, G, N, dv). Any strides except a unit stride on the last dim, so
            views such as cache[:, 0::2] work without copies. Query head h reads KV head h // (H // G).
        cache_lens: (B,) int32 (or int64) device tensor, number of valid keys of each sequence; every
            cache position n < cache_lens[b] is attended, order irrelevant (for a SWA ring buffer of
            `window` slots pass min(len, window)). Must be >= 1 for live rows.
        slot_idx: (B,) int32/int64 cache row of each sequence, or None (row b). A negative slot marks a
            padded batch row: nothing is read and its output is 0.
        scale: default 1/sqrt(hs).
        block_table: (S, P) int32 for a paged cache: k_cache (pages, G, PAGE, hs), v_cache (pages, G, PAGE, dv)
            and key n of cache row s in page block_table[s, n // PAGE] at offset n % PAGE (PAGE a power of two
            >= 16 on the Triton path). None: k_cache / v_cache rows are the cache rows.
    Returns:
        (B, H, dv), contiguous, in q's dtype. Softmax and accumulation in fp32.
    CUDA-graph safe on the Triton path (no host sync; launch shapes depend on shapes only).
    """
    if use_triton("decode_attention", q, k_cache, v_cache, cache_lens, slot_idx, block_table):
        from .decode_triton import decode_attention as impl
    else:
        impl = decode_reference.decode_attention
    return impl(q, k_cache, v_cache, cache_lens, slot_idx, scale, block_table)


def decode_diff_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, cache_lens: torch.Tensor,
                          slot_idx: torch.Tensor | None = None, scale: float | None = None,
                          block_table: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Differential attention's two softmaxes (striped heads), each K/V element read once for both.

    With H query heads and G KV heads (both even): differential head j (of H/2) computes
        o1_j = softmax(scale · q_2j k_{2g}ᵀ) [v_2g ‖ v_2g+1],  o2_j = softmax(scale · q_2j+1 k_{2g+1}ᵀ) [v_2g ‖ v_2g+1]
    with g = j // (H / G), over the same valid keys as `decode_attention` (same arguments and layouts).
    Returns (o1, o2), each (B, H/2, 2·dv) in q's dtype; `DiffAttention.combine` turns them into the output.
    """
    if use_triton("decode_attention", q, k_cache, v_cache, cache_lens, slot_idx, block_table):
        from .decode_triton import decode_diff_attention as impl
    else:
        impl = decode_reference.decode_diff_attention
    return impl(q, k_cache, v_cache, cache_lens, slot_idx, scale, block_table)


__all__ = ["decode_attention", "decode_diff_attention"]
