"""Causal self-attention over whole sequences (training forward + backward, and inference prefill).

    prefill_attention(q, k, v, *, window=None, document_ids=None, scale=None, backend=None) -> (B, T, H, dv)

Semantics (identical on every backend; the dense reference is `reference.masked_attention`): query i may
attend key j iff  j <= i  and  i - j < window (when a window is given: `window` keys including the query
itself)  and  document_ids[b, i] == document_ids[b, j] (when given). Softmax in fp32, scale 1/sqrt(hs).

Backends (`backend=None` picks one; the names can also be forced, for tests and benchmarks):
  * "dense"  – SDPA with an explicit (B, 1, T, T) boolean mask. CPU tensors and SAMBAY_KERNELS=reference
               take it; O(T^2) memory, only for small T.
  * "sdpa"   – full causal, no documents (or window >= T): SDPA `is_causal=True` on the backend chosen by
               measurement (cuDNN, native GQA; SDPA_TRAIN / SDPA_INFER below; numbers in
               docs/ops.md); FLASH with V split is the fallback.
  * "flex"   – sliding window and/or documents: compiled `flex_attention` with a cached block mask built
               from the mask_mod (q >= kv) & (q - kv < window) & (doc[q] == doc[kv]); only the blocks inside
               the band/document are computed, never a dense T x T mask.
  * "varlen" – `torch.nn.attention.varlen.varlen_attn(window_size=(window - 1, 0))` (FA2 inside PyTorch)
               when this torch has it; documents become cu_seqlens (needs one host sync, and each document
               must be one contiguous run of equal ids). torch 2.11 lacks enable_gqa: K/V heads repeated.
All of them support autograd (flex backward needs CUDA: on CPU "flex" is forward-only, used in tests).
dv may differ from hs (differential attention passes dv = 2*hs): backends that need dv == hs get V split
into hs-wide pieces (one attention call per piece, same softmax).
"""

from __future__ import annotations

import collections
import functools
import inspect

import torch
import torch.nn.functional as F

from sambay.ops.backend import kernel_mode, use_triton

# ---- backend choices, measured on the H100 (the numbers: docs/ops.md, "Measurement history") ----
# Full causal: cuDNN with native GQA was the fastest forward and backward, for dv == hs and for dv = 2*hs (which
# FLASH refuses). Each entry: (sdpa backend, GQA native (True) or by repeating K/V heads (False), split V into
# hs-wide pieces when dv != hs). If the chosen backend refuses the inputs in the forward, `FALLBACK` runs
# instead, and the math backend if that refuses too.
SDPA_TRAIN: dict[str, tuple[str, bool, bool]] = {"dv_eq": ("cudnn", True, False), "dv_ne": ("cudnn", True, False)}
SDPA_INFER: dict[str, tuple[str, bool, bool]] = {"dv_eq": ("cudnn", True, False), "dv_ne": ("cudnn", True, False)}
FALLBACK: tuple[str, bool, bool] = ("flash", True, True)
# Backend for sliding window / documents on CUDA: "flex" or "varlen"; flex was faster forward and backward.
WINDOW_BACKEND = "flex"
# flex's backward with dv = 2*hs = 256 needs more shared memory than the H100 has with the default kernel
# options, so training splits V into hs-wide pieces (smaller backward tiles via FLEX_KERNEL_OPTIONS: untested).
FLEX_SPLIT_V_TRAIN = True
FLEX_KERNEL_OPTIONS: dict | None = None

_BACKENDS = ("dense", "sdpa", "flex", "varlen")


def dense_mask(seqlen: int, window: int | None, document_ids: torch.Tensor | None,
               device: torch.device | str) -> torch.Tensor:
    """(B or 1, 1, T, T) bool mask with the semantics above (reference / small sizes only)."""
    pos = torch.arange(seqlen, device=device)
    qi, kj = pos[:, None], pos[None, :]
    mask = kj <= qi
    if window is not None:
        mask = mask & (qi - kj < window)
    mask = mask[None]
    if document_ids is not None:
        mask = mask & (document_ids[:, :, None] == document_ids[:, None, :])
    return mask[:, None]


