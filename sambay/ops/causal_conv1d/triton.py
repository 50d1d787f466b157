"""Depthwise causal conv1d in Triton: forward, backward, and the one-token decode update.

Shapes (contract of `reference.causal_conv1d`): x (B, T, D) with unit stride along D, weight (D, W),
bias (D,), initial/final conv state (B, D, W-1) of raw inputs (oldest first), seq_idx (B, T) int.

Forward: one program per (batch row, BT tokens, BD channels) accumulates the W taps in fp32. A tap at time
s = t - j feeds time t only when no document boundary lies in (s, t]; walking j = 0..W-1 the validity is
kept as a running AND of `seq_idx[s] == seq_idx[s+1]`, with indices clamped at 0 so the initial state
belongs to the first document.

Backward: kernel 1 recomputes the pre-activation and writes dpre = dout * act'(pre) (fp32, B*T*D), purely
elementwise; kernel 2 gathers dx[s] = sum_j w[W-1-j] * dpre[s+j] over the same validity (also for s in
[-(W-1), 0), the initial-state gradient) and, from the same dpre taps, the weight / bias gradient partials
of each program (summed in torch).
The final state (last W-1 inputs of the last document) and its gradient are small gathers done in torch.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from sambay.ops import triton_math as tm

FWD_BT, FWD_BD, FWD_WARPS = 64, 64, 4  # forward, and the backward's elementwise dpre kernel
# backward dx / d weight kernel: BWD_TILES tiles of BWD_BT x BWD_BD per program, so the cross-thread sums of
# the weight and bias gradients happen once per BWD_TILES tiles (they dominated a per-tile version)
BWD_BT, BWD_BD, BWD_TILES, BWD_WARPS, BWD_MAX_WIDTH = 16, 64, 16, 4, 4
UPD_BD, UPD_WARPS = 128, 4
MAX_INT32_OFFSET = 2**31 - 1  # past it, time offsets are computed in int64 (`_needs_i64`)


def _needs_i64(seqlen: int, dim: int, *tensors: torch.Tensor | None) -> bool:
    """Whether a time offset (token x time stride; rows of D in the fp32 dpre buffer) can pass int32: the kernels
    then index time with int64 (I64), slower address arithmetic that only such long sequences pay."""
    stride = max([dim] + [t.stride(1) for t in tensors if t is not None])
    return (seqlen + BWD_BT * BWD_TILES) * stride >= MAX_INT32_OFFSET


@triton.jit
def _time_index(t, I64: tl.constexpr):
    if I64:
        t = t.to(tl.int64)
    return t


def _act_code(activation: str | None) -> int:
    if activation in (None, "identity", "none"):
        return 0
    if activation in ("silu", "swish"):
        return 1
    raise ValueError(f"unsupported activation {activation!r}")


@triton.jit
def _conv_pre(
    x_ptr, w_ptr, b_ptr, init_ptr, seq_ptr, pid_b64, t, tmask, d, dmask,
    s_x_b, s_x_t, s_i_b, s_i_d, s_i_w, s_seq_b, s_seq_t,
    W: tl.constexpr, BT: tl.constexpr, BD: tl.constexpr,
    HAS_BIAS: tl.constexpr, HAS_INIT: tl.constexpr, HAS_SEQ: tl.constexpr,
):
    """[BT, BD] fp32 pre-activation for times t and channels d."""
    acc = tl.zeros([BT, BD], dtype=tl.float32)
    if HAS_BIAS:
        acc += tl.load(b_ptr + d, mask=dmask, other=0.0).to(tl.float32)[None, :]
    valid = tmask
    if HAS_SEQ:
        seq_next = tl.load(seq_ptr + pid_b64 * s_seq_b + tl.maximum(t, 0) * s_seq_t, mask=tmask, other=0)
    for j in tl.static_range(W):
        s = t - j
        if HAS_SEQ:
            if j > 0:
                seq_s = tl.load(seq_ptr + pid_b64 * s_seq_b + tl.maximum(s, 0) * s_seq_t, mask=tmask, other=0)
                valid = valid & (seq_s == seq_next)
                seq_next = seq_s
        m = (valid & (s >= 0))[:, None] & dmask[None, :]
        xs = tl.load(x_ptr + pid_b64 * s_x_b + s[:, None] * s_x_t + d[None, :], mask=m, other=0.0).to(tl.float32)
        if HAS_INIT:
            mi = (valid & (s < 0))[:, None] & dmask[None, :]
            xi = tl.load(init_ptr + pid_b64 * s_i_b + d[None, :] * s_i_d + (s[:, None] + (W - 1)) * s_i_w,
                         mask=mi, other=0.0).to(tl.float32)
            xs = xs + xi
        wk = tl.load(w_ptr + d * W + (W - 1 - j), mask=dmask, other=0.0).to(tl.float32)
        acc += xs * wk[None, :]
    return acc


@triton.jit
def _conv_fwd_kernel(
    x_ptr, w_ptr, b_ptr, init_ptr, seq_ptr, out_ptr,
    T, DIM, s_x_b, s_x_t, s_i_b, s_i_d, s_i_w, s_seq_b, s_seq_t, s_o_b, s_o_t,
    W: tl.constexpr, BT: tl.constexpr, BD: tl.constexpr, ACT: tl.constexpr,
    HAS_BIAS: tl.constexpr, HAS_INIT: tl.constexpr, HAS_SEQ: tl.constexpr, FAST: tl.constexpr, I64: tl.constexpr,
):
    pid_b64 = tl.program_id(0).to(tl.int64)
    t = _time_index(tl.program_id(1) * BT + tl.arange(0, BT), I64)
    d = tl.program_id(2) * BD + tl.arange(0, BD)
    tmask = t < T
    dmask = d < DIM
    acc = _conv_pre(x_ptr, w_ptr, b_ptr, init_ptr, seq_ptr, pid_b64, t, tmask, d, dmask,
                    s_x_b, s_x_t, s_i_b, s_i_d, s_i_w, s_seq_b, s_seq_t, W, BT, BD, HAS_BIAS, HAS_INIT, HAS_SEQ)
    if ACT == 1:
        acc = acc * tm.sigmoid(acc, FAST)
    m = tmask[:, None] & dmask[None, :]
    tl.store(out_ptr + pid_b64 * s_o_b + t[:, None] * s_o_t + d[None, :], acc.to(out_ptr.dtype.element_ty), mask=m)


@triton.jit
def _conv_bwd_dpre_kernel(
    x_ptr, w_ptr, b_ptr, init_ptr, seq_ptr, dout_ptr, dpre_ptr,
    T, DIM, s_x_b, s_x_t, s_i_b, s_i_d, s_i_w, s_seq_b, s_seq_t, s_do_b, s_do_t,
    W: tl.constexpr, BT: tl.constexpr, BD: tl.constexpr, ACT: tl.constexpr,
    HAS_BIAS: tl.constexpr, HAS_INIT: tl.constexpr, HAS_SEQ: tl.constexpr, FAST: tl.constexpr, I64: tl.constexpr,
):
    """dpre = dout * act'(pre) (fp32) for one [BT, BD] tile; elementwise, no reductions."""
    pid_b64 = tl.program_id(0).to(tl.int64)
    t = _time_index(tl.program_id(1) * BT + tl.arange(0, BT), I64)
    d = tl.program_id(2) * BD + tl.arange(0, BD)
    tmask = t < T
    dmask = d < DIM
    m = tmask[:, None] & dmask[None, :]
    dpre = tl.load(dout_ptr + pid_b64 * s_do_b + t[:, None] * s_do_t + d[None, :], mask=m, other=0.0).to(tl.float32)
    if ACT == 1:
        pre = _conv_pre(x_ptr, w_ptr, b_ptr, init_ptr, seq_ptr, pid_b64, t, tmask, d, dmask,
                        s_x_b, s_x_t, s_i_b, s_i_d, s_i_w, s_seq_b, s_seq_t, W, BT, BD, HAS_BIAS, HAS_INIT, HAS_SEQ)
        sg = tm.sigmoid(pre, FAST)
        dpre = dpre * sg * (1.0 + pre * (1.0 - sg))
    tl.store(dpre_ptr + (pid_b64 * T + t[:, None]) * DIM + d[None, :], dpre, mask=m)


