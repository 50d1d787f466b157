"""Decode attention (one query token per sequence over a KV cache): loop-free PyTorch reference.

Same contracts as `sambay.ops.attention.decode` (see there); memory O(B * G * N * (hs + dv)) for the
gathered cache rows, so callers with huge caches should feed it batch chunks.
"""

from __future__ import annotations

import torch


def _gather(q, k_cache, v_cache, cache_lens, slot_idx, block_table=None):
    """The cache rows of each sequence (fp32; pages laid end to end when paged) and the (B, N) mask of its
    valid keys."""
    batch = q.shape[0]
    rows = torch.arange(batch, device=q.device) if slot_idx is None else slot_idx.to(q.device).long()
    live = rows >= 0
    rows = rows.clamp_min(0)
    lens = torch.where(live, cache_lens.to(q.device).long(), 0)
    if block_table is None:
        k, v = k_cache[rows], v_cache[rows]
    else:  # (B, pages, G, PAGE, d) -> (B, G, pages·PAGE, d)
        pages = block_table[rows].long()
        k, v = (c[pages].permute(0, 2, 1, 3, 4).flatten(2, 3) for c in (k_cache, v_cache))
    valid = torch.arange(k.shape[2], device=q.device)[None, :] < lens[:, None]
    return k.float(), v.float(), valid


def _attend(q, k, v, valid, scale):
    """q (B, H, hs), gathered k (B, G, N, hs) / v (B, G, N, dv), valid (B, N) -> (B, H, dv) fp32."""
    batch, n_head, hs = q.shape
    n_kv = k.shape[1]
    scale = hs ** -0.5 if scale is None else scale
    scores = torch.einsum("bgid,bgnd->bgin", q.float().view(batch, n_kv, n_head // n_kv, hs), k) * scale
    scores = scores.masked_fill(~valid[:, None, None, :], float("-inf"))
    probs = torch.softmax(scores, dim=-1).nan_to_num(0.0)  # padded rows (no valid key) -> 0
    return torch.einsum("bgin,bgnd->bgid", probs, v).reshape(batch, n_head, -1)


def decode_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, cache_lens: torch.Tensor,
                     slot_idx: torch.Tensor | None = None, scale: float | None = None,
                     block_table: torch.Tensor | None = None) -> torch.Tensor:
    k, v, valid = _gather(q, k_cache, v_cache, cache_lens, slot_idx, block_table)
    return _attend(q, k, v, valid, scale).to(q.dtype)


def decode_diff_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, cache_lens: torch.Tensor,
                          slot_idx: torch.Tensor | None = None, scale: float | None = None,
                          block_table: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    k, v, valid = _gather(q, k_cache, v_cache, cache_lens, slot_idx, block_table)
    v_pair = torch.cat([v[:, 0::2], v[:, 1::2]], dim=-1)  # (B, G/2, N, 2dv) = [v_2g ‖ v_2g+1]
    o1 = _attend(q[:, 0::2], k[:, 0::2], v_pair, valid, scale)
    o2 = _attend(q[:, 1::2], k[:, 1::2], v_pair, valid, scale)
    return o1.to(q.dtype), o2.to(q.dtype)
