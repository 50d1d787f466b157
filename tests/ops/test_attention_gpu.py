"""GPU checks of the attention paths at realistic sizes in bf16 (skipped without CUDA).

Kernel-written outputs are NaN-poisoned first (decode), references run in fp32 on the same bf16 inputs
upcast, errors are ||out - ref|| / ||ref||.
"""

from __future__ import annotations

import pytest
import torch

pytestmark = pytest.mark.gpu

if not torch.cuda.is_available():  # pragma: no cover - CPU CI
    pytest.skip("needs a CUDA device", allow_module_level=True)

from sambay.ops import triton_math as tm  # noqa: E402
from sambay.ops.attention import decode_reference as dref  # noqa: E402
from sambay.ops.attention import decode_triton as dtri  # noqa: E402
from sambay.ops.attention import masked_attention, prefill_attention  # noqa: E402
from sambay.ops.attention.prefill import dense_mask, varlen_available  # noqa: E402

DEV = "cuda"
BF = torch.bfloat16


@pytest.fixture(autouse=True)
def _poison():
    tm.POISON = True
    yield
    tm.POISON = False


def rel(a, b):
    a, b = a.double(), b.double()
    assert torch.isfinite(a).all(), "non-finite (unwritten?) elements"
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


def _ref_chunked(q, k, v, lens, slots, diff=False, chunk=8):
    """The reference over batch chunks (its gathered rows would not fit at B 64 x 32K); diff -> [o1; o2]."""
    outs = []
    if slots is None:
        slots = torch.arange(q.shape[0], device=q.device, dtype=torch.int32)
    for i in range(0, q.shape[0], chunk):
        args = (q[i:i + chunk].float(), k, v, lens[i:i + chunk], slots[i:i + chunk])
        out = torch.cat(dref.decode_diff_attention(*args), dim=1) if diff else dref.decode_attention(*args)
        outs.append(out.float())
    return torch.cat(outs)


@pytest.fixture(scope="module")
def big_cache():
    torch.manual_seed(0)
    S, G, N, hs = 64, 20, 32768, 64
    kc = torch.randn(S, G, N, hs, device=DEV, dtype=BF)
    vc = torch.randn(S, G, N, hs, device=DEV, dtype=BF)
    yield kc, vc
    del kc, vc
    torch.cuda.empty_cache()


def _lens(B, N, gen):
    lens = torch.randint(1, N + 1, (B,), generator=gen)
    lens[0], lens[1], lens[2] = 1, N, N - 1
    return lens.to(DEV, torch.int32)


@pytest.mark.parametrize("variant", ["plain", "diff"])
def test_decode_bf16_phi4flash_sizes_ragged_slots(big_cache, variant):
    kc, vc = big_cache
    B, H, hs, N = 64, 40, 64, kc.shape[2]
    gen = torch.Generator().manual_seed(1)
    lens = _lens(B, N, gen)
    slots = torch.randperm(kc.shape[0], generator=gen)[:B].to(DEV, torch.int32)
    q = torch.randn(B, H, hs, device=DEV, dtype=BF)
    if variant == "plain":
        out = dtri.decode_attention(q, kc, vc, lens, slots)
    else:  # differential attention: both softmaxes of each KV head pair in one pass, [o1; o2] along heads
        out = torch.cat(dtri.decode_diff_attention(q, kc, vc, lens, slots), dim=1)
    assert out.dtype == BF
    want = _ref_chunked(q, kc, vc, lens, slots, diff=variant == "diff")
    assert out.shape == want.shape
    assert rel(out, want) < 1e-2


def test_decode_n_splits_agree(big_cache):
    kc, vc = big_cache
    B, H, hs = 16, 40, 64
    q = torch.randn(B, H, hs, device=DEV, dtype=BF)
    lens = _lens(B, kc.shape[2], torch.Generator().manual_seed(2))
    want = _ref_chunked(q, kc, vc, lens, None)
    for ns in (1, 3, 16, 64):
        assert rel(dtri.decode_attention(q, kc, vc, lens, None, n_splits=ns), want) < 1e-2, ns