@triton.jit
def _conv_bwd_dx_kernel(
    x_ptr, init_ptr, w_ptr, seq_ptr, dpre_ptr, dx_ptr, dinit_ptr, dw_ptr, db_ptr,
    T, DIM, s_x_b, s_x_t, s_i_b, s_i_d, s_i_w, s_seq_b, s_seq_t, s_dx_b, s_dx_t,
    W: tl.constexpr, BT: tl.constexpr, BD: tl.constexpr, NT: tl.constexpr, HAS_SEQ: tl.constexpr,
    HAS_INIT: tl.constexpr, HAS_BIAS: tl.constexpr, WANT_DINIT: tl.constexpr, I64: tl.constexpr,
):
    """NT consecutive [BT, BD] tiles of input rows s (from -(W-1): the initial-state positions):
    dx[s] = sum_j w[W-1-j] dpre[s+j] over valid taps, and this program's partial sums of the weight and bias
    gradients, d w[W-1-j] = sum_s dpre[s+j] x[s] (the same taps) and d bias = sum_s dpre[s]. The products are
    accumulated elementwise over the NT tiles and reduced across threads once, at the end (up to 4 taps)."""
    pid_b64 = tl.program_id(0).to(tl.int64)
    d = tl.program_id(2) * BD + tl.arange(0, BD)
    dmask = d < DIM
    dw0 = tl.zeros([BT, BD], dtype=tl.float32)
    dw1 = tl.zeros([BT, BD], dtype=tl.float32)
    dw2 = tl.zeros([BT, BD], dtype=tl.float32)
    dw3 = tl.zeros([BT, BD], dtype=tl.float32)
    dbias = tl.zeros([BT, BD], dtype=tl.float32)
    for k in range(0, NT):
        s = _time_index((tl.program_id(1) * NT + k) * BT + tl.arange(0, BT) - (W - 1), I64)
        smask = s < T
        xm = (smask & (s >= 0))[:, None] & dmask[None, :]
        xs = tl.load(x_ptr + pid_b64 * s_x_b + s[:, None] * s_x_t + d[None, :], mask=xm, other=0.0).to(tl.float32)
        if HAS_INIT:
            mi = (smask & (s < 0))[:, None] & dmask[None, :]
            xs += tl.load(init_ptr + pid_b64 * s_i_b + d[None, :] * s_i_d + (s[:, None] + (W - 1)) * s_i_w,
                          mask=mi, other=0.0).to(tl.float32)
        acc = tl.zeros([BT, BD], dtype=tl.float32)
        valid = smask
        if HAS_SEQ:
            seq_prev = tl.load(seq_ptr + pid_b64 * s_seq_b + tl.maximum(s, 0) * s_seq_t, mask=smask, other=0)
        for j in tl.static_range(W):
            t = s + j
            if HAS_SEQ:
                if j > 0:
                    seq_t = tl.load(seq_ptr + pid_b64 * s_seq_b + tl.maximum(t, 0) * s_seq_t,
                                    mask=valid & (t < T), other=0)
                    valid = valid & (seq_t == seq_prev)
                    seq_prev = seq_t
            mt = (valid & (t >= 0) & (t < T))[:, None] & dmask[None, :]
            g = tl.load(dpre_ptr + (pid_b64 * T + t[:, None]) * DIM + d[None, :], mask=mt, other=0.0)
            wk = tl.load(w_ptr + d * W + (W - 1 - j), mask=dmask, other=0.0).to(tl.float32)
            acc += g * wk[None, :]
            if j == 0:
                dw0 += g * xs
                if HAS_BIAS:
                    dbias += g
            elif j == 1:
                dw1 += g * xs
            elif j == 2:
                dw2 += g * xs
            else:
                dw3 += g * xs
        mo = ((s >= 0) & smask)[:, None] & dmask[None, :]
        tl.store(dx_ptr + pid_b64 * s_dx_b + s[:, None] * s_dx_t + d[None, :], acc.to(dx_ptr.dtype.element_ty),
                 mask=mo)
        if WANT_DINIT:
            mi = ((s < 0) & smask)[:, None] & dmask[None, :]
            tl.store(dinit_ptr + (pid_b64 * DIM + d[None, :]) * (W - 1) + (s[:, None] + (W - 1)), acc, mask=mi)
    # per-program partials (row = batch * n_groups + group), summed in torch: atomics on the D * W weight
    # gradient would serialise (every program hits the same addresses)
    part = pid_b64 * tl.num_programs(1) + tl.program_id(1)
    for j in tl.static_range(W):
        if j == 0:
            col = tl.sum(dw0, axis=0)
        elif j == 1:
            col = tl.sum(dw1, axis=0)
        elif j == 2:
            col = tl.sum(dw2, axis=0)
        else:
            col = tl.sum(dw3, axis=0)
        tl.store(dw_ptr + (part * DIM + d) * W + (W - 1 - j), col, mask=dmask)
    if HAS_BIAS:
        tl.store(db_ptr + part * DIM + d, tl.sum(dbias, axis=0), mask=dmask)


