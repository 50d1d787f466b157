"""Split-K (flash-decoding) attention for one query token per sequence over a KV cache, in Triton.

Kernel 1, grid (B, G, n_splits): program (b, g, s) reads row `slot_idx[b]` of the cache, KV head g, and
the s-th of n_splits equal chunks of that sequence's valid keys [0, cache_lens[b]) (chunks are sized from
the per-sequence length read on the device, so ragged batches stay balanced). It loads each [BLOCK_N, hs]
K tile and [BLOCK_N, dv] V tile once for all H/G query heads of the group (the heads are the rows of a
tl.dot, padded to 16), runs an online softmax in fp32 and writes a partial (normalised output, log2-sum-exp).
A split with no keys writes a neutral partial (lse = -inf, out = 0).
Kernel 2, grid (B, H): merges the n_splits partials with log-sum-exp weights into the output.
With n_splits == 1 kernel 1 writes the output directly and kernel 2 is skipped.

Launch shapes depend only on the call's shapes (n_splits from B, G, N and the SM count), nothing is read
back to the host, and the workspace is allocated per call: safe to capture in a CUDA graph.
Differential attention (`decode_diff_attention`, DIFF): grid (B, G/2, n_splits); each program reads the
K/V heads 2g and 2g+1 once and runs both softmaxes of its differential heads over the value pair
[v_2g ‖ v_2g+1]. Two calls of the plain kernel (one per softmax) would each read all of V: 1.5x the bytes.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from sambay.ops import triton_math as tm

# Tuned on the H100 (sambay/bench/attention.py): at large batch every tile ran within 2 % of the copy bandwidth,
# at small batch only enough splits fill the GPU (the sweep: docs/ops.md, "Measurement history").
BLOCK_N_DEFAULT = 64
NUM_WARPS_DEFAULT = 4
NUM_STAGES_DEFAULT = 3
TARGET_PROGRAMS_PER_SM = 64  # n_splits grows until B*G*n_splits >= this * SM count ...
MIN_KEYS_PER_SPLIT = 512  # ... but each split keeps at least this many keys of the cache capacity
MAX_SPLITS = 64
CPU_SM_COUNT = 8  # the SM count `default_splits` assumes off CUDA (interpreter tests)


def default_splits(batch: int, n_kv: int, n_max: int, device: torch.device) -> int:
    """n_splits for a call shape: B*G*n_splits >= TARGET_PROGRAMS_PER_SM * SMs, each split >= MIN_KEYS."""
    sms = tm.sm_count(device, CPU_SM_COUNT)
    want = math.ceil(TARGET_PROGRAMS_PER_SM * sms / max(1, batch * n_kv))
    cap = max(1, math.ceil(n_max / MIN_KEYS_PER_SPLIT))
    return int(max(1, min(want, cap, MAX_SPLITS)))


@triton.jit
def _scores(q, kt, nmask, scale_log2, DOT_F32: tl.constexpr):
    """q [QB, HSP] · kt [BLOCK_N, HSP]ᵀ -> log2-scaled scores [QB, BLOCK_N], -inf past the valid keys."""
    if DOT_F32:
        s = tl.dot(q, tl.trans(kt.to(tl.float32)), input_precision="ieee")
    else:
        s = tl.dot(q, tl.trans(kt))
    return tl.where(nmask[None, :], s * scale_log2, float("-inf"))


@triton.jit
def _online_softmax(s, m_i, l_i):
    """One online-softmax step: (probabilities, rescale factor for the old accumulator, new max, new sum)."""
    m_new = tl.maximum(m_i, tl.max(s, axis=1))
    alpha = tl.exp2(m_i - m_new)
    p = tl.exp2(s - m_new[:, None])
    return p, alpha, m_new, l_i * alpha + tl.sum(p, axis=1)


@triton.jit
def _pv(p, vt, DOT_F32: tl.constexpr):
    if DOT_F32:
        return tl.dot(p, vt.to(tl.float32), input_precision="ieee")
    return tl.dot(p.to(vt.dtype), vt)


@triton.jit
def _write(out_rows, rmask, m_i, l_i, acc, acc_hi, b64, sp, n_rows, po_ptr, plse_ptr, out_ptr, s_ob, s_oh,
           e, emask, DV: tl.constexpr, DVT: tl.constexpr, N_SPLITS: tl.constexpr, DIFF: tl.constexpr,
           DIRECT: tl.constexpr):
    """Normalise one softmax's accumulators and store them as the output (one split) or as a partial
    (normalised output + log2-sum-exp; a split without keys writes the neutral lse = -inf, out = 0)."""
    has = l_i > 0.0
    inv = tl.where(has, 1.0 / tl.where(has, l_i, 1.0), 0.0)
    omask = rmask[:, None] & emask[None, :]
    if DIRECT:
        optr = out_ptr + b64 * s_ob + out_rows[:, None] * s_oh + e[None, :]
    else:
        prow = (b64 * n_rows + out_rows) * N_SPLITS + sp  # (b, row, split)
        tl.store(plse_ptr + prow, tl.where(has, m_i + tl.log2(tl.where(has, l_i, 1.0)), float("-inf")),
                 mask=rmask)
        optr = po_ptr + prow[:, None] * DVT + e[None, :]
    tl.store(optr, (acc * inv[:, None]).to(optr.dtype.element_ty), mask=omask)
    if DIFF:
        tl.store(optr + DV, (acc_hi * inv[:, None]).to(optr.dtype.element_ty), mask=omask)


@triton.jit
def _decode_split_kernel(
    q_ptr, k_ptr, v_ptr, lens_ptr, slot_ptr, bt_ptr, po_ptr, plse_ptr, out_ptr,
    scale_log2,
    s_qb, s_qh,
    s_ks, s_kg, s_kn,
    s_vs, s_vg, s_vn,
    s_bt,
    s_ob, s_oh,
    HPG: tl.constexpr, QB: tl.constexpr, HS: tl.constexpr, HSP: tl.constexpr, DV: tl.constexpr,
    DVP: tl.constexpr, DVT: tl.constexpr, BLOCK_N: tl.constexpr, N_SPLITS: tl.constexpr, HAS_SLOT: tl.constexpr,
    DIFF: tl.constexpr, DIRECT: tl.constexpr, DOT_F32: tl.constexpr, PAGE: tl.constexpr,
):
    """Program (b, g, split). Plain: KV head g, query heads g·HPG + r, output rows = query heads.
    PAGE > 0: the cache is paged; key n of the row lives in page bt[slot, n // PAGE] at offset n % PAGE (a tile
    of BLOCK_N keys never straddles two pages: BLOCK_N divides PAGE and every split starts on a tile).
    DIFF (differential attention, striped): KV heads 2g and 2g+1 are read ONCE for both softmaxes;
    differential head j = g·HPG + r has softmax 1 = (query 2j, keys 2g) and softmax 2 = (query 2j+1,
    keys 2g+1), both over the value pair [v_2g ‖ v_2g+1]; outputs go to rows j and H/2 + j."""
    b = tl.program_id(0)
    g = tl.program_id(1)
    sp = tl.program_id(2)
    b64 = b.to(tl.int64)
    g64 = g.to(tl.int64)
    n_len = tl.load(lens_ptr + b).to(tl.int32)
    if HAS_SLOT:
        slot = tl.load(slot_ptr + b).to(tl.int64)
    else:
        slot = b64
    n_len = tl.where(slot >= 0, n_len, 0)  # negative slot = padded batch row: no keys, output 0
    slot = tl.maximum(slot, 0)
    chunk = tl.cdiv(tl.cdiv(n_len, N_SPLITS), BLOCK_N) * BLOCK_N
    start = sp * chunk
    end = tl.minimum(start + chunk, n_len)

    rows = tl.arange(0, QB)
    rmask = rows < HPG
    heads = g * HPG + rows  # plain: query heads; DIFF: differential heads
    d = tl.arange(0, HSP)
    dmask = d < HS
    e = tl.arange(0, DVP)
    emask = e < DV
    qmask = rmask[:, None] & dmask[None, :]
    if DIFF:
        kv = 2 * g64
        q1 = tl.load(q_ptr + b64 * s_qb + (2 * heads)[:, None] * s_qh + d[None, :], mask=qmask, other=0.0)
        q2 = tl.load(q_ptr + b64 * s_qb + (2 * heads + 1)[:, None] * s_qh + d[None, :], mask=qmask, other=0.0)
        n_rows = 2 * HPG * tl.num_programs(1)
    else:
        kv = g64
        q1 = tl.load(q_ptr + b64 * s_qb + heads[:, None] * s_qh + d[None, :], mask=qmask, other=0.0)
        q2 = q1
        n_rows = HPG * tl.num_programs(1)
    if DOT_F32:
        q1 = q1.to(tl.float32)
        q2 = q2.to(tl.float32)
    if PAGE == 0:
        k_base = k_ptr + slot * s_ks + kv * s_kg
        v_base = v_ptr + slot * s_vs + kv * s_vg

    m1 = tl.full([QB], float("-inf"), tl.float32)
    l1 = tl.zeros([QB], tl.float32)
    a1 = tl.zeros([QB, DVP], tl.float32)
    a1_hi = tl.zeros([QB, DVP], tl.float32)
    m2 = tl.full([QB], float("-inf"), tl.float32)
    l2 = tl.zeros([QB], tl.float32)
    a2 = tl.zeros([QB, DVP], tl.float32)
    a2_hi = tl.zeros([QB, DVP], tl.float32)
    for n0 in range(start, end, BLOCK_N):
        n = n0 + tl.arange(0, BLOCK_N)
        nmask = n < end
        kmask = nmask[:, None] & dmask[None, :]
        vmask = nmask[:, None] & emask[None, :]
        if PAGE > 0:  # this tile's page; `n` becomes the offset inside it
            page = tl.load(bt_ptr + slot * s_bt + n0 // PAGE).to(tl.int64)
            k_base = k_ptr + page * s_ks + kv * s_kg
            v_base = v_ptr + page * s_vs + kv * s_vg
            n = n0 % PAGE + tl.arange(0, BLOCK_N)
        kt = tl.load(k_base + n[:, None] * s_kn + d[None, :], mask=kmask, other=0.0)
        vt = tl.load(v_base + n[:, None] * s_vn + e[None, :], mask=vmask, other=0.0)
        p, alpha, m1, l1 = _online_softmax(_scores(q1, kt, nmask, scale_log2, DOT_F32), m1, l1)
        a1 = a1 * alpha[:, None] + _pv(p, vt, DOT_F32)
        if DIFF:
            kt2 = tl.load(k_base + s_kg + n[:, None] * s_kn + d[None, :], mask=kmask, other=0.0)
            vt_hi = tl.load(v_base + s_vg + n[:, None] * s_vn + e[None, :], mask=vmask, other=0.0)
            a1_hi = a1_hi * alpha[:, None] + _pv(p, vt_hi, DOT_F32)
            p2, alpha2, m2, l2 = _online_softmax(_scores(q2, kt2, nmask, scale_log2, DOT_F32), m2, l2)
            a2 = a2 * alpha2[:, None] + _pv(p2, vt, DOT_F32)
            a2_hi = a2_hi * alpha2[:, None] + _pv(p2, vt_hi, DOT_F32)

    _write(heads, rmask, m1, l1, a1, a1_hi, b64, sp, n_rows, po_ptr, plse_ptr, out_ptr, s_ob, s_oh, e, emask,
           DV, DVT, N_SPLITS, DIFF, DIRECT)
    if DIFF:
        _write(heads + HPG * tl.num_programs(1), rmask, m2, l2, a2, a2_hi, b64, sp, n_rows, po_ptr, plse_ptr,
               out_ptr, s_ob, s_oh, e, emask, DV, DVT, N_SPLITS, DIFF, DIRECT)


@triton.jit
def _decode_merge_kernel(po_ptr, plse_ptr, out_ptr, s_ob, s_oh, n_head,
                         N_SPLITS: tl.constexpr, NSP: tl.constexpr, DVT: tl.constexpr, DVTP: tl.constexpr):
    b = tl.program_id(0)
    h = tl.program_id(1)
    row = b.to(tl.int64) * n_head + h
    s = tl.arange(0, NSP)
    smask = s < N_SPLITS
    lse = tl.load(plse_ptr + row * N_SPLITS + s, mask=smask, other=float("-inf"))
    mx = tl.max(lse, axis=0)
    ok = lse > float("-inf")
    w = tl.where(ok, tl.exp2(tl.where(ok, lse, 0.0) - tl.where(ok, mx, 0.0)), 0.0)
    den = tl.sum(w, axis=0)
    e = tl.arange(0, DVTP)
    emask = e < DVT
    o = tl.load(po_ptr + (row * N_SPLITS + s)[:, None] * DVT + e[None, :],
                mask=(smask & ok)[:, None] & emask[None, :], other=0.0)
    res = tl.sum(w[:, None] * o, axis=0)
    res = tl.where(den > 0.0, res / tl.where(den > 0.0, den, 1.0), 0.0)
    tl.store(out_ptr + b.to(tl.int64) * s_ob + h * s_oh + e, res.to(out_ptr.dtype.element_ty), mask=emask)


def _p2(x: int, lo: int = 16) -> int:
    return max(lo, triton.next_power_of_2(x))


def _check(q, k_cache, v_cache, cache_lens, slot_idx, block_table=None):
    batch, n_head, hs = q.shape
    if block_table is not None and (block_table.dim() != 2 or block_table.stride(-1) != 1):
        raise ValueError(f"block_table must be (slots, pages) with a unit last stride (got {tuple(block_table.shape)})")
    if k_cache.shape[-1] != hs or v_cache.shape[:3] != k_cache.shape[:3] or n_head % k_cache.shape[1]:
        raise ValueError(f"shapes: q {tuple(q.shape)} k_cache {tuple(k_cache.shape)} v_cache {tuple(v_cache.shape)}")
    for name, t in (("q", q), ("k_cache", k_cache), ("v_cache", v_cache)):
        if t.stride(-1) != 1:
            raise ValueError(f"{name} needs a unit stride on its last dim (got strides {t.stride()})")
    if cache_lens.shape != (batch,) or (slot_idx is not None and slot_idx.shape != (batch,)):
        raise ValueError("cache_lens and slot_idx must be (B,)")


def _launch(q, k_cache, v_cache, cache_lens, slot_idx, scale, diff, n_splits, block_n, num_warps, num_stages,
            block_table=None):
    """Resolve the defaults, then run the registered op: (B, H, dv) plain, or (B, H, 2·dv) = [o1 rows; o2 rows]
    for DIFF."""
    hs = q.shape[-1]
    groups = k_cache.shape[1] // 2 if diff else k_cache.shape[1]  # programs along axis 1: KV heads or pairs
    page = 0 if block_table is None else k_cache.shape[2]
    n_max = k_cache.shape[2] if block_table is None else page * block_table.shape[1]
    block_n = BLOCK_N_DEFAULT if block_n is None else block_n
    if page:
        block_n = min(block_n, page)
        if page % block_n or page & (page - 1):
            raise ValueError(f"a paged cache needs a power-of-two page size divisible by the key tile (page {page}, "
                             f"tile {block_n})")
    return _decode_op(
        q, k_cache, v_cache, cache_lens, slot_idx, block_table, hs ** -0.5 if scale is None else float(scale),
        diff, default_splits(q.shape[0], groups, n_max, q.device) if n_splits is None else n_splits,
        block_n, NUM_WARPS_DEFAULT if num_warps is None else num_warps,
        NUM_STAGES_DEFAULT if num_stages is None else num_stages,
    )


# A custom op, so that torch.compile calls the kernels as they are instead of re-generating them (inductor's
# copy of this kernel received the float scale as fp64, which broke the fp32 softmax loop).
@torch.library.custom_op("sambay::decode_attention", mutates_args=())
def _decode_op(
    q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, cache_lens: torch.Tensor,
    slot_idx: torch.Tensor | None, block_table: torch.Tensor | None, scale: float, diff: bool, n_splits: int,
    block_n: int, num_warps: int, num_stages: int,
) -> torch.Tensor:
    batch, n_head, hs = q.shape
    n_kv, dv = k_cache.shape[1], v_cache.shape[-1]
    groups = n_kv // 2 if diff else n_kv
    hpg = n_head // n_kv  # plain: query heads per KV head; DIFF: differential heads per KV pair
    dvt = 2 * dv if diff else dv
    dot_f32 = q.dtype == torch.float32 or tm.triton_interpreting()

    out = tm.empty(batch, n_head, dvt, device=q.device, dtype=q.dtype)
    direct = n_splits == 1
    if direct:
        part_o = part_lse = out  # unused
    else:
        part_o = tm.empty(batch, n_head, n_splits, dvt, device=q.device, dtype=torch.float32)
        part_lse = tm.empty(batch, n_head, n_splits, device=q.device, dtype=torch.float32)
    slot = slot_idx if slot_idx is not None else cache_lens  # unused pointer when HAS_SLOT is False
    table = block_table if block_table is not None else cache_lens  # unused pointer when PAGE is 0
    _decode_split_kernel[(batch, groups, n_splits)](
        q, k_cache, v_cache, cache_lens, slot, table, part_o, part_lse, out,
        scale * tm.LOG2E.value,
        q.stride(0), q.stride(1),
        k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
        v_cache.stride(0), v_cache.stride(1), v_cache.stride(2),
        0 if block_table is None else block_table.stride(0),
        out.stride(0), out.stride(1),
        HPG=hpg, QB=_p2(hpg), HS=hs, HSP=_p2(hs), DV=dv, DVP=_p2(dv), DVT=dvt, BLOCK_N=block_n, N_SPLITS=n_splits,
        HAS_SLOT=slot_idx is not None, DIFF=diff, DIRECT=direct, DOT_F32=dot_f32,
        PAGE=0 if block_table is None else k_cache.shape[2], num_warps=num_warps, num_stages=num_stages,
    )
    if not direct:
        _decode_merge_kernel[(batch, n_head)](
            part_o, part_lse, out, out.stride(0), out.stride(1), n_head,
            N_SPLITS=n_splits, NSP=triton.next_power_of_2(n_splits), DVT=dvt, DVTP=triton.next_power_of_2(dvt),
            num_warps=1 if dvt <= 128 else 2,
        )
    return out


@_decode_op.register_fake
def _decode_fake(q, k_cache, v_cache, cache_lens, slot_idx, block_table, scale, diff, n_splits, block_n, num_warps,
                 num_stages):
    dv = v_cache.shape[-1]
    return q.new_empty(q.shape[0], q.shape[1], 2 * dv if diff else dv)


def decode_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, cache_lens: torch.Tensor,
                     slot_idx: torch.Tensor | None = None, scale: float | None = None,
                     block_table: torch.Tensor | None = None, *,
                     n_splits: int | None = None, block_n: int | None = None, num_warps: int | None = None,
                     num_stages: int | None = None) -> torch.Tensor:
    """Triton implementation of `sambay.ops.attention.decode.decode_attention` (contract there).

    Tuning knobs (keyword-only, for benchmarks): n_splits, block_n, num_warps, num_stages.
    """
    _check(q, k_cache, v_cache, cache_lens, slot_idx, block_table)
    return _launch(q, k_cache, v_cache, cache_lens, slot_idx, scale, False, n_splits, block_n, num_warps,
                   num_stages, block_table)


def decode_diff_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, cache_lens: torch.Tensor,
                          slot_idx: torch.Tensor | None = None, scale: float | None = None,
                          block_table: torch.Tensor | None = None, *,
                          n_splits: int | None = None, block_n: int | None = None, num_warps: int | None = None,
                          num_stages: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Triton implementation of `sambay.ops.attention.decode.decode_diff_attention` (contract there): every
    K and V element is read once for both softmaxes. Same tuning knobs as `decode_attention`."""
    _check(q, k_cache, v_cache, cache_lens, slot_idx, block_table)
    n_head, n_kv = q.shape[1], k_cache.shape[1]
    if n_head % 2 or n_kv % 2:
        raise ValueError(f"differential attention pairs heads: n_head {n_head} and n_kv {n_kv} must be even")
    out = _launch(q, k_cache, v_cache, cache_lens, slot_idx, scale, True, n_splits, block_n, num_warps,
                  num_stages, block_table)
    return out[:, : n_head // 2], out[:, n_head // 2:]
