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
    # paged: the same caches cut into pages of 16 or 32 keys, stored in shuffled pages behind a block table
    "paged_splits_slots": (dict(B=3, H=4, G=2, hs=16, dv=16, N=64, S=4, lens=[64, 9, 33], slots=[3, 0, 1], page=16),
                           dict(n_splits=3, block_n=16)),
    "paged_tile_of_32_in_pages_of_32": (dict(B=2, H=4, G=2, hs=16, dv=16, N=96, S=2, lens=[96, 40], slots=None,
                                             page=32), dict(n_splits=2, block_n=32)),
    "paged_diff_padded_row": (dict(B=3, H=8, G=4, hs=16, dv=16, N=48, S=3, lens=[48, 2, 17], slots=[2, -1, 0],
                                   diff=True, page=16), dict(n_splits=2, block_n=16)),
}


def paged(k: torch.Tensor, v: torch.Tensor, page: int, seed: int = 0):
    """Contiguous caches (S, G, N, d) -> pages (S·N/page + 1, G, page, d) in a shuffled order (page 0 unused)
    and the (S, N/page) int32 block table that finds them."""
    S, G, N, _ = k.shape
    n_pages = N // page
    order = torch.randperm(S * n_pages, generator=torch.Generator().manual_seed(seed)) + 1
    table = order.view(S, n_pages).to(torch.int32)
    out = []
    for c in (k, v):
        pages = torch.full((S * n_pages + 1, G, page, c.shape[-1]), float("nan"))
        pages[table.flatten().long()] = c.reshape(S, G, n_pages, page, -1).transpose(1, 2).flatten(0, 1)
        out.append(pages)
    return out[0], out[1], table


def _run_kernel_cases() -> dict:
    from sambay.ops import triton_math as tm
    from sambay.ops.attention import decode_triton as tri

    tm.POISON = True
    results = {}
    for i, (name, (inp, kw)) in enumerate(KERNEL_CASES.items()):
        try:
            inp = dict(inp)
            page = inp.pop("page", None)
            q, k, v, lens, slots = _case_inputs(100 + i, **inp)
            kp, vp, table = (k, v, None) if page is None else paged(k, v, page, seed=i)
            if inp.get("diff"):  # compare [o1; o2] stacked along heads
                out = torch.cat(tri.decode_diff_attention(q, kp, vp, lens, slots, block_table=table, **kw), dim=1)
                want = torch.cat(ref.decode_diff_attention(q, k, v, lens, slots), dim=1)
            else:
                out = tri.decode_attention(q, kp, vp, lens, slots, block_table=table, **kw)
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


@pytest.mark.parametrize("diff", [False, True])
def test_paged_reference_equals_the_contiguous_reference(diff):
    """The same caches behind a shuffled block table (pages of 8 keys) give the same outputs."""
    q, k, v, lens, slots = _case_inputs(7, B=3, H=8, G=4, hs=16, dv=16, N=40, S=4, lens=[40, 3, 17], slots=[3, 0, 1])
    kp, vp, table = paged(k, v, 8)
    fn = ref.decode_diff_attention if diff else ref.decode_attention
    got, want = fn(q, kp, vp, lens, slots, block_table=table), fn(q, k, v, lens, slots)
    torch.testing.assert_close(torch.cat(got, 1) if diff else got, torch.cat(want, 1) if diff else want)