def prefill_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, window: int | None = None,
                      document_ids: torch.Tensor | None = None, scale: float | None = None,
                      backend: str | None = None, block_mask=None) -> torch.Tensor:
    """Causal (optionally sliding-window, optionally document-masked) attention with GQA.

    Args:
        q: (B, T, H, hs); k: (B, T, G, hs); v: (B, T, G, dv), H a multiple of G (query head h reads KV head
            h // (H // G)); any dtype SDPA takes (bf16/fp16 on CUDA, fp32 anywhere). Last dim unit-stride.
        window: None = full causal; w >= 1 = query i sees keys i-w+1 .. i. w >= T is treated as None.
        document_ids: (B, T) integer ids, or None. Tokens attend only within their document. For the
            "varlen" backend each document must be one contiguous run.
        scale: softmax scale, default 1/sqrt(hs).
        backend: None (auto) or one of "dense", "sdpa", "flex", "varlen".
        block_mask: the flex backend's BlockMask for exactly these (B, T, window, document_ids), from
            `flex_block_masks` (built once per forward, outside compiled code: building it inside a compiled
            region breaks the graph); built or looked up here when None. Other backends ignore it.
    Returns:
        (B, T, H, dv) in q's dtype (a transposed view of a (B, H, T, dv) buffer on the fused paths).
    """
    batch, seqlen, n_head, hs = q.shape
    n_kv = k.shape[2]
    if k.shape[:2] != (batch, seqlen) or v.shape[:3] != k.shape[:3] or k.shape[3] != hs:
        raise ValueError(f"shape mismatch: q {tuple(q.shape)} k {tuple(k.shape)} v {tuple(v.shape)}")
    if n_head % n_kv:
        raise ValueError(f"n_head {n_head} is not a multiple of n_kv {n_kv}")
    if document_ids is not None and document_ids.shape != (batch, seqlen):
        raise ValueError(f"document_ids shape {tuple(document_ids.shape)} != {(batch, seqlen)}")
    if window is not None and window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    if window is not None and window >= seqlen:
        window = None
    scale = hs ** -0.5 if scale is None else float(scale)
    if backend is None:
        backend = _auto_backend(q, window, document_ids)
    if backend not in _BACKENDS:
        raise ValueError(f"backend {backend!r} not in {_BACKENDS}")
    if backend == "sdpa" and (window is not None or document_ids is not None):
        raise ValueError("backend 'sdpa' is full causal only (no window, no documents)")
    if backend == "dense":
        return _dense(q, k, v, window, document_ids, scale)
    if backend == "sdpa":
        training = torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v))
        table = SDPA_TRAIN if training else SDPA_INFER
        name, gqa_native, split_v = table["dv_eq" if v.shape[-1] == hs else "dv_ne"]
        try:
            return sdpa_causal(q, k, v, scale, name, gqa_native, split_v)
        except RuntimeError as e:  # the backend refused these inputs ("No available kernel")
            _warn_fallback(name, e)
        try:
            return sdpa_causal(q, k, v, scale, *FALLBACK)
        except RuntimeError as e:  # e.g. tiny or odd head sizes: the math backend takes anything
            _warn_fallback(FALLBACK[0], e)
            return sdpa_causal(q, k, v, scale, "math", False, False)
    if backend == "flex":
        if block_mask is None:
            block_mask = block_mask_for(batch, seqlen, window, document_ids, q.device)
        elif tuple(block_mask.seq_lengths) != (seqlen, seqlen):
            raise ValueError(f"block_mask was built for lengths {tuple(block_mask.seq_lengths)}, not {seqlen}")
        return _flex(q, k, v, block_mask, scale)
    return _varlen(q, k, v, window, document_ids, scale)


@functools.cache
def _warn_fallback_once(name: str, msg: str) -> None:
    import logging

    logging.getLogger("sambay.ops").warning("sdpa backend %s refused the inputs (%s); trying the fallback", name, msg)


def _warn_fallback(name: str, err: Exception) -> None:
    _warn_fallback_once(name, str(err).splitlines()[0][:200] if str(err) else type(err).__name__)


def _auto_backend(x: torch.Tensor, window, document_ids) -> str:
    """The backend `prefill_attention` picks for inputs on x's device (window already clipped to T)."""
    if kernel_mode() == "reference" or not x.is_cuda or not use_triton("prefill_attention", x):
        return "dense"
    if window is None and document_ids is None:
        return "sdpa"
    if WINDOW_BACKEND == "varlen" and varlen_available():
        return "varlen"
    return "flex"


# ------------------------------------------------------------------------------------------------ dense
def _dense(q, k, v, window, document_ids, scale):
    mask = dense_mask(q.shape[1], window, document_ids, q.device)
    out = F.scaled_dot_product_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask, scale=scale,
        enable_gqa=q.shape[2] != k.shape[2],
    )
    return out.transpose(1, 2)


