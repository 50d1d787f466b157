"""Mamba-2 state-space duality (SSD) scan and decode step: the sequential pure-PyTorch specification.

Per head h (scalar decay), head channel p and state n, all arithmetic in fp32 (float64 for float64 inputs):

    dt_t   = softplus(dt_t + dt_bias)                         (if dt_softplus)
    S_t    = exp(dt_t[h] · A[h]) · S_{t-1} + dt_t[h] · x_t[h, p] · B_t[g(h), n]
    y_t    = sum_n S_t[h, p, n] · C_t[g(h), n] + D[h] · x_t[h, p]

Heads share B and C within a group: head h reads group h // (H / G). `S_{-1}` is `initial_state` (or zero);
where `seq_idx[b, t] != seq_idx[b, t-1]` a new document starts and the state is reset before step t.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from sambay.ops.selective_scan.reference import document_resets


def _time_step(dt: torch.Tensor, dt_bias: torch.Tensor | None, dt_softplus: bool, work: torch.dtype) -> torch.Tensor:
    dt = dt.to(work)
    if dt_bias is not None:
        dt = dt + dt_bias.to(work)
    return F.softplus(dt) if dt_softplus else dt


def _heads(t: torch.Tensor, n_head: int) -> torch.Tensor:
    """(..., G, N) group rows -> (..., H, N), head h reading group h // (H / G)."""
    return t.repeat_interleave(n_head // t.shape[-2], dim=-2)


def ssd_scan(x: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
             D: torch.Tensor | None = None, dt_bias: torch.Tensor | None = None, dt_softplus: bool = True,
             initial_state: torch.Tensor | None = None, seq_idx: torch.Tensor | None = None,
             return_final_state: bool = False):
    """Sequential SSD scan.

    Args:
        x: (B, T, H, P) input after the causal conv.
        dt: (B, T, H) time step before bias and softplus.
        A: (H,) negative decay rates (`-exp(A_log)`).
        B, C: (B, T, G, N) input-dependent projections, G dividing H.
        D: (H,) skip weight, optional. dt_bias: (H,) added to dt before softplus, optional.
        initial_state: (B, H, P, N) state before the first token (fp32), or None (zeros).
        seq_idx: (B, T) int document ids; the state resets where the id changes.
        return_final_state: also return the (B, H, P, N) fp32 state after the last token.

    Returns:
        y (B, T, H, P) in x's dtype, and the final state if requested.
    """
    work = torch.float64 if x.dtype == torch.float64 else torch.float32
    batch, seqlen, n_head, head_dim = x.shape
    xf, d = x.to(work), _time_step(dt, dt_bias, dt_softplus, work)
    Bh, Ch = _heads(B.to(work), n_head), _heads(C.to(work), n_head)  # (B, T, H, N)
    decay = torch.exp(d * A.to(work))  # (B, T, H)
    h = (xf.new_zeros(batch, n_head, head_dim, B.shape[-1]) if initial_state is None
         else initial_state.to(work).clone())
    reset = document_resets(seq_idx)
    ys = []
    for t in range(seqlen):
        if reset is not None:
            h = h * (~reset[:, t]).to(work)[:, None, None, None]
        h = decay[:, t, :, None, None] * h + (d[:, t, :, None] * xf[:, t])[..., None] * Bh[:, t, :, None, :]
        ys.append(torch.einsum("bhpn,bhn->bhp", h, Ch[:, t]))
    y = torch.stack(ys, dim=1) if seqlen else xf * 0  # (B, 0, H, P), still in x's graph
    if D is not None:
        y = y + xf * D.to(work)[:, None]
    y = y.to(x.dtype)
    return (y, h) if return_final_state else y


def ssd_state_update(x: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
                     D: torch.Tensor | None, dt_bias: torch.Tensor | None, state: torch.Tensor,
                     slot_idx: torch.Tensor, dt_softplus: bool = True) -> torch.Tensor:
    """One recurrent step for a batch of slots, updating `state` in place.

    Args:
        x: (B, H, P) post-conv input; dt: (B, H) before bias / softplus; A: (H,); B, C: (B, G, N);
        D: (H,) or None; dt_bias: (H,) or None.
        state: (S, H, P, N) fp32 state pool (S >= B); slot_idx: (B,) distinct int slots.

    Returns:
        y: (B, H, P) in x's dtype.
    """
    work = torch.float64 if x.dtype == torch.float64 else torch.float32
    n_head = x.shape[1]
    xf, d = x.to(work), _time_step(dt, dt_bias, dt_softplus, work)
    h = state[slot_idx].to(work)
    h = (torch.exp(d * A.to(work))[..., None, None] * h
         + (d[..., None] * xf)[..., None] * _heads(B.to(work), n_head)[:, :, None, :])
    y = torch.einsum("bhpn,bhn->bhp", h, _heads(C.to(work), n_head))
    if D is not None:
        y = y + xf * D.to(work)[:, None]
    state[slot_idx] = h.to(state.dtype)
    return y.to(x.dtype)
