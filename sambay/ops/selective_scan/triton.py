"""Mamba-1 selective scan in Triton: chunked forward and backward with recomputation.

Shapes (same contract as `reference.selective_scan`):
    u, delta, z: (B, T, D), unit stride along D (any batch/time strides, e.g. halves of in_proj's output)
    A: (D, N) fp32;  B, C: (B, T, N), unit stride along N;  D, delta_bias: (D,)
    initial_state / final_state: (B, D, N) fp32;  seq_idx: (B, T) int document ids

Forward: one program per (batch row, block of BD channels, time segment), one channel per thread with its N
states in registers, token by token: a = exp(dt*A), h = a*h + dt*B*u, y = C.h + D*u (times silu(z)). Each
token's inputs are loaded several tokens ahead through prefetch rings (`_scan_fwd_kernel`). Only the state
entering every CHUNK-th token is written (fp32 (B, T/CHUNK, N, D) slabs), and only when a backward pass will
need it. When the grid is too thin to hide the per-token latency, the sequence is cut into time segments run
in parallel (a local pass, a carry pass over segments, then the real pass from each segment's true entering
state; see FWD_SEGMENTS).

Backward: one channel per thread, token by token (`_scan_bwd_kernel`). Per checkpoint chunk, in reverse,
a program reruns the forward from the saved chunk-start state, keeping each h_t in a small per-program
scratch tile (each thread reads back only what it wrote), then walks the chunk backwards with
g_t = dL/dh_t = C_t*dy_t + a_{t+1} g_{t+1}, carrying a_t g_t into the token before. a_t h_{t-1} is recovered
as h_t - b_t. Sums over states stay inside a thread; the sums over channels (dB, dC) are one butterfly
reduce-scatter per token across the warp (`_warp_reduce_scatter`) and stored as per-program partials, like
dA, dD and d delta_bias, which torch sums (no atomics: deterministic). Thin grids use time segments as the
forward does (the carry of g runs from the last segment to the first). While a chunk is processed, the
inputs of the chunk before it are prefetched into L2 (BWD_PREFETCH).

Document resets (`seq_idx` changes between t-1 and t) set a_t = 0, which both cuts the forward carry and
stops the gradient. Rows past T in the last chunk get a = 1, b = 0 so the state passes through unchanged.
All loads are cast to fp32 at once (the Triton interpreter cannot do bf16 arithmetic).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from sambay.ops import triton_math as tm

# Tuning constants (the measurements behind their values: docs/ops.md, "Measurement history").
# Checkpoint interval: the forward saves the state entering every CHUNK-th token (B*T/CHUNK*D*N*4 bytes) and the
# backward reruns each CHUNK-token chunk from it; 16 halves the saved states but slows the backward far more.
# Overridable for tuning; the fake (meta) kernels read it too.
CHUNK = 8
# Forward: one channel per thread, FWD_WARPS warps per program (fewer when that would leave SMs idle), loads in
# flight through prefetch rings (see `_scan_fwd_kernel`): FWD_ONEPASS_RING tokens for u / delta / z and
# FWD_ONEPASS_BC_RING for the B / C rows in a one-pass forward, FWD_RING / FWD_BC_RING in the passes of a
# segmented one (powers of two, BC ring | ring | CHUNK). The fastest measured: 8 in one pass, 4 in the segmented
# passes (8 needs 255 registers there); a B / C ring shorter than the stream ring makes ptxas wait on the rows.
FWD_WARPS, FWD_RING, FWD_BC_RING, FWD_ONEPASS_RING, FWD_ONEPASS_BC_RING = 8, 4, 4, 8, 8
# A forward that saves no states loads without masks (prefetches past the segment re-read its last row, channels
# past DIM the last channel; neither is computed or stored), which drops each load's zero-fill and predicate.
# Not with saved states, where ptxas then needs more registers and the forward gets slower.
FWD_CLAMP = True
# Time segments: with few (batch, channel) sequences the forward is latency-bound, and cutting the sequence into S
# segments multiplies its parallelism by S for about twice the arithmetic (pass 1 finds each segment's final
# state from zero, pass 3 reruns it from the true entering state). FWD_SEGMENTS = 0: automatic, only when the
# grid has fewer than FWD_SEG_BELOW warps per SM (then about FWD_SEG_WARPS_PER_SM), since doubling the
# exponentials loses once the single pass has enough warps to hide its latency.
FWD_SEGMENTS, FWD_SEG_BELOW, FWD_SEG_WARPS_PER_SM, FWD_MIN_SEG_LEN, FWD_MAX_SEGMENTS = 0, 4, 16, 256, 16
# Backward: one channel per thread, up to BWD_WARPS warps per program (fewer while the grid is smaller than the
# SM count); one warp is what the dB / dC reduce-scatter needs (more fall back to tl.sum). BWD_SEGMENTS time
# segments (0: the forward's automatic rule). BWD_PREFETCH: at each chunk's start, ask L2 for the next chunk's
# rows of u, delta, dy, z, B, C and its checkpoint (`prefetch.global.L2`, no registers), so that its recompute
# loop waits on L2, not DRAM.
BWD_WARPS, BWD_SEGMENTS, BWD_PREFETCH = 1, 0, True
# Time offsets inside the kernels are int32; `selective_scan` cuts longer sequences into pieces (`max_piece_len`).
MAX_INT32_OFFSET = 2**31 - 1


# The compiled kernels of the latest launches (name -> triton CompiledKernel; `n_regs`, `n_spills`), for
# the benchmark's report.
LAUNCHED: dict = {}

# The SM count the launch heuristics read (1 off CUDA); a module global so that tools/sass.py can stand in
# a GPU's when it compiles on a machine without one.
_sm_count = tm.sm_count


def _np2(n: int) -> int:
    return triton.next_power_of_2(n)


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
    """One token's row of a (B, T, ...) tensor at offsets `off` (masked elements read 0; mask None: the
    caller has made every address valid)."""
    if mask is None:
        r = tl.load(ptr + pid_b64 * s_b + t * s_t + off)
    else:
        r = tl.load(ptr + pid_b64 * s_b + t * s_t + off, mask=mask, other=0.0)
    return r


@triton.jit
def _bc_rows_setup(B_ptr, C_ptr, s_B_b, s_B_t, s_C_b, s_C_t, NSTATE, NP: tl.constexpr, PACK: tl.constexpr):
    """How B / C rows are read: base pointers, element offsets on the state axis (0) and their mask, and the (batch,
    time) strides in loaded elements. With PACK the elements are int32 words of two bf16 states (`_bc_f32`);
    the strides arrive in bf16 elements because their divisibility by 16 is what lets the loads vectorise,
    and the mask compares against NSTATE // 2 (nb * 2 < NSTATE would hide its constancy: scalar loads)."""
    if PACK:
        B_ptr, C_ptr = B_ptr.to(tl.pointer_type(tl.int32)), C_ptr.to(tl.pointer_type(tl.int32))
        s_B_b, s_B_t, s_C_b, s_C_t = s_B_b // 2, s_B_t // 2, s_C_b // 2, s_C_t // 2
    nb = _at(tl.arange(0, NP // (1 + PACK)), 0)
    return B_ptr, C_ptr, nb, nb < NSTATE // (1 + PACK), s_B_b, s_B_t, s_C_b, s_C_t


@triton.jit
def _bc_f32(x, PACK: tl.constexpr):
    """A loaded B / C row as fp32 states along axis 0 of a (state, 1, 1) tile.

    PACK: x holds int32 words, word i = states 2i (low half) and 2i+1 (high half). A bf16 is the top half of
    the fp32 of the same value, so each state costs one shift or mask; Triton's own bf16 -> fp32 of a
    prefetched row costs two (a byte permute into a 16-bit register, then the shift), 32 instructions per
    token of the forward's loop."""
    if PACK:
        pairs = tl.join((x << 16).to(tl.float32, bitcast=True), (x & -65536).to(tl.float32, bitcast=True))
        r = tl.reshape(tl.permute(pairs, [0, 3, 1, 2]), [2 * x.shape[0], x.shape[1], x.shape[2]])
    else:
        r = x.to(tl.float32)
    return r


@triton.jit
def _reset_at(seq_ptr, pid_b64, t, tmask, s_seq_b, s_seq_t, HAS_SEQ: tl.constexpr):
    """True where token t starts a new document (its state must not see token t-1); tmask None: 0 < t < T."""
    if HAS_SEQ:
        if tmask is None:  # t > 0, in range
            cur = tl.load(seq_ptr + pid_b64 * s_seq_b + t * s_seq_t)
            prv = tl.load(seq_ptr + pid_b64 * s_seq_b + (t - 1) * s_seq_t)
            reset = cur != prv
        else:
            cur = tl.load(seq_ptr + pid_b64 * s_seq_b + t * s_seq_t, mask=tmask, other=0)
            prv = tl.load(seq_ptr + pid_b64 * s_seq_b + tl.maximum(t - 1, 0) * s_seq_t, mask=tmask, other=0)
            reset = (cur != prv) & (t > 0)
    else:
        reset = t < 0
    return reset


@triton.jit
def _load_stream(pid_b64, t, t_end, d3, dmask, src, HAS_Z: tl.constexpr, HAS_SEQ: tl.constexpr,
                 CLAMP: tl.constexpr):
    """Token t's per-channel inputs for the forward (a stream ring slot), kept in the input dtype until used:
    u, delta, z (u again when absent) and the reset flag (False without seq_idx). src = (u, delta, B, C, z,
    seq_idx pointers, then their (batch, time) strides). Tokens outside [0, t_end) (prefetches past the
    segment, never computed) read nothing; with CLAMP they read the segment's last row instead and d3 holds
    channels clamped to the tensor, so no load needs a mask (see FWD_CLAMP). t_end None: t is known to be
    inside the segment and past its first token (the forward's main loop), so nothing is clamped or masked in
    time, and the load's address is the round's base plus a constant."""
    (u_ptr, dt_ptr, B_ptr, C_ptr, z_ptr, seq_ptr,
     s_u_b, s_u_t, s_dt_b, s_dt_t, s_B_b, s_B_t, s_C_b, s_C_t, s_z_b, s_z_t, s_seq_b, s_seq_t) = src
    if t_end is None:  # a main-loop round: 0 < t < the segment's end
        tmask = None
        if CLAMP:
            m2 = None
        else:
            m2 = dmask
    elif CLAMP:
        t = tl.minimum(t, t_end - 1)
        tmask = t >= 0
        m2 = None
    else:
        tmask = (t >= 0) & (t < t_end)
        m2 = tmask & dmask
    u = _load_row(u_ptr, pid_b64, t, d3, m2, s_u_b, s_u_t)
    xr = _load_row(dt_ptr, pid_b64, t, d3, m2, s_dt_b, s_dt_t)
    if HAS_Z:
        zz = _load_row(z_ptr, pid_b64, t, d3, m2, s_z_b, s_z_t)
    else:
        zz = u
    return u, xr, zz, _reset_at(seq_ptr, pid_b64, t, tmask, s_seq_b, s_seq_t, HAS_SEQ)


@triton.jit
def _load_bc(pid_b64, t, t_end, nb3, nbmask, src, EVEN_N: tl.constexpr, CLAMP: tl.constexpr):
    """Token t's B and C rows (shared by every channel: a row ring slot); t as in `_load_stream`. Padded
    states (N not a power of two, not EVEN_N) read 0, which keeps their h at 0."""
    (u_ptr, dt_ptr, B_ptr, C_ptr, z_ptr, seq_ptr,
     s_u_b, s_u_t, s_dt_b, s_dt_t, s_B_b, s_B_t, s_C_b, s_C_t, s_z_b, s_z_t, s_seq_b, s_seq_t) = src
    if t_end is None or CLAMP:
        if t_end is not None:
            t = tl.minimum(t, t_end - 1)
        if EVEN_N:
            mn = None
        else:
            mn = nbmask
    else:
        mn = (t >= 0) & (t < t_end) & nbmask
    return _load_row(B_ptr, pid_b64, t, nb3, mn, s_B_b, s_B_t), _load_row(C_ptr, pid_b64, t, nb3, mn, s_C_b, s_C_t)


@triton.jit
def _ring_set(ring, i: tl.constexpr, slot):
    """The ring tuple with slot i replaced."""
    return ring[:i] + (slot,) + ring[i + 1:]


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
          PACK: tl.constexpr):
    """Cast a token's loads to fp32 and apply delta_bias + softplus."""
    xr, dt = _time_step(xr.to(tl.float32), dtb, SOFTPLUS, HAS_DTB, FAST)
    return u.to(tl.float32), xr, dt, _bc_f32(Bv, PACK), _bc_f32(Cv, PACK)


@triton.jit
def _decay(dt, A2, reset, HAS_SEQ: tl.constexpr):
    """a_t = exp(dt*A) on a (state, 1, channel) tile, 0 where token t starts a new document: the reset is a
    per-token exponent offset (exp2(-inf) = 0), not a select on every state. Padded rows pass dt = 0 (a = 1)."""
    x = dt * A2
    if HAS_SEQ:
        x = x + tl.where(reset, float("-inf"), 0.0)
    return tl.exp2(x)


# Forward tiles are (state, 1, channel): Triton spreads lanes over the last axis first, so with
# BD = 32 * num_warps each thread holds its channel's N states in registers and the sum over states needs no
# shuffles.
#
# The prefetch rings. h_t = exp(dt A) h_{t-1} + dt B u is a serial chain per channel, so a token's loads
# must be in flight long before it is computed. Loading token t+1 while computing token t is not enough when
# the loaded value is a loop-carried register: where its old value is still live after the new load is
# issued, the compiler copies it at the end of the loop body, and that copy waits for the load, so every
# token waits out one memory latency. Here the loop body is unrolled over RING tokens and each ring slot is reloaded right after its
# token's values are read out of it, so a load lands in the register its next use reads, no copy is needed
# and the tokens in between hide its latency. u, delta and z (per channel, from HBM) cycle through RING
# slots; the B and C rows (shared by all channels, mostly L2 hits, 16 registers a slot) through BC_RING.


@triton.jit
def _fwd_token(h, dtsum, alive, stream, rows, t, ld_end, A2, dtb, Dv, pid_b64, d3, d_ld, dmask, nb3, nbmask, src,
               y_ptr, s_y_b, s_y_t, RING: tl.constexpr, BC_RING: tl.constexpr, PACK: tl.constexpr,
               EVEN_N: tl.constexpr, CLAMP: tl.constexpr,
               HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_DTB: tl.constexpr, HAS_SEQ: tl.constexpr,
               SOFTPLUS: tl.constexpr, LOCAL: tl.constexpr, FAST: tl.constexpr):
    """Token t (inside the segment) from its ring slots (stream: u, delta, z, reset; rows: B, C), which are
    refilled with tokens t + RING and t + BC_RING (ld_end: the segment's end, or None when those are inside it).
    h: (N, 1, BD) fp32. Returns (h, dtsum, alive, stream, rows); dtsum / alive only move in a LOCAL pass."""
    nu, nx, nz, reset = stream
    nB, nC = rows
    u, xr, dt, Bv, Cv = _prep(nu, nx, nB, nC, dtb, SOFTPLUS, HAS_DTB, FAST, PACK)
    zf = nz.to(tl.float32)
    stream = _load_stream(pid_b64, t + RING, ld_end, d_ld, dmask, src, HAS_Z, HAS_SEQ, CLAMP)
    rows = _load_bc(pid_b64, t + BC_RING, ld_end, nb3, nbmask, src, EVEN_N, CLAMP)
    h = _decay(dt, A2, reset, HAS_SEQ) * h + (dt * u) * Bv
    if LOCAL:
        dtsum += dt
        if HAS_SEQ:
            alive = alive * (1.0 - reset.to(tl.float32))
    else:
        y = tl.sum(h * Cv, axis=0, keep_dims=True)
        if HAS_D:
            y = y + u * Dv
        if HAS_Z:
            y = y * zf * tm.sigmoid(zf, FAST)
        tl.store(y_ptr + pid_b64 * s_y_b + t * s_y_t + d3, y.to(y_ptr.dtype.element_ty), mask=dmask)
    return h, dtsum, alive, stream, rows


@triton.jit(do_not_specialize=["s_hs_n"])
def _scan_fwd_kernel(
    u_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, dtb_ptr, h0_ptr, seq_ptr,
    y_ptr, hT_ptr, hs_ptr, P_ptr,
    T, DIM, NSTATE, SEG_LEN, s_hs_n,
    s_u_b, s_dt_b, s_B_b, s_C_b, s_z_b, s_y_b, s_seq_b, s_seq_t,
    s_u_t: tl.constexpr, s_dt_t: tl.constexpr, s_B_t: tl.constexpr, s_C_t: tl.constexpr, s_z_t: tl.constexpr,
    s_y_t: tl.constexpr,
    BD: tl.constexpr, NP: tl.constexpr, RING: tl.constexpr, BC_RING: tl.constexpr, CKPT: tl.constexpr,
    PACK: tl.constexpr, EVEN_N: tl.constexpr, CLAMP: tl.constexpr, HAS_D: tl.constexpr, HAS_Z: tl.constexpr,
    HAS_DTB: tl.constexpr, HAS_H0: tl.constexpr,
    HAS_SEQ: tl.constexpr, SOFTPLUS: tl.constexpr, STORE_HT: tl.constexpr, STORE_HS: tl.constexpr,
    LOCAL: tl.constexpr, FAST: tl.constexpr,
):
    """Program (b, channel block, segment): tokens [seg·SEG_LEN, +SEG_LEN) from the state h0[b, seg], one
    channel per thread, token by token through the prefetch rings (RING and BC_RING powers of two,
    BC_RING <= RING). STORE_HS saves the state entering every CKPT-th token. LOCAL (pass 1 of a segmented
    forward): start from zero, write no outputs, only the segment's final state and its total decay
    P = prod_t a_t (hT / P at [b, seg])."""
    pid_b = tl.program_id(0)
    pid_d = tl.program_id(1)
    pid_s = tl.program_id(2)
    pid_b64 = pid_b.to(tl.int64)
    seg_off = (pid_b64 * tl.num_programs(2) + pid_s) * DIM * NSTATE  # [b, seg] of (B, S, D, N) states
    t0 = pid_s * SEG_LEN
    t_end = tl.minimum(t0 + SEG_LEN, T)
    d3 = _at(pid_d * BD + tl.arange(0, BD), 2)
    n3 = _at(tl.arange(0, NP), 0)
    dmask = d3 < DIM
    nmask = n3 < NSTATE
    B_ptr, C_ptr, nb3, nbmask, s_B_b, s_B_t, s_C_b, s_C_t = _bc_rows_setup(
        B_ptr, C_ptr, s_B_b, s_B_t, s_C_b, s_C_t, NSTATE, NP, PACK)
    src = (u_ptr, dt_ptr, B_ptr, C_ptr, z_ptr, seq_ptr,
           s_u_b, s_u_t, s_dt_b, s_dt_t, s_B_b, s_B_t, s_C_b, s_C_t, s_z_b, s_z_t, s_seq_b, s_seq_t)
    dn = d3 * NSTATE + n3
    dnmask = dmask & nmask
    A2 = tl.load(A_ptr + dn, mask=dnmask, other=0.0).to(tl.float32) * tm.LOG2E
    if HAS_DTB:
        dtb = tl.load(dtb_ptr + d3, mask=dmask, other=0.0).to(tl.float32)
    else:
        dtb = 0.0
    if HAS_D:
        Dv = tl.load(D_ptr + d3, mask=dmask, other=0.0).to(tl.float32)
    else:
        Dv = 0.0
    if HAS_H0:
        h = tl.load(h0_ptr + seg_off + dn, mask=dnmask, other=0.0).to(tl.float32)
    else:
        h = tl.zeros_like(A2)
    # LOCAL: the segment's total decay P = prod_t exp2(dt_t A2) = exp2(A2 sum_t dt_t), and 0 once a document
    # reset cuts it (one add per token and channel instead of a multiply per state)
    dtsum = tl.sum(tl.zeros_like(A2), axis=0, keep_dims=True)
    alive = 1.0
    # Checkpoints are (state, channel) slabs, so a warp stores each state's 32 channels as one line straight
    # from the registers h lives in. s_hs_n (= DIM) is not specialised: were its divisibility by 16 known,
    # Triton would vectorise the store over 4 channels per thread and stage h through shared memory, with
    # barriers, after every token (it moves that layout change to where h is computed).
    hs_row = hs_ptr + pid_b64 * ((T + CKPT - 1) // CKPT) * NSTATE * s_hs_n + n3 * s_hs_n + d3
    if CLAMP:  # loads of channels past DIM read the last one (their y is never stored)
        d_ld = tl.minimum(d3, DIM - 1)
    else:
        d_ld = d3
    streams = (_load_stream(pid_b64, t0, t_end, d_ld, dmask, src, HAS_Z, HAS_SEQ, CLAMP),)
    for j in tl.static_range(1, RING):
        streams = streams + (_load_stream(pid_b64, t0 + j, t_end, d_ld, dmask, src, HAS_Z, HAS_SEQ, CLAMP),)
    rows = (_load_bc(pid_b64, t0, t_end, nb3, nbmask, src, EVEN_N, CLAMP),)
    for j in tl.static_range(1, BC_RING):
        rows = rows + (_load_bc(pid_b64, t0 + j, t_end, nb3, nbmask, src, EVEN_N, CLAMP),)
    # Main rounds: every token a round computes or prefetches is inside the segment, so nothing is clamped or
    # masked in time, and each load or store goes through a pointer at the round's first token (moved on by one
    # round each trip) plus a constant: the time strides are constexpr, so ptxas folds that offset into the
    # instruction (a clamped token index times a runtime stride cost ~20 address instructions per token).
    # u / delta / z / y pointers are at this thread's channel; B / C stay scalar so their loads stay vectorised.
    n_main = tl.maximum((t_end - t0) // RING - 1, 0)
    t64 = t0.to(tl.int64)
    u_r = u_ptr + pid_b64 * s_u_b + t64 * s_u_t + d_ld
    dt_r = dt_ptr + pid_b64 * s_dt_b + t64 * s_dt_t + d_ld
    z_r = z_ptr + pid_b64 * s_z_b + t64 * s_z_t + d_ld
    B_r = B_ptr + pid_b64 * s_B_b + t64 * s_B_t
    C_r = C_ptr + pid_b64 * s_C_b + t64 * s_C_t
    seq_r = seq_ptr + pid_b64 * s_seq_b + t64 * s_seq_t
    y_r = y_ptr + pid_b64 * s_y_b + t64 * s_y_t + d3
    for r in range(0, n_main):
        t = t0 + r * RING
        if STORE_HS:
            if t % CKPT == 0:
                tl.store(hs_row + (t // CKPT) * NSTATE * s_hs_n, h, mask=dnmask)
        src_r = (u_r, dt_r, B_r, C_r, z_r, seq_r, 0, s_u_t, 0, s_dt_t, 0, s_B_t, 0, s_C_t, 0, s_z_t, 0, s_seq_t)
        for j in tl.static_range(RING):
            h, dtsum, alive, stream, row = _fwd_token(
                h, dtsum, alive, streams[j], rows[j % BC_RING], j, None, A2, dtb, Dv, 0, 0, 0,
                dmask, nb3, nbmask, src_r, y_r, 0, s_y_t, RING, BC_RING, PACK, EVEN_N, CLAMP, HAS_D, HAS_Z,
                HAS_DTB, HAS_SEQ, SOFTPLUS, LOCAL, FAST)
            streams = _ring_set(streams, j, stream)
            rows = _ring_set(rows, j % BC_RING, row)
        u_r += RING * s_u_t
        dt_r += RING * s_dt_t
        z_r += RING * s_z_t
        B_r += RING * s_B_t
        C_r += RING * s_C_t
        seq_r += RING * s_seq_t
        y_r += RING * s_y_t
    # The last one or two rounds: prefetches past the segment are clamped or masked, tokens past it skipped
    # (absolute token indices: on the round pointers these cost registers in the forward that saves states).
    for r in range(n_main, tl.cdiv(t_end - t0, RING)):
        t = t0 + r * RING
        if STORE_HS:  # RING divides CKPT and segments start on checkpoints: a checkpoint is always a slot-0 token
            if t % CKPT == 0:
                tl.store(hs_row + (t // CKPT) * NSTATE * s_hs_n, h, mask=dnmask)
        # The round's first token is always inside the segment; only the others are guarded (a guard on the
        # first one too lets ptxas schedule the loads so that they are waited on again).
        h, dtsum, alive, stream, row = _fwd_token(
            h, dtsum, alive, streams[0], rows[0], t, t_end, A2, dtb, Dv, pid_b64, d3, d_ld, dmask, nb3, nbmask, src,
            y_ptr, s_y_b, s_y_t, RING, BC_RING, PACK, EVEN_N, CLAMP, HAS_D, HAS_Z, HAS_DTB, HAS_SEQ, SOFTPLUS,
            LOCAL, FAST)
        streams = _ring_set(streams, 0, stream)
        rows = _ring_set(rows, 0, row)
        for j in tl.static_range(1, RING):
            if t + j < t_end:
                h, dtsum, alive, stream, row = _fwd_token(
                    h, dtsum, alive, streams[j], rows[j % BC_RING], t + j, t_end, A2, dtb, Dv, pid_b64, d3, d_ld,
                    dmask, nb3, nbmask, src, y_ptr, s_y_b, s_y_t, RING, BC_RING, PACK, EVEN_N, CLAMP, HAS_D, HAS_Z,
                    HAS_DTB, HAS_SEQ, SOFTPLUS, LOCAL, FAST)
                streams = _ring_set(streams, j, stream)
                rows = _ring_set(rows, j % BC_RING, row)
    if STORE_HT:
        tl.store(hT_ptr + seg_off + dn, h, mask=dnmask)
    if LOCAL:
        tl.store(P_ptr + seg_off + dn, tl.exp2(A2 * dtsum) * alive, mask=dnmask)


@triton.jit
def _prefetch_l2(ptr):
    """Ask L2 for the line holding each address (`prefetch.global.L2`: no register, no wait)."""
    tl.inline_asm_elementwise("prefetch.global.L2 [$1];\n\tmov.u32 $0, 0;", "=r,l", [ptr], dtype=tl.int32,
                              is_pure=False, pack=1)


@triton.jit
def _bwd_prefetch_chunk(c, L: tl.constexpr, T, pid_b64, d3, DIM, u_ptr, dt_ptr, dy_ptr, z_ptr, B_ptr, C_ptr,
                        hs_slab, s_u_b, s_u_t, s_dt_b, s_dt_t, s_dy_b, s_dy_t, s_z_b, s_z_t, s_B_b, s_B_t, s_C_b,
                        s_C_t, HAS_Z: tl.constexpr, RECOMPUTE: tl.constexpr):
    """Prefetch into L2 what checkpoint chunk c will read (its rows of u, delta, dy, z, B and C, and its
    checkpoint slab `hs_slab` when RECOMPUTE), while the chunk after it is being processed: each backward
    chunk starts with a recompute whose loads would otherwise each wait out a DRAM latency (they are
    prefetched one token ahead, about 150 instructions). Rows are clamped to the tensors; the slab prefetch
    of padding states and channels may reach (NP - N) * D + BD - 1 elements past the last slab, which
    `scan_fwd` allocates room for."""
    dc = tl.minimum(d3, DIM - 1)
    for i in tl.static_range(L):
        t = tl.minimum(c * L + i, T - 1)
        _prefetch_l2(u_ptr + pid_b64 * s_u_b + t * s_u_t + dc)
        _prefetch_l2(dt_ptr + pid_b64 * s_dt_b + t * s_dt_t + dc)
        _prefetch_l2(dy_ptr + pid_b64 * s_dy_b + t * s_dy_t + dc)
        if HAS_Z:
            _prefetch_l2(z_ptr + pid_b64 * s_z_b + t * s_z_t + dc)
        _prefetch_l2(B_ptr + pid_b64 * s_B_b + t * s_B_t)
        _prefetch_l2(C_ptr + pid_b64 * s_C_b + t * s_C_t)
    if RECOMPUTE:
        _prefetch_l2(hs_slab)


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


@triton.jit(do_not_specialize=["s_hs_n"])
def _scan_bwd_kernel(
    u_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, dtb_ptr, seq_ptr, hs_ptr, dy_ptr, cin_ptr,
    du_ptr, ddt_ptr, dz_ptr, dBp_ptr, dCp_ptr, dA_ptr, dD_ptr, ddtb_ptr, cout_ptr, P_ptr, scr_ptr,
    T, DIM, NSTATE, NCHUNK, SEG_LEN, s_hs_n,
    s_u_b, s_u_t, s_dt_b, s_dt_t, s_B_b, s_B_t, s_C_b, s_C_t, s_z_b, s_z_t, s_dy_b, s_dy_t, s_seq_b, s_seq_t,
    L: tl.constexpr, BD: tl.constexpr, NP: tl.constexpr, LOG2_NP: tl.constexpr, SCATTER: tl.constexpr,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_DTB: tl.constexpr, HAS_CIN: tl.constexpr,
    HAS_SEQ: tl.constexpr, SOFTPLUS: tl.constexpr, STORE_COUT: tl.constexpr, LOCAL: tl.constexpr,
    FAST: tl.constexpr, PACK: tl.constexpr, PREFETCH: tl.constexpr,
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
        B_ptr, C_ptr, s_B_b, s_B_t, s_C_b, s_C_t, NSTATE, NP, PACK)
    dn = d3 * NSTATE + n3
    dnmask = dmask & nmask
    A2 = tl.load(A_ptr + dn, mask=dnmask, other=0.0).to(tl.float32) * tm.LOG2E  # A·log2(e)
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
    # the forward's (state, channel) checkpoint slabs; s_hs_n = DIM, unspecialised as in the forward
    hs_row = hs_ptr + pid_b64 * NCHUNK * NSTATE * s_hs_n + n3 * s_hs_n + d3
    for cc in range(0, c_end - c_first):
        c = c_end - 1 - cc
        if PREFETCH:
            if c > c_first:
                _bwd_prefetch_chunk(
                    c - 1, L, T, pid_b64, d3, DIM, u_ptr, dt_ptr, dy_ptr, z_ptr, B_ptr, C_ptr,
                    hs_row + (c - 1) * NSTATE * s_hs_n, s_u_b, s_u_t, s_dt_b, s_dt_t, s_dy_b, s_dy_t, s_z_b, s_z_t,
                    s_B_b, s_B_t, s_C_b, s_C_t, HAS_Z, not LOCAL)
        if not LOCAL:
            # (1) forward recompute of the chunk from its checkpoint, every h_t into the scratch tile
            h = tl.load(hs_row + c * NSTATE * s_hs_n, mask=dnmask, other=0.0)
            t = c * L
            nu = _load_row(u_ptr, pid_b64, t, d3, dmask & (t < T), s_u_b, s_u_t)
            nx = _load_row(dt_ptr, pid_b64, t, d3, dmask & (t < T), s_dt_b, s_dt_t)
            nB = _load_row(B_ptr, pid_b64, t, nb3, nbmask & (t < T), s_B_b, s_B_t)
            for i in range(0, L):
                t = c * L + i
                tmask = t < T
                u, xr, Bv = nu.to(tl.float32), nx.to(tl.float32), _bc_f32(nB, PACK)
                reset = _reset_at(seq_ptr, pid_b64, t, tmask, s_seq_b, s_seq_t, HAS_SEQ)
                nmk = (i + 1 < L) & (t + 1 < T)
                nu = _load_row(u_ptr, pid_b64, t + 1, d3, dmask & nmk, s_u_b, s_u_t)
                nx = _load_row(dt_ptr, pid_b64, t + 1, d3, dmask & nmk, s_dt_b, s_dt_t)
                nB = _load_row(B_ptr, pid_b64, t + 1, nb3, nbmask & nmk, s_B_b, s_B_t)
                xr, dt = _time_step(xr, dtb, SOFTPLUS, HAS_DTB, FAST)
                dt = tl.where(tmask, dt, 0.0)  # padded rows: a = 1, b = 0
                a = _decay(dt, A2, reset, HAS_SEQ)
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
            Bv, Cv = _bc_f32(nB, PACK), _bc_f32(nC, PACK)
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
            a = _decay(dt, A2, reset, HAS_SEQ)
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
                ddt = gB * u + tl.sum(gah * A2, axis=0, keep_dims=True) * tm.LN2  # A = A2·ln 2
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


def _thread_per_channel_block(batch: int, dim: int, device: torch.device, max_warps: int) -> tuple[int, int]:
    """(channels per program, warps) with one channel per thread: up to `max_warps` warps, halved while the
    grid would have fewer programs than the device has SMs."""
    warps = max_warps
    while warps > 1 and batch * triton.cdiv(dim, 32 * warps) < _sm_count(device):
        warps //= 2
    return 32 * warps, warps


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
    (B, ceil(T/CHUNK), N, D) fp32 (an empty tensor unless `save_states`). `y_out` (contiguous (B, T, D))
    lets tests pass a poisoned buffer.
    """
    if u.numel() == 0:
        raise ValueError(f"the scan kernels need a non-empty (B, T, D) input (got {tuple(u.shape)}); "
                         "sambay.ops.selective_scan handles empty ones")
    u, delta, z, B, C = (tm.unit_last(t) for t in (u, delta, z, B, C))
    batch, seqlen, dim = u.shape
    nstate = A.shape[1]
    A = A.contiguous()
    y = tm.empty(batch, seqlen, dim, device=u.device, dtype=u.dtype) if y_out is None else y_out
    hT = tm.empty(batch, dim, nstate, device=u.device, dtype=torch.float32)
    if save_states:
        # room past the last slab for the backward's L2 prefetch of padding states and channels (its loads
        # are masked; `_bwd_prefetch_chunk`)
        n_hs = batch * num_chunks(seqlen) * nstate * dim
        margin = (_np2(nstate) - nstate) * dim + 32 * BWD_WARPS
        hs = tm.empty(n_hs + margin, device=u.device, dtype=torch.float32)[:n_hs].view(
            batch, num_chunks(seqlen), nstate, dim)
    else:
        hs = torch.empty(0, device=u.device, dtype=torch.float32)
    h0 = None if initial_state is None else initial_state.float().contiguous()
    dummy = hT
    B, C, pack, bc_strides = _bc_rows(B, C)
    block, warps = _thread_per_channel_block(batch, dim, u.device, FWD_WARPS)
    n_seg = _time_segments(FWD_SEGMENTS, batch, triton.cdiv(dim, block) * warps, seqlen, u.device)
    seg_len, n_seg = _segment_layout(n_seg, seqlen)
    ring, bc_ring = (FWD_ONEPASS_RING, FWD_ONEPASS_BC_RING) if n_seg == 1 else (FWD_RING, FWD_BC_RING)
    if save_states:  # a ring longer than the checkpoint interval (CHUNK tuned down) shrinks to it
        ring = min(ring, CHUNK)
        bc_ring = min(bc_ring, ring)
    if ring % bc_ring or (save_states and CHUNK % ring):  # checkpoints are stored at a round's first token
        raise ValueError(f"the forward's prefetch rings ({ring} tokens for u / delta / z, {bc_ring} for B / C) must "
                         f"divide each other{', and the checkpoint interval CHUNK ' + str(CHUNK) if save_states else ''}")

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
            seqlen, dim, nstate, seg_len, dim,
            u.stride(0), delta.stride(0), bc_strides[0], bc_strides[2], 0 if z is None else z.stride(0),
            y.stride(0), 0 if seq_idx is None else seq_idx.stride(0), 0 if seq_idx is None else seq_idx.stride(1),
            s_u_t=u.stride(1), s_dt_t=delta.stride(1), s_B_t=bc_strides[1], s_C_t=bc_strides[3],
            s_z_t=0 if z is None else z.stride(1), s_y_t=y.stride(1),
            BD=block, NP=_np2(nstate), RING=ring, BC_RING=bc_ring, CKPT=CHUNK, PACK=pack,
            EVEN_N=_np2(nstate) == nstate, CLAMP=FWD_CLAMP and not save_states,
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
    hloc = tm.empty(*seg_shape, device=u.device, dtype=torch.float32)
    P = tm.empty(*seg_shape, device=u.device, dtype=torch.float32)
    launch(None, hloc, P, True, z=None, D=None)
    init = tm.empty(*seg_shape, device=u.device, dtype=torch.float32)
    _carry_across_segments(hloc, P, h0, init, hT)
    launch(init, None, None, False)
    return y, hT, hs


def scan_bwd(
    dy, dhT, u, delta, A, B, C, D, z, delta_bias, seq_idx, states, delta_softplus=True,
    want_dh0=False,
):
    """Launch the backward kernel; returns (du, ddelta, dA, dB, dC, dD, dz, ddelta_bias, dh0), with None
    for inputs that were not given (dh0 only when `want_dh0`). `states`: the forward's chunk-start states."""
    u, delta, z, B, C, dy = (tm.unit_last(t) for t in (u, delta, z, B, C, dy))
    batch, seqlen, dim = u.shape
    if seqlen * dy.stride(1) + dim > MAX_INT32_OFFSET:  # a widely strided dy: rows of D keep its int32 offsets in range
        dy = dy.contiguous()
    nstate, nprow = A.shape[1], _np2(A.shape[1])
    A = A.contiguous()
    dev, f32 = u.device, torch.float32
    B, C, pack, bc_strides = _bc_rows(B, C)
    block, warps = _thread_per_channel_block(batch, dim, dev, BWD_WARPS)
    n_pd = triton.cdiv(dim, block)
    seg_len, n_seg = _segment_layout(
        _time_segments(BWD_SEGMENTS, batch, n_pd * warps, seqlen, dev), seqlen)
    du = tm.empty(batch, seqlen, dim, device=dev, dtype=u.dtype)
    ddt = tm.empty(batch, seqlen, dim, device=dev, dtype=delta.dtype)
    dz = None if z is None else tm.empty(batch, seqlen, dim, device=dev, dtype=z.dtype)
    dBp = tm.empty(batch, n_pd, seqlen, nstate, device=dev, dtype=f32)  # per channel block, summed below
    dCp = tm.empty(batch, n_pd, seqlen, nstate, device=dev, dtype=f32)
    dA = tm.empty(batch, n_seg, dim, nstate, device=dev, dtype=f32)
    dD = None if D is None else tm.empty(batch, n_seg, dim, device=dev, dtype=f32)
    ddtb = None if delta_bias is None else tm.empty(batch, n_seg, dim, device=dev, dtype=f32)
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
            seqlen, dim, nstate, num_chunks(seqlen), seg_len, dim,
            u.stride(0), u.stride(1), delta.stride(0), delta.stride(1), *bc_strides,
            0 if z is None else z.stride(0), 0 if z is None else z.stride(1),
            dy.stride(0), dy.stride(1),
            0 if seq_idx is None else seq_idx.stride(0), 0 if seq_idx is None else seq_idx.stride(1),
            L=CHUNK, BD=block, NP=nprow, LOG2_NP=nprow.bit_length() - 1,
            SCATTER=block == 32 and 2 * nprow <= 32,
            HAS_D=D is not None, HAS_Z=z is not None, HAS_DTB=delta_bias is not None, HAS_CIN=cin is not None,
            HAS_SEQ=seq_idx is not None, SOFTPLUS=delta_softplus, STORE_COUT=cout is not None, LOCAL=local,
            FAST=tm.fast_math(), PACK=pack, PREFETCH=BWD_PREFETCH and tm.fast_math(), num_warps=warps,
        )

    if n_seg == 1:
        dh0 = tm.empty(batch, dim, nstate, device=dev, dtype=f32) if want_dh0 else None
        launch(dhT, dh0, None, False)
    else:
        # (1) each segment's outgoing carry from a zero incoming one, and its total decay; (2) the true
        # incoming carry of every segment (last to first); (3) the full backward of every segment from it
        seg_shape = (batch, n_seg, dim, nstate)
        local, P = tm.empty(*seg_shape, device=dev, dtype=f32), tm.empty(*seg_shape, device=dev, dtype=f32)
        launch(None, local, P, True)
        cin, dh0 = tm.empty(*seg_shape, device=dev, dtype=f32), tm.empty(batch, dim, nstate, device=dev, dtype=f32)
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
        hs = u.new_empty(batch, (seqlen + CHUNK - 1) // CHUNK, nstate, dim, dtype=torch.float32)
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


def max_piece_len(u, delta, B, C, z=None, seq_idx=None) -> int:
    """The most tokens one kernel call may walk: the kernels index time with int32 (token x time stride, and
    (token / CHUNK) x N x D into the saved states), which must stay below MAX_INT32_OFFSET. Longer sequences are
    scanned in pieces (`selective_scan`)."""
    dim, nstate = u.shape[-1], B.shape[-1]
    strides = [t.stride(1) for t in (u, delta, B, C, z, seq_idx) if t is not None]
    per_token = max(*strides, dim, triton.cdiv(nstate * dim, CHUNK))  # outputs and dy are (B, T, D) rows
    margin = 2 * nstate * dim + CHUNK * per_token  # the last slab's states and a chunk's prefetch past the end
    return max(CHUNK, (MAX_INT32_OFFSET - margin) // per_token // CHUNK * CHUNK)


def selective_scan(
    u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=True, initial_state=None,
    seq_idx=None, return_final_state=False,
):
    """Triton selective scan with autograd; same signature and shapes as `reference.selective_scan`.

    A sequence longer than `max_piece_len` is scanned in consecutive pieces, each starting from the state
    the previous one ended in (cut to zero where a document starts at the piece's first token); autograd
    chains the pieces' backward passes through those states."""
    piece = max_piece_len(u, delta, B, C, z, seq_idx)
    seqlen = u.shape[1]
    if seqlen <= piece:
        y, hT = _scan_one_call(u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state, seq_idx)
        return (y, hT) if return_final_state else y
    ys, h = [], initial_state
    for a in range(0, seqlen, piece):
        b = min(a + piece, seqlen)
        if a > 0 and seq_idx is not None:  # a document starting at token a must not see the carried state
            h = h * (seq_idx[:, a] == seq_idx[:, a - 1]).to(h.dtype)[:, None, None]
        y, h = _scan_one_call(
            u[:, a:b], delta[:, a:b], A, B[:, a:b], C[:, a:b], D, None if z is None else z[:, a:b], delta_bias,
            delta_softplus, h, None if seq_idx is None else seq_idx[:, a:b])
        ys.append(y)
    y = torch.cat(ys, dim=1)
    return (y, h) if return_final_state else y


def _scan_one_call(u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state, seq_idx):
    """(y, final state) from one kernel launch sequence, through autograd when any input needs a gradient."""
    tensors = (u, delta, A, B, C, D, z, delta_bias, initial_state)
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors):
        return _SelectiveScanFn.apply(u, delta, A, B, C, D, z, delta_bias, initial_state, seq_idx, delta_softplus)
    y, hT, _ = _scan_fwd_op(u, delta, A, B, C, D, z, delta_bias, initial_state, seq_idx, delta_softplus, False)
    return y, hT
