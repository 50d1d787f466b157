"""Triton kernels vs their PyTorch references under the Triton interpreter (CPU, fp32 inputs).

Not collected by default (the name does not start with test_): `test_mamba_ops_interpreter.py` runs this
file in a subprocess with TRITON_INTERPRET=1 and SAMBAY_KERNELS=triton, so an interpreter segfault fails
one test instead of killing the run. Sizes stay tiny (B<=2, T<=40, D<=32, N<=16): the interpreter runs
each program in Python.
"""

from __future__ import annotations

import os

import pytest
import torch

assert os.environ.get("TRITON_INTERPRET") == "1", "run through test_mamba_ops_interpreter.py"

import _interp_patches  # noqa: E402  (same folder; pytest puts it on sys.path)

_interp_patches.install()

from sambay.ops import triton_math as tm  # noqa: E402
from sambay.ops.causal_conv1d import causal_conv1d as conv_public  # noqa: E402
from sambay.ops.causal_conv1d import reference as conv_ref  # noqa: E402
from sambay.ops.causal_conv1d import triton as conv_tri  # noqa: E402
from sambay.ops.cross_entropy import chunked as ce_chunked  # noqa: E402
from sambay.ops.cross_entropy import reference as ce_ref  # noqa: E402
from sambay.ops.cross_entropy import triton as ce_tri  # noqa: E402
from sambay.ops.selective_scan import reference as scan_ref  # noqa: E402
from sambay.ops.selective_scan import selective_scan as scan_public  # noqa: E402
from sambay.ops.selective_scan import triton as scan_tri  # noqa: E402
from sambay.ops.selective_state_update import reference as ssu_ref  # noqa: E402
from sambay.ops.selective_state_update import selective_state_update as ssu_public  # noqa: E402


@pytest.fixture(autouse=True)
def _poison():
    """Kernel outputs start as NaN, so an element a kernel fails to write fails the comparison."""
    tm.POISON = True
    yield
    tm.POISON = False


def rel(a, b):
    a, b = a.double(), b.double()
    assert torch.isfinite(a).all(), "non-finite output: an element was not written"
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


def docs(batch, seqlen, cuts):
    seq = torch.zeros(batch, seqlen, dtype=torch.int32)
    for b, cs in enumerate(cuts):
        for i, c in enumerate(cs):
            seq[b, c:] = i + 1
    return seq


# Kernel configurations (module constants of scan_tri; the rest keep their defaults). T = 37 leaves the
# forward's prefetch rings (FWD_ONEPASS_* tokens in one pass, FWD_RING / FWD_BC_RING in segments) a partial last
# round; segmented passes cut it into 16-token (CHUNK 8) or 8-token (CHUNK 4) segments, so document resets,
# the initial state and the final-state gradient cross segment boundaries.
SCAN_CONFIGS = {
    "ring4-bc2/c16": dict(FWD_ONEPASS_RING=4, FWD_ONEPASS_BC_RING=2, CHUNK=16, FWD_SEGMENTS=1, BWD_SEGMENTS=1),
    "ring8/c8": dict(FWD_SEGMENTS=1, BWD_SEGMENTS=1),
    "ring1/c2": dict(FWD_ONEPASS_RING=1, FWD_ONEPASS_BC_RING=1, FWD_WARPS=1, CHUNK=2, FWD_SEGMENTS=1,
                     BWD_SEGMENTS=1),
    "ring8-bc2-2segments/c16": dict(FWD_RING=8, FWD_BC_RING=2, CHUNK=16, FWD_SEGMENTS=2, BWD_SEGMENTS=1),
    # the inference forward with masked loads (FWD_CLAMP off), as the forward that saves states always runs
    "ring2-2segments-masked": dict(FWD_RING=2, FWD_BC_RING=2, FWD_WARPS=1, FWD_SEGMENTS=2, BWD_SEGMENTS=1,
                                   FWD_CLAMP=False),
    "3segments-both": dict(FWD_SEGMENTS=3, BWD_SEGMENTS=3),
    "bwd-c4-5segments": dict(CHUNK=4, BWD_SEGMENTS=5),
    # two-warp programs: dB / dC summed with tl.sum across warps instead of the one-warp reduce-scatter
    "bwd-2warps-sum": dict(BWD_WARPS=2),
}