@triton.jit
def _conv_update_kernel(
    x_ptr, state_ptr, w_ptr, b_ptr, slot_ptr, out_ptr,
    DIM, s_x_b, s_st_s, s_st_d, s_st_w, s_o_b,
    W: tl.constexpr, WP: tl.constexpr, BD: tl.constexpr, ACT: tl.constexpr,
    HAS_BIAS: tl.constexpr, HAS_SLOT: tl.constexpr,
):
    pid_b = tl.program_id(0)
    d = tl.program_id(1) * BD + tl.arange(0, BD)
    dmask = d < DIM
    if HAS_SLOT:
        slot = tl.load(slot_ptr + pid_b).to(tl.int64)
    else:
        slot = pid_b.to(tl.int64)
    live = slot >= 0
    slot = tl.maximum(slot, 0)
    j = tl.arange(0, WP)
    jmask = j < W - 1
    base = state_ptr + slot * s_st_s + d[:, None] * s_st_d
    m = dmask[:, None] & jmask[None, :] & live
    cur = tl.load(base + j[None, :] * s_st_w, mask=m, other=0.0).to(tl.float32)
    nxt = tl.load(base + (j[None, :] + 1) * s_st_w, mask=m & (j[None, :] + 1 < W - 1), other=0.0)
    x = tl.load(x_ptr + pid_b.to(tl.int64) * s_x_b + d, mask=dmask, other=0.0)
    w_hist = tl.load(w_ptr + d[:, None] * W + j[None, :], mask=dmask[:, None] & jmask[None, :], other=0.0).to(tl.float32)
    w_last = tl.load(w_ptr + d * W + (W - 1), mask=dmask, other=0.0).to(tl.float32)
    acc = tl.sum(cur * w_hist, axis=1) + x.to(tl.float32) * w_last
    if HAS_BIAS:
        acc += tl.load(b_ptr + d, mask=dmask, other=0.0).to(tl.float32)
    if ACT == 1:
        acc = acc * tl.sigmoid(acc)
    acc = tl.where(live, acc, 0.0)
    tl.store(out_ptr + pid_b.to(tl.int64) * s_o_b + d, acc.to(out_ptr.dtype.element_ty), mask=dmask)
    # shift left by one and append x; every load of this program's state precedes these stores
    new = tl.where(j[None, :] == W - 2, x[:, None].to(nxt.dtype), nxt)
    tl.store(base + j[None, :] * s_st_w, new.to(state_ptr.dtype.element_ty), mask=m)


