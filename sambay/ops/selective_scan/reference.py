"""Mamba-1 selective scan: the sequential pure-PyTorch specification.

Every other implementation (the chunked torch form, the Triton kernels) must match this one.

Recurrence per channel d and state n (all arithmetic in fp32):

    dt_t   = softplus(delta_t + delta_bias)            (if delta_softplus)
    h_t    = exp(dt_t * A) * h_{t-1} + dt_t * B_t * u_t
    y_t    = sum_n C_t[n] * h_t[n] + D * u_t
    y_t   *= silu(z_t)                                 (if z is given)

`h_{-1}` is `initial_state` (or zero). Where `seq_idx[b, t] != seq_idx[b, t-1]` a new document starts and
the state is reset to zero before step t (packed varlen batches).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def prepare_scan_inputs(u, delta, A, B, C, D, z, delta_bias, delta_softplus):
    """Cast to the working dtype and apply the delta bias and softplus; shared by the reference
    implementations. The working dtype is fp32, or float64 when u is float64 (so the chunked form and
    gradient checks can be compared against this spec at float64 precision)."""
    work = torch.float64 if u.dtype == torch.float64 else torch.float32
    dt = delta.to(work)
    if delta_bias is not None:
        dt = dt + delta_bias.to(work)
    if delta_softplus:
        dt = F.softplus(dt)  # torch's threshold (20) matches the CUDA kernels
    return (
        u.to(work),
        dt,
        A.to(work),
        B.to(work),
        C.to(work),
        None if D is None else D.to(work),
        None if z is None else z.to(work),
    )


def document_resets(seq_idx: torch.Tensor | None) -> torch.Tensor | None:
    """(B, T) int document ids -> (B, T) bool, True where a new document starts at t > 0."""
    if seq_idx is None:
        return None
    reset = torch.zeros_like(seq_idx, dtype=torch.bool)
    reset[:, 1:] = seq_idx[:, 1:] != seq_idx[:, :-1]
    return reset


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
):
    """Sequential selective scan.

    Args:
        u: (B, T, D) input after the causal conv.
        delta: (B, T, D) pre-softplus time step (without bias).
        A: (D, N) state matrix (negative; `-exp(A_log)`).
        B, C: (B, T, N) input-dependent projections.
        D: (D,) skip weight, optional.
        z: (B, T, D) gate; when given the output is multiplied by silu(z).
        delta_bias: (D,) added to delta before softplus.
        initial_state: (B, D, N) state before the first token (fp32; float64 for float64 inputs).
        seq_idx: (B, T) int document ids; the state resets where the id changes.
        return_final_state: also return the (B, D, N) fp32 state after the last token (float64 for
            float64 inputs).

    Returns:
        y: (B, T, D) in u's dtype, and the final state if requested.
    """
    out_dtype = u.dtype
    u, dt, A, B, C, D, z = prepare_scan_inputs(u, delta, A, B, C, D, z, delta_bias, delta_softplus)
    batch, seqlen, dim = u.shape
    h = u.new_zeros(batch, dim, A.shape[1]) if initial_state is None else initial_state.to(u.dtype).clone()
    reset = document_resets(seq_idx)
    ys = []
    for t in range(seqlen):
        if reset is not None:
            h = h * (~reset[:, t]).to(h.dtype)[:, None, None]
        dA = torch.exp(dt[:, t, :, None] * A)  # (B, D, N)
        dBu = dt[:, t, :, None] * B[:, t, None, :] * u[:, t, :, None]
        h = dA * h + dBu
        ys.append(torch.einsum("bdn,bn->bd", h, C[:, t]))
    y = torch.stack(ys, dim=1) if seqlen else u * 0  # (B, 0, D), still in u's graph
    if D is not None:
        y = y + u * D
    if z is not None:
        y = y * F.silu(z)
    y = y.to(out_dtype)
    return (y, h) if return_final_state else y