# ------------------------------------------------------------------------------------------------- SDPA
def _sdpa_backend(name: str):
    from torch.nn.attention import SDPBackend

    return {"flash": SDPBackend.FLASH_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION,
            "efficient": SDPBackend.EFFICIENT_ATTENTION, "math": SDPBackend.MATH}[name]


def _split_v(fn, v, hs):
    """Run fn(v_piece) on hs-wide pieces of v's last dim and concatenate (same softmax for each)."""
    dv = v.shape[-1]
    if dv == hs or dv % hs:
        return fn(v)
    return torch.cat([fn(v[..., i:i + hs]) for i in range(0, dv, hs)], dim=-1)


def sdpa_causal(q, k, v, scale: float, name: str, gqa_native: bool = True, split_v: bool = False) -> torch.Tensor:
    """Full causal SDPA on exactly one named backend ("flash", "cudnn", "efficient", "math").

    Layouts as `prefill_attention`. Raises RuntimeError when the backend cannot run these inputs.
    """
    from torch.nn.attention import sdpa_kernel

    rep = q.shape[2] // k.shape[2]
    qt, kt, vt = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
    if rep > 1 and not gqa_native:
        kt = kt.repeat_interleave(rep, dim=1)
        vt = vt.repeat_interleave(rep, dim=1)

    def run(vv):
        return F.scaled_dot_product_attention(qt, kt, vv, is_causal=True, scale=scale,
                                              enable_gqa=rep > 1 and gqa_native)

    with sdpa_kernel([_sdpa_backend(name)]):
        out = _split_v(run, vt, q.shape[-1]) if split_v else run(vt)
    return out.transpose(1, 2)


# ------------------------------------------------------------------------------------------------- flex
@functools.cache
def _compiled_flex():
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention)


def _mask_mod(window: torch.Tensor, doc: torch.Tensor):
    """One mask_mod code object for every configuration: the window (0-dim int tensor, T when None) and the
    document ids ((B, T), zeros when None) are captured tensors, so torch.compile sees them as inputs and
    does not recompile per window value or per batch of documents."""
    def mask_mod(b, h, q_idx, kv_idx):
        return (q_idx >= kv_idx) & (q_idx - kv_idx < window) & (doc[b, q_idx] == doc[b, kv_idx])

    return mask_mod


# Most recent block masks. Key: (device, B, T, window, doc identity); value: (doc tensor kept alive, its
# version counter, BlockMask). Holding the doc tensor makes `is` identity safe against address reuse.
_BLOCK_MASKS: collections.OrderedDict = collections.OrderedDict()
_BLOCK_MASK_CACHE_SIZE = 8


def block_mask_for(batch: int, seqlen: int, window: int | None, document_ids: torch.Tensor | None,
                   device: torch.device) -> object:
    """Cached flex_attention BlockMask for (B, T, window, document_ids). Rebuilt when document_ids changes
    (another tensor, or an in-place write); all layers of one forward pass share one build per window."""
    from torch.nn.attention.flex_attention import create_block_mask

    key = (str(device), batch, seqlen, window, None if document_ids is None else id(document_ids))
    hit = _BLOCK_MASKS.get(key)
    if hit is not None and hit[0] is document_ids and (document_ids is None or hit[1] == document_ids._version):
        _BLOCK_MASKS.move_to_end(key)
        return hit[2]
    win = torch.tensor(seqlen if window is None else window, device=device, dtype=torch.int32)
    if document_ids is None:
        doc = torch.zeros(batch, seqlen, device=device, dtype=torch.int32)
        mask_batch = None  # every row has the same mask: one block-mask row broadcast over the batch
    else:
        doc = document_ids.detach().to(device=device, dtype=torch.int32).contiguous()
        mask_batch = batch
    bm = create_block_mask(_mask_mod(win, doc), mask_batch, None, seqlen, seqlen, device=device,
                           _compile=device.type == "cuda")
    _BLOCK_MASKS[key] = (document_ids, None if document_ids is None else document_ids._version, bm)
    while len(_BLOCK_MASKS) > _BLOCK_MASK_CACHE_SIZE:
        _BLOCK_MASKS.popitem(last=False)
    return bm