@pytest.fixture(params=list(SCAN_CONFIGS))
def scan_config(request, monkeypatch):
    for name, value in SCAN_CONFIGS[request.param].items():
        monkeypatch.setattr(scan_tri, name, value)  # restored after the test
    return request.param


def _check_scan_with_every_input_against_float64_reference(seed, cuts):
    """B=2, T=37, D=20, N=5 (odd: partial chunks, channel blocks and state padding) with every optional input,
    documents starting at `cuts` per row: the forward with saved states, the inference forward (prefetch rings
    of its own), the final state and every gradient (final-state gradient included) against float64."""
    torch.manual_seed(seed)
    Bn, T, D, N = 2, 37, 20, 5
    leaves = [
        torch.randn(Bn, T, D), torch.randn(Bn, T, D), -torch.rand(D, N) * 3, torch.randn(Bn, T, N),
        torch.randn(Bn, T, N), torch.randn(D), torch.randn(Bn, T, D), torch.randn(D), torch.randn(Bn, D, N),
    ]
    seq = docs(Bn, T, cuts)
    tri = [t.clone().requires_grad_() for t in leaves]
    y, hT = scan_tri.selective_scan(*tri[:8], True, tri[8], seq, True)
    ref = [t.double().requires_grad_() for t in leaves]
    yr, hr = scan_ref.selective_scan(*ref[:8], True, ref[8], seq, True)
    assert rel(y, yr) < 1e-5
    assert rel(hT, hr) < 1e-5
    with torch.no_grad():
        y_inf, hT_inf = scan_tri.selective_scan(*leaves[:8], True, leaves[8], seq, True)
    assert rel(y_inf, yr) < 1e-5
    assert rel(hT_inf, hr) < 1e-5
    dy, dh = torch.randn(Bn, T, D), torch.randn(Bn, D, N)
    (y * dy).sum().add((hT * dh).sum()).backward()
    (yr * dy.double()).sum().add((hr * dh.double()).sum()).backward()
    for name, a, r in zip(["u", "delta", "A", "B", "C", "D", "z", "delta_bias", "h0"], tri, ref):
        assert rel(a.grad, r.grad) < 1e-5, name


def test_scan_kernel_forward_final_state_and_every_gradient_match_float64_reference(scan_config):
    _check_scan_with_every_input_against_float64_reference(0, [[10, 17], [30]])


def test_scan_kernel_without_optional_inputs_matches_reference_and_grads():
    # no D, z, bias, initial state or seq_idx; softplus off; only y is used (no final-state gradient).
    # N = 16 with 12 channels: the inference forward's unmasked loads (FWD_CLAMP) with padded channels
    torch.manual_seed(1)
    Bn, T, D, N = 1, 23, 12, 16
    leaves = [torch.randn(Bn, T, D), torch.rand(Bn, T, D) * 0.5, -torch.rand(D, N) * 2, torch.randn(Bn, T, N), torch.randn(Bn, T, N)]
    tri = [t.clone().requires_grad_() for t in leaves]
    y = scan_tri.selective_scan(*tri, delta_softplus=False)
    ref = [t.double().requires_grad_() for t in leaves]
    yr = scan_ref.selective_scan(*ref, delta_softplus=False)
    assert rel(y, yr) < 1e-5
    with torch.no_grad():
        assert rel(scan_tri.selective_scan(*leaves, delta_softplus=False), yr) < 1e-5
    dy = torch.randn(Bn, T, D)
    (y * dy).sum().backward()
    (yr * dy.double()).sum().backward()
    for a, r in zip(tri, ref):
        assert rel(a.grad, r.grad) < 1e-5


def test_saved_states_leave_room_for_the_backward_prefetch_of_padding_states_and_channels():
    # the backward prefetches whole (padded state, channel block) slabs into L2; its loads are masked, but the
    # prefetch addresses must stay inside the allocation
    Bn, T, D, N = 2, 37, 20, 5
    u, delta, z = (torch.randn(Bn, T, D) for _ in range(3))
    B, C = torch.randn(Bn, T, N), torch.randn(Bn, T, N)
    _, _, hs = scan_tri.scan_fwd(u, delta, -torch.rand(D, N), B, C, None, z, None, save_states=True)
    assert hs.shape == (Bn, scan_tri.num_chunks(T), N, D) and hs.is_contiguous()
    reach = hs.numel() + (8 - N) * D + 32 * scan_tri.BWD_WARPS  # NP = 8 states, a 32-channel block
    assert hs.untyped_storage().nbytes() >= reach * hs.element_size()


