"""Mamba-1 decode step (one token per sequence): the pure-PyTorch specification.

The decode step of a Mamba-1 layer is split in two because x_proj (a GEMM producing dt, B, C from the
post-conv x) sits between the short conv and the scan:

    1. `causal_conv1d_update(x_raw, conv_state, conv_w, conv_b, "silu", slot_idx)`  -> x   (B, D)
    2. x_proj / dt_proj GEMMs (outside the kernels)                                  -> dt, B, C
    3. `selective_state_update(x, dt, A, B, C, D, z, dt_bias, ssm_state, slot_idx)`  -> y   (B, D)

Step 3 fuses softplus(dt + dt_bias), the state update h = exp(dt*A) h + dt*B*x (fp32 state, in place at
`ssm_state[slot_idx[b]]`), the readout y = C.h + D*x and the optional silu(z) gate.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def selective_state_update(
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None,
    z: torch.Tensor | None,
    dt_bias: torch.Tensor | None,
    ssm_state: torch.Tensor,
    slot_idx: torch.Tensor | None = None,
    dt_softplus: bool = True,
) -> torch.Tensor:
    """One recurrent step, updating `ssm_state` in place.

    Args:
        x: (B, D) post-conv input; dt: (B, D) time step before bias/softplus.
        A: (D, N); B, C: (B, N); D: (D,) or None; z: (B, D) or None; dt_bias: (D,) or None.
        ssm_state: (S, D, N) fp32 state pool (S >= B).
        slot_idx: (B,) int slots (None: row b uses slot b); a negative slot marks a padded row whose state
            is left alone and whose output is 0.

    Returns:
        y: (B, D) in x's dtype.
    """
    batch = x.shape[0]
    work = torch.float64 if x.dtype == torch.float64 else torch.float32
    slots = torch.arange(batch, device=x.device) if slot_idx is None else slot_idx.long()
    valid = slots >= 0
    safe = torch.where(valid, slots, torch.zeros_like(slots))
    h = ssm_state[safe].to(work)  # (B, D, N)
    xf = x.to(work)
    d = dt.to(work)
    if dt_bias is not None:
        d = d + dt_bias.to(work)
    if dt_softplus:
        d = F.softplus(d)
    h = torch.exp(d[..., None] * A.to(work)) * h + d[..., None] * B.to(work)[:, None, :] * xf[..., None]
    y = (h * C.to(work)[:, None, :]).sum(-1)
    if D is not None:
        y = y + D.to(work) * xf
    if z is not None:
        y = y * F.silu(z.to(work))
    y = y * valid.to(work)[:, None]
    ssm_state[slots[valid]] = h[valid].to(ssm_state.dtype)
    return y.to(x.dtype)