def test_decode_cuda_graph_replay_follows_lengths_and_slots():
    torch.manual_seed(3)
    S, G, N, H, hs, B = 12, 4, 4096, 8, 64, 8
    kc = torch.randn(S, G, N, hs, device=DEV, dtype=BF)
    vc = torch.randn(S, G, N, hs, device=DEV, dtype=BF)
    q = torch.randn(B, H, hs, device=DEV, dtype=BF)
    lens = torch.full((B,), 100, device=DEV, dtype=torch.int32)
    slots = torch.arange(B, device=DEV, dtype=torch.int32)
    tm.POISON = False
    dtri.decode_attention(q, kc, vc, lens, slots)  # compile outside the capture
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        dtri.decode_attention(q, kc, vc, lens, slots)
    torch.cuda.current_stream().wait_stream(s)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = dtri.decode_attention(q, kc, vc, lens, slots)
    for trial in range(3):
        gen = torch.Generator().manual_seed(10 + trial)
        lens.copy_(torch.randint(1, N + 1, (B,), generator=gen).to(DEV, torch.int32))
        slots.copy_(torch.randperm(S, generator=gen)[:B].to(DEV, torch.int32))
        q.copy_(torch.randn(B, H, hs, device=DEV, dtype=BF))
        graph.replay()
        assert rel(out, _ref_chunked(q, kc, vc, lens, slots)) < 1e-2


@pytest.mark.parametrize("diff", [False, True], ids=["plain", "diff"])
def test_decode_attention_compiles_with_inductor_and_matches_eager(diff):
    # Inductor once re-generated this kernel from its source with the scale as an fp64 scalar, which failed
    # to compile; as a registered op it is called as is.
    from sambay.ops.attention.decode import decode_attention, decode_diff_attention

    torch.manual_seed(4)
    S, G, N, H, hs, B = 10, 4, 2048, 8, 64, 6
    kc = torch.randn(S, G, N, hs, device=DEV, dtype=BF)
    vc = torch.randn(S, G, N, hs, device=DEV, dtype=BF)
    q = torch.randn(B, H, hs, device=DEV, dtype=BF)
    lens = torch.randint(1, N + 1, (B,), device=DEV, dtype=torch.int32)
    slots = torch.randperm(S, device=DEV)[:B].to(torch.int32)
    slots[2] = -1

    def f(q, lens, slots):
        if diff:
            return torch.cat(decode_diff_attention(q, kc, vc, lens, slots), dim=1) * 2.0
        return decode_attention(q, kc, vc, lens, slots) * 2.0

    torch._dynamo.reset()
    out = torch.compile(f, fullgraph=False)(q, lens, slots)
    assert torch.equal(out, f(q, lens, slots))


def _docs(B, T):
    doc = torch.zeros(B, T, dtype=torch.int32, device=DEV)
    cuts = [[300, 1100, 1101, 1900], [777]]
    for b, cs in enumerate(cuts[:B]):
        for i, c in enumerate(cs):
            doc[b, c:] = i + 1
    return doc


PREFILL_CASES = [
    # (window, documents, dv multiple, backend)
    (128, False, 1, None), (512, False, 1, None), (128, True, 1, None), (512, True, 1, None),
    (None, True, 1, None), (None, False, 1, None), (None, False, 2, None), (512, True, 2, None),
    (512, True, 1, "varlen"), (None, False, 1, "varlen"), (512, False, 2, "varlen"),
]


@pytest.mark.parametrize("window,with_docs,dvm,backend", PREFILL_CASES)
def test_prefill_bf16_outputs_and_grads_match_fp32_reference(window, with_docs, dvm, backend):
    if backend == "varlen" and not varlen_available():
        pytest.skip("varlen_attn with window_size/enable_gqa not in this torch")
    torch.manual_seed(4)
    B, T, H, G, hs = 2, 2048, 16, 4, 128
    q = torch.randn(B, T, H, hs, device=DEV, dtype=BF, requires_grad=True)
    k = torch.randn(B, T, G, hs, device=DEV, dtype=BF, requires_grad=True)
    v = torch.randn(B, T, G, dvm * hs, device=DEV, dtype=BF, requires_grad=True)
    doc = _docs(B, T) if with_docs else None
    out = prefill_attention(q, k, v, window=window, document_ids=doc, backend=backend)
    go = torch.randn_like(out)
    grads = torch.autograd.grad(out, (q, k, v), go)
    qf, kf, vf = (t.detach().float().requires_grad_() for t in (q, k, v))
    ref = masked_attention(qf, kf, vf, dense_mask(T, window, doc, DEV))
    ref_grads = torch.autograd.grad(ref, (qf, kf, vf), go.float())
    assert rel(out, ref) < 1e-2
    for name, a, b in zip("qkv", grads, ref_grads):
        assert rel(a, b) < 2e-2, name