def flex_block_masks(x: torch.Tensor, windows, document_ids: torch.Tensor | None) -> dict:
    """{window: BlockMask} for each of `windows` that `prefill_attention` would run on the flex backend
    for (B, T) = x.shape[:2] on x's device with these document ids; windows on other backends are absent.

    Call it where code runs eagerly (the model's forward, before its compiled blocks) and pass each mask as
    `prefill_attention(..., block_mask=)`: the masks are then built (or fetched from the cache) once per
    forward, and the compiled blocks take them as plain inputs instead of breaking their graphs.
    """
    batch, seqlen = x.shape[:2]
    masks = {}
    for window in windows:
        clipped = None if window is None or window >= seqlen else window
        if _auto_backend(x, clipped, document_ids) == "flex":
            masks[window] = block_mask_for(batch, seqlen, clipped, document_ids, x.device)
    return masks


def _flex(q, k, v, bm, scale):
    from torch.nn.attention.flex_attention import flex_attention

    fn = _compiled_flex() if q.is_cuda else flex_attention
    qt, kt = q.transpose(1, 2), k.transpose(1, 2)
    kw = {} if FLEX_KERNEL_OPTIONS is None or not q.is_cuda else {"kernel_options": dict(FLEX_KERNEL_OPTIONS)}

    def run(vv):
        return fn(qt, kt, vv, block_mask=bm, scale=scale, enable_gqa=q.shape[2] != k.shape[2], **kw)

    training = torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v))
    vt = v.transpose(1, 2)
    out = _split_v(run, vt, q.shape[-1]) if (training and FLEX_SPLIT_V_TRAIN) else run(vt)
    return out.transpose(1, 2)


# ----------------------------------------------------------------------------------------------- varlen
@functools.cache
def _varlen_params() -> frozenset:
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:
        return frozenset()
    return frozenset(inspect.signature(varlen_attn).parameters)


def varlen_available() -> bool:
    """True when torch has varlen_attn with window_size (torch 2.11 has it, without enable_gqa: grouped
    K/V heads are then repeated to H heads before the call)."""
    return "window_size" in _varlen_params()


def cu_seqlens_from_documents(document_ids: torch.Tensor | None, batch: int, seqlen: int,
                              device) -> tuple[torch.Tensor, int]:
    """(cu_seqlens int32 (n_docs + 1,), max document length) over the flattened (B*T) tokens; host sync."""
    if document_ids is None:
        cu = torch.arange(0, (batch + 1) * seqlen, seqlen, device=device, dtype=torch.int32)
        return cu, seqlen
    d = document_ids
    start = torch.ones_like(d, dtype=torch.bool)
    start[:, 1:] = d[:, 1:] != d[:, :-1]
    starts = start.flatten().nonzero().flatten()
    cu = torch.cat([starts, starts.new_tensor([batch * seqlen])]).to(torch.int32)
    return cu, int((cu[1:] - cu[:-1]).max().item())


def _varlen(q, k, v, window, document_ids, scale):
    from torch.nn.attention.varlen import varlen_attn

    batch, seqlen, n_head, hs = q.shape
    cu, max_len = cu_seqlens_from_documents(document_ids, batch, seqlen, q.device)
    ws = (-1 if window is None else window - 1, 0)
    rep = n_head // k.shape[2]
    gqa_kw = {}
    if rep > 1 and "enable_gqa" in _varlen_params():
        gqa_kw = {"enable_gqa": True}
    elif rep > 1:
        k = k.repeat_interleave(rep, dim=2)
        v = v.repeat_interleave(rep, dim=2)
    qf, kf, vf = (t.reshape(batch * seqlen, *t.shape[2:]) for t in (q, k, v))

    def run(vv):
        return varlen_attn(qf, kf, vv, cu, cu, max_len, max_len, scale=scale, window_size=ws, **gqa_kw)

    out = _split_v(run, vf, hs)  # FA2 needs dv == hs
    return out.reshape(batch, seqlen, n_head, -1)


def causal_flops(batch: int, seqlen: int, n_head: int, hs: int, dv: int, window: int | None = None,
                 document_lengths: list[int] | None = None) -> float:
    """Forward FLOPs over unmasked (query, key) pairs only: 2*(hs + dv) per pair per head.
    document_lengths: every document of the batch (all rows together); default one per row."""
    def pairs(n):
        if window is None or window >= n:
            return n * (n + 1) / 2
        return window * (window + 1) / 2 + (n - window) * window

    docs = document_lengths if document_lengths is not None else [seqlen] * batch
    return 2.0 * (hs + dv) * n_head * sum(pairs(n) for n in docs)


__all__ = ["prefill_attention", "dense_mask", "sdpa_causal", "block_mask_for", "flex_block_masks", "varlen_available",
           "cu_seqlens_from_documents", "causal_flops", "SDPA_TRAIN", "SDPA_INFER", "WINDOW_BACKEND"]
