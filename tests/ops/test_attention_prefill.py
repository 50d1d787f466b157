"""CPU checks of `prefill_attention` against the dense reference `masked_attention` (fp32, small sizes)."""


from __future__ import annotations

import pytest
import torch

from sambay.ops.attention import masked_attention, prefill_attention
from sambay.ops.attention.prefill import causal_flops, cu_seqlens_from_documents, dense_mask


def rel(a, b):
    """||a - b|| / ||b||; a reference that is exactly zero (e.g. dq with window 1) compares absolutely."""
    a, b = a.double(), b.double()
    assert torch.isfinite(a).all()
    return ((a - b).norm() / b.norm().clamp_min(1.0)).item()


def _docs(batch, seqlen, cuts):
    doc = torch.zeros(batch, seqlen, dtype=torch.long)
    for b, cs in enumerate(cuts):
        for i, c in enumerate(cs):
            doc[b, c:] = i + 1
    return doc


def _inputs(B, T, H, G, hs, dv, grad=False):
    q = torch.randn(B, T, H, hs, requires_grad=grad)
    k = torch.randn(B, T, G, hs, requires_grad=grad)
    v = torch.randn(B, T, G, dv, requires_grad=grad)
    return q, k, v


CASES = [
    # (window, with documents, H, G, dv multiple)
    (None, False, 4, 2, 1),
    (None, True, 4, 4, 1),
    (5, False, 4, 1, 1),
    (7, True, 6, 2, 2),
    (1, False, 2, 2, 1),
    (100, True, 4, 2, 2),  # window >= T: same as full causal
]


@pytest.mark.parametrize("window,with_docs,H,G,dvm", CASES)
def test_dense_backend_forward_and_grads_match_masked_attention(window, with_docs, H, G, dvm):
    B, T, hs = 2, 37, 8
    q, k, v = _inputs(B, T, H, G, hs, dvm * hs, grad=True)
    doc = _docs(B, T, [[5, 20], [30]]) if with_docs else None
    out = prefill_attention(q, k, v, window=window, document_ids=doc)
    assert out.shape == (B, T, H, dvm * hs)
    mask = dense_mask(T, window, doc, "cpu")
    ref = masked_attention(q, k, v, mask)
    assert rel(out, ref) < 1e-5
    go = torch.randn_like(out)
    g_out = torch.autograd.grad(out, (q, k, v), go)
    g_ref = torch.autograd.grad(ref, (q, k, v), go)
    for a, b in zip(g_out, g_ref):
        assert rel(a, b) < 1e-5


def test_dense_mask_matches_the_model_forward_context():
    from sambay.model.context import ForwardContext

    B, T = 2, 33
    doc = _docs(B, T, [[4, 17], [9]])
    ctx = ForwardContext.for_tokens(torch.zeros(B, T, dtype=torch.long), doc)
    for window in (None, 6):
        assert torch.equal(ctx.attention_mask(window), dense_mask(T, window, doc, "cpu"))


@pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")
@pytest.mark.parametrize("window,with_docs", [(16, False), (None, True), (40, True)])
def test_flex_backend_block_mask_semantics_on_cpu(window, with_docs):
    # flex_attention runs eagerly (forward only) on CPU: this checks the mask_mod and the block mask cache.
    B, T, H, G, hs = 2, 200, 4, 2, 16
    q, k, v = _inputs(B, T, H, G, hs, 2 * hs)
    doc = _docs(B, T, [[50, 130], [7]]) if with_docs else None
    with torch.no_grad():
        out = prefill_attention(q, k, v, window=window, document_ids=doc, backend="flex")
        again = prefill_attention(q, k, v, window=window, document_ids=doc, backend="flex")  # cached mask
    ref = masked_attention(q, k, v, dense_mask(T, window, doc, "cpu"))
    assert rel(out, ref) < 1e-5
    assert torch.equal(out, again)
    if doc is not None:  # an in-place change of the ids must rebuild the block mask
        doc[0, 60:] = 5
        with torch.no_grad():
            out2 = prefill_attention(q, k, v, window=window, document_ids=doc, backend="flex")
        assert rel(out2, masked_attention(q, k, v, dense_mask(T, window, doc, "cpu"))) < 1e-5


@pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")
def test_flex_uses_a_prebuilt_block_mask_and_rejects_one_for_another_length():
    from sambay.ops.attention.prefill import block_mask_for

    B, T = 2, 160
    q, k, v = _inputs(B, T, 4, 2, 16, 16)
    doc = _docs(B, T, [[40], [90]])
    bm = block_mask_for(B, T, 24, doc, q.device)
    with torch.no_grad():
        out = prefill_attention(q, k, v, window=24, document_ids=doc, backend="flex", block_mask=bm)
        with pytest.raises(ValueError, match="lengths"):
            prefill_attention(q[:, :128], k[:, :128], v[:, :128], window=24, backend="flex", block_mask=bm)
    assert rel(out, masked_attention(q, k, v, dense_mask(T, 24, doc, "cpu"))) < 1e-5


def test_cpu_forward_context_builds_no_block_masks():
    # CPU attention takes the dense path, so the model's context has no flex masks to prebuild
    from sambay.model.context import ForwardContext
    from sambay.ops.attention.prefill import flex_block_masks

    ids = torch.zeros(2, 64, dtype=torch.long)
    assert flex_block_masks(ids, {16, None}, None) == {}
    assert ForwardContext.for_tokens(ids, windows={16, None}).block_masks == {}


def test_sdpa_backend_requires_plain_causal():
    q, k, v = _inputs(1, 8, 2, 2, 4, 4)
    with pytest.raises(ValueError):
        prefill_attention(q, k, v, window=3, backend="sdpa")
    with pytest.raises(ValueError):
        prefill_attention(q, k, v, window=0)
    with pytest.raises(ValueError):
        prefill_attention(q, k[:, :7], v[:, :7])


def test_scale_argument():
    q, k, v = _inputs(1, 12, 2, 1, 8, 8)
    out = prefill_attention(q, k, v, window=4, scale=0.3)
    ref = masked_attention(q, k, v, dense_mask(12, 4, None, "cpu"), scale=0.3)
    assert rel(out, ref) < 1e-6


def test_cu_seqlens_from_documents():
    doc = _docs(2, 10, [[3, 7], []])
    cu, mx = cu_seqlens_from_documents(doc, 2, 10, "cpu")
    assert cu.tolist() == [0, 3, 7, 10, 20] and mx == 10
    cu, mx = cu_seqlens_from_documents(None, 3, 5, "cpu")
    assert cu.tolist() == [0, 5, 10, 15] and mx == 5


def test_causal_flops_counts_unmasked_pairs():
    T, w = 50, 8
    for window in (None, w):
        pairs = dense_mask(T, window, None, "cpu").sum().item()
        assert causal_flops(1, T, 1, 4, 4, window) == pytest.approx(2 * 8 * pairs)


@pytest.mark.parametrize("gqa_native,split_v", [(True, False), (False, False), (False, True), (True, True)])
def test_sdpa_causal_gqa_and_split_v_plumbing_on_cpu(gqa_native, split_v):
    from sambay.ops.attention.prefill import sdpa_causal

    q, k, v = _inputs(2, 19, 4, 2, 8, 16, grad=True)
    out = sdpa_causal(q, k, v, 8 ** -0.5, "math", gqa_native, split_v)
    ref = masked_attention(q, k, v, dense_mask(19, None, None, "cpu"))
    assert rel(out, ref) < 1e-5
    go = torch.randn_like(out)
    for a, b in zip(torch.autograd.grad(out, (q, k, v), go), torch.autograd.grad(ref, (q, k, v), go)):
        assert rel(a, b) < 1e-5


def test_sdpa_backend_falls_back_to_math_when_the_chosen_and_fallback_backends_refuse(monkeypatch):
    # on the CPU, cuDNN and EFFICIENT refuse every input: the same refusals tiny heads get on some GPUs
    from sambay.ops.attention import prefill as P

    monkeypatch.setattr(P, "SDPA_INFER", {"dv_eq": ("cudnn", True, False), "dv_ne": ("cudnn", True, False)})
    monkeypatch.setattr(P, "FALLBACK", ("efficient", True, False))
    q, k, v = _inputs(2, 11, 4, 2, 8, 8)
    out = prefill_attention(q, k, v, backend="sdpa")
    assert rel(out, masked_attention(q, k, v, dense_mask(11, None, None, "cpu"))) < 1e-5