def _final_state(x, initial_state, seq_idx, width):
    """(B, D, W-1) last W-1 raw inputs of the last document (torch gathers; no host sync)."""
    batch, seqlen, dim = x.shape
    parts = []
    for j in range(width - 1):
        p = seqlen - (width - 1) + j
        if p >= 0:
            v = x[:, p, :]
        elif initial_state is not None:
            v = initial_state[:, :, p + width - 1].to(x.dtype)
        else:
            v = x.new_zeros(batch, dim)
        if seq_idx is not None and seqlen > 0:
            # same document as the last token: no id change in (p, T-1]
            lo = max(p, 0)
            win = seq_idx[:, lo:]
            keep = (win == seq_idx[:, -1:]).all(dim=1) if win.shape[1] else torch.ones(batch, dtype=torch.bool, device=x.device)
            if p < 0:
                keep = keep & (seq_idx == seq_idx[:, :1]).all(dim=1)
            v = v * keep[:, None].to(v.dtype)
        parts.append(v)
    return torch.stack(parts, dim=2).contiguous()


def conv_fwd(x, weight, bias, activation, initial_state, seq_idx, out=None):
    """out (B, T, D) in x's dtype. `out` lets tests pass a poisoned buffer."""
    x = tm.unit_last(x)
    batch, seqlen, dim = x.shape
    width = weight.shape[1]
    weight = weight.contiguous()
    y = tm.empty(batch, seqlen, dim, device=x.device, dtype=x.dtype) if out is None else out
    init = initial_state
    grid = (batch, triton.cdiv(seqlen, FWD_BT), triton.cdiv(dim, FWD_BD))
    if seqlen > 0:
        _conv_fwd_kernel[grid](
            x, weight, weight if bias is None else bias.contiguous(), weight if init is None else init,
            weight if seq_idx is None else seq_idx, y,
            seqlen, dim, x.stride(0), x.stride(1),
            *((0, 0, 0) if init is None else init.stride()),
            *((0, 0) if seq_idx is None else seq_idx.stride()),
            y.stride(0), y.stride(1),
            W=width, BT=FWD_BT, BD=FWD_BD, ACT=_act_code(activation),
            HAS_BIAS=bias is not None, HAS_INIT=init is not None, HAS_SEQ=seq_idx is not None,
            FAST=tm.fast_math(), I64=_needs_i64(seqlen, dim, x, y, seq_idx), num_warps=FWD_WARPS,
        )
    return y


