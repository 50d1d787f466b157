"""GPU checks of the Mamba-1 Triton kernels at realistic sizes in bf16 (skipped without CUDA).

Every kernel-written buffer is filled with NaN first (`triton_math.POISON`), so an element a kernel forgets to write
fails the check. References run in fp32 (float64 for the small decode checks) on the same bf16 inputs
upcast; errors are ||out - ref|| / ||ref||.
"""

from __future__ import annotations

import pytest
import torch

pytestmark = pytest.mark.gpu

if not torch.cuda.is_available():  # pragma: no cover - CPU CI
    pytest.skip("needs a CUDA device", allow_module_level=True)

from sambay.ops import triton_math as tm  # noqa: E402
from sambay.ops.causal_conv1d import reference as conv_ref  # noqa: E402
from sambay.ops.causal_conv1d import triton as conv_tri  # noqa: E402
from sambay.ops.selective_scan import reference as scan_ref  # noqa: E402
from sambay.ops.selective_scan import triton as scan_tri  # noqa: E402
from sambay.ops.selective_state_update import reference as ssu_ref  # noqa: E402
from sambay.ops.selective_state_update import triton as ssu_tri  # noqa: E402

DEV = "cuda"


@pytest.fixture(autouse=True)
def _poison():
    tm.POISON = True
    yield
    tm.POISON = False


def rel(a, b):
    a, b = a.double(), b.double()
    assert torch.isfinite(a).all(), "non-finite (unwritten?) elements"
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


def _docs(batch, seqlen, cuts):
    seq = torch.zeros(batch, seqlen, dtype=torch.int32, device=DEV)
    for b, cs in enumerate(cuts):
        for i, c in enumerate(cs):
            seq[b, c:] = i + 1
    return seq


# Kernel configurations (module constants of scan_tri, the rest at their defaults): the variants the
# benchmark sweeps, so whichever becomes the default has been checked on the GPU
SCAN_CONFIGS = {
    "default": {},
    "ring1/c16/no-prefetch/masked": dict(FWD_ONEPASS_RING=1, FWD_ONEPASS_BC_RING=1, CHUNK=16, FWD_SEGMENTS=1,
                                         BWD_SEGMENTS=1, BWD_PREFETCH=False, FWD_CLAMP=False),
    "ring4-bc2-2warps/bwd-2warps": dict(FWD_ONEPASS_RING=4, FWD_ONEPASS_BC_RING=2, FWD_WARPS=2, FWD_SEGMENTS=1,
                                        BWD_WARPS=2),
    "4segments-both": dict(FWD_SEGMENTS=4, BWD_SEGMENTS=4),
    # the int32 offset limit lowered so T = 1000 runs as pieces of 256 tokens chained through the state
    "pieces-of-256": dict(MAX_INT32_OFFSET=561_000),
}


@pytest.fixture(params=list(SCAN_CONFIGS))
def scan_config(request, monkeypatch):
    for name, value in SCAN_CONFIGS[request.param].items():
        monkeypatch.setattr(scan_tri, name, value)  # restored after the test
    return request.param


@pytest.mark.parametrize("with_z", [True, False])
def test_scan_bf16_forward_state_and_all_grads_match_fp32_reference_with_resets(with_z, scan_config):
    torch.manual_seed(0)
    Bn, T, D, N = 2, 1000, 1000, 16  # odd sizes: partial chunks and channel blocks
    bf = torch.bfloat16
    u = torch.randn(Bn, T, D, device=DEV, dtype=bf)
    delta = (torch.randn(Bn, T, D, device=DEV) * 0.5 - 1).to(bf)
    A = -torch.exp(torch.rand(D, N, device=DEV) * 2)
    Bm = torch.randn(Bn, T, N, device=DEV, dtype=bf)
    Cm = torch.randn(Bn, T, N, device=DEV, dtype=bf)
    Dv = torch.randn(D, device=DEV)
    z = torch.randn(Bn, T, D, device=DEV, dtype=bf) if with_z else None
    dtb = torch.randn(D, device=DEV) * 0.5
    h0 = torch.randn(Bn, D, N, device=DEV)
    seq = _docs(Bn, T, [[333, 334, 700], [17]])
    leaves = [u, delta, A, Bm, Cm, Dv, z, dtb, h0]
    tri = [None if t is None else t.clone().requires_grad_() for t in leaves]
    y, hT = scan_tri.selective_scan(*tri[:7], tri[7], True, tri[8], seq, True)
    ref = [None if t is None else t.float().clone().requires_grad_() for t in leaves]
    yr, hr = scan_ref.selective_scan(*ref[:7], ref[7], True, ref[8], seq, True)
    assert rel(y, yr) < 1e-2
    assert rel(hT, hr) < 1e-3
    dy = torch.randn_like(yr)
    dh = torch.randn_like(hr)
    (y.float() * dy).sum().add((hT * dh).sum()).backward()
    (yr * dy).sum().add((hr * dh).sum()).backward()
    names = ["u", "delta", "A", "B", "C", "D", "z", "delta_bias", "initial_state"]
    for name, a, r in zip(names, tri, ref):
        if a is None:
            continue
        assert rel(a.grad, r.grad) < 2e-2, name


