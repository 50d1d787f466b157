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
Optional `v_hi` (differential attention): a second value cache read with the same probabilities, its
output concatenated after v's.
"""

from __future__ import annotations

import functools
import math
import os

import torch
import triton
import triton.language as tl

# Tuned on the H100 (benchmarks/attention.py; results in benchmarks/results/attention-h100-*.txt): at
# B 64 x 32K (H 40, G 20, hs 64) every tile among (32..256 keys, 2..8 warps, 2..4 stages) ran within 2 % of
# the copy bandwidth; 4-16 splits beat 1-2 by ~2 %; at B 4 one split reached 63 %, 4-64 splits 90-93 %.
BLOCK_N_DEFAULT = 64
NUM_WARPS_DEFAULT = 4
NUM_STAGES_DEFAULT = 3
TARGET_PROGRAMS_PER_SM = 64  # n_splits grows until B*G*n_splits >= this * SM count ...
MIN_KEYS_PER_SPLIT = 512  # ... but each split keeps at least this many keys of the cache capacity
MAX_SPLITS = 64

# Debug switch for tests: fill every kernel-written buffer with NaN first, so an element the kernel fails
# to write (or a neutral partial it forgets) shows up instead of passing on whatever memory held.
POISON = False


def _empty(*shape, device, dtype):
    if POISON and dtype.is_floating_point:
        return torch.full(shape, float("nan"), device=device, dtype=dtype)
    return torch.empty(*shape, device=device, dtype=dtype)


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


@functools.cache
def _sm_count(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def default_splits(batch: int, n_kv: int, n_max: int, device: torch.device) -> int:
    """n_splits for a call shape: B*G*n_splits >= TARGET_PROGRAMS_PER_SM * SMs, each split >= MIN_KEYS."""
    sms = _sm_count(device.index if device.index is not None else torch.cuda.current_device()) \
        if device.type == "cuda" else 8
    want = math.ceil(TARGET_PROGRAMS_PER_SM * sms / max(1, batch * n_kv))
    cap = max(1, math.ceil(n_max / MIN_KEYS_PER_SPLIT))
    return int(max(1, min(want, cap, MAX_SPLITS)))


@triton.jit
def _decode_split_kernel(
    q_ptr, k_ptr, v_ptr, vh_ptr, lens_ptr, slot_ptr, po_ptr, plse_ptr, out_ptr,
    scale_log2,
    s_qb, s_qh,
    s_ks, s_kg, s_kn,
    s_vs, s_vg, s_vn,
    s_hs, s_hg, s_hn,
    s_ob, s_oh,
    HPG: tl.constexpr, QB: tl.constexpr, HS: tl.constexpr, HSP: tl.constexpr, DV: tl.constexpr,
    DVP: tl.constexpr, DVT: tl.constexpr, BLOCK_N: tl.constexpr, N_SPLITS: tl.constexpr, HAS_SLOT: tl.constexpr,
    HAS_VHI: tl.constexpr, DIRECT: tl.constexpr, DOT_F32: tl.constexpr,
):
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
    heads = g * HPG + rows
    d = tl.arange(0, HSP)
    dmask = d < HS
    e = tl.arange(0, DVP)
    emask = e < DV
    q = tl.load(q_ptr + b64 * s_qb + heads[:, None] * s_qh + d[None, :],
                mask=rmask[:, None] & dmask[None, :], other=0.0)
    if DOT_F32:
        q = q.to(tl.float32)
    k_base = k_ptr + slot * s_ks + g64 * s_kg
    v_base = v_ptr + slot * s_vs + g64 * s_vg
    h_base = vh_ptr + slot * s_hs + g64 * s_hg

    m_i = tl.full([QB], float("-inf"), tl.float32)
    l_i = tl.zeros([QB], tl.float32)
    acc = tl.zeros([QB, DVP], tl.float32)
    acc2 = tl.zeros([QB, DVP], tl.float32)
    for n0 in range(start, end, BLOCK_N):
        n = n0 + tl.arange(0, BLOCK_N)
        nmask = n < end
        kt = tl.load(k_base + n[:, None] * s_kn + d[None, :], mask=nmask[:, None] & dmask[None, :], other=0.0)
        if DOT_F32:
            s = tl.dot(q, tl.trans(kt.to(tl.float32)), input_precision="ieee")
        else:
            s = tl.dot(q, tl.trans(kt))
        s = tl.where(nmask[None, :], s * scale_log2, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        alpha = tl.exp2(m_i - m_new)
        p = tl.exp2(s - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, axis=1)
        vt = tl.load(v_base + n[:, None] * s_vn + e[None, :], mask=nmask[:, None] & emask[None, :], other=0.0)
        if DOT_F32:
            acc = acc * alpha[:, None] + tl.dot(p, vt.to(tl.float32), input_precision="ieee")
        else:
            acc = acc * alpha[:, None] + tl.dot(p.to(vt.dtype), vt)
        if HAS_VHI:
            ht = tl.load(h_base + n[:, None] * s_hn + e[None, :], mask=nmask[:, None] & emask[None, :], other=0.0)
            if DOT_F32:
                acc2 = acc2 * alpha[:, None] + tl.dot(p, ht.to(tl.float32), input_precision="ieee")
            else:
                acc2 = acc2 * alpha[:, None] + tl.dot(p.to(ht.dtype), ht)
        m_i = m_new

    has = l_i > 0.0
    inv = tl.where(has, 1.0 / tl.where(has, l_i, 1.0), 0.0)
    o1 = acc * inv[:, None]
    o2 = acc2 * inv[:, None]
    omask = rmask[:, None] & emask[None, :]
    if DIRECT:
        optr = out_ptr + b64 * s_ob + heads[:, None] * s_oh + e[None, :]
        tl.store(optr, o1.to(out_ptr.dtype.element_ty), mask=omask)
        if HAS_VHI:
            tl.store(optr + DV, o2.to(out_ptr.dtype.element_ty), mask=omask)
    else:
        prow = (b64 * (HPG * tl.num_programs(1)) + heads) * N_SPLITS + sp  # (b, h, split) row index
        tl.store(plse_ptr + prow, tl.where(has, m_i + tl.log2(tl.where(has, l_i, 1.0)), float("-inf")),
                 mask=rmask)
        pptr = po_ptr + prow[:, None] * DVT + e[None, :]
        tl.store(pptr, o1, mask=omask)
        if HAS_VHI:
            tl.store(pptr + DV, o2, mask=omask)


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


def decode_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, cache_lens: torch.Tensor,
                     slot_idx: torch.Tensor | None = None, v_hi: torch.Tensor | None = None,
                     scale: float | None = None, *, n_splits: int | None = None, block_n: int | None = None,
                     num_warps: int | None = None, num_stages: int | None = None) -> torch.Tensor:
    """Triton implementation of `sambay.ops.attention.decode.decode_attention` (contract there).

    Tuning knobs (keyword-only, for benchmarks): n_splits, block_n, num_warps, num_stages.
    """
    batch, n_head, hs = q.shape
    n_slots, n_kv, n_max, hs_k = k_cache.shape
    dv = v_cache.shape[-1]
    if hs_k != hs or v_cache.shape[:3] != k_cache.shape[:3] or n_head % n_kv:
        raise ValueError(f"shapes: q {tuple(q.shape)} k_cache {tuple(k_cache.shape)} v_cache {tuple(v_cache.shape)}")
    if v_hi is not None and v_hi.shape != v_cache.shape:
        raise ValueError(f"v_hi shape {tuple(v_hi.shape)} != v_cache shape {tuple(v_cache.shape)}")
    for name, t in (("q", q), ("k_cache", k_cache), ("v_cache", v_cache), ("v_hi", v_hi)):
        if t is not None and t.stride(-1) != 1:
            raise ValueError(f"{name} needs a unit stride on its last dim (got strides {t.stride()})")
    if cache_lens.shape != (batch,) or (slot_idx is not None and slot_idx.shape != (batch,)):
        raise ValueError("cache_lens and slot_idx must be (B,)")
    hpg = n_head // n_kv
    dvt = dv * (2 if v_hi is not None else 1)
    scale = hs ** -0.5 if scale is None else float(scale)
    if n_splits is None:
        n_splits = default_splits(batch, n_kv, n_max, q.device)
    block_n = BLOCK_N_DEFAULT if block_n is None else block_n
    num_warps = NUM_WARPS_DEFAULT if num_warps is None else num_warps
    num_stages = NUM_STAGES_DEFAULT if num_stages is None else num_stages
    dot_f32 = q.dtype == torch.float32 or _interpreting()

    out = _empty(batch, n_head, dvt, device=q.device, dtype=q.dtype)
    direct = n_splits == 1
    if direct:
        part_o = part_lse = out  # unused
    else:
        part_o = _empty(batch, n_head, n_splits, dvt, device=q.device, dtype=torch.float32)
        part_lse = _empty(batch, n_head, n_splits, device=q.device, dtype=torch.float32)
    vh = v_hi if v_hi is not None else v_cache
    slot = slot_idx if slot_idx is not None else cache_lens  # unused pointer when HAS_SLOT is False
    _decode_split_kernel[(batch, n_kv, n_splits)](
        q, k_cache, v_cache, vh, cache_lens, slot, part_o, part_lse, out,
        scale * 1.4426950408889634,
        q.stride(0), q.stride(1),
        k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
        v_cache.stride(0), v_cache.stride(1), v_cache.stride(2),
        vh.stride(0), vh.stride(1), vh.stride(2),
        out.stride(0), out.stride(1),
        HPG=hpg, QB=_p2(hpg), HS=hs, HSP=_p2(hs), DV=dv, DVP=_p2(dv), DVT=dvt, BLOCK_N=block_n, N_SPLITS=n_splits,
        HAS_SLOT=slot_idx is not None, HAS_VHI=v_hi is not None, DIRECT=direct, DOT_F32=dot_f32,
        num_warps=num_warps, num_stages=num_stages,
    )
    if not direct:
        _decode_merge_kernel[(batch, n_head)](
            part_o, part_lse, out, out.stride(0), out.stride(1), n_head,
            N_SPLITS=n_splits, NSP=triton.next_power_of_2(n_splits), DVT=dvt, DVTP=triton.next_power_of_2(dvt),
            num_warps=1 if dvt <= 128 else 2,
        )
    return out
