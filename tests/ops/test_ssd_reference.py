"""Mamba-2 (SSD) reference: the sequential scan equals the dual (attention-like) closed form, its decode step
and itself in pieces, and resets at document boundaries."""

from __future__ import annotations

import torch
from torch.testing import assert_close

from sambay.ops.ssd import ssd_scan, ssd_state_update

B, T, H, P, G, N = 2, 11, 4, 3, 2, 5


def _inputs(seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=dtype)
    return dict(x=r(B, T, H, P), dt=r(B, T, H), A=-torch.rand(H, generator=g, dtype=dtype) * 2 - 0.1,
                B=r(B, T, G, N), C=r(B, T, G, N), D=r(H), dt_bias=r(H) * 0.1)


def test_scan_equals_the_dual_quadratic_form():
    """y_t = sum_{s<=t} (C_t . B_s) exp(sum_{s<r<=t} dt_r A) dt_s x_s + D x_t, head h reading group h // (H/G)."""
    a = _inputs()
    y = ssd_scan(**a)
    dt = torch.nn.functional.softplus(a["dt"] + a["dt_bias"])  # (B, T, H)
    group = torch.arange(H) // (H // G)
    cb = torch.einsum("btgn,bsgn->bgts", a["C"], a["B"])[:, group]  # (B, H, T, S)
    cum = torch.cumsum(dt * a["A"], dim=1).transpose(1, 2)  # (B, H, T)
    decay = torch.exp(cum[:, :, :, None] - cum[:, :, None, :]).tril()  # exp(sum_{s<r<=t}), zero above
    weights = cb * decay * dt.transpose(1, 2)[:, :, None, :]
    expected = torch.einsum("bhts,bshp->bthp", weights, a["x"]) + a["x"] * a["D"][:, None]
    assert_close(y, expected, rtol=1e-10, atol=1e-10)


def test_decode_steps_reproduce_the_scan_and_its_final_state():
    a = _inputs(1)
    y, final = ssd_scan(**a, return_final_state=True)
    state = torch.zeros(B + 1, H, P, N, dtype=torch.float64)
    slots = torch.tensor([2, 0])  # pooled rows in any order
    steps = [ssd_state_update(a["x"][:, t], a["dt"][:, t], a["A"], a["B"][:, t], a["C"][:, t], a["D"],
                              a["dt_bias"], state, slots) for t in range(T)]
    assert_close(torch.stack(steps, 1), y, rtol=1e-12, atol=1e-12)
    assert_close(state[slots], final, rtol=1e-12, atol=1e-12)
    assert not state[1].any()


def test_scan_in_two_pieces_chained_through_the_state_equals_one_scan():
    a = _inputs(2)
    y = ssd_scan(**a)
    cut = 4
    first = {k: v[:, :cut] if v.dim() > 1 else v for k, v in a.items()}
    rest = {k: v[:, cut:] if v.dim() > 1 else v for k, v in a.items()}
    y1, s1 = ssd_scan(**first, return_final_state=True)
    y2 = ssd_scan(**rest, initial_state=s1)
    assert_close(torch.cat([y1, y2], 1), y, rtol=1e-12, atol=1e-12)


def test_state_resets_where_the_document_id_changes():
    a = _inputs(3)
    seq_idx = torch.tensor([[0] * 6 + [1] * 5, [0] * 11])
    y = ssd_scan(**a, seq_idx=seq_idx)
    second = {k: v[:1, 6:] if v.dim() > 1 else v for k, v in a.items()}
    assert_close(y[:1, 6:], ssd_scan(**second), rtol=1e-12, atol=1e-12)
    assert_close(y[1:], ssd_scan(**{k: v[1:] if v.dim() > 1 else v for k, v in a.items()}), rtol=1e-12, atol=1e-12)


def test_fp32_scan_runs_in_fp32_and_keeps_the_input_dtype():
    a = {k: v.float() for k, v in _inputs(4).items()}
    a["x"] = a["x"].bfloat16()
    y, state = ssd_scan(**a, return_final_state=True)
    assert y.dtype == torch.bfloat16 and state.dtype == torch.float32