def test_public_scan_of_an_empty_sequence_or_batch_returns_empty_outputs_and_backpropagates():
    Bn, D, N = 2, 6, 4
    h0 = torch.randn(Bn, D, N)
    u = torch.randn(Bn, 0, D, requires_grad=True)
    y, hT = scan_public(u, torch.randn(Bn, 0, D), -torch.rand(D, N), torch.randn(Bn, 0, N), torch.randn(Bn, 0, N),
                        initial_state=h0, return_final_state=True)
    assert y.shape == (Bn, 0, D)
    assert torch.equal(hT, h0)
    y.sum().backward()
    assert u.grad.shape == u.shape
    y = scan_public(torch.randn(0, 5, D), torch.randn(0, 5, D), -torch.rand(D, N), torch.randn(0, 5, N),
                    torch.randn(0, 5, N))
    assert y.shape == (0, 5, D)
    with pytest.raises(ValueError, match="non-empty"):  # the kernels themselves say so instead of dividing by 0
        scan_tri.selective_scan(u, u, -torch.rand(D, N), torch.randn(Bn, 0, N), torch.randn(Bn, 0, N))


def test_sequence_longer_than_the_int32_offset_limit_is_scanned_in_pieces_that_match_the_reference(monkeypatch):
    # The kernels index time with int32; with the limit made tiny, T = 37 runs as pieces of 16, 16 and 5 tokens
    # chained through the state. Row 0 starts a document exactly at a piece boundary (token 16): the carried
    # state must be cut there.
    monkeypatch.setattr(scan_tri, "MAX_INT32_OFFSET", 700)
    rows, cols = torch.empty(2, 37, 20), torch.empty(2, 37, 5)
    assert scan_tri.max_piece_len(rows, rows, cols, cols, rows) == 16
    _check_scan_with_every_input_against_float64_reference(5, [[16, 30], [10]])


def test_scan_kernel_accepts_strided_halves_of_a_projection():
    # the model passes x, z = in_proj(u).chunk(2, -1) and B, C split out of x_proj: non-contiguous views
    torch.manual_seed(2)
    Bn, T, D, N = 2, 19, 16, 8
    xz = torch.randn(Bn, T, 2 * D)
    u, z = xz.chunk(2, dim=-1)
    proj = torch.randn(Bn, T, 3 + 2 * N)
    _, B, C = proj.split([3, N, N], dim=-1)
    delta = torch.randn(Bn, T, D)
    A = -torch.rand(D, N)
    y = scan_tri.selective_scan(u, delta, A, B, C, z=z)
    yr = scan_ref.selective_scan(u, delta, A, B, C, z=z)
    assert rel(y, yr) < 1e-5


@pytest.mark.parametrize("layout", ["aligned-rows", "x_proj-slices"])
def test_scan_kernel_reads_bf16_B_and_C_as_packed_pairs_with_reference_results(layout):
    # bf16 B / C with an even N take the packed-word path (PACK); x_proj slices (row stride dt_rank + 2N,
    # unaligned) are first copied to aligned rows. The reference gets the same bf16 values in float64.
    torch.manual_seed(11)
    Bn, T, D, N = 2, 21, 12, 8
    width = 2 * N if layout == "aligned-rows" else 3 + 2 * N
    proj = torch.randn(Bn, T, width).bfloat16()
    leaves = [torch.randn(Bn, T, D), torch.randn(Bn, T, D), -torch.rand(D, N) * 2, proj, torch.randn(D),
              torch.randn(Bn, T, D), torch.randn(D)]

    def run(impl, u, delta, A, proj, *rest):
        B, C = proj[..., -2 * N : -N], proj[..., -N:]
        return impl(u, delta, A, B, C, *rest)

    tri = [t.clone().requires_grad_() for t in leaves]
    B_view = tri[3][..., -2 * N : -N]
    assert (B_view.stride(1) * B_view.element_size() % 16 == 0) == (layout == "aligned-rows")
    assert scan_tri._bc_rows(B_view, tri[3][..., -N:])[2], "bf16 B / C should take the packed path"
    y = run(scan_tri.selective_scan, *tri)
    ref = [t.detach().double().requires_grad_() for t in leaves]
    yr = run(scan_ref.selective_scan, *ref)
    assert rel(y, yr) < 1e-5
    dy = torch.randn(Bn, T, D)
    (y * dy).sum().backward()
    (yr * dy.double()).sum().backward()
    for name, a, r in zip(["u", "delta", "A", "B|C", "D", "z", "delta_bias"], tri, ref):
        tol = 1e-2 if name == "B|C" else 1e-5  # dB / dC come back rounded to bf16, B and C's dtype
        assert rel(a.grad, r.grad) < tol, name


