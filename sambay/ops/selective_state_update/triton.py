"""Mamba-1 decode step in Triton: softplus, in-place fp32 state update, readout, D skip, z gate.

One program per (batch row, BD channels) holds the [BD, N] state tile of slot `slot_idx[b]` in registers:

    dt = softplus(dt + dt_bias);  h = exp(dt*A) * h + dt * B * x;  y = C.h + D*x;  y *= silu(z)

The state is read once and written once (memory-bound: 2 * D * N * 4 bytes per sequence). No autotune
(it would run the in-place update several times), no host syncs, fixed launch shapes: safe to capture
in a CUDA graph. A negative slot marks a padded batch row: nothing is read or written for its state and
y is 0. The conv half of the step is `sambay.ops.causal_conv1d.causal_conv1d_update`.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from sambay.ops import triton_math as tm

BD_DEFAULT, WARPS_DEFAULT = 128, 4  # fastest of the H100 sweep (benchmarks/results)


@triton.jit
def _ssu_kernel(
    x_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, dtb_ptr, state_ptr, slot_ptr, y_ptr,
    DIM, NSTATE,
    s_x_b, s_dt_b, s_B_b, s_C_b, s_z_b, s_y_b, s_st_s, s_st_d,
    BD: tl.constexpr, NP: tl.constexpr,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_DTB: tl.constexpr, HAS_SLOT: tl.constexpr,
    SOFTPLUS: tl.constexpr,
):
    pid_b = tl.program_id(0)
    pid_b64 = pid_b.to(tl.int64)
    d = tl.program_id(1) * BD + tl.arange(0, BD)
    dmask = d < DIM
    n = tl.arange(0, NP)
    nmask = n < NSTATE
    if HAS_SLOT:
        slot = tl.load(slot_ptr + pid_b).to(tl.int64)
    else:
        slot = pid_b64
    live = slot >= 0
    slot = tl.maximum(slot, 0)
    m = dmask[:, None] & nmask[None, :]
    sptr = state_ptr + slot * s_st_s + d[:, None] * s_st_d + n[None, :]
    h = tl.load(sptr, mask=m & live, other=0.0).to(tl.float32)
    x = tl.load(x_ptr + pid_b64 * s_x_b + d, mask=dmask, other=0.0).to(tl.float32)
    dt = tl.load(dt_ptr + pid_b64 * s_dt_b + d, mask=dmask, other=0.0).to(tl.float32)
    if HAS_DTB:
        dt += tl.load(dtb_ptr + d, mask=dmask, other=0.0).to(tl.float32)
    if SOFTPLUS:
        dt = tl.where(dt > 20.0, dt, tl.log(1.0 + tl.exp(dt)))
    A = tl.load(A_ptr + d[:, None] * NSTATE + n[None, :], mask=m, other=0.0).to(tl.float32)
    Bv = tl.load(B_ptr + pid_b64 * s_B_b + n, mask=nmask, other=0.0).to(tl.float32)
    Cv = tl.load(C_ptr + pid_b64 * s_C_b + n, mask=nmask, other=0.0).to(tl.float32)
    h = tl.exp2(dt[:, None] * A * tm.LOG2E) * h + (dt * x)[:, None] * Bv[None, :]
    tl.store(sptr, h.to(state_ptr.dtype.element_ty), mask=m & live)
    y = tl.sum(h * Cv[None, :], axis=1)
    if HAS_D:
        y += x * tl.load(D_ptr + d, mask=dmask, other=0.0).to(tl.float32)
    if HAS_Z:
        zz = tl.load(z_ptr + pid_b64 * s_z_b + d, mask=dmask, other=0.0).to(tl.float32)
        y = y * zz * tl.sigmoid(zz)
    y = tl.where(live, y, 0.0)
    tl.store(y_ptr + pid_b64 * s_y_b + d, y.to(y_ptr.dtype.element_ty), mask=dmask)


def ssu(x, dt, A, B, C, D, z, dt_bias, ssm_state, slot_idx, dt_softplus=True, out=None, block_d=None, num_warps=None):
    """Launch the decode kernel; `ssm_state` (S, D, N) must have unit stride along N. Returns y (B, D)."""
    x, dt, B, C, z = (tm.unit_last(t) for t in (x, dt, B, C, z))
    assert ssm_state.stride(-1) == 1, "ssm_state needs unit stride along N"
    batch, dim = x.shape
    nstate = A.shape[1]
    A = A.contiguous()
    y = tm.empty(batch, dim, device=x.device, dtype=x.dtype) if out is None else out
    bd = block_d or BD_DEFAULT
    grid = (batch, triton.cdiv(dim, bd))
    _ssu_kernel[grid](
        x, dt, A, B, C, A if D is None else D.contiguous(), A if z is None else z,
        A if dt_bias is None else dt_bias.contiguous(), ssm_state, A if slot_idx is None else slot_idx, y,
        dim, nstate,
        x.stride(0), dt.stride(0), B.stride(0), C.stride(0), 0 if z is None else z.stride(0), y.stride(0),
        ssm_state.stride(0), ssm_state.stride(1),
        BD=bd, NP=triton.next_power_of_2(nstate),
        HAS_D=D is not None, HAS_Z=z is not None, HAS_DTB=dt_bias is not None, HAS_SLOT=slot_idx is not None,
        SOFTPLUS=dt_softplus, num_warps=num_warps or WARPS_DEFAULT,
    )
    return y


@torch.library.custom_op("sambay::selective_state_update", mutates_args=("ssm_state",))
def _ssu_op(
    x: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
    D: torch.Tensor | None, z: torch.Tensor | None, dt_bias: torch.Tensor | None, ssm_state: torch.Tensor,
    slot_idx: torch.Tensor | None, dt_softplus: bool,
) -> torch.Tensor:
    return ssu(x, dt, A, B, C, D, z, dt_bias, ssm_state, slot_idx, dt_softplus)


@_ssu_op.register_fake
def _ssu_fake(x, dt, A, B, C, D, z, dt_bias, ssm_state, slot_idx, dt_softplus):
    return torch.empty_like(x)


def selective_state_update(x, dt, A, B, C, D, z, dt_bias, ssm_state, slot_idx=None, dt_softplus=True):
    """Triton decode step; same contract as `reference.selective_state_update` (no grad)."""
    return _ssu_op(x, dt, A, B, C, D, z, dt_bias, ssm_state, slot_idx, dt_softplus)
