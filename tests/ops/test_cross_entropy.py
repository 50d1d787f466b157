import pytest
import torch

from sambay.ops.cross_entropy import chunked, reference


@pytest.mark.parametrize("chunk_rows", [1, 7, 64])
def test_chunked_linear_cross_entropy_matches_full_logits_loss_and_grads(chunk_rows):
    N, d, V = 37, 16, 101
    h = torch.randn(N, d, dtype=torch.float64, requires_grad=True)
    w = torch.randn(V, d, dtype=torch.float64, requires_grad=True)
    t = torch.randint(0, V, (N,))
    t[::5] = -100  # ignored positions contribute neither loss nor gradient
    ref = reference.linear_cross_entropy(h, w, t)
    gh_ref, gw_ref = torch.autograd.grad(ref * 3.0, (h, w))
    got = chunked.linear_cross_entropy(h, w, t, chunk_rows=chunk_rows)
    gh, gw = torch.autograd.grad(got * 3.0, (h, w))
    torch.testing.assert_close(got.double(), ref.double(), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(gh, gh_ref, rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(gw, gw_ref, rtol=1e-6, atol=1e-8)


def test_chunked_linear_cross_entropy_in_bf16_computes_the_softmax_in_fp32():
    N, d, V = 64, 32, 1000
    h = torch.randn(N, d).bfloat16()
    w = (torch.randn(V, d) * 0.2).bfloat16()
    t = torch.randint(0, V, (N,))
    got = chunked.linear_cross_entropy(h, w, t, chunk_rows=16)
    ref = reference.linear_cross_entropy(h.float(), w.float(), t)
    assert got.dtype == torch.float32
    assert abs(got.item() - ref.item()) < 2e-2