def test_scan_bf16_realistic_size_forward_matches_chunkwise_reference():
    # B=2, T=4096, D=2048: the size class the benchmark runs (reference forward only, to bound memory)
    torch.manual_seed(1)
    Bn, T, D, N = 2, 4096, 2048, 16
    bf = torch.bfloat16
    u = torch.randn(Bn, T, D, device=DEV, dtype=bf)
    delta = (torch.randn(Bn, T, D, device=DEV) * 0.5 - 1).to(bf)
    A = -torch.exp(torch.rand(D, N, device=DEV) * 2)
    Bm, Cm = (torch.randn(Bn, T, N, device=DEV, dtype=bf) for _ in range(2))
    z = torch.randn(Bn, T, D, device=DEV, dtype=bf)
    Dv, dtb = torch.randn(D, device=DEV), torch.randn(D, device=DEV) * 0.5
    with torch.no_grad():
        y, hT = scan_tri.selective_scan(u, delta, A, Bm, Cm, Dv, z, dtb, return_final_state=True)
        yr, hr = scan_ref.selective_scan(u, delta, A, Bm, Cm, Dv, z, dtb, return_final_state=True)
    assert rel(y, yr) < 1e-2
    assert rel(hT, hr) < 1e-3


@pytest.mark.parametrize("segments", [1, 4])
def test_scan_backward_is_bitwise_deterministic(segments, monkeypatch):
    # dB / dC are per-program partials summed in torch (no atomics), so two runs give identical bits
    monkeypatch.setattr(scan_tri, "BWD_SEGMENTS", segments)
    torch.manual_seed(3)
    Bn, T, D, N = 2, 1000, 768, 16
    bf = torch.bfloat16
    u, delta, z = (torch.randn(Bn, T, D, device=DEV, dtype=bf) for _ in range(3))
    A = -torch.exp(torch.rand(D, N, device=DEV) * 2)
    Bm, Cm = (torch.randn(Bn, T, N, device=DEV, dtype=bf) for _ in range(2))
    Dv, dtb = torch.randn(D, device=DEV), torch.randn(D, device=DEV) * 0.5
    _, _, hs = scan_tri.scan_fwd(u, delta, A, Bm, Cm, Dv, z, dtb, None, None, True, True)
    dy = torch.randn(Bn, T, D, device=DEV, dtype=bf)
    first = scan_tri.scan_bwd(dy, None, u, delta, A, Bm, Cm, Dv, z, dtb, None, hs, True)
    second = scan_tri.scan_bwd(dy, None, u, delta, A, Bm, Cm, Dv, z, dtb, None, hs, True)
    for a, b in zip(first, second):
        assert (a is None and b is None) or torch.equal(a, b)


@pytest.mark.parametrize("time_index", ["int32", "int64"])
def test_causal_conv1d_bf16_forward_final_state_and_grads_match_reference_with_resets(time_index, monkeypatch):
    if time_index == "int64":  # the I64 kernels of sequences whose time offsets pass int32
        monkeypatch.setattr(conv_tri, "MAX_INT32_OFFSET", 1)
    torch.manual_seed(2)
    Bn, T, D, W = 3, 777, 1000, 4
    bf = torch.bfloat16
    x = torch.randn(Bn, T, D, device=DEV, dtype=bf)
    w = torch.randn(D, W, device=DEV, dtype=bf)
    b = torch.randn(D, device=DEV, dtype=bf)
    init = torch.randn(Bn, D, W - 1, device=DEV, dtype=bf)
    seq = _docs(Bn, T, [[1, 2, 400], [775], []])
    tri = [t.clone().requires_grad_() for t in (x, w, b, init)]
    y, fin = conv_tri.causal_conv1d(tri[0], tri[1], tri[2], "silu", tri[3], seq, True)
    ref = [t.float().clone().requires_grad_() for t in (x, w, b, init)]
    yr, fr = conv_ref.causal_conv1d(ref[0], ref[1], ref[2], "silu", ref[3], seq, True)
    assert rel(y, yr) < 1e-2
    assert rel(fin, fr) < 1e-2
    dy, df = torch.randn_like(yr), torch.randn_like(fr)
    (y.float() * dy).sum().add((fin.float() * df).sum()).backward()
    (yr * dy).sum().add((fr * df).sum()).backward()
    for name, a, r in zip(["x", "weight", "bias", "initial_state"], tri, ref):
        assert rel(a.grad, r.grad) < 2e-2, name


