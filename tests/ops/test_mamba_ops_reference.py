"""CPU checks of the Mamba-1 op specifications (pure PyTorch) and of the chunked scan form."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from sambay.ops.causal_conv1d import causal_conv1d, causal_conv1d_update
from sambay.ops.causal_conv1d import reference as conv_ref
from sambay.ops.selective_scan import chunked, selective_scan
from sambay.ops.selective_scan import reference as scan_ref
from sambay.ops.selective_state_update import reference as ssu_ref

f64 = torch.float64


def scan_inputs(Bn, T, D, N, seed=0, dtype=f64):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=dtype)  # noqa: E731
    return dict(
        u=r(Bn, T, D), delta=r(Bn, T, D), A=-torch.rand(D, N, generator=g, dtype=dtype) * 3, B=r(Bn, T, N),
        C=r(Bn, T, N), D=r(D), z=r(Bn, T, D), delta_bias=r(D), initial_state=r(Bn, D, N),
    )


def docs(batch, seqlen, cuts):
    seq = torch.zeros(batch, seqlen, dtype=torch.long)
    for b, cs in enumerate(cuts):
        for i, c in enumerate(cs):
            seq[b, c:] = i + 1
    return seq


@pytest.mark.parametrize("chunk_size", [1, 4, 16, 64])
def test_chunked_scan_equals_sequential_in_float64_with_resets_state_and_odd_length(chunk_size):
    x = scan_inputs(2, 37, 6, 5)
    seq = docs(2, 37, [[7, 8, 20], [33]])
    y1, h1 = scan_ref.selective_scan(**x, seq_idx=seq, return_final_state=True)
    y2, h2 = chunked.selective_scan(**x, seq_idx=seq, return_final_state=True, chunk_size=chunk_size)
    assert (y1 - y2).abs().max() < 1e-10
    assert (h1 - h2).abs().max() < 1e-10


def test_chunked_scan_equals_sequential_without_optional_inputs_or_softplus():
    x = scan_inputs(1, 13, 4, 3, seed=1)
    args = (x["u"], x["delta"].abs(), x["A"], x["B"], x["C"])
    y1 = scan_ref.selective_scan(*args, delta_softplus=False)
    y2 = chunked.selective_scan(*args, delta_softplus=False, chunk_size=5)
    assert (y1 - y2).abs().max() < 1e-10


def test_scan_continues_exactly_from_a_handed_over_final_state():
    # prefill in two pieces (chunked prefill / prefill -> decode hand-off) equals one pass
    x = scan_inputs(2, 30, 5, 4, seed=2)
    full, h_full = scan_ref.selective_scan(**x, return_final_state=True)
    first = {k: (v[:, :12] if v.dim() == 3 and v.shape[1] == 30 else v) for k, v in x.items()}
    second = {k: (v[:, 12:] if v.dim() == 3 and v.shape[1] == 30 else v) for k, v in x.items()}
    y1, h1 = scan_ref.selective_scan(**first, return_final_state=True)
    second["initial_state"] = h1
    y2, h2 = scan_ref.selective_scan(**second, return_final_state=True)
    assert torch.allclose(torch.cat([y1, y2], 1), full, atol=1e-12)
    assert torch.allclose(h2, h_full, atol=1e-12)


def test_scan_document_reset_equals_running_documents_separately():
    x = scan_inputs(1, 20, 4, 3, seed=3)
    seq = docs(1, 20, [[9]])
    y, h = scan_ref.selective_scan(**x, seq_idx=seq, return_final_state=True)
    a = {k: (v[:, :9] if v.dim() == 3 and v.shape[1] == 20 else v) for k, v in x.items()}
    b = {k: (v[:, 9:] if v.dim() == 3 and v.shape[1] == 20 else v) for k, v in x.items()}
    b["initial_state"] = None
    ya = scan_ref.selective_scan(**a)
    yb, hb = scan_ref.selective_scan(**b, return_final_state=True)
    assert torch.allclose(y, torch.cat([ya, yb], 1), atol=1e-12)
    assert torch.allclose(h, hb, atol=1e-12)


def test_decode_step_reference_equals_one_scan_step_and_updates_only_its_slot():
    x = scan_inputs(3, 1, 6, 4, seed=4)
    state = torch.randn(5, 6, 4, dtype=f64)
    slots = torch.tensor([4, 0, 2])
    y_scan, h_scan = scan_ref.selective_scan(
        x["u"], x["delta"], x["A"], x["B"], x["C"], x["D"], x["z"], x["delta_bias"],
        initial_state=state[slots], return_final_state=True,
    )
    before = state.clone()
    y = ssu_ref.selective_state_update(
        x["u"][:, 0], x["delta"][:, 0], x["A"], x["B"][:, 0], x["C"][:, 0], x["D"], x["z"][:, 0],
        x["delta_bias"], state, slots,
    )
    assert torch.allclose(y, y_scan[:, 0], atol=1e-12)
    assert torch.allclose(state[slots], h_scan, atol=1e-12)
    untouched = [1, 3]
    assert torch.equal(state[untouched], before[untouched])


def test_conv_reference_equals_torch_conv1d_and_silu():
    g = torch.Generator().manual_seed(5)
    x = torch.randn(2, 11, 6, generator=g, dtype=f64)
    w = torch.randn(6, 4, generator=g, dtype=f64)
    b = torch.randn(6, generator=g, dtype=f64)
    ref = F.silu(F.conv1d(x.transpose(1, 2), w[:, None, :], b, padding=3, groups=6)[..., :11]).transpose(1, 2)
    assert torch.allclose(conv_ref.causal_conv1d(x, w, b, "silu"), ref, atol=1e-12)


def test_conv_document_boundaries_do_not_leak_and_final_state_is_last_documents():
    g = torch.Generator().manual_seed(6)
    x = torch.randn(1, 12, 3, generator=g, dtype=f64)
    w = torch.randn(3, 4, generator=g, dtype=f64)
    seq = docs(1, 12, [[10]])  # last document has 2 tokens (< W-1 = 3)
    y, fin = conv_ref.causal_conv1d(x, w, None, None, seq_idx=seq, return_final_state=True)
    ya = conv_ref.causal_conv1d(x[:, :10], w, None, None)
    yb, fb = conv_ref.causal_conv1d(x[:, 10:], w, None, None, return_final_state=True)
    assert torch.allclose(y, torch.cat([ya, yb], 1), atol=1e-12)
    assert torch.allclose(fin, fb, atol=1e-12)
    assert torch.all(fin[:, :, 0] == 0)


def test_conv_step_by_step_decode_equals_full_sequence_with_state_hand_off():
    g = torch.Generator().manual_seed(7)
    Bn, T, D, W = 2, 9, 5, 4
    x = torch.randn(Bn, T, D, generator=g, dtype=f64)
    w, b = torch.randn(D, W, generator=g, dtype=f64), torch.randn(D, generator=g, dtype=f64)
    full = conv_ref.causal_conv1d(x, w, b, "silu")
    y0, state = conv_ref.causal_conv1d(x[:, :4], w, b, "silu", return_final_state=True)
    pool = torch.zeros(3, D, W - 1, dtype=f64)
    slots = torch.tensor([2, 0])
    pool[slots] = state
    steps = [causal_conv1d_update(x[:, t], pool, w, b, "silu", slots) for t in range(4, T)]
    assert torch.allclose(torch.cat([y0, torch.stack(steps, 1)], 1), full, atol=1e-12)
    assert torch.all(pool[1] == 0)


def test_public_ops_use_reference_on_cpu_when_kernels_set_to_reference(monkeypatch):
    monkeypatch.setenv("SAMBAY_KERNELS", "reference")
    x = scan_inputs(1, 5, 3, 2, seed=8, dtype=torch.float32)
    y = selective_scan(x["u"], x["delta"], x["A"], x["B"], x["C"])
    assert torch.equal(y, scan_ref.selective_scan(x["u"], x["delta"], x["A"], x["B"], x["C"]))
    w = torch.randn(3, 4)
    assert torch.equal(causal_conv1d(x["u"], w), conv_ref.causal_conv1d(x["u"], w))


def test_reference_ops_env_forces_the_reference_for_the_named_ops_only(monkeypatch):
    from sambay.ops.backend import use_triton

    monkeypatch.setenv("SAMBAY_KERNELS", "triton")  # Triton everywhere, except what the list names
    monkeypatch.setenv("SAMBAY_REFERENCE_OPS", " selective_scan, causal_conv1d_update")
    t = torch.zeros(1)
    assert not use_triton("selective_scan", t)
    assert not use_triton("causal_conv1d_update", t)
    assert use_triton("causal_conv1d", t)