def conv_bwd(dout, x, weight, bias, activation, initial_state, seq_idx, dfinal, want_dinit):
    """Returns (dx, dweight fp32 (D, W), dbias fp32 (D,) or None, dinit fp32 (B, D, W-1) or None)."""
    x, dout = tm.unit_last(x), tm.unit_last(dout)
    batch, seqlen, dim = x.shape
    width = weight.shape[1]
    if width > BWD_MAX_WIDTH:
        raise ValueError(f"the Triton causal_conv1d backward takes kernel widths up to {BWD_MAX_WIDTH}, got "
                         f"{width}; run the reference with SAMBAY_REFERENCE_OPS=causal_conv1d")
    weight = weight.contiguous()
    dev = x.device
    dpre = tm.empty(batch, seqlen, dim, device=dev, dtype=torch.float32)
    n_groups = triton.cdiv(seqlen + width - 1, BWD_BT * BWD_TILES)
    dw = tm.empty(batch * n_groups, dim, width, device=dev, dtype=torch.float32)
    db = tm.empty(batch * n_groups, dim, device=dev, dtype=torch.float32) if bias is not None else None
    dx = tm.empty(batch, seqlen, dim, device=dev, dtype=x.dtype)
    dinit = tm.empty(batch, dim, width - 1, device=dev, dtype=torch.float32) if want_dinit else None
    init = initial_state
    seq_strides = (0, 0) if seq_idx is None else seq_idx.stride()
    init_strides = (0, 0, 0) if init is None else init.stride()
    i64 = _needs_i64(seqlen, dim, x, dout, seq_idx)
    if seqlen > 0:
        grid = (batch, triton.cdiv(seqlen, FWD_BT), triton.cdiv(dim, FWD_BD))
        _conv_bwd_dpre_kernel[grid](
            x, weight, weight if bias is None else bias.contiguous(), weight if init is None else init,
            weight if seq_idx is None else seq_idx, dout, dpre,
            seqlen, dim, x.stride(0), x.stride(1), *init_strides, *seq_strides, dout.stride(0), dout.stride(1),
            W=width, BT=FWD_BT, BD=FWD_BD, ACT=_act_code(activation),
            HAS_BIAS=bias is not None, HAS_INIT=init is not None, HAS_SEQ=seq_idx is not None,
            FAST=tm.fast_math(), I64=i64, num_warps=FWD_WARPS,
        )
    grid = (batch, n_groups, triton.cdiv(dim, BWD_BD))
    _conv_bwd_dx_kernel[grid](
        x, weight if init is None else init, weight, weight if seq_idx is None else seq_idx, dpre, dx,
        dw if dinit is None else dinit, dw, dw if db is None else db,
        seqlen, dim, x.stride(0), x.stride(1), *init_strides, *seq_strides, dx.stride(0), dx.stride(1),
        W=width, BT=BWD_BT, BD=BWD_BD, NT=BWD_TILES, HAS_SEQ=seq_idx is not None, HAS_INIT=init is not None,
        HAS_BIAS=bias is not None, WANT_DINIT=want_dinit, I64=i64, num_warps=BWD_WARPS,
    )
    dw = dw.sum(0)
    if db is not None:
        db = db.sum(0)
    if dfinal is not None:
        # the final state is a masked copy of the last W-1 inputs: route its gradient back
        ones = torch.ones(batch, seqlen, dim, device=dev, dtype=torch.float32)
        keep = _final_state(ones, torch.ones(batch, dim, width - 1, device=dev) if init is not None else None,
                            seq_idx, width)  # (B, D, W-1) 0/1 mask
        g = dfinal.float() * keep
        for j in range(width - 1):
            p = seqlen - (width - 1) + j
            if p >= 0:
                dx[:, p, :] += g[:, :, j].to(dx.dtype)
            elif dinit is not None:
                dinit[:, :, p + width - 1] += g[:, :, j]
    return dx, dw, db, dinit


