"""Depthwise causal conv1d (Mamba's short conv): the pure-PyTorch specification.

Layout: x (B, T, D), weight (D, W), bias (D,), conv state (B, D, W-1) holding the last W-1 *raw* (pre-conv)
inputs, oldest first. For every channel d and time t (arithmetic in fp32):

    out[b, t, d] = act( bias[d] + sum_{k=0}^{W-1} weight[d, k] * x[b, t - (W-1) + k, d] )

where times s < 0 read `initial_state[b, d, s + W-1]` (zeros when no state is given). With `seq_idx` a
tap at time s only contributes to time t when s and t lie in the same document (no id change in (s, t]);
the initial state belongs to the first document. The final state is the last W-1 inputs of the *last*
document (zeros in front of where that document starts), so decode can continue it without leakage.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def segment_ids(seq_idx: torch.Tensor | None, batch: int, seqlen: int, device) -> torch.Tensor:
    """(B, T) int document ids -> (B, T) int64 running segment number (0 for the first document).

    A new segment starts wherever the id differs from the previous token's, exactly like the scan's
    `document_resets`, so ids that come back (0, 1, 0) still give three segments.
    """
    if seq_idx is None:
        return torch.zeros(batch, seqlen, dtype=torch.long, device=device)
    reset = torch.zeros_like(seq_idx, dtype=torch.long)
    reset[:, 1:] = (seq_idx[:, 1:] != seq_idx[:, :-1]).long()
    return reset.cumsum(1)


def _activate(x: torch.Tensor, activation: str | None) -> torch.Tensor:
    if activation in (None, "identity", "none"):
        return x
    if activation in ("silu", "swish"):
        return F.silu(x)
    raise ValueError(f"unsupported activation {activation!r}")


def causal_conv1d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    activation: str | None = "silu",
    initial_state: torch.Tensor | None = None,
    seq_idx: torch.Tensor | None = None,
    return_final_state: bool = False,
):
    """Causal depthwise conv over time.

    Args:
        x: (B, T, D) raw inputs.
        weight: (D, W) taps; weight[:, -1] multiplies the current token.
        bias: (D,) optional.
        activation: None or "silu".
        initial_state: (B, D, W-1) previous raw inputs, oldest first (any float dtype).
        seq_idx: (B, T) int document ids; taps never cross a document boundary.
        return_final_state: also return the (B, D, W-1) state after the last token (x's dtype).

    Returns:
        out (B, T, D) in x's dtype, and the final state if requested.
    """
    batch, seqlen, dim = x.shape
    width = weight.shape[1]
    work = torch.float64 if x.dtype == torch.float64 else torch.float32
    xf = x.to(work)
    if initial_state is None:
        init = xf.new_zeros(batch, width - 1, dim)
    else:
        init = initial_state.to(work).transpose(1, 2)  # (B, W-1, D)
    ext = torch.cat([init, xf], dim=1)  # (B, W-1+T, D); ext[:, s + W-1] = x at time s
    seg = segment_ids(seq_idx, batch, seqlen, x.device)
    first = seg[:, :1] if seqlen else seg.new_zeros(batch, 1)  # T = 0: an empty (B, 0, D) input
    seg_ext = torch.cat([first.expand(batch, width - 1), seg], dim=1)  # state joins the first doc
    wf = weight.to(work)
    out = xf.new_zeros(batch, seqlen, dim)
    if bias is not None:
        out = out + bias.to(work)
    for k in range(width):
        # tap k reads time t - (W-1) + k, i.e. ext index t + k
        tap = ext[:, k : k + seqlen]
        same = (seg_ext[:, k : k + seqlen] == seg).to(work)[..., None]
        out = out + wf[:, k] * tap * same
    out = _activate(out, activation).to(x.dtype)
    if not return_final_state:
        return out
    last = ext[:, seqlen : seqlen + width - 1]  # the last W-1 positions of ext
    keep = (seg_ext[:, seqlen : seqlen + width - 1] == seg[:, -1:]).to(work)[..., None] if seqlen else 1.0
    final = (last * keep).transpose(1, 2).contiguous().to(x.dtype)
    return out, final


def causal_conv1d_update(
    x: torch.Tensor,
    conv_state: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    activation: str | None = "silu",
    slot_idx: torch.Tensor | None = None,
) -> torch.Tensor:
    """One decode step; updates `conv_state` in place.

    Args:
        x: (B, D) the new raw input per sequence.
        conv_state: (S, D, W-1) state pool (S >= B), oldest input first; rows `slot_idx` are read and
            shifted left by one with x appended.
        weight: (D, W); bias: (D,) optional; activation: None or "silu".
        slot_idx: (B,) int slot of each batch row (None: row b uses slot b). A negative slot marks a
            padded row: its state is not touched and its output is 0.

    Returns:
        out: (B, D) in x's dtype.
    """
    batch, dim = x.shape
    work = torch.float64 if x.dtype == torch.float64 else torch.float32
    slots = torch.arange(batch, device=x.device) if slot_idx is None else slot_idx.long()
    valid = slots >= 0
    safe = torch.where(valid, slots, torch.zeros_like(slots))
    state = conv_state[safe].to(work)  # (B, D, W-1)
    window = torch.cat([state, x.to(work)[:, :, None]], dim=2)  # (B, D, W)
    out = (window * weight.to(work)).sum(-1)
    if bias is not None:
        out = out + bias.to(work)
    out = _activate(out, activation) * valid.to(work)[:, None]
    new_state = window[:, :, 1:].to(conv_state.dtype)
    conv_state[slots[valid]] = new_state[valid]
    return out.to(x.dtype)
