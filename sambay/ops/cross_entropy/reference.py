"""Linear + cross-entropy, the plain way: full logits, fp32 softmax. The spec for `chunked.py`."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                         ignore_index: int = -100) -> torch.Tensor:
    """hidden (N, d), weight (V, d), targets (N,) -> mean loss over non-ignored targets (fp32 scalar)."""
    logits = F.linear(hidden, weight)
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))  # fp32 softmax at least
    return F.cross_entropy(logits, targets, ignore_index=ignore_index)
