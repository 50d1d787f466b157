"""Mamba-1 selective scan in Triton: chunked forward and backward with recomputation.

Shapes (same contract as `reference.selective_scan`):
    u, delta, z: (B, T, D), unit stride along D (any batch/time strides, e.g. halves of in_proj's output)
    A: (D, N) fp32;  B, C: (B, T, N), unit stride along N;  D, delta_bias: (D,)
    initial_state / final_state: (B, D, N) fp32;  seq_idx: (B, T) int document ids

Forward: one program per (batch row, block of BD channels) walks the sequence in chunks of BT tokens. Per
chunk it loads [BT, BD] tiles of u, delta (and z) and [BT, N] tiles of B, C, builds the per-step decay
a = exp(dt*A) and input b = dt*B*u as [BT, BD, N] fp32 tiles, runs `tl.associative_scan` over time,
adds the carried state, reads out y = C.h + D*u (times silu(z)) and stores y. Only the state at each chunk
start is written (fp32, B*T/BT*D*N*4 bytes), and only when a backward pass will need it. When the grid is
too thin to hide the per-token latency, the sequence is cut into time segments run in parallel (a local pass,
a carry pass over segments, then the real pass from each segment's true entering state; see FWD_SEGMENTS).

Backward: one channel per thread, token by token (`_scan_bwd_kernel`). Per checkpoint chunk, in reverse,
a program reruns the forward from the saved chunk-start state, keeping each h_t in a small per-program
scratch tile (each thread reads back only what it wrote), then walks the chunk backwards with
g_t = dL/dh_t = C_t*dy_t + a_{t+1} g_{t+1}, carrying a_t g_t into the token before. a_t h_{t-1} is recovered
as h_t - b_t. Sums over states stay inside a thread; the sums over channels (dB, dC) are one butterfly
reduce-scatter per token across the warp (`_warp_reduce_scatter`) and stored as per-program partials, like
dA, dD and d delta_bias, which torch sums (no atomics: deterministic). Thin grids use time segments as the
forward does (the carry of g runs from the last segment to the first).

Document resets (`seq_idx` changes between t-1 and t) set a_t = 0, which both cuts the forward carry and
stops the gradient. Rows past T in the last chunk get a = 1, b = 0 so the state passes through unchanged.
All loads are cast to fp32 at once (the Triton interpreter cannot do bf16 arithmetic).
"""

from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl

from sambay.ops import triton_math as tm

LOG2E = 1.4426950408889634

# Chunk length and channel block. BT is shared by forward and backward because the backward reads the
# states saved at the forward's chunk starts. Chosen on an H100 (see benchmarks/results); overridable for
# tuning, but the fake (meta) kernels read the same value.
# Defaults from the H100 sweeps in benchmarks/results/kernels-h100-2026-11-23.txt (B=8, T=4096, D=4096, N=16):
# forward: one token per step, (state, time, channel) tiles, one channel per thread (2.27 ms); backward:
# 8-token checkpoints (16: 11.3 vs 10.2 ms; the saved states are B*T/CHUNK*D*N*4 bytes).
CHUNK = 8  # checkpoint interval = backward chunk length
FWD_BT, FWD_ORDER, FWD_BD, FWD_WARPS, FWD_VEC, FWD_DIST = 1, 1, 0, 8, 1, 1  # FWD_BT must divide CHUNK
# FWD_BD = 0: one channel per thread, FWD_WARPS warps per program, fewer when that would leave SMs idle. Each
# sequence is walked step by step at a fixed latency per step, so the forward's speed is set by how many
# (batch, channel) sequences run at once: at training shapes (B=4, D=1984) 256-channel programs kept only
# 32 SMs busy (3.2 ms per layer on the H100, vs 2.4 ms for 4x the work at B=8, D=4096).
# Time segments. One program walks its whole sequence at a fixed latency per token, so with few (batch,
# channel) sequences (training shapes: B=4, D=1984 gives ~2 warps per SM) the forward is latency-bound. Cutting
# the sequence into S segments multiplies the parallelism by S for about twice the arithmetic (pass 1 finds each
# segment's final state from zero, pass 3 reruns it from the true entering state). FWD_SEGMENTS = 0: automatic,
# only when the grid has fewer than FWD_SEG_BELOW warps per SM. H100 (kernels-h100-2026-11-23.txt, run 6): at
# B=4, D=1984 (1.9 warps/SM) 1 / 4 / 8 / 16 segments took 2.15 / 1.13 / 0.77 / 0.76 ms; at B=8, D=4096 (7.8
# warps/SM) 1 / 2 / 4 / 8 took 2.27 / 3.13 / 2.92 / 2.83 ms, so that shape stays one pass.
FWD_SEGMENTS, FWD_SEG_BELOW, FWD_SEG_WARPS_PER_SM, FWD_MIN_SEG_LEN, FWD_MAX_SEGMENTS = 0, 4, 16, 256, 16
# Backward: one channel per thread, up to BWD_WARPS warps per program (fewer while the grid is smaller than
# the SM count; one warp is what the dB / dC reduce-scatter needs, more fall back to tl.sum), BWD_SEGMENTS
# time segments (0: the forward's automatic rule). H100, B=8 T=4096 D=4096 (kernels-h100-2026-11-23.txt,
# runs 7-15): 6.7 ms; 10.2 ms before the reduce-scatter and the unaligned scratch tile, 19.5 ms for the
# earlier (time, channel, state) tile kernel (removed); 2 warps 11.1 ms; 16-token checkpoints 8.4 ms; B and C
# upcast to fp32 first 7.9 ms; capping registers spilled; reducing dB / dC once per chunk through a scratch
# tile was slower. Training shape B=4 D=1984: 2.1 ms (3.2 ms before, 5.0 ms for the tile kernel).
BWD_WARPS, BWD_SEGMENTS = 1, 0


# The compiled kernels of the latest launches (name -> triton CompiledKernel; `n_regs`, `n_spills`), for
# the benchmark's report.
LAUNCHED: dict = {}

# Debug switch for tests: fill every kernel-written output buffer with NaN first, so an element the kernel
# fails to write shows up instead of passing on whatever memory held.
POISON = False


def _empty(*shape, device, dtype):
    if POISON and dtype.is_floating_point:
        return torch.full(shape, float("nan"), device=device, dtype=dtype)
    return torch.empty(*shape, device=device, dtype=dtype)


def _np2(n: int) -> int:
    return triton.next_power_of_2(n)


@triton.jit
def _fwd_combine(a1, b1, a2, b2):
    # (a1, b1) is the earlier range: h = a2 * (a1 * h0 + b1) + b2
    return a1 * a2, b1 * a2 + b2


@triton.jit
def _at(x, AX: tl.constexpr):
    """Place a 1-D vector on axis AX of a 3-D tile (size 1 on the other axes)."""
    if AX == 0:
        r = x[:, None, None]
    elif AX == 1:
        r = x[None, :, None]
    else:
        r = x[None, None, :]
    return r


@triton.jit
def _load_row(ptr, pid_b64, t, off, mask, s_b, s_t):
    """One token's row of a (B, T, ...) tensor at offsets `off` (masked elements read 0)."""
    return tl.load(ptr + pid_b64 * s_b + t * s_t + off, mask=mask, other=0.0)


