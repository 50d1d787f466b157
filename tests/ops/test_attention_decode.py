"""CPU checks of decode attention.

* The PyTorch reference against `masked_attention` (a single query row with a length mask).
* The differential-attention reference against two plain references over the value pair.
* The split-K Triton kernels (plain and differential) against the references under TRITON_INTERPRET=1 at tiny fp32 sizes. The
  interpreter segfaults on an out-of-bounds load, so every kernel case runs in ONE subprocess (this file
  run as a script) and reports JSON; each pytest case checks its own entry. Outputs and split partials
  are NaN-poisoned first, so unwritten elements and missing neutral partials fail.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from sambay.ops.attention import decode_attention, decode_diff_attention, masked_attention
from sambay.ops.attention import decode_reference as ref


def _rel(a, b):
    a, b = a.double(), b.double()
    if not torch.isfinite(a).all():
        return float("inf")
    return ((a - b).norm() / b.norm().clamp_min(1e-6)).item()


def _case_inputs(seed, B, H, G, hs, dv, N, S, lens, slots, strided=False, diff=False):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, H, hs, generator=g)
    if strided:  # views with non-unit head strides, e.g. cache[:, 0::2]
        k = torch.randn(S, 2 * G, N, hs, generator=g)[:, 0::2]
        v = torch.randn(S, 2 * G, N, dv, generator=g)[:, 1::2]
        q = torch.randn(B, 2 * H, hs, generator=g)[:, 0::2]
    else:
        k = torch.randn(S, G, N, hs, generator=g)
        v = torch.randn(S, G, N, dv, generator=g)
    lens = torch.tensor(lens, dtype=torch.int32)
    slots = None if slots is None else torch.tensor(slots, dtype=torch.int32)
    return q, k, v, lens, slots


# name -> (inputs kwargs, kernel kwargs)
KERNEL_CASES = {
    "len1_all": (dict(B=2, H=4, G=2, hs=16, dv=16, N=32, S=2, lens=[1, 1], slots=None), dict(n_splits=2, block_n=16)),
    "full_N": (dict(B=2, H=4, G=2, hs=16, dv=16, N=48, S=2, lens=[48, 48], slots=None), dict(n_splits=3, block_n=16)),
    "ragged_direct": (dict(B=3, H=4, G=2, hs=16, dv=16, N=50, S=3, lens=[1, 50, 23], slots=None), dict(n_splits=1, block_n=16)),
    "ragged_splits": (dict(B=3, H=4, G=2, hs=16, dv=16, N=50, S=3, lens=[1, 50, 23], slots=None), dict(n_splits=4, block_n=16)),
    "more_splits_than_blocks": (dict(B=2, H=2, G=1, hs=16, dv=16, N=40, S=2, lens=[3, 40], slots=None), dict(n_splits=8, block_n=16)),
    "slot_perm": (dict(B=3, H=6, G=3, hs=16, dv=16, N=40, S=5, lens=[7, 40, 19], slots=[4, 0, 2]), dict(n_splits=2, block_n=16)),
    "padded_row": (dict(B=3, H=4, G=2, hs=16, dv=16, N=40, S=3, lens=[7, 5, 19], slots=[2, -1, 0]), dict(n_splits=2, block_n=16)),
    "odd_head_dim_hpg4": (dict(B=2, H=8, G=2, hs=24, dv=40, N=37, S=2, lens=[37, 11], slots=[1, 0]), dict(n_splits=2, block_n=16)),
    "mqa_hpg1": (dict(B=2, H=3, G=3, hs=16, dv=16, N=33, S=2, lens=[33, 2], slots=None), dict(n_splits=3, block_n=16)),
    "strided_views": (dict(B=2, H=4, G=2, hs=16, dv=16, N=40, S=3, lens=[40, 9], slots=[2, 0], strided=True), dict(n_splits=2, block_n=16)),
    "diff_splits_slots": (dict(B=2, H=8, G=4, hs=16, dv=16, N=40, S=3, lens=[40, 9], slots=[2, 0], diff=True), dict(n_splits=3, block_n=16)),
    "diff_direct": (dict(B=2, H=4, G=2, hs=16, dv=16, N=40, S=2, lens=[31, 40], slots=None, diff=True), dict(n_splits=1, block_n=16)),
    "diff_hpg4_padded_row": (dict(B=3, H=8, G=2, hs=16, dv=24, N=37, S=3, lens=[37, 3, 20], slots=[1, -1, 0], diff=True), dict(n_splits=2, block_n=16)),
    "diff_strided_views": (dict(B=2, H=4, G=2, hs=16, dv=16, N=40, S=3, lens=[5, 40], slots=[0, 2], strided=True, diff=True), dict(n_splits=2, block_n=16)),
    "default_splits_block": (dict(B=2, H=4, G=2, hs=16, dv=16, N=200, S=2, lens=[200, 77], slots=None), dict()),
}


def _run_kernel_cases() -> dict:
    from sambay.ops import triton_math as tm
    from sambay.ops.attention import decode_triton as tri

    tm.POISON = True
    results = {}
    for i, (name, (inp, kw)) in enumerate(KERNEL_CASES.items()):
        try:
            q, k, v, lens, slots = _case_inputs(100 + i, **inp)
            if inp.get("diff"):  # compare [o1; o2] stacked along heads
                out = torch.cat(tri.decode_diff_attention(q, k, v, lens, slots, **kw), dim=1)
                want = torch.cat(ref.decode_diff_attention(q, k, v, lens, slots), dim=1)
            else:
                out = tri.decode_attention(q, k, v, lens, slots, **kw)
                want = ref.decode_attention(q, k, v, lens, slots)
            err = _rel(out, want)
            if slots is not None and (slots < 0).any():
                err = max(err, out[slots < 0].abs().max().item())  # padded rows are exactly zero
            results[name] = {"err": err, "shape": list(out.shape), "want_shape": list(want.shape)}
        except Exception as e:  # report, do not hide
            results[name] = {"error": f"{type(e).__name__}: {e}"}
    return results


@pytest.fixture(scope="module")
def interp_results():
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONWARNINGS="ignore")
    proc = subprocess.run([sys.executable, __file__, "--kernel-cases"], env=env, capture_output=True, text=True,
                          timeout=300)
    if proc.returncode != 0:
        pytest.fail(f"interpreter subprocess died (rc {proc.returncode}):\n{proc.stderr[-4000:]}")
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULTS ")][-1]
    return json.loads(line[len("RESULTS "):])


@pytest.mark.parametrize("name", list(KERNEL_CASES))
def test_triton_decode_matches_reference_in_interpreter(interp_results, name):
    r = interp_results[name]
    assert "error" not in r, r.get("error")
    assert r["shape"] == r["want_shape"]
    assert r["err"] < 1e-5, r


def test_reference_matches_masked_attention():
    B, H, G, hs, dv, N, S = 3, 6, 2, 8, 16, 20, 4
    q, k, v, lens, slots = _case_inputs(1, B, H, G, hs, dv, N, S, [1, 20, 9], [3, 1, 0])
    out = ref.decode_attention(q, k, v, lens, slots)
    assert out.shape == (B, H, dv)
    rows = slots.long()
    mask = (torch.arange(N)[None, :] < lens[:, None].long())[:, None, None, :]  # (B, 1, 1, N)
    want = masked_attention(q[:, None], k[rows].transpose(1, 2), v[rows].transpose(1, 2), mask)[:, 0]
    assert _rel(out, want) < 1e-6


def test_diff_reference_is_two_softmaxes_over_the_striped_value_pair():
    B, H, G, hs, dv, N, S = 2, 8, 4, 8, 8, 12, 3
    q, k, v, lens, slots = _case_inputs(3, B, H, G, hs, dv, N, S, [12, 5], [2, 0])
    o1, o2 = ref.decode_diff_attention(q, k, v, lens, slots)
    assert o1.shape == o2.shape == (B, H // 2, 2 * dv)
    v_pair = torch.cat([v[:, 0::2], v[:, 1::2]], -1).contiguous()  # (S, G/2, N, 2dv)
    assert _rel(o1, ref.decode_attention(q[:, 0::2], k[:, 0::2], v_pair, lens, slots)) < 1e-6
    assert _rel(o2, ref.decode_attention(q[:, 1::2], k[:, 1::2], v_pair, lens, slots)) < 1e-6


def test_dispatch_uses_reference_on_cpu_and_padded_rows_are_zero():
    q, k, v, lens, slots = _case_inputs(2, 2, 4, 2, 8, 8, 10, 3, [4, 6], [-1, 2])
    out = decode_attention(q, k, v, lens, slots)
    assert torch.equal(out, ref.decode_attention(q, k, v, lens, slots))
    assert (out[0] == 0).all()
    o1, o2 = decode_diff_attention(q, k, v, lens, slots)
    want1, want2 = ref.decode_diff_attention(q, k, v, lens, slots)
    assert torch.equal(o1, want1) and torch.equal(o2, want2)
    assert (o1[0] == 0).all() and (o2[0] == 0).all()


if __name__ == "__main__" and "--kernel-cases" in sys.argv:
    print("RESULTS " + json.dumps(_run_kernel_cases()), flush=True)