def conv_update(x, conv_state, weight, bias, activation, slot_idx, out=None):
    """One decode step; conv_state (S, D, W-1) is updated in place. Returns out (B, D)."""
    batch, dim = x.shape
    width = weight.shape[1]
    x = tm.unit_last(x)
    weight = weight.contiguous()
    y = tm.empty(batch, dim, device=x.device, dtype=x.dtype) if out is None else out
    grid = (batch, triton.cdiv(dim, UPD_BD))
    _conv_update_kernel[grid](
        x, conv_state, weight, weight if bias is None else bias.contiguous(),
        weight if slot_idx is None else slot_idx, y,
        dim, x.stride(0), conv_state.stride(0), conv_state.stride(1), conv_state.stride(2), y.stride(0),
        W=width, WP=triton.next_power_of_2(max(width - 1, 1)), BD=UPD_BD, ACT=_act_code(activation),
        HAS_BIAS=bias is not None, HAS_SLOT=slot_idx is not None, num_warps=UPD_WARPS,
    )
    return y


# ---------------------------------------------------------------------------------------------------------
# torch.library registration

_EMPTY = (0,)


@torch.library.custom_op("sambay::causal_conv1d_fwd", mutates_args=())
def _conv_fwd_op(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, activation: str,
    initial_state: torch.Tensor | None, seq_idx: torch.Tensor | None, return_final_state: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    act = None if activation == "none" else activation
    y = conv_fwd(x, weight, bias, act, initial_state, seq_idx)
    final = _final_state(x, initial_state, seq_idx, weight.shape[1]) if return_final_state else x.new_empty(_EMPTY)
    return y, final


@_conv_fwd_op.register_fake
def _conv_fwd_fake(x, weight, bias, activation, initial_state, seq_idx, return_final_state):
    batch, seqlen, dim = x.shape
    final = x.new_empty(batch, dim, weight.shape[1] - 1) if return_final_state else x.new_empty(_EMPTY)
    return x.new_empty(batch, seqlen, dim), final


@torch.library.custom_op("sambay::causal_conv1d_bwd", mutates_args=())
def _conv_bwd_op(
    dout: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, activation: str,
    initial_state: torch.Tensor | None, seq_idx: torch.Tensor | None, dfinal: torch.Tensor | None,
    want_dinit: bool,
) -> list[torch.Tensor]:
    act = None if activation == "none" else activation
    dx, dw, db, dinit = conv_bwd(dout, x, weight, bias, act, initial_state, seq_idx, dfinal, want_dinit)
    # absent gradients come back as (distinct: outputs may not alias) empty tensors
    return [dx, dw, x.new_empty(_EMPTY) if db is None else db, x.new_empty(_EMPTY) if dinit is None else dinit]


@_conv_bwd_op.register_fake
def _conv_bwd_fake(dout, x, weight, bias, activation, initial_state, seq_idx, dfinal, want_dinit):
    batch, seqlen, dim = x.shape
    width = weight.shape[1]
    f32 = torch.float32
    return [
        x.new_empty(batch, seqlen, dim),
        x.new_empty(dim, width, dtype=f32),
        x.new_empty(_EMPTY) if bias is None else x.new_empty(dim, dtype=f32),
        x.new_empty(batch, dim, width - 1, dtype=f32) if want_dinit else x.new_empty(_EMPTY),
    ]


class _CausalConv1dFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, activation, initial_state, seq_idx, return_final_state):
        y, final = _conv_fwd_op(x, weight, bias, activation, initial_state, seq_idx, return_final_state)
        ctx.save_for_backward(x, weight, bias, initial_state, seq_idx)
        ctx.activation = activation
        ctx.set_materialize_grads(False)
        if return_final_state:
            return y, final
        return y, None

    @staticmethod
    def backward(ctx, dy, dfinal):
        x, weight, bias, initial_state, seq_idx = ctx.saved_tensors
        if dy is None:
            dy = torch.zeros_like(x)
        want_dinit = initial_state is not None and ctx.needs_input_grad[4]
        dx, dw, db, dinit = _conv_bwd_op(dy, x, weight, bias, ctx.activation, initial_state, seq_idx, dfinal, want_dinit)
        return (
            dx, dw.to(weight.dtype), None if bias is None else db.to(bias.dtype), None,
            dinit.to(initial_state.dtype) if want_dinit else None, None, None,
        )