def test_public_selective_scan_dispatches_to_triton_and_backpropagates():
    torch.manual_seed(3)
    u = torch.randn(1, 9, 8, requires_grad=True)
    delta = torch.randn(1, 9, 8)
    A = -torch.rand(8, 4)
    B, C = torch.randn(1, 9, 4), torch.randn(1, 9, 4)
    y, h = scan_public(u, delta, A, B, C, return_final_state=True)
    y.sum().backward()
    yr, hr = scan_ref.selective_scan(u.detach(), delta, A, B, C, return_final_state=True)
    assert rel(y, yr) < 1e-5 and rel(h, hr) < 1e-5
    assert u.grad is not None and torch.isfinite(u.grad).all()


@pytest.mark.parametrize("with_state", [False, True])
@pytest.mark.parametrize("with_docs", [False, True])
@pytest.mark.parametrize("time_index", ["int32", "int64"])
def test_conv1d_kernel_forward_final_state_and_gradients_match_reference(with_state, with_docs, time_index,
                                                                         monkeypatch):
    if time_index == "int64":  # the path of sequences whose time offsets pass int32 (I64)
        monkeypatch.setattr(conv_tri, "MAX_INT32_OFFSET", 1000)
        assert conv_tri._needs_i64(37, 20, torch.empty(2, 37, 20))
    torch.manual_seed(4)
    Bn, T, D, W = 2, 37, 20, 4
    leaves = [torch.randn(Bn, T, D), torch.randn(D, W), torch.randn(D), torch.randn(Bn, D, W - 1)]
    seq = docs(Bn, T, [[10, 12], [35]]) if with_docs else None  # row 1: last document shorter than W-1
    init = leaves[3] if with_state else None
    tri = [t.clone().requires_grad_() for t in leaves]
    y, fin = conv_tri.causal_conv1d(tri[0], tri[1], tri[2], "silu", tri[3] if with_state else None, seq, True)
    ref = [t.double().requires_grad_() for t in leaves]
    yr, fr = conv_ref.causal_conv1d(ref[0], ref[1], ref[2], "silu", ref[3] if with_state else None, seq, True)
    assert rel(y, yr) < 1e-5
    assert rel(fin, fr) < 1e-6
    dy, df = torch.randn(Bn, T, D), torch.randn(Bn, D, W - 1)
    (y * dy).sum().add((fin * df).sum()).backward()
    (yr * dy.double()).sum().add((fr * df.double()).sum()).backward()
    for name, a, r in zip(["x", "weight", "bias", "state"], tri, ref):
        if name == "state" and init is None:
            continue
        assert rel(a.grad, r.grad) < 1e-5, name


def test_conv1d_kernel_without_bias_or_activation_matches_public_reference_path():
    torch.manual_seed(5)
    x, w = torch.randn(1, 7, 12), torch.randn(12, 3)
    y = conv_public(x, w, None, None)
    assert rel(y, conv_ref.causal_conv1d(x, w, None, None)) < 1e-6


def test_conv1d_update_kernel_matches_reference_with_slots_and_padding():
    torch.manual_seed(6)
    D, W, S = 20, 4, 5
    x, w, b = torch.randn(3, D), torch.randn(D, W), torch.randn(D)
    st = torch.randn(S, D, W - 1)
    st_ref = st.clone()
    slots = torch.tensor([4, -1, 1], dtype=torch.int32)
    y = conv_tri.causal_conv1d_update(x, st, w, b, "silu", slots)
    yr = conv_ref.causal_conv1d_update(x, st_ref, w, b, "silu", slots)
    assert rel(y, yr) < 1e-6
    assert torch.equal(st, st_ref)
    assert torch.all(y[1] == 0)