@pytest.mark.parametrize("name", ["flash", "cudnn", "efficient"])
@pytest.mark.parametrize("gqa_native", [True, False])
@pytest.mark.parametrize("dvm,split_v", [(1, False), (2, False), (2, True)])
def test_sdpa_backends_full_causal(name, gqa_native, dvm, split_v):
    from sambay.ops.attention.prefill import sdpa_causal

    torch.manual_seed(5)
    B, T, H, G, hs = 2, 1024, 16, 4, 128
    q = torch.randn(B, T, H, hs, device=DEV, dtype=BF, requires_grad=True)
    k = torch.randn(B, T, G, hs, device=DEV, dtype=BF, requires_grad=True)
    v = torch.randn(B, T, G, dvm * hs, device=DEV, dtype=BF, requires_grad=True)
    try:
        out = sdpa_causal(q, k, v, hs ** -0.5, name, gqa_native, split_v)
        go = torch.randn_like(out)
        grads = torch.autograd.grad(out, (q, k, v), go)
    except RuntimeError as e:
        pytest.skip(f"{name} cannot run this: {str(e).splitlines()[0][:200]}")
    qf, kf, vf = (t.detach().float().requires_grad_() for t in (q, k, v))
    ref = masked_attention(qf, kf, vf, dense_mask(T, None, None, DEV))
    ref_grads = torch.autograd.grad(ref, (qf, kf, vf), go.float())
    assert rel(out, ref) < 1e-2
    for nm, a, b in zip("qkv", grads, ref_grads):
        assert rel(a, b) < 2e-2, nm


def test_forward_context_prebuilds_exactly_the_flex_masks_and_compiled_blocks_do_not_break():
    # The model's eager forward builds every flex BlockMask once; the compiled blocks then take them as
    # inputs. Building them inside a compiled block split its graph (one break per sliding-window layer).
    import torch._dynamo

    from sambay import CausalLM
    from sambay.config import tiny
    from sambay.model.context import ForwardContext
    from sambay.train.parallel import apply_compile

    B, T = 2, 256
    ids = torch.zeros(B, T, dtype=torch.long, device=DEV)
    doc = torch.zeros(B, T, dtype=torch.long, device=DEV)
    doc[:, 100:] = 1
    assert set(ForwardContext.for_tokens(ids, windows={32, None}).block_masks) == {32}  # full causal: SDPA
    assert set(ForwardContext.for_tokens(ids, doc, windows={32, None}).block_masks) == {32, None}
    assert ForwardContext.for_tokens(ids, windows={T, None}).block_masks == {}  # window >= T is full causal

    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    model = CausalLM(tiny("sambay", depth=8, d_model=128, window=32)).to(DEV)
    apply_compile(model)
    tokens = torch.randint(0, model.config.vocab_size, (B, T), device=DEV)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        for docs in (None, doc):
            model(tokens, targets=tokens, document_ids=docs).loss.backward()
    breaks = dict(torch._dynamo.utils.counters["graph_break"])
    assert not breaks, breaks


@pytest.mark.gpu
@pytest.mark.parametrize("variant", ["plain", "diff"])
def test_paged_decode_in_bf16_equals_the_contiguous_kernel(variant):
    """The same caches in shuffled pages of 64 keys behind a block table: the paged kernel's output equals the
    contiguous kernel's (same tiles, same order of accumulation)."""
    torch.manual_seed(4)
    S, G, N, H, hs, B, page = 6, 4, 2048, 8, 64, 5, 64
    kc = torch.randn(S, G, N, hs, device=DEV, dtype=BF)
    vc = torch.randn(S, G, N, hs, device=DEV, dtype=BF)
    order = torch.randperm(S * (N // page), device=DEV)
    table = order.view(S, N // page).to(torch.int32)
    kp, vp = (torch.empty(S * (N // page), G, page, hs, device=DEV, dtype=BF) for _ in range(2))
    for pages, c in ((kp, kc), (vp, vc)):
        pages[table.flatten().long()] = c.view(S, G, N // page, page, hs).transpose(1, 2).flatten(0, 1)
    q = torch.randn(B, H, hs, device=DEV, dtype=BF)
    lens = torch.tensor([1, 64, 65, 2048, 1000], device=DEV, dtype=torch.int32)
    slots = torch.tensor([5, 0, 3, 1, 2], device=DEV, dtype=torch.int32)
    fn = dtri.decode_diff_attention if variant == "diff" else dtri.decode_attention
    got = fn(q, kp, vp, lens, slots, block_table=table, n_splits=4)
    want = fn(q, kc, vc, lens, slots, n_splits=4)
    torch.testing.assert_close(torch.cat(got, 1) if variant == "diff" else got,
                               torch.cat(want, 1) if variant == "diff" else want, rtol=0, atol=0)