def causal_conv1d(x, weight, bias=None, activation="silu", initial_state=None, seq_idx=None, return_final_state=False):
    """Triton causal conv1d with autograd; same contract as `reference.causal_conv1d`."""
    act = "none" if activation in (None, "identity", "none") else activation
    _act_code(act if act != "none" else None)
    needs_grad = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (x, weight, bias, initial_state)
    )
    if needs_grad:
        y, final = _CausalConv1dFn.apply(x, weight, bias, act, initial_state, seq_idx, return_final_state)
    else:
        y, final = _conv_fwd_op(x, weight, bias, act, initial_state, seq_idx, return_final_state)
    return (y, final) if return_final_state else y


@torch.library.custom_op("sambay::causal_conv1d_update", mutates_args=("conv_state",))
def _conv_update_op(
    x: torch.Tensor, conv_state: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
    activation: str, slot_idx: torch.Tensor | None,
) -> torch.Tensor:
    return conv_update(x, conv_state, weight, bias, None if activation == "none" else activation, slot_idx)


@_conv_update_op.register_fake
def _conv_update_fake(x, conv_state, weight, bias, activation, slot_idx):
    return torch.empty_like(x)


def causal_conv1d_update(x, conv_state, weight, bias=None, activation="silu", slot_idx=None):
    """Triton decode step; same contract as `reference.causal_conv1d_update` (no grad)."""
    act = "none" if activation in (None, "identity", "none") else activation
    return _conv_update_op(x, conv_state, weight, bias, act, slot_idx)