def test_decode_kernels_match_reference_with_slots_and_padding_bf16():
    torch.manual_seed(3)
    Bn, D, N, W, S = 64, 5120, 16, 4, 80
    bf = torch.bfloat16
    slots = torch.randperm(S, device=DEV)[:Bn].to(torch.int32)
    slots[5] = -1  # padded row
    x_raw = torch.randn(Bn, D, device=DEV, dtype=bf)
    conv_state = torch.randn(S, D, W - 1, device=DEV, dtype=bf)
    cw, cb = torch.randn(D, W, device=DEV, dtype=bf), torch.randn(D, device=DEV, dtype=bf)
    cs_ref = conv_state.clone()
    xc = conv_tri.causal_conv1d_update(x_raw, conv_state, cw, cb, "silu", slots)
    xr = conv_ref.causal_conv1d_update(x_raw, cs_ref, cw, cb, "silu", slots)
    assert rel(xc, xr) < 1e-2
    assert torch.equal(conv_state, cs_ref)
    dt = torch.randn(Bn, D, device=DEV, dtype=bf)
    A = -torch.exp(torch.rand(D, N, device=DEV) * 2)
    Bm, Cm = torch.randn(Bn, N, device=DEV, dtype=bf), torch.randn(Bn, N, device=DEV, dtype=bf)
    Dv, dtb = torch.randn(D, device=DEV), torch.randn(D, device=DEV)
    z = torch.randn(Bn, D, device=DEV, dtype=bf)
    st = torch.randn(S, D, N, device=DEV)
    st_ref = st.clone()
    y = ssu_tri.selective_state_update(xr, dt, A, Bm, Cm, Dv, z, dtb, st, slots)
    yr = ssu_ref.selective_state_update(xr, dt, A, Bm, Cm, Dv, z, dtb, st_ref, slots)
    assert rel(y, yr) < 1e-2
    assert rel(st, st_ref) < 1e-5


def test_decode_step_replays_under_cuda_graph_like_eager():
    torch.manual_seed(4)
    Bn, D, N, W, S = 8, 1024, 16, 4, 16
    bf = torch.bfloat16
    slots = torch.tensor([3, 0, 7, 9, 1, 2, 15, 4], device=DEV, dtype=torch.int32)
    x_raw = torch.randn(Bn, D, device=DEV, dtype=bf)
    dt = torch.randn(Bn, D, device=DEV, dtype=bf)
    Bm, Cm, z = (torch.randn(Bn, n, device=DEV, dtype=bf) for n in (N, N, D))
    cw, cb = torch.randn(D, W, device=DEV, dtype=bf), torch.randn(D, device=DEV, dtype=bf)
    A = -torch.exp(torch.rand(D, N, device=DEV))
    Dv, dtb = torch.randn(D, device=DEV), torch.randn(D, device=DEV)
    conv0 = torch.randn(S, D, W - 1, device=DEV, dtype=bf)
    ssm0 = torch.randn(S, D, N, device=DEV)
    conv_g, ssm_g = conv0.clone(), ssm0.clone()

    def step(conv_state, ssm_state):
        xc = conv_tri.causal_conv1d_update(x_raw, conv_state, cw, cb, "silu", slots)
        return ssu_tri.selective_state_update(xc, dt, A, Bm, Cm, Dv, z, dtb, ssm_state, slots)

    # eager: three steps
    conv_e, ssm_e = conv0.clone(), ssm0.clone()
    for _ in range(3):
        ye = step(conv_e, ssm_e)
    # graph: warm up on a side stream (compiles the kernels), reset state, capture, replay three times
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        step(conv_g.clone(), ssm_g.clone())
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        yg = step(conv_g, ssm_g)
    conv_g.copy_(conv0)
    ssm_g.copy_(ssm0)
    for _ in range(3):
        g.replay()
    torch.cuda.synchronize()
    assert torch.equal(yg, ye)
    assert torch.equal(conv_g, conv_e)
    assert torch.equal(ssm_g, ssm_e)


def test_scan_and_conv_compile_fullgraph_with_inductor_and_backward():
    torch.manual_seed(5)
    Bn, T, D, N = 2, 300, 256, 16
    x = torch.randn(Bn, T, D, device=DEV, requires_grad=True)
    w = torch.randn(D, 4, device=DEV, requires_grad=True)
    delta = torch.randn(Bn, T, D, device=DEV, requires_grad=True)
    A = -torch.exp(torch.rand(D, N, device=DEV))
    Bm, Cm = torch.randn(Bn, T, N, device=DEV), torch.randn(Bn, T, N, device=DEV)

    def f(x, w, delta):
        xc = conv_tri.causal_conv1d(x, w, None, "silu")
        return scan_tri.selective_scan(xc, delta, A, Bm, Cm).square().sum()

    loss_c = torch.compile(f, fullgraph=True)(x, w, delta)
    gc = torch.autograd.grad(loss_c, (x, w, delta))
    loss_e = f(x, w, delta)
    ge = torch.autograd.grad(loss_e, (x, w, delta))
    assert rel(loss_c, loss_e) < 1e-5
    for a, b in zip(gc, ge):
        assert rel(a, b) < 1e-4
