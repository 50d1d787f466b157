"""Chunked parallel form of the Mamba-1 selective scan, in PyTorch.

Same contract as `reference.selective_scan`; this is the maths the Triton kernel implements, written with
whole-chunk tensor ops so it can be checked against the sequential spec in float64.

Within a chunk of L tokens starting at c0, with S_t = sum_{k=c0}^{t} dt_k * A (a log-space cumulative
decay, <= 0 because A < 0):

    h_t = exp(S_t) * h_{c0-1} * [no reset in (c0-1, t]]
        + sum_{c0 <= s <= t, same document} exp(S_t - S_s) * dt_s * B_s * u_s

Every exponent is <= 0 (s <= t), so nothing overflows. The state after the chunk is carried into the
next one. Memory is O(B * L^2 * D * N) per chunk: this is a checking tool, not a fast path.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .reference import document_resets, prepare_scan_inputs


def selective_scan(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = True,
    initial_state: torch.Tensor | None = None,
    seq_idx: torch.Tensor | None = None,
    return_final_state: bool = False,
    chunk_size: int = 16,
):
    """Chunked selective scan; shapes as in `reference.selective_scan` (u/delta/z (B, T, D), A (D, N),
    B/C (B, T, N), D/delta_bias (D,), states (B, D, N), seq_idx (B, T)).

    Computes in float64 when u is float64, else in float32.
    """
    out_dtype = u.dtype
    work = torch.float64 if u.dtype == torch.float64 else torch.float32
    u, dt, A, B, C, D, z = prepare_scan_inputs(u, delta, A, B, C, D, z, delta_bias, delta_softplus)
    u, dt, A, B, C = (t.to(work) for t in (u, dt, A, B, C))
    batch, seqlen, dim = u.shape
    nstate = A.shape[1]
    h = u.new_zeros(batch, dim, nstate) if initial_state is None else initial_state.to(work).clone()
    reset = document_resets(seq_idx)
    seg = (
        torch.zeros(batch, seqlen, dtype=torch.long, device=u.device)
        if reset is None
        else reset.long().cumsum(1)
    )
    ys = []
    for c0 in range(0, seqlen, chunk_size):
        c1 = min(c0 + chunk_size, seqlen)
        L = c1 - c0
        dtc, uc, Bc, Cc = dt[:, c0:c1], u[:, c0:c1], B[:, c0:c1], C[:, c0:c1]
        S = torch.cumsum(dtc[..., None] * A, dim=1)  # (B, L, D, N) log decay from c0 to t
        seg_c = seg[:, c0:c1]
        seg_prev = seg[:, c0 - 1 : c0] if c0 > 0 else seg[:, :1]
        carry_ok = (seg_c == seg_prev).to(work)  # (B, L): the previous state reaches t
        # pairwise decay exp(S_t - S_s) for s <= t in the same document, (B, L_t, L_s, D, N)
        tri = torch.ones(L, L, dtype=torch.bool, device=u.device).tril()
        same = (seg_c[:, :, None] == seg_c[:, None, :]) & tri
        diff = S[:, :, None] - S[:, None, :]
        decay = torch.where(same[..., None, None], torch.exp(diff.clamp(max=0)), diff.new_zeros(()))
        b = dtc[..., None] * Bc[:, :, None, :] * uc[..., None]  # (B, L, D, N)
        hs = torch.einsum("btsdn,bsdn->btdn", decay, b)
        hs = hs + torch.exp(S) * h[:, None] * carry_ok[..., None, None]
        ys.append(torch.einsum("btdn,btn->btd", hs, Cc))
        h = hs[:, -1]
    y = torch.cat(ys, dim=1) if ys else u.new_zeros(batch, 0, dim)
    if D is not None:
        y = y + u * D.to(work)
    if z is not None:
        y = y * F.silu(z.to(work))
    y = y.to(out_dtype)
    return (y, h) if return_final_state else y
