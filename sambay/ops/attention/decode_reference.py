"""Decode attention (one query token per sequence over a KV cache): loop-free PyTorch reference.

Same contract as `sambay.ops.attention.decode.decode_attention` (see there); memory O(B * G * N * (hs + dv))
for the gathered cache rows, so callers with huge caches should feed it batch chunks.
"""

from __future__ import annotations

import torch


def decode_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, cache_lens: torch.Tensor,
                     slot_idx: torch.Tensor | None = None, v_hi: torch.Tensor | None = None,
                     scale: float | None = None) -> torch.Tensor:
    batch, n_head, hs = q.shape
    n_kv, n_max = k_cache.shape[1], k_cache.shape[2]
    rep = n_head // n_kv
    rows = torch.arange(batch, device=q.device) if slot_idx is None else slot_idx.to(q.device).long()
    live = rows >= 0
    rows = rows.clamp_min(0)
    k = k_cache[rows].float()  # (B, G, N, hs)
    v = v_cache[rows].float()
    if v_hi is not None:
        v = torch.cat([v, v_hi[rows].float()], dim=-1)
    scale = hs ** -0.5 if scale is None else scale
    scores = torch.einsum("bgid,bgnd->bgin", q.float().view(batch, n_kv, rep, hs), k) * scale
    lens = torch.where(live, cache_lens.to(q.device).long(), 0)
    valid = torch.arange(n_max, device=q.device)[None, :] < lens[:, None]  # (B, N)
    scores = scores.masked_fill(~valid[:, None, None, :], float("-inf"))
    probs = torch.softmax(scores, dim=-1).nan_to_num(0.0)  # padded rows (no valid key) -> 0
    out = torch.einsum("bgin,bgnd->bgid", probs, v)
    return out.reshape(batch, n_head, -1).to(q.dtype)