def test_selective_state_update_kernel_matches_reference_with_slots_padding_and_optionals():
    torch.manual_seed(7)
    Bn, D, N, S = 3, 20, 5, 6
    args = [torch.randn(Bn, D), torch.randn(Bn, D), -torch.rand(D, N) * 3, torch.randn(Bn, N), torch.randn(Bn, N)]
    D_, z, dtb = torch.randn(D), torch.randn(Bn, D), torch.randn(D)
    slots = torch.tensor([5, -1, 2], dtype=torch.int32)
    for opt in ((D_, z, dtb), (None, None, None)):
        st = torch.randn(S, D, N)
        st_ref = st.clone()
        y = ssu_public(*args, *opt, st, slots)
        yr = ssu_ref.selective_state_update(*args, *opt, st_ref, slots)
        assert rel(y, yr) < 1e-6
        assert rel(st, st_ref) < 1e-6
        assert torch.all(y[1] == 0)


def test_triton_ops_trace_under_torch_compile_fullgraph_with_backward():
    # aot_eager runs dynamo + AOTAutograd on the fake kernels without inductor's (slow) C++ codegen
    torch.manual_seed(8)
    x = torch.randn(1, 11, 8, requires_grad=True)
    w = torch.randn(8, 4, requires_grad=True)
    delta = torch.randn(1, 11, 8, requires_grad=True)
    A = -torch.rand(8, 4)
    B, C = torch.randn(1, 11, 4), torch.randn(1, 11, 4)

    def f(x, w, delta):
        xc = conv_tri.causal_conv1d(x, w, None, "silu")
        return scan_tri.selective_scan(xc, delta, A, B, C).square().sum()

    loss_c = torch.compile(f, fullgraph=True, backend="aot_eager")(x, w, delta)
    gc = torch.autograd.grad(loss_c, (x, w, delta))
    loss_e = f(x, w, delta)
    ge = torch.autograd.grad(loss_e, (x, w, delta))
    assert rel(loss_c, loss_e) < 1e-6
    for a, b in zip(gc, ge):
        assert rel(a, b) < 1e-5


def test_cross_entropy_rows_kernel_gives_loss_rows_and_overwrites_logits_with_their_gradient(monkeypatch):
    monkeypatch.setattr(ce_tri, "BLOCK_V", 16)  # V = 37: three blocks per row, the last one partial
    torch.manual_seed(9)
    R, V = 6, 37
    logits = torch.randn(R, V) * 4
    targets = torch.randint(0, V, (R,))
    targets[2] = -100
    scale = torch.tensor([0.25])
    work = logits.clone()
    rows = ce_tri.cross_entropy_rows(work, targets, scale, -100, True)
    valid = targets != -100
    want = torch.where(valid, torch.logsumexp(logits, -1) - logits.gather(1, targets.clamp(min=0)[:, None])[:, 0], 0.0)
    grad = (torch.softmax(logits, -1) - torch.nn.functional.one_hot(targets.clamp(min=0), V)) * 0.25 * valid[:, None]
    assert rel(rows, want) < 1e-6
    assert rel(work, grad) < 1e-6
    assert torch.all(work[2] == 0)
    kept = logits.clone()
    assert rel(ce_tri.cross_entropy_rows(kept, targets, scale, -100, False), want) < 1e-6
    assert torch.equal(kept, logits), "without write_grad the logits must stay untouched"


def test_cross_entropy_rows_kernel_makes_an_out_of_vocabulary_target_nan_not_an_out_of_bounds_read():
    logits = torch.randn(3, 10)
    targets = torch.tensor([1, 10, -100])
    rows = ce_tri.cross_entropy_rows(logits, targets, torch.tensor([1.0]), -100, True)
    assert torch.isfinite(rows[0]) and torch.isnan(rows[1]) and rows[2] == 0
    assert torch.isnan(logits[1]).all() and torch.isfinite(logits[0]).all()


def test_chunked_linear_cross_entropy_through_the_triton_rows_matches_full_logits_loss_and_grads():
    torch.manual_seed(10)
    N, d, V = 29, 8, 53
    leaves = [torch.randn(N, d), torch.randn(V, d) * 0.5]
    t = torch.randint(0, V, (N,))
    t[::4] = -100
    tri = [x.clone().requires_grad_() for x in leaves]
    ref = [x.double().requires_grad_() for x in leaves]
    got = ce_chunked.linear_cross_entropy(*tri, t, chunk_rows=8)
    want = ce_ref.linear_cross_entropy(*ref, t)
    (got * 2).backward()
    (want * 2).backward()
    assert rel(got, want) < 1e-6
    for a, r in zip(tri, ref):
        assert rel(a.grad, r.grad) < 1e-5
