"""CPU checks of decode attention.

* The PyTorch reference against `masked_attention` (a single query row with a length mask).
* The split-K Triton kernel against the reference under TRITON_INTERPRET=1 at tiny fp32 sizes. The
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

from sambay.ops.attention import decode_attention, masked_attention
from sambay.ops.attention import decode_reference as ref


def _rel(a, b):
    a, b = a.double(), b.double()
    if not torch.isfinite(a).all():
        return float("inf")
    return ((a - b).norm() / b.norm().clamp_min(1e-6)).item()


def _case_inputs(seed, B, H, G, hs, dv, N, S, lens, slots, strided=False, v_hi=False):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, H, hs, generator=g)
    if strided:  # differential attention: KV heads paired in the cache, views cache[:, 0::2] / [:, 1::2]
        kc = torch.randn(S, 2 * G, N, hs, generator=g)
        vc = torch.randn(S, 2 * G, N, dv, generator=g)
        k, v, vh = kc[:, 0::2], vc[:, 0::2], (vc[:, 1::2] if v_hi else None)
        q = torch.randn(B, 2 * H, hs, generator=g)[:, 0::2]
    else:
        k = torch.randn(S, G, N, hs, generator=g)
        v = torch.randn(S, G, N, dv, generator=g)
        vh = torch.randn(S, G, N, dv, generator=g) if v_hi else None
    lens = torch.tensor(lens, dtype=torch.int32)
    slots = None if slots is None else torch.tensor(slots, dtype=torch.int32)
    return q, k, v, lens, slots, vh


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
    "strided_v_hi": (dict(B=2, H=4, G=2, hs=16, dv=16, N=40, S=3, lens=[40, 9], slots=[2, 0], strided=True, v_hi=True), dict(n_splits=3, block_n=16)),
    "v_hi_direct": (dict(B=2, H=4, G=2, hs=16, dv=16, N=40, S=2, lens=[31, 40], slots=None, v_hi=True), dict(n_splits=1, block_n=16)),
    "default_splits_block": (dict(B=2, H=4, G=2, hs=16, dv=16, N=200, S=2, lens=[200, 77], slots=None), dict()),
}


def _run_kernel_cases() -> dict:
    from sambay.ops.attention import decode_triton as tri

    tri.POISON = True
    results = {}
    for i, (name, (inp, kw)) in enumerate(KERNEL_CASES.items()):
        try:
            q, k, v, lens, slots, vh = _case_inputs(100 + i, **inp)
            out = tri.decode_attention(q, k, v, lens, slots, v_hi=vh, **kw)
            want = ref.decode_attention(q, k, v, lens, slots, v_hi=vh)
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
    q, k, v, lens, slots, vh = _case_inputs(1, B, H, G, hs, dv, N, S, [1, 20, 9], [3, 1, 0], v_hi=True)
    out = ref.decode_attention(q, k, v, lens, slots, v_hi=vh)
    assert out.shape == (B, H, 2 * dv)
    rows = slots.long()
    kk = k[rows].transpose(1, 2)  # (B, N, G, hs)
    vv = torch.cat([v[rows], vh[rows]], -1).transpose(1, 2)
    mask = (torch.arange(N)[None, :] < lens[:, None].long())[:, None, None, :]  # (B, 1, 1, N)
    want = masked_attention(q[:, None], kk, vv, mask)[:, 0]
    assert _rel(out, want) < 1e-6


def test_dispatch_uses_reference_on_cpu_and_padded_rows_are_zero():
    q, k, v, lens, slots, _ = _case_inputs(2, 2, 4, 2, 8, 8, 10, 3, [4, 6], [-1, 2])
    out = decode_attention(q, k, v, lens, slots)
    assert torch.equal(out, ref.decode_attention(q, k, v, lens, slots))
    assert (out[0] == 0).all()


if __name__ == "__main__" and "--kernel-cases" in sys.argv:
    print("RESULTS " + json.dumps(_run_kernel_cases()), flush=True)
