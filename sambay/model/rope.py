"""Rotary position embedding (rotate-half), optionally on a leading fraction of each head."""

from __future__ import annotations

import torch


def apply_rope(x: torch.Tensor, positions: torch.Tensor, rotary_dim: int, base: float) -> torch.Tensor:
    """x (B, T, H, hs), positions (B, T) int -> x with its first `rotary_dim` dims rotated."""
    inv_freq = 1.0 / (base ** (torch.arange(0, rotary_dim, 2, device=x.device, dtype=torch.float32) / rotary_dim))
    angles = positions.to(torch.float32)[..., None] * inv_freq  # (B, T, rotary_dim/2)
    cos = torch.cat([angles.cos(), angles.cos()], dim=-1)[:, :, None, :]  # (B, T, 1, rotary_dim)
    sin = torch.cat([angles.sin(), angles.sin()], dim=-1)[:, :, None, :]
    rot, rest = x[..., :rotary_dim].float(), x[..., rotary_dim:]
    half = rotary_dim // 2
    rotated = torch.cat([-rot[..., half:], rot[..., :half]], dim=-1)
    out = (rot * cos + rotated * sin).to(x.dtype)
    return torch.cat([out, rest], dim=-1) if rest.shape[-1] else out
