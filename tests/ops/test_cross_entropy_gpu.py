"""GPU check of the fused linear + cross-entropy (Triton loss rows) against full fp32 logits (needs CUDA)."""

from __future__ import annotations

import pytest
import torch

pytestmark = pytest.mark.gpu

if not torch.cuda.is_available():  # pragma: no cover - CPU CI
    pytest.skip("needs a CUDA device", allow_module_level=True)

from sambay.ops.cross_entropy import chunked as ce_chunked  # noqa: E402
from sambay.ops.cross_entropy import reference as ce_ref  # noqa: E402

DEV = "cuda"


def rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


def test_fused_linear_cross_entropy_in_bf16_autocast_matches_fp32_full_logits():
    # the training head's shape class: 2 chunks of 4096 rows over a 32000 vocabulary, bf16 GEMMs
    torch.manual_seed(0)
    N, d, V = 8192, 512, 32000
    h = torch.randn(N, d, device=DEV, requires_grad=True)
    w = (torch.randn(V, d, device=DEV) * d**-0.5).requires_grad_()
    t = torch.randint(0, V, (N,), device=DEV)
    t[::7] = -100
    with torch.autocast("cuda", torch.bfloat16):
        got = ce_chunked.linear_cross_entropy(h, w, t)
    got.backward()
    hb, wb = (x.detach().bfloat16().float().requires_grad_() for x in (h, w))  # the GEMMs' bf16 inputs
    want = ce_ref.linear_cross_entropy(hb, wb, t)
    want.backward()
    assert abs(got.item() - want.item()) < 2e-3 * want.item()
    assert rel(h.grad, hb.grad) < 2e-2
    assert rel(w.grad, wb.grad) < 2e-2