@triton.jit
def _bc_rows_setup(B_ptr, C_ptr, s_B_b, s_B_t, s_C_b, s_C_t, NSTATE, NP: tl.constexpr, AX: tl.constexpr,
                   PACK: tl.constexpr):
    """How B / C rows are read: base pointers, element offsets on axis AX and their mask, and the (batch,
    time) strides in loaded elements. With PACK the elements are int32 words of two bf16 states (`_bc_f32`);
    the strides arrive in bf16 elements because their divisibility by 16 is what lets the loads vectorise,
    and the mask compares against NSTATE // 2 (nb * 2 < NSTATE would hide its constancy: scalar loads)."""
    if PACK:
        B_ptr, C_ptr = B_ptr.to(tl.pointer_type(tl.int32)), C_ptr.to(tl.pointer_type(tl.int32))
        s_B_b, s_B_t, s_C_b, s_C_t = s_B_b // 2, s_B_t // 2, s_C_b // 2, s_C_t // 2
    nb = _at(tl.arange(0, NP // (1 + PACK)), AX)
    return B_ptr, C_ptr, nb, nb < NSTATE // (1 + PACK), s_B_b, s_B_t, s_C_b, s_C_t


@triton.jit
def _bc_f32(x, AX: tl.constexpr, PACK: tl.constexpr):
    """A loaded B / C row as fp32 states along axis AX (0 or 2) of a 3-D tile.

    PACK: x holds int32 words, word i = states 2i (low half) and 2i+1 (high half). A bf16 is the top half of
    the fp32 of the same value, so each state costs one shift or mask; Triton's own bf16 -> fp32 of a
    prefetched row costs two (a byte permute into a 16-bit register, then the shift), 32 instructions per
    token of the forward's loop."""
    if PACK:
        pairs = tl.join((x << 16).to(tl.float32, bitcast=True), (x & -65536).to(tl.float32, bitcast=True))
        if AX == 0:
            r = tl.reshape(tl.permute(pairs, [0, 3, 1, 2]), [2 * x.shape[0], x.shape[1], x.shape[2]])
        else:
            r = tl.reshape(pairs, [x.shape[0], x.shape[1], 2 * x.shape[2]])
    else:
        r = x.to(tl.float32)
    return r


@triton.jit
def _reset_at(seq_ptr, pid_b64, t, tmask, s_seq_b, s_seq_t, HAS_SEQ: tl.constexpr):
    """True where token t starts a new document (its state must not see token t-1)."""
    if HAS_SEQ:
        cur = tl.load(seq_ptr + pid_b64 * s_seq_b + t * s_seq_t, mask=tmask, other=0)
        prv = tl.load(seq_ptr + pid_b64 * s_seq_b + tl.maximum(t - 1, 0) * s_seq_t, mask=tmask, other=0)
        reset = (cur != prv) & (t > 0)
    else:
        reset = t < 0
    return reset


@triton.jit
def _load_raw(
    pid_b64, t, d3, dmask, n3, nmask, T,
    u_ptr, dt_ptr, B_ptr, C_ptr, z_ptr, seq_ptr,
    s_u_b, s_u_t, s_dt_b, s_dt_t, s_B_b, s_B_t, s_C_b, s_C_t, s_z_b, s_z_t, s_seq_b, s_seq_t,
    HAS_Z: tl.constexpr, HAS_SEQ: tl.constexpr,
):
    """Issue one chunk's loads (kept in the input dtype until used, so prefetching costs fewer registers).

    Returns u, delta, B, C, z (u again when absent) and the reset flags (False when no seq_idx).
    Rows outside [0, T) read nothing."""
    tmask = (t >= 0) & (t < T)
    m2 = tmask & dmask
    mn = tmask & nmask
    u = tl.load(u_ptr + pid_b64 * s_u_b + t * s_u_t + d3, mask=m2, other=0.0)
    xr = tl.load(dt_ptr + pid_b64 * s_dt_b + t * s_dt_t + d3, mask=m2, other=0.0)
    Bv = tl.load(B_ptr + pid_b64 * s_B_b + t * s_B_t + n3, mask=mn, other=0.0)
    Cv = tl.load(C_ptr + pid_b64 * s_C_b + t * s_C_t + n3, mask=mn, other=0.0)
    if HAS_Z:
        zz = tl.load(z_ptr + pid_b64 * s_z_b + t * s_z_t + d3, mask=m2, other=0.0)
    else:
        zz = u
    return u, xr, Bv, Cv, zz, _reset_at(seq_ptr, pid_b64, t, tmask, s_seq_b, s_seq_t, HAS_SEQ)


@triton.jit
def _time_step(xr, dtb, SOFTPLUS: tl.constexpr, HAS_DTB: tl.constexpr, FAST: tl.constexpr):
    """fp32 delta -> (delta + delta_bias, the time step dt = softplus of it, or itself)."""
    if HAS_DTB:
        xr = xr + dtb
    if SOFTPLUS:
        dt = tm.softplus(xr, FAST)
    else:
        dt = xr
    return xr, dt


@triton.jit
def _prep(u, xr, Bv, Cv, dtb, SOFTPLUS: tl.constexpr, HAS_DTB: tl.constexpr, FAST: tl.constexpr,
          AX_N: tl.constexpr, PACK: tl.constexpr):
    """Cast a chunk to fp32 and apply delta_bias + softplus."""
    xr, dt = _time_step(xr.to(tl.float32), dtb, SOFTPLUS, HAS_DTB, FAST)
    return u.to(tl.float32), xr, dt, _bc_f32(Bv, AX_N, PACK), _bc_f32(Cv, AX_N, PACK)


@triton.jit
def _chunk_decay(dt, A2, tmask, reset, MASK_T: tl.constexpr, HAS_SEQ: tl.constexpr,
                 FOLD_MASKS: tl.constexpr = False):
    """Full-tile a_t = exp(dt*A) with document resets (a = 0) and padded rows (a = 1); MASK_T / HAS_SEQ
    False skip masks that cannot apply (no rows past T; no documents).

    FOLD_MASKS applies the masks to the per-channel dt and as a per-token offset (exp2(-inf) = 0) instead of
    selecting on every state: fewer instructions, which the backward gains from (7.18 vs 7.43 ms at
    B=8, T=4096, D=4096 on an H100) but the forward loses from (2.46 vs 2.27 ms): its loop is bound by the
    latency of the next token's loads, and the shorter loop hides less of it (benchmarks/scan_ab.py)."""
    if FOLD_MASKS:
        if MASK_T:
            dt = tl.where(tmask, dt, 0.0)
        x = dt * A2
        if HAS_SEQ:
            x = x + tl.where(reset, float("-inf"), 0.0)
        a = tl.exp2(x)
    else:
        a = tl.exp2(dt * A2)
        if HAS_SEQ:
            a = tl.where(reset, 0.0, a)
        if MASK_T:
            a = tl.where(tmask, a, 1.0)
    return a


# The forward works on 3-D tiles whose axis order is a compile-time choice: ORDER 0 = (time, channel,
# state), ORDER 1 = (state, time, channel). Triton spreads lanes over the last axis first, so ORDER 1 with
# BD = VEC * 32 * num_warps keeps each channel's whole [N, BT] block inside one thread: the time scan and
# the sum over states then need no shuffles. VEC is a contiguity hint along channels (how many adjacent
# channels one thread loads). AX_T / AX_D / AX_N name the axes of each order.
#
# Each loop iteration issues the loads of the *next* chunk before computing the current one: one program
# walks its chunks in sequence, so without this every chunk would wait a full memory latency.


@triton.jit
def _scan_fwd_kernel(
    u_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, dtb_ptr, h0_ptr, seq_ptr,
    y_ptr, hT_ptr, hs_ptr, P_ptr,
    T, DIM, NSTATE, NCHUNK, SEG_LEN,
    s_u_b, s_u_t, s_dt_b, s_dt_t, s_B_b, s_B_t, s_C_b, s_C_t, s_z_b, s_z_t, s_y_b, s_y_t,
    s_seq_b, s_seq_t,
    BT: tl.constexpr, BD: tl.constexpr, NP: tl.constexpr, VEC: tl.constexpr, R: tl.constexpr,
    DIST: tl.constexpr, PACK: tl.constexpr,
    AX_T: tl.constexpr, AX_D: tl.constexpr, AX_N: tl.constexpr,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_DTB: tl.constexpr, HAS_H0: tl.constexpr,
    HAS_SEQ: tl.constexpr, SOFTPLUS: tl.constexpr, STORE_HT: tl.constexpr, STORE_HS: tl.constexpr,
    LOCAL: tl.constexpr, FAST: tl.constexpr,
):
    """Program (b, channel block, segment): tokens [seg·SEG_LEN, +SEG_LEN) from the state h0[b, seg].
    LOCAL (pass 1 of a segmented forward): start from zero, write no outputs, only the segment's final
    state and its total decay P = prod_t a_t (hT / P at [b, seg])."""
    pid_b = tl.program_id(0)
    pid_d = tl.program_id(1)
    pid_s = tl.program_id(2)
    pid_b64 = pid_b.to(tl.int64)
    seg_off = (pid_b64 * tl.num_programs(2) + pid_s) * DIM * NSTATE  # [b, seg] of (B, S, D, N) states
    t0 = pid_s * SEG_LEN
    d3 = _at(tl.max_contiguous(pid_d * BD + tl.arange(0, BD), VEC), AX_D)
    n3 = _at(tl.arange(0, NP), AX_N)
    rows = _at(tl.arange(0, BT), AX_T)
    dmask = d3 < DIM
    nmask = n3 < NSTATE
    B_ptr, C_ptr, nb3, nbmask, s_B_b, s_B_t, s_C_b, s_C_t = _bc_rows_setup(
        B_ptr, C_ptr, s_B_b, s_B_t, s_C_b, s_C_t, NSTATE, NP, AX_N, PACK)
    dn = d3 * NSTATE + n3
    dnmask = dmask & nmask
    A2 = tl.load(A_ptr + dn, mask=dnmask, other=0.0).to(tl.float32) * 1.4426950408889634
    if HAS_DTB:
        dtb = tl.load(dtb_ptr + d3, mask=dmask, other=0.0).to(tl.float32)
    else:
        dtb = 0.0
    if HAS_D:
        Dv = tl.load(D_ptr + d3, mask=dmask, other=0.0).to(tl.float32)
    if HAS_H0:
        h = tl.load(h0_ptr + seg_off + dn, mask=dnmask, other=0.0).to(tl.float32)
    else:
        h = tl.zeros_like(A2)
    if LOCAL:
        # the segment's total decay P = prod_t exp2(dt_t A2) = exp2(A2 sum_t dt_t), and 0 once a document
        # reset cuts it: one add per token and channel instead of a multiply per state
        dtsum = tl.sum(tl.zeros_like(A2), axis=AX_N, keep_dims=True)
        alive = 1.0
    nu, nx, nB, nC, nz, nr = _load_raw(
        pid_b64, t0 + rows, d3, dmask, nb3, nbmask, T, u_ptr, dt_ptr, B_ptr, C_ptr, z_ptr, seq_ptr,
        s_u_b, s_u_t, s_dt_b, s_dt_t, s_B_b, s_B_t, s_C_b, s_C_t, s_z_b, s_z_t, s_seq_b, s_seq_t, HAS_Z, HAS_SEQ,
    )
    if DIST == 2:
        # a second prefetched chunk: with short chunks one chunk of compute hides too little latency
        mu, mx, mB, mC, mz, mr = _load_raw(
            pid_b64, t0 + rows + BT, d3, dmask, nb3, nbmask, T, u_ptr, dt_ptr, B_ptr, C_ptr, z_ptr, seq_ptr,
            s_u_b, s_u_t, s_dt_b, s_dt_t, s_B_b, s_B_t, s_C_b, s_C_t, s_z_b, s_z_t, s_seq_b, s_seq_t, HAS_Z, HAS_SEQ,
        )
    NCKPT = (NCHUNK + R - 1) // R  # checkpoints per sequence (NCHUNK: forward chunks of the whole sequence)
    c0 = t0 // BT  # SEG_LEN is a multiple of the checkpoint interval: segments start on a checkpoint
    for c in range(c0, tl.minimum(c0 + SEG_LEN // BT, NCHUNK)):
        if STORE_HS:
            # checkpoint the state at every backward-chunk start (every R forward chunks)
            if c % R == 0:
                tl.store(hs_ptr + (pid_b64 * NCKPT + c // R) * DIM * NSTATE + dn, h, mask=dnmask)
        t = c * BT + rows
        tmask = t < T
        u, xr, dt, Bv, Cv = _prep(nu, nx, nB, nC, dtb, SOFTPLUS, HAS_DTB, FAST, AX_N, PACK)
        zz = nz
        reset = nr
        if DIST == 2:
            nu, nx, nB, nC, nz, nr = mu, mx, mB, mC, mz, mr
            mu, mx, mB, mC, mz, mr = _load_raw(
                pid_b64, t + 2 * BT, d3, dmask, nb3, nbmask, T, u_ptr, dt_ptr, B_ptr, C_ptr, z_ptr, seq_ptr,
                s_u_b, s_u_t, s_dt_b, s_dt_t, s_B_b, s_B_t, s_C_b, s_C_t, s_z_b, s_z_t, s_seq_b, s_seq_t, HAS_Z, HAS_SEQ,
            )
        else:
            nu, nx, nB, nC, nz, nr = _load_raw(
                pid_b64, t + BT, d3, dmask, nb3, nbmask, T, u_ptr, dt_ptr, B_ptr, C_ptr, z_ptr, seq_ptr,
                s_u_b, s_u_t, s_dt_b, s_dt_t, s_B_b, s_B_t, s_C_b, s_C_t, s_z_b, s_z_t, s_seq_b, s_seq_t, HAS_Z, HAS_SEQ,
            )
        a = _chunk_decay(dt, A2, tmask, reset, BT > 1, HAS_SEQ)  # one-token steps never pass T
        b = (dt * u) * Bv
        if BT == 1:
            hh = a * h + b  # one step: no scan needed
        else:
            acum, hh = tl.associative_scan((a, b), AX_T, _fwd_combine)
            hh = hh + acum * h
        if LOCAL:
            if BT == 1:
                dtsum += dt
            else:  # padded rows (a = 1) add nothing
                dtsum += tl.sum(tl.where(tmask, dt, 0.0), axis=AX_T, keep_dims=True)
            if HAS_SEQ:
                alive = alive * (1.0 - tl.max(reset.to(tl.float32)))
        else:
            y = tl.sum(hh * Cv, axis=AX_N, keep_dims=True)
            if HAS_D:
                y = y + u * Dv
            m2 = tmask & dmask
            if HAS_Z:
                zf = zz.to(tl.float32)
                y = y * zf * tm.sigmoid(zf, FAST)
            tl.store(y_ptr + pid_b64 * s_y_b + t * s_y_t + d3, y.to(y_ptr.dtype.element_ty), mask=m2)
        # the state after the chunk is its last row (padded rows carry it through unchanged)
        if BT == 1:
            h = hh
        else:
            h = tl.sum(tl.where(rows == BT - 1, hh, 0.0), axis=AX_T, keep_dims=True)
    if STORE_HT:
        tl.store(hT_ptr + seg_off + dn, h, mask=dnmask)
    if LOCAL:
        tl.store(P_ptr + seg_off + dn, tl.exp2(A2 * dtsum) * alive, mask=dnmask)


@triton.jit
def _warp_reduce_scatter(x, lane, K: tl.constexpr, LOG2_K: tl.constexpr):
    """Sum a [K, 32] tile (rows in registers, one lane per column; K a power of two <= 32) over its 32
    columns, leaving row k(l) = sum_i bit_(4-i)(l) << i in lane l (each row in 32 / K lanes; see
    `_scatter_row`). A butterfly reduce-scatter: each round a lane keeps half of its rows and adds the
    partner's copy of them, so 16 rows cost 8+4+2+1 (+1) shuffles instead of 16 x 5 for whole-row sums.
    `tl.gather` along the lane axis is one `shfl` on the GPU and also runs in the interpreter."""
    for k in tl.static_range(LOG2_K):
        lo, hi = tl.split(tl.permute(tl.reshape(x, [K >> (k + 1), 2, 32]), [0, 2, 1]))
        upper = (lane & (16 >> k)) != 0
        keep = tl.where(upper, hi, lo)
        send = tl.where(upper, lo, hi)
        x = keep + tl.gather(send, tl.broadcast_to(lane ^ (16 >> k), [K >> (k + 1), 32]), axis=1)
    for k in tl.static_range(LOG2_K, 5):  # rows already split over all lanes that differ in lower bits
        x = x + tl.gather(x, tl.broadcast_to(lane ^ (16 >> k), [1, 32]), axis=1)
    return x


@triton.jit
def _scatter_row(lane, LOG2_K: tl.constexpr):
    """The row of a `_warp_reduce_scatter` result held by each lane, and whether that lane is the one that
    stores it (the lowest of the 32 / K lanes holding it)."""
    row = tl.zeros_like(lane)
    for k in tl.static_range(LOG2_K):
        row += ((lane >> (4 - k)) & 1) << k
    return row, (lane & ((32 >> LOG2_K) - 1)) == 0


@triton.jit
def _seg_carry_kernel(hloc_ptr, P_ptr, h0_ptr, init_ptr, hT_ptr, N_SEG, SIZE, BLOCK: tl.constexpr,
                      HAS_H0: tl.constexpr):
    """Pass 2 of the segmented forward, over flat (D·N) blocks of one batch row: the true state entering
    each segment, init[s] = P[s-1] * init[s-1] + hloc[s-1] (init[0] = h0), and the final state."""
    pid_b = tl.program_id(0).to(tl.int64)
    i = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    m = i < SIZE
    if HAS_H0:
        h = tl.load(h0_ptr + pid_b * SIZE + i, mask=m, other=0.0).to(tl.float32)
    else:
        h = tl.zeros([BLOCK], tl.float32)
    for seg in range(0, N_SEG):
        off = (pid_b * N_SEG + seg) * SIZE + i
        tl.store(init_ptr + off, h, mask=m)
        h = tl.load(P_ptr + off, mask=m, other=0.0) * h + tl.load(hloc_ptr + off, mask=m, other=0.0)
    tl.store(hT_ptr + pid_b * SIZE + i, h, mask=m)


@triton.jit
def _scan_bwd_kernel(
    u_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, dtb_ptr, seq_ptr, hs_ptr, dy_ptr, cin_ptr,
    du_ptr, ddt_ptr, dz_ptr, dBp_ptr, dCp_ptr, dA_ptr, dD_ptr, ddtb_ptr, cout_ptr, P_ptr, scr_ptr,
    T, DIM, NSTATE, NCHUNK, SEG_LEN,
    s_u_b, s_u_t, s_dt_b, s_dt_t, s_B_b, s_B_t, s_C_b, s_C_t, s_z_b, s_z_t, s_dy_b, s_dy_t, s_seq_b, s_seq_t,
    L: tl.constexpr, BD: tl.constexpr, NP: tl.constexpr, LOG2_NP: tl.constexpr, SCATTER: tl.constexpr,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_DTB: tl.constexpr, HAS_CIN: tl.constexpr,
    HAS_SEQ: tl.constexpr, SOFTPLUS: tl.constexpr, STORE_COUT: tl.constexpr, LOCAL: tl.constexpr,
    FAST: tl.constexpr, PACK: tl.constexpr,
):
    """Backward, one channel per thread, token by token. Program (b, channel block, segment) walks the
    segment's checkpoint chunks in reverse; per chunk it (1) reruns the forward from the saved chunk-start
    state, writing each h_t to a per-program scratch tile (L x N x BD fp32, cache-resident: each thread
    reads back only what it wrote), then (2) walks the chunk backwards with g_t = C_t dy_t + a_{t+1} g_{t+1}.
    Every per-channel sum over states stays inside a thread; the sums over channels (dB, dC) are reduced
    per program and stored as per-program partials (summed in torch: no atomics, deterministic).

    Segments (`tl.num_programs(2)` > 1) run in parallel like the forward's: LOCAL (pass 1) only runs the
    g recurrence from zero and stores the segment's outgoing carry and total decay; the carry pass then
    gives each segment its true incoming carry `cin`, and the full pass runs from it. Per-segment arrays
    are indexed in reverse segment order, so the forward's carry kernel serves unchanged."""
    pid_b = tl.program_id(0)
    pid_d = tl.program_id(1)
    pid_s = tl.program_id(2)
    n_pd = tl.num_programs(1)
    n_seg = tl.num_programs(2)
    pid_b64 = pid_b.to(tl.int64)
    seg_off = (pid_b64 * n_seg + (n_seg - 1 - pid_s)) * DIM * NSTATE
    dl = tl.arange(0, BD)
    d3 = _at(pid_d * BD + dl, 2)
    n3 = _at(tl.arange(0, NP), 0)
    dmask = d3 < DIM
    nmask = n3 < NSTATE
    B_ptr, C_ptr, nb3, nbmask, s_B_b, s_B_t, s_C_b, s_C_t = _bc_rows_setup(
        B_ptr, C_ptr, s_B_b, s_B_t, s_C_b, s_C_t, NSTATE, NP, 0, PACK)
    dn = d3 * NSTATE + n3
    dnmask = dmask & nmask
    A2 = tl.load(A_ptr + dn, mask=dnmask, other=0.0).to(tl.float32) * 1.4426950408889634  # A·log2(e)
    if HAS_DTB:
        dtb = tl.load(dtb_ptr + d3, mask=dmask, other=0.0).to(tl.float32)
    else:
        dtb = 0.0
    if HAS_D:
        Dv = tl.load(D_ptr + d3, mask=dmask, other=0.0).to(tl.float32)
    # carry = a_{t+1} g_{t+1}: what the later tokens send into h_t (dhT, or the next segment's, at the end)
    if HAS_CIN:
        carry = tl.load(cin_ptr + seg_off + dn, mask=dnmask, other=0.0)
    else:
        carry = tl.zeros_like(A2)
    if LOCAL:  # the total decay as in the forward's LOCAL pass: exp2(A2 sum_t dt_t), 0 after a reset
        dtsum = tl.sum(tl.zeros_like(A2), axis=0, keep_dims=True)
        alive = 1.0
    else:
        dA_acc = tl.zeros_like(A2)
        dD_acc = tl.sum(tl.zeros_like(A2), axis=0, keep_dims=True)
        ddtb_acc = tl.sum(tl.zeros_like(A2), axis=0, keep_dims=True)
    prog = (pid_b64 * n_pd + pid_d) * n_seg + pid_s
    # this program's (L, NP, BD) scratch tile of states. The +1 leaves it unaligned on purpose: an aligned
    # tile lets Triton vectorise its accesses along channels and lay the whole loop out as 4 states x 8
    # channels per lane group (shuffles for every sum over states, shared-memory layout changes per token);
    # unaligned, the layout is the intended one channel per thread.
    scr_h = scr_ptr + prog * (L * NP * BD) + 1
    cell = _at(dl, 2) + n3 * BD  # this thread's column of an (NP, BD) slab
    c_first = pid_s * (SEG_LEN // L)
    c_end = tl.minimum(c_first + SEG_LEN // L, NCHUNK)
    for cc in range(0, c_end - c_first):
        c = c_end - 1 - cc
        if not LOCAL:
            # (1) forward recompute of the chunk from its checkpoint, every h_t into the scratch tile
            h = tl.load(hs_ptr + (pid_b64 * NCHUNK + c) * DIM * NSTATE + dn, mask=dnmask, other=0.0)
            t = c * L
            nu = _load_row(u_ptr, pid_b64, t, d3, dmask & (t < T), s_u_b, s_u_t)
            nx = _load_row(dt_ptr, pid_b64, t, d3, dmask & (t < T), s_dt_b, s_dt_t)
            nB = _load_row(B_ptr, pid_b64, t, nb3, nbmask & (t < T), s_B_b, s_B_t)
            for i in range(0, L):
                t = c * L + i
                tmask = t < T
                u, xr, Bv = nu.to(tl.float32), nx.to(tl.float32), _bc_f32(nB, 0, PACK)
                reset = _reset_at(seq_ptr, pid_b64, t, tmask, s_seq_b, s_seq_t, HAS_SEQ)
                nmk = (i + 1 < L) & (t + 1 < T)
                nu = _load_row(u_ptr, pid_b64, t + 1, d3, dmask & nmk, s_u_b, s_u_t)
                nx = _load_row(dt_ptr, pid_b64, t + 1, d3, dmask & nmk, s_dt_b, s_dt_t)
                nB = _load_row(B_ptr, pid_b64, t + 1, nb3, nbmask & nmk, s_B_b, s_B_t)
                xr, dt = _time_step(xr, dtb, SOFTPLUS, HAS_DTB, FAST)
                dt = tl.where(tmask, dt, 0.0)  # padded rows: a = 1, b = 0
                a = _chunk_decay(dt, A2, tmask, reset, False, HAS_SEQ, FOLD_MASKS=True)
                h = a * h + (dt * u) * Bv
                tl.store(scr_h + i * NP * BD + cell, h)
        # (2) the chunk backwards
        t = c * L + L - 1
        tmask = t < T
        nu = _load_row(u_ptr, pid_b64, t, d3, dmask & tmask, s_u_b, s_u_t)
        nx = _load_row(dt_ptr, pid_b64, t, d3, dmask & tmask, s_dt_b, s_dt_t)
        nB = _load_row(B_ptr, pid_b64, t, nb3, nbmask & tmask, s_B_b, s_B_t)
        nC = _load_row(C_ptr, pid_b64, t, nb3, nbmask & tmask, s_C_b, s_C_t)
        ndy = _load_row(dy_ptr, pid_b64, t, d3, dmask & tmask, s_dy_b, s_dy_t)
        if HAS_Z:
            nz = _load_row(z_ptr, pid_b64, t, d3, dmask & tmask, s_z_b, s_z_t)
        if not LOCAL:
            nh = tl.load(scr_h + (L - 1) * NP * BD + cell)  # h_t of the chunk's last token, then one ahead
        for j in range(0, L):
            i = L - 1 - j
            t = c * L + i
            tmask = t < T
            m2 = dmask & tmask
            u, xr, dy = nu.to(tl.float32), nx.to(tl.float32), ndy.to(tl.float32)
            Bv, Cv = _bc_f32(nB, 0, PACK), _bc_f32(nC, 0, PACK)
            if HAS_Z:
                zf = nz.to(tl.float32)
            reset = _reset_at(seq_ptr, pid_b64, t, tmask, s_seq_b, s_seq_t, HAS_SEQ)
            pmk = (i > 0) & (t - 1 < T)  # prefetch the token before (same chunk, not padding)
            nu = _load_row(u_ptr, pid_b64, t - 1, d3, dmask & pmk, s_u_b, s_u_t)
            nx = _load_row(dt_ptr, pid_b64, t - 1, d3, dmask & pmk, s_dt_b, s_dt_t)
            nB = _load_row(B_ptr, pid_b64, t - 1, nb3, nbmask & pmk, s_B_b, s_B_t)
            nC = _load_row(C_ptr, pid_b64, t - 1, nb3, nbmask & pmk, s_C_b, s_C_t)
            ndy = _load_row(dy_ptr, pid_b64, t - 1, d3, dmask & pmk, s_dy_b, s_dy_t)
            if HAS_Z:
                nz = _load_row(z_ptr, pid_b64, t - 1, d3, dmask & pmk, s_z_b, s_z_t)
            xr, dt = _time_step(xr, dtb, SOFTPLUS, HAS_DTB, FAST)
            # padded rows get dt = 0: a = 1 passes the carry through, and with u = dy = 0 (masked loads)
            # they add nothing to du, dB, dC or dA (their ddt is masked below)
            dt = tl.where(tmask, dt, 0.0)
            a = _chunk_decay(dt, A2, tmask, reset, False, HAS_SEQ, FOLD_MASKS=True)
            if LOCAL:
                if HAS_Z:
                    dy = dy * zf * tm.sigmoid(zf, FAST)
                carry = a * (Cv * dy + carry)
                dtsum += dt  # padded rows have dt = 0
                if HAS_SEQ:
                    alive = alive * (1.0 - reset.to(tl.float32))
            else:
                h = nh
                nh = tl.load(scr_h + tl.maximum(i - 1, 0) * NP * BD + cell)
                out_off = (pid_b64 * T + t) * DIM + d3
                if HAS_Z:
                    y = tl.sum(h * Cv, axis=0, keep_dims=True)
                    if HAS_D:
                        y = y + u * Dv
                    sg = tm.sigmoid(zf, FAST)
                    dz = dy * y * sg * (1.0 + zf * (1.0 - sg))
                    tl.store(dz_ptr + out_off, dz.to(dz_ptr.dtype.element_ty), mask=m2)
                    dy = dy * zf * sg
                g = Cv * dy + carry
                carry = a * g
                dtu = dt * u
                ah = h - dtu * Bv  # a_t h_{t-1}
                gB = tl.sum(g * Bv, axis=0, keep_dims=True)
                gah = g * ah
                du = gB * dt
                if HAS_D:
                    du += dy * Dv
                    dD_acc += dy * u
                ddt = gB * u + tl.sum(gah * A2, axis=0, keep_dims=True) * 0.6931471805599453  # A = A2·ln 2
                dA_acc += gah * dt
                if SOFTPLUS:
                    ddt = tl.where(xr > 20.0, ddt, ddt * tm.sigmoid(xr, FAST))
                ddt = tl.where(m2, ddt, 0.0)
                ddtb_acc += ddt
                tl.store(du_ptr + out_off, du.to(du_ptr.dtype.element_ty), mask=m2)
                tl.store(ddt_ptr + out_off, ddt.to(ddt_ptr.dtype.element_ty), mask=m2)
                row = ((pid_b64 * n_pd + pid_d) * T + t) * NSTATE  # [b, channel block, t] partials
                if SCATTER:
                    # rows 2n / 2n+1 of one [2N, 32] tile are dB[n] / dC[n]: one reduce-scatter for both
                    both = tl.join(tl.reshape(g * dtu, [NP, BD]), tl.reshape(h * dy, [NP, BD]))
                    both = tl.reshape(tl.permute(both, [0, 2, 1]), [2 * NP, BD])
                    lane = tl.arange(0, BD)[None, :]
                    sums = _warp_reduce_scatter(both, lane, 2 * NP, LOG2_NP + 1)
                    k, owner = _scatter_row(lane, LOG2_NP + 1)
                    dst = tl.where((k & 1) == 0, dBp_ptr, dCp_ptr) + row + (k >> 1)
                    tl.store(dst, sums, mask=owner & ((k >> 1) < NSTATE) & tmask)
                else:
                    tl.store(dBp_ptr + row + n3, tl.sum(g * dtu, axis=2, keep_dims=True), mask=nmask & tmask)
                    tl.store(dCp_ptr + row + n3, tl.sum(h * dy, axis=2, keep_dims=True), mask=nmask & tmask)
    if LOCAL:
        tl.store(cout_ptr + seg_off + dn, carry, mask=dnmask)
        tl.store(P_ptr + seg_off + dn, tl.exp2(A2 * dtsum) * alive, mask=dnmask)
    else:
        if STORE_COUT:
            tl.store(cout_ptr + seg_off + dn, carry, mask=dnmask)
        tl.store(dA_ptr + seg_off + dn, dA_acc, mask=dnmask)
        seg_d = (pid_b64 * n_seg + pid_s) * DIM + d3
        if HAS_D:
            tl.store(dD_ptr + seg_d, dD_acc, mask=dmask)
        if HAS_DTB:
            tl.store(ddtb_ptr + seg_d, ddtb_acc, mask=dmask)


def _axes(order: int) -> dict:
    return dict(AX_T=0, AX_D=1, AX_N=2) if order == 0 else dict(AX_T=1, AX_D=2, AX_N=0)


def _unit_last(x: torch.Tensor | None) -> torch.Tensor | None:
    """Kernels take any batch/time strides but need unit stride on the last dim."""
    if x is None or x.stride(-1) == 1:
        return x
    return x.contiguous()


@functools.cache
def _sm_count(device: torch.device) -> int:
    if device.type != "cuda":
        return 1
    return torch.cuda.get_device_properties(device).multi_processor_count


def _thread_per_channel_block(batch: int, dim: int, device: torch.device, max_warps: int,
                              vec: int = 1) -> tuple[int, int]:
    """(channels per program, warps) with one channel per thread (`vec` adjacent ones): up to `max_warps`
    warps, halved while the grid would have fewer programs than the device has SMs."""
    warps = max_warps
    while warps > 1 and batch * triton.cdiv(dim, 32 * warps * vec) < _sm_count(device):
        warps //= 2
    return 32 * warps * vec, warps


def _fwd_block(batch: int, dim: int, device: torch.device) -> tuple[int, int]:
    """(channels per program, warps) for the forward: FWD_BD/FWD_WARPS when set, else one per thread."""
    if FWD_BD:
        return FWD_BD, FWD_WARPS
    return _thread_per_channel_block(batch, dim, device, FWD_WARPS, FWD_VEC)


def _time_segments(forced: int, batch: int, warps_per_row: int, seqlen: int, device: torch.device) -> int:
    """How many time segments a pass runs in parallel: `forced` when set; else 1 (one pass) unless the grid
    has fewer than FWD_SEG_BELOW warps per SM, then a power of two that brings it to about
    FWD_SEG_WARPS_PER_SM (each segment at least FWD_MIN_SEG_LEN tokens)."""
    if forced:
        return max(1, min(forced, triton.cdiv(seqlen, CHUNK)))
    sms, warps = _sm_count(device), batch * warps_per_row
    if warps >= FWD_SEG_BELOW * sms:
        return 1
    want = triton.next_power_of_2(triton.cdiv(FWD_SEG_WARPS_PER_SM * sms, warps))
    return max(1, min(want, seqlen // FWD_MIN_SEG_LEN, FWD_MAX_SEGMENTS))


def _segment_layout(n_seg: int, seqlen: int) -> tuple[int, int]:
    """(segment length, segment count): segments start on checkpoints, the last one may be short."""
    seg_len = triton.cdiv(triton.cdiv(seqlen, n_seg), CHUNK) * CHUNK
    return seg_len, triton.cdiv(seqlen, seg_len)


def _carry_across_segments(local, P, start, into, final):
    """Pass 2 of a segmented pass: into[s] = state entering segment s, from `start` (B, D, N) or zeros;
    final = state after the last segment. local / P / into: (B, S, D, N) fp32."""
    batch, n_seg, dim, nstate = local.shape
    block = 1024
    _seg_carry_kernel[(batch, triton.cdiv(dim * nstate, block))](
        local, P, final if start is None else start, into, final, n_seg, dim * nstate, BLOCK=block,
        HAS_H0=start is not None,
    )


def _bc_rows(B: torch.Tensor, C: torch.Tensor):
    """(B, C, PACK, their (batch, time) strides) as the kernels read them.

    Every thread reads whole B / C rows each token. bf16 rows with an even number of states are read as int32
    words of two states (PACK, `_bc_f32`). Rows are copied to a contiguous layout (B*T*N elements, small)
    unless they are 16-byte aligned: B and C are usually column slices of x_proj's output (row stride
    dt_rank + 2N), and unaligned rows load one element at a time (35 vs 7 loads per token in the forward)."""
    def aligned(t):
        return t.data_ptr() % 16 == 0 and all(st * t.element_size() % 16 == 0 for st in t.stride()[:2])

    B, C = (t if aligned(t) else t.contiguous() for t in (B, C))
    pack = B.dtype == C.dtype == torch.bfloat16 and B.shape[-1] % 2 == 0 and aligned(B) and aligned(C)
    return B, C, pack, (B.stride(0), B.stride(1), C.stride(0), C.stride(1))


def num_chunks(seqlen: int) -> int:
    return (seqlen + CHUNK - 1) // CHUNK


def scan_fwd(
    u, delta, A, B, C, D=None, z=None, delta_bias=None, initial_state=None, seq_idx=None,
    delta_softplus=True, save_states=False, y_out=None,
):
    """Launch the forward kernel.

    Returns y (B, T, D) in u's dtype, final state (B, D, N) fp32 and the chunk-start states
    (B, ceil(T/CHUNK), D, N) fp32 (an empty tensor unless `save_states`). `y_out` (contiguous (B, T, D))
    lets tests pass a poisoned buffer.
    """
    u, delta, z, B, C = (_unit_last(t) for t in (u, delta, z, B, C))
    batch, seqlen, dim = u.shape
    nstate = A.shape[1]
    A = A.contiguous()
    nchunk = triton.cdiv(seqlen, FWD_BT)
    assert CHUNK % FWD_BT == 0, "the forward chunk must divide the checkpoint interval"
    y = _empty(batch, seqlen, dim, device=u.device, dtype=u.dtype) if y_out is None else y_out
    hT = _empty(batch, dim, nstate, device=u.device, dtype=torch.float32)
    hs = (
        _empty(batch, num_chunks(seqlen), dim, nstate, device=u.device, dtype=torch.float32)
        if save_states
        else torch.empty(0, device=u.device, dtype=torch.float32)
    )
    h0 = None if initial_state is None else initial_state.float().contiguous()
    dummy = hT
    B, C, pack, bc_strides = _bc_rows(B, C)
    block, warps = _fwd_block(batch, dim, u.device)
    n_seg = _time_segments(FWD_SEGMENTS, batch, triton.cdiv(dim, block) * warps, seqlen, u.device)
    seg_len, n_seg = _segment_layout(n_seg, seqlen)

    def launch(h_in, h_out, P, local, z=z, D=D):
        LAUNCHED["fwd_local" if local else "fwd"] = _scan_fwd_kernel[(batch, triton.cdiv(dim, block), n_seg)](
            u, delta, A, B, C,
            dummy if D is None else D.contiguous(),
            dummy if z is None else z,
            dummy if delta_bias is None else delta_bias.contiguous(),
            dummy if h_in is None else h_in,
            dummy if seq_idx is None else seq_idx,
            y, dummy if h_out is None else h_out, hs if save_states and not local else dummy,
            dummy if P is None else P,
            seqlen, dim, nstate, nchunk, seg_len,
            u.stride(0), u.stride(1), delta.stride(0), delta.stride(1), *bc_strides,
            0 if z is None else z.stride(0), 0 if z is None else z.stride(1),
            y.stride(0), y.stride(1),
            0 if seq_idx is None else seq_idx.stride(0), 0 if seq_idx is None else seq_idx.stride(1),
            BT=FWD_BT, BD=block, NP=_np2(nstate), VEC=FWD_VEC, R=CHUNK // FWD_BT, DIST=FWD_DIST, PACK=pack,
            **_axes(FWD_ORDER),
            HAS_D=D is not None, HAS_Z=z is not None, HAS_DTB=delta_bias is not None, HAS_H0=h_in is not None,
            HAS_SEQ=seq_idx is not None, SOFTPLUS=delta_softplus, STORE_HT=h_out is not None,
            STORE_HS=save_states and not local, LOCAL=local, FAST=tm.fast_math(),
            num_warps=warps,
        )

    if n_seg == 1:
        launch(h0, hT, None, False)
        return y, hT, hs
    # Segmented: (1) each segment's final state from zero and its total decay, in parallel; (2) a short
    # sequential pass over segments gives the true state entering each; (3) every segment again from it.
    seg_shape = (batch, n_seg, dim, nstate)
    hloc = _empty(*seg_shape, device=u.device, dtype=torch.float32)
    P = _empty(*seg_shape, device=u.device, dtype=torch.float32)
    launch(None, hloc, P, True, z=None, D=None)
    init = _empty(*seg_shape, device=u.device, dtype=torch.float32)
    _carry_across_segments(hloc, P, h0, init, hT)
    launch(init, None, None, False)
    return y, hT, hs


def scan_bwd(
    dy, dhT, u, delta, A, B, C, D, z, delta_bias, seq_idx, states, delta_softplus=True,
    want_dh0=False,
):
    """Launch the backward kernel; returns (du, ddelta, dA, dB, dC, dD, dz, ddelta_bias, dh0), with None
    for inputs that were not given (dh0 only when `want_dh0`). `states`: the forward's chunk-start states."""
    u, delta, z, B, C, dy = (_unit_last(t) for t in (u, delta, z, B, C, dy))
    batch, seqlen, dim = u.shape
    nstate, nprow = A.shape[1], _np2(A.shape[1])
    A = A.contiguous()
    dev, f32 = u.device, torch.float32
    B, C, pack, bc_strides = _bc_rows(B, C)
    block, warps = _thread_per_channel_block(batch, dim, dev, BWD_WARPS)
    n_pd = triton.cdiv(dim, block)
    seg_len, n_seg = _segment_layout(
        _time_segments(BWD_SEGMENTS, batch, n_pd * warps, seqlen, dev), seqlen)
    du = _empty(batch, seqlen, dim, device=dev, dtype=u.dtype)
    ddt = _empty(batch, seqlen, dim, device=dev, dtype=delta.dtype)
    dz = None if z is None else _empty(batch, seqlen, dim, device=dev, dtype=z.dtype)
    dBp = _empty(batch, n_pd, seqlen, nstate, device=dev, dtype=f32)  # per channel block, summed below
    dCp = _empty(batch, n_pd, seqlen, nstate, device=dev, dtype=f32)
    dA = _empty(batch, n_seg, dim, nstate, device=dev, dtype=f32)
    dD = None if D is None else _empty(batch, n_seg, dim, device=dev, dtype=f32)
    ddtb = None if delta_bias is None else _empty(batch, n_seg, dim, device=dev, dtype=f32)
    scratch = torch.empty(batch * n_pd * n_seg * CHUNK * nprow * block + 1, device=dev, dtype=f32)
    dhT = None if dhT is None else dhT.float().contiguous()
    dummy = dA

    def launch(cin, cout, P, local):
        LAUNCHED["bwd_local" if local else "bwd"] = _scan_bwd_kernel[(batch, n_pd, n_seg)](
            u, delta, A, B, C,
            dummy if D is None else D.contiguous(),
            dummy if z is None else z,
            dummy if delta_bias is None else delta_bias.contiguous(),
            dummy if seq_idx is None else seq_idx,
            states, dy, dummy if cin is None else cin,
            du, ddt, dummy if dz is None else dz, dBp, dCp, dA,
            dummy if dD is None else dD, dummy if ddtb is None else ddtb,
            dummy if cout is None else cout, dummy if P is None else P, scratch,
            seqlen, dim, nstate, num_chunks(seqlen), seg_len,
            u.stride(0), u.stride(1), delta.stride(0), delta.stride(1), *bc_strides,
            0 if z is None else z.stride(0), 0 if z is None else z.stride(1),
            dy.stride(0), dy.stride(1),
            0 if seq_idx is None else seq_idx.stride(0), 0 if seq_idx is None else seq_idx.stride(1),
            L=CHUNK, BD=block, NP=nprow, LOG2_NP=nprow.bit_length() - 1,
            SCATTER=block == 32 and 2 * nprow <= 32,
            HAS_D=D is not None, HAS_Z=z is not None, HAS_DTB=delta_bias is not None, HAS_CIN=cin is not None,
            HAS_SEQ=seq_idx is not None, SOFTPLUS=delta_softplus, STORE_COUT=cout is not None, LOCAL=local,
            FAST=tm.fast_math(), PACK=pack, num_warps=warps,
        )

    if n_seg == 1:
        dh0 = _empty(batch, dim, nstate, device=dev, dtype=f32) if want_dh0 else None
        launch(dhT, dh0, None, False)
    else:
        # (1) each segment's outgoing carry from a zero incoming one, and its total decay; (2) the true
        # incoming carry of every segment (last to first); (3) the full backward of every segment from it
        seg_shape = (batch, n_seg, dim, nstate)
        local, P = _empty(*seg_shape, device=dev, dtype=f32), _empty(*seg_shape, device=dev, dtype=f32)
        launch(None, local, P, True)
        cin, dh0 = _empty(*seg_shape, device=dev, dtype=f32), _empty(batch, dim, nstate, device=dev, dtype=f32)
        _carry_across_segments(local, P, dhT, cin, dh0)
        launch(cin, None, None, False)
        dh0 = dh0 if want_dh0 else None
    return (
        du, ddt, dA.sum((0, 1)), dBp.sum(1).to(B.dtype), dCp.sum(1).to(C.dtype),
        None if dD is None else dD.sum((0, 1)), dz, None if ddtb is None else ddtb.sum((0, 1)), dh0,
    )


# ---------------------------------------------------------------------------------------------------------
# torch.library registration: opaque custom ops with fake (meta) kernels so torch.compile can trace them,
# and an autograd.Function that pairs them.

_EMPTY_SHAPE = (0,)


@torch.library.custom_op("sambay::selective_scan_fwd", mutates_args=())
def _scan_fwd_op(
    u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
    D: torch.Tensor | None, z: torch.Tensor | None, delta_bias: torch.Tensor | None,
    initial_state: torch.Tensor | None, seq_idx: torch.Tensor | None,
    delta_softplus: bool, save_states: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return scan_fwd(u, delta, A, B, C, D, z, delta_bias, initial_state, seq_idx, delta_softplus, save_states)


@_scan_fwd_op.register_fake
def _scan_fwd_fake(u, delta, A, B, C, D, z, delta_bias, initial_state, seq_idx, delta_softplus, save_states):
    batch, seqlen, dim = u.shape
    nstate = A.shape[1]
    y = u.new_empty(batch, seqlen, dim)
    hT = u.new_empty(batch, dim, nstate, dtype=torch.float32)
    if save_states:
        hs = u.new_empty(batch, (seqlen + CHUNK - 1) // CHUNK, dim, nstate, dtype=torch.float32)
    else:
        hs = u.new_empty(_EMPTY_SHAPE, dtype=torch.float32)
    return y, hT, hs


@torch.library.custom_op("sambay::selective_scan_bwd", mutates_args=())
def _scan_bwd_op(
    dy: torch.Tensor, dhT: torch.Tensor | None, u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor,
    B: torch.Tensor, C: torch.Tensor, D: torch.Tensor | None, z: torch.Tensor | None,
    delta_bias: torch.Tensor | None, seq_idx: torch.Tensor | None, states: torch.Tensor,
    delta_softplus: bool, want_dh0: bool,
) -> list[torch.Tensor]:
    grads = scan_bwd(dy, dhT, u, delta, A, B, C, D, z, delta_bias, seq_idx, states, delta_softplus, want_dh0)
    # custom ops cannot return None: absent gradients come back as empty tensors
    return [u.new_empty(_EMPTY_SHAPE) if g is None else g for g in grads]


@_scan_bwd_op.register_fake
def _scan_bwd_fake(dy, dhT, u, delta, A, B, C, D, z, delta_bias, seq_idx, states, delta_softplus, want_dh0):
    batch, seqlen, dim = u.shape
    nstate = A.shape[1]
    f32 = torch.float32

    def empty():  # distinct tensors: custom-op outputs may not alias each other
        return u.new_empty(_EMPTY_SHAPE)

    return [
        u.new_empty(batch, seqlen, dim),
        delta.new_empty(batch, seqlen, dim),
        u.new_empty(dim, nstate, dtype=f32),
        B.new_empty(batch, seqlen, nstate),
        C.new_empty(batch, seqlen, nstate),
        empty() if D is None else u.new_empty(dim, dtype=f32),
        empty() if z is None else z.new_empty(batch, seqlen, dim),
        empty() if delta_bias is None else u.new_empty(dim, dtype=f32),
        u.new_empty(batch, dim, nstate, dtype=f32) if want_dh0 else empty(),
    ]


class _SelectiveScanFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, initial_state, seq_idx, delta_softplus):
        y, hT, hs = _scan_fwd_op(u, delta, A, B, C, D, z, delta_bias, initial_state, seq_idx, delta_softplus, True)
        ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, initial_state, seq_idx, hs)
        ctx.delta_softplus = delta_softplus
        ctx.set_materialize_grads(False)
        return y, hT

    @staticmethod
    def backward(ctx, dy, dhT):
        u, delta, A, B, C, D, z, delta_bias, initial_state, seq_idx, hs = ctx.saved_tensors
        if dy is None:
            dy = torch.zeros_like(u)
        want_dh0 = initial_state is not None and ctx.needs_input_grad[8]
        du, ddt, dA, dB, dC, dD, dz, ddb, dh0 = _scan_bwd_op(
            dy, dhT, u, delta, A, B, C, D, z, delta_bias, seq_idx, hs, ctx.delta_softplus, want_dh0
        )
        return (
            du, ddt, dA.to(A.dtype), dB, dC,
            None if D is None else dD.to(D.dtype),
            None if z is None else dz,
            None if delta_bias is None else ddb.to(delta_bias.dtype),
            dh0.to(initial_state.dtype) if want_dh0 else None,
            None, None,
        )


def selective_scan(
    u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=True, initial_state=None,
    seq_idx=None, return_final_state=False,
):
    """Triton selective scan with autograd; same signature and shapes as `reference.selective_scan`."""
    tensors = (u, delta, A, B, C, D, z, delta_bias, initial_state)
    needs_grad = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)
    if needs_grad:
        y, hT = _SelectiveScanFn.apply(u, delta, A, B, C, D, z, delta_bias, initial_state, seq_idx, delta_softplus)
    else:
        y, hT, _ = _scan_fwd_op(u, delta, A, B, C, D, z, delta_bias, initial_state, seq_idx, delta_softplus, False)
    return (y, hT) if return_final_state else y
