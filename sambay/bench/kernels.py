"""`sambay bench kernels`: the Mamba-1 Triton kernels against the device's measured ceilings.

Measures, in one run on one GPU: device-to-device copy bandwidth (bytes read + written) and bf16 matmul
TFLOP/s; then the selective scan forward (inference, no saved states), forward with saved states
(training), forward + backward, the sequential PyTorch reference at a smaller size, the causal conv1d,
and the decode step (conv update + fused SSM update) at batch 64 x d_inner 5120. Times are medians from
`triton.testing.do_bench` (warm-up excluded); the decode kernels are timed as CUDA-graph replays
(`do_bench_cudagraph`) because a single launch is shorter than Python's launch overhead.

Achieved bandwidth counts minimal bytes (every input read once, every output written once) and is
reported as a fraction of the measured copy bandwidth. `sweep=True` also times block-size variants.
"""

from __future__ import annotations

import torch
import triton

from sambay.bench.report import Report, measure_ceilings
from sambay.bench.report import do_bench_ms as ms
from sambay.ops.causal_conv1d import triton as conv_tri
from sambay.ops.selective_scan import reference as scan_ref
from sambay.ops.selective_scan import triton as scan_tri
from sambay.ops.selective_state_update import triton as ssu_tri

DEV = "cuda"
BF = torch.bfloat16


def sweep_variants(rep, kind, names, configs, make, outputs, nbytes):
    """Time each configuration of the scan kernels' module constants `names` (the first is the default).

    `make()` runs after the constants are set and returns the function to time; `outputs(result)` picks the
    tensors checked against the default configuration's. Reports every variant (failures included, e.g. out
    of resources) and the best, then restores the default. Returns {config: ms}.
    """
    default, ref, results = configs[0], None, {}
    try:
        for cfg in configs:
            for n, v in zip(names, cfg):
                setattr(scan_tri, n, v)
            label = " ".join(f"{n.split('_', 1)[-1].lower()}={v if isinstance(v, str) else int(v)}"
                             for n, v in zip(names, cfg))
            try:
                fn = make()
                scan_tri.LAUNCHED.clear()
                got = outputs(fn())
                t = ms(fn)
                regs = " ".join(f"{k} {getattr(v, 'n_regs', '?')} regs/{getattr(v, 'n_spills', '?')} spills"
                                for k, v in scan_tri.LAUNCHED.items())
            except Exception as e:
                rep.say(f"   {kind} variant {label}: FAILED {type(e).__name__}: {e}"[:300])
                rep.failure("scan", f"{kind} variant {label}", f"{type(e).__name__}: {e}")
                continue
            ref = got if cfg == default else ref
            err = max(rel_err(g, r) for g, r in zip(got, ref)) if ref is not None else float("nan")
            results[cfg] = t
            row = rep.timing("scan", f"{kind} variant {label}", t, nbytes, default=cfg == default,
                             max_rel_err_vs_default=err, registers=regs)
            rep.say(f"   {kind} variant {label}: {t:.3f} ms  (outputs vs default: {err:.1e})  "
                    f"{row['gb_per_s']:.0f} GB/s = {row['of_copy_bandwidth']:.1%} of copy bw  [{regs}]")
    finally:
        for n, v in zip(names, default):
            setattr(scan_tri, n, v)
    if len(configs) > 1 and results:
        best = min(results, key=results.get)
        rep.say(f"   best {kind} variant: {best} {results[best]:.3f} ms")
    return results


def rel_err(x, ref):
    """max |x - ref| / max |ref|, in fp32."""
    x, ref = x.float(), ref.float()
    return ((x - ref).abs().max() / ref.abs().max().clamp_min(1e-30)).item()


def scan_inputs(Bn, T, D, N, z=True, requires_grad=False, bc_slices=False):
    """bc_slices: B and C as column slices of one (Bn, T, R + 2N) tensor, the way the model passes them
    (x_proj's output split into dt, B, C, with dt_rank D/32 padded to R, a multiple of 8, so the rows are
    16-byte aligned), instead of contiguous (Bn, T, N) tensors."""
    g = torch.Generator(device=DEV).manual_seed(0)
    u = torch.randn(Bn, T, D, device=DEV, dtype=BF, generator=g)
    delta = (torch.randn(Bn, T, D, device=DEV, generator=g) * 0.5 - 1).to(BF)
    A = -torch.exp(torch.rand(D, N, device=DEV, generator=g) * 2)
    if bc_slices:
        R = -(-D // 32 // 8) * 8
        _, Bm, Cm = torch.randn(Bn, T, R + 2 * N, device=DEV, dtype=BF, generator=g).split([R, N, N], dim=-1)
    else:
        Bm = torch.randn(Bn, T, N, device=DEV, dtype=BF, generator=g)
        Cm = torch.randn(Bn, T, N, device=DEV, dtype=BF, generator=g)
    Dv = torch.randn(D, device=DEV, generator=g)
    zz = torch.randn(Bn, T, D, device=DEV, dtype=BF, generator=g) if z else None
    dtb = torch.randn(D, device=DEV, generator=g) * 0.5
    return u, delta, A, Bm, Cm, Dv, zz, dtb


def scan_bytes(Bn, T, D, N, z=True):
    btd = Bn * T * D * 2
    fwd = btd * (2 + (1 if z else 0)) + btd + 2 * Bn * T * N * 2  # u, delta, z in; y out; B, C in
    # backward: reads u, delta, z, dy, B, C; writes du, ddelta, dz, dB, dC (chunk states not counted)
    bwd = btd * (3 + (1 if z else 0)) + 2 * Bn * T * N * 2 + btd * (2 + (1 if z else 0)) + 2 * Bn * T * N * 2
    return fwd, bwd


def bench_scan(rep: Report, sweep: bool):
    Bn, T, D, N = 8, 4096, 4096, 16
    u, delta, A, Bm, Cm, Dv, z, dtb = scan_inputs(Bn, T, D, N)
    fwd_bytes, bwd_bytes = scan_bytes(Bn, T, D, N)
    rep.say(f"## selective scan  B={Bn} T={T} D={D} N={N} bf16, z + D + delta_bias (softplus)")
    rep.say(f"   minimal bytes: fwd {fwd_bytes / 1e9:.3f} GB, bwd {bwd_bytes / 1e9:.3f} GB; "
            f"fwd roofline {fwd_bytes / rep.copy_gb_s / 1e6:.3f} ms")
    exps = Bn * T * D * N
    rep.say(f"   exp count {exps / 1e9:.2f} G (H100 MUFU ex2 ~16/clk/SM: ~{exps / (132 * 16 * 1.755e9) * 1e3:.2f} ms floor)")

    def fwd(save=False):
        return scan_tri.scan_fwd(u, delta, A, Bm, Cm, Dv, z, dtb, None, None, True, save)

    # inference forward variants: (prefetch rings for u/delta/z and for B/C rows in tokens, max warps per
    # program, time segments (0: automatic), unmasked clamped loads)
    names = ("FWD_ONEPASS_RING", "FWD_ONEPASS_BC_RING", "FWD_WARPS", "FWD_SEGMENTS", "FWD_CLAMP")
    configs = [tuple(getattr(scan_tri, n) for n in names)]
    if sweep:
        configs += [(8, 8, 8, 0, False), (1, 1, 8, 0, True), (2, 2, 8, 0, True), (4, 4, 8, 0, True),
                    (8, 8, 2, 0, True)]
    sweep_variants(rep, "fwd", names, configs, lambda: (lambda: fwd(False)), lambda r: r[:1], fwd_bytes)
    inf = rep.timing("scan", f"fwd inference B={Bn} T={T} D={D}", ms(lambda: fwd(False)), fwd_bytes)
    train = rep.timing("scan", f"fwd saving states B={Bn} T={T} D={D}", ms(lambda: fwd(True)), fwd_bytes)
    t_inf, t_train = inf["ms"], train["ms"]
    if sweep:  # training forward (saving states) variants: (prefetch rings)
        sweep_variants(rep, "training fwd", ("FWD_ONEPASS_RING", "FWD_ONEPASS_BC_RING"),
                       [(scan_tri.FWD_ONEPASS_RING, scan_tri.FWD_ONEPASS_BC_RING), (4, 4), (2, 2)],
                       lambda: (lambda: fwd(True)), lambda r: r[:1], fwd_bytes)
    rep.say(f"   scan fwd (inference, default cfg): {t_inf:.3f} ms, {inf['gb_per_s']:.0f} GB/s = "
            f"{inf['of_copy_bandwidth']:.1%} of copy bw")
    rep.say(f"   scan fwd (training, saves chunk states): {t_train:.3f} ms")

    y, hT, hs = fwd(True)
    dy = torch.randn_like(y)
    # backward variants: (checkpoint interval = backward chunk, max warps per program, time segments (0: auto),
    # L2 prefetch of the next chunk)
    bnames = ("CHUNK", "BWD_WARPS", "BWD_SEGMENTS", "BWD_PREFETCH")
    bcfgs = [tuple(getattr(scan_tri, n) for n in bnames)]
    if sweep:  # intervals below 8 store too many states (B*T/chunk*D*N*4 bytes) to be useful
        bcfgs += [(8, 1, 0, False), (16, 1, 0, True)]

    def bwd_variant():
        _, _, hs_c = fwd(True)  # states at this variant's checkpoint interval (not timed)
        return lambda: scan_tri.scan_bwd(dy, None, u, delta, A, Bm, Cm, Dv, z, dtb, None, hs_c, True)

    # outputs compared: du, ddelta, dA, dB, dC
    sweep_variants(rep, "bwd", bnames, bcfgs, bwd_variant, lambda r: r[:5], bwd_bytes)

    def fwd_bwd():
        y, hT, hs = fwd(True)
        return scan_tri.scan_bwd(dy, None, u, delta, A, Bm, Cm, Dv, z, dtb, None, hs, True)

    fb_row = rep.timing("scan", f"fwd+bwd B={Bn} T={T} D={D}", ms(fwd_bwd), fwd_bytes + bwd_bytes)
    t_fb = fb_row["ms"]
    fb_row["x_inference_fwd"] = t_fb / t_inf
    rep.say(f"   scan fwd+bwd (default cfg): {t_fb:.3f} ms = {t_fb / t_inf:.2f}x inference fwd, "
            f"{t_fb / t_train:.2f}x training fwd; {fb_row['of_copy_bandwidth']:.1%} of copy bw")

    # autograd path (what training calls), for the overhead of the wrapper
    leaves = [t.detach().requires_grad_() for t in (u, delta, Bm, Cm)]

    def autograd_step():
        for leaf in leaves:  # a fresh .grad each step: accumulating into the previous one would add 4 tensor adds
            leaf.grad = None
        yy = scan_tri.selective_scan(leaves[0], leaves[1], A, leaves[2], leaves[3], Dv, z, dtb)
        yy.backward(dy)

    t_ag = rep.timing("scan", f"fwd+bwd through autograd.Function B={Bn} T={T} D={D}", ms(autograd_step))["ms"]
    rep.say(f"   scan fwd+bwd through autograd.Function: {t_ag:.3f} ms")
    u = delta = z = y = dy = None
    torch.cuda.empty_cache()

    # a training shape: SambaY d8 (d_inner 1984) at 4 x 4096 tokens per micro-batch, where the (batch, channel)
    # grid is 4x smaller than above
    Bt, Dt = 4, 1984
    u, delta, A, Bm, Cm, Dv, z, dtb = scan_inputs(Bt, T, Dt, N)
    fb, bb = scan_bytes(Bt, T, Dt, N)
    y, hT, hs = scan_tri.scan_fwd(u, delta, A, Bm, Cm, Dv, z, dtb, None, None, True, True)
    dy = torch.randn_like(y)
    tf = rep.timing("scan", f"fwd saving states B={Bt} T={T} D={Dt}",
                    ms(lambda: scan_tri.scan_fwd(u, delta, A, Bm, Cm, Dv, z, dtb, None, None, True, True)), fb)
    tb = rep.timing("scan", f"bwd B={Bt} T={T} D={Dt}",
                    ms(lambda: scan_tri.scan_bwd(dy, None, u, delta, A, Bm, Cm, Dv, z, dtb, None, hs, True)), bb)
    rep.say(f"   training shape B={Bt} T={T} D={Dt}: fwd (saving states) {tf['ms']:.3f} ms = "
            f"{tf['of_copy_bandwidth']:.1%} of copy bw; bwd {tb['ms']:.3f} ms = {tb['of_copy_bandwidth']:.1%}")
    if sweep:
        fnames = ("FWD_SEGMENTS", "FWD_RING", "FWD_BC_RING")  # time segments (0: automatic), prefetch rings
        fcfgs = [tuple(getattr(scan_tri, n) for n in fnames)]
        fcfgs += [(1, 4, 4), (4, 4, 4), (0, 8, 8), (0, 8, 2), (0, 1, 1)]
        sweep_variants(rep, "training-shape fwd", fnames, fcfgs,
                       lambda: (lambda: scan_tri.scan_fwd(u, delta, A, Bm, Cm, Dv, z, dtb, None, None, True, True)),
                       lambda r: r[:1], fb)
        tcfgs = [tuple(getattr(scan_tri, n) for n in bnames)]
        tcfgs += [(8, 1, 0, False)] + [(8, 1, segs, True) for segs in (4, 8)]
        sweep_variants(rep, "training-shape bwd", bnames, tcfgs,
                       lambda: (lambda: scan_tri.scan_bwd(dy, None, u, delta, A, Bm, Cm, Dv, z, dtb, None, hs, True)),
                       lambda r: r[:5], bb)
    u = delta = z = y = dy = hs = None

    # the sequential PyTorch reference at a smaller size, and the kernel at the same size
    Bn2, T2, D2 = 2, 512, 1024
    u, delta, A, Bm, Cm, Dv, z, dtb = scan_inputs(Bn2, T2, D2, N)
    with torch.no_grad():
        t_ref = ms(lambda: scan_ref.selective_scan(u, delta, A, Bm, Cm, Dv, z, dtb), warmup=1, rep=20)
    t_tri = ms(lambda: scan_tri.scan_fwd(u, delta, A, Bm, Cm, Dv, z, dtb, None, None, True, False))
    rep.timing("scan", f"reference (sequential torch) fwd B={Bn2} T={T2} D={D2}", t_ref)
    rep.timing("scan", f"fwd inference B={Bn2} T={T2} D={D2}", t_tri)
    rep.say(f"   reference (sequential torch) fwd at B={Bn2} T={T2} D={D2}: {t_ref:.2f} ms vs Triton "
            f"{t_tri:.3f} ms ({t_ref / t_tri:.0f}x)")
    rep.summary["scan_fwd_of_copy_bandwidth"] = inf["of_copy_bandwidth"]
    rep.summary["scan_fwd_bwd_x_fwd"] = t_fb / t_inf


def bench_conv(rep: Report, sweep: bool = False):
    Bn, T, D, W = 8, 4096, 4096, 4
    g = torch.Generator(device=DEV).manual_seed(1)
    x = torch.randn(Bn, T, D, device=DEV, dtype=BF, generator=g)
    w = torch.randn(D, W, device=DEV, dtype=BF, generator=g)
    b = torch.randn(D, device=DEV, dtype=BF, generator=g)
    shape = f"B={Bn} T={T} D={D} W={W}"
    f = rep.timing("conv", f"fwd {shape}", ms(lambda: conv_tri.conv_fwd(x, w, b, "silu", None, None)),
                   2 * x.numel() * 2)
    rep.say(f"## causal conv1d  {shape} bf16 + SiLU")
    rep.say(f"   fwd: {f['ms']:.3f} ms, {f['gb_per_s']:.0f} GB/s = {f['of_copy_bandwidth']:.1%} of copy bw")
    dout = torch.randn_like(x)
    # x, dout in; dx out (the fp32 dpre round trip is extra traffic)
    b_ = rep.timing("conv", f"bwd {shape}", ms(lambda: conv_tri.conv_bwd(dout, x, w, b, "silu", None, None, None, False)),
                    3 * x.numel() * 2)
    rep.say(f"   bwd: {b_['ms']:.3f} ms, {b_['gb_per_s']:.0f} GB/s = {b_['of_copy_bandwidth']:.1%} of copy bw "
            "(minimal bytes)")


@triton.jit
def _empty_kernel(ptr):
    pass


def bench_decode(rep: Report, sweep: bool):
    Bn, D, N, W = 64, 5120, 16, 4
    ROT = 8  # 8 disjoint slot sets: 8 x 42 MB of state, more than the 50 MB L2, so replays read HBM
    S = Bn * ROT
    g = torch.Generator(device=DEV).manual_seed(2)
    perm = torch.randperm(S, device=DEV, generator=g).to(torch.int32)
    slot_sets = [perm[i * Bn:(i + 1) * Bn].contiguous() for i in range(ROT)]
    x = torch.randn(Bn, D, device=DEV, dtype=BF, generator=g)
    dt = torch.randn(Bn, D, device=DEV, dtype=BF, generator=g)
    z = torch.randn(Bn, D, device=DEV, dtype=BF, generator=g)
    Bm = torch.randn(Bn, N, device=DEV, dtype=BF, generator=g)
    Cm = torch.randn(Bn, N, device=DEV, dtype=BF, generator=g)
    A = -torch.exp(torch.rand(D, N, device=DEV, generator=g))
    Dv = torch.randn(D, device=DEV, generator=g)
    dtb = torch.randn(D, device=DEV, generator=g)
    st = torch.randn(S, D, N, device=DEV, generator=g)
    y = torch.empty_like(x)
    nbytes = 2 * Bn * D * N * 4 + 4 * Bn * D * 2 + 2 * Bn * N * 2 + D * N * 4 + 2 * D * 4
    rep.say(f"## decode step  batch={Bn} d_inner={D} N={N} (fp32 state, slot-indexed, CUDA-graph replay)")
    rep.say(f"   ssm update minimal bytes {nbytes / 1e6:.1f} MB -> roofline {nbytes / rep.copy_gb_s / 1e3:.1f} us; "
            f"each graph replays {ROT} steps on disjoint slot sets of a {st.numel() * 4 / 1e6:.0f} MB pool (no L2 reuse)")
    cfgs = [(ssu_tri.BD_DEFAULT, ssu_tri.WARPS_DEFAULT)]
    if sweep:
        cfgs += [(16, 2), (32, 2), (32, 4), (64, 4), (128, 8), (256, 8)]
    best, best_ssu = None, cfgs[0]
    for bd, wp in cfgs:
        def steps():
            for sl in slot_sets:
                ssu_tri.ssu(x, dt, A, Bm, Cm, Dv, z, dtb, st, sl, True, out=y, block_d=bd, num_warps=wp)

        r = rep.timing("decode", f"ssm update BD={bd} warps={wp}", ms(steps, graph=True) / ROT, nbytes)
        frac = r["of_copy_bandwidth"]
        rep.say(f"   ssm update BD={bd:3d} warps={wp}: {r['ms'] * 1e3:.1f} us, {r['gb_per_s']:.0f} GB/s = "
                f"{frac:.1%} of copy bw")
        if best is None or frac > best:
            best, best_ssu = frac, (bd, wp)
    cs = torch.randn(S, D, W - 1, device=DEV, dtype=BF, generator=g)
    cw = torch.randn(D, W, device=DEV, dtype=BF, generator=g)
    cb = torch.randn(D, device=DEV, dtype=BF, generator=g)
    cbytes = 2 * Bn * D * (W - 1) * 2 + 2 * Bn * D * 2 + D * W * 2 + D * 2

    def conv_steps():
        for sl in slot_sets:
            conv_tri.conv_update(x, cs, cw, cb, "silu", sl, out=y)

    conv_cfgs = [(conv_tri.UPD_BD, conv_tri.UPD_WARPS)]
    if sweep:
        conv_cfgs += [(256, 4), (512, 4), (512, 8), (1024, 8), (64, 2)]
    best_conv = None
    for bd, wp in conv_cfgs:
        conv_tri.UPD_BD, conv_tri.UPD_WARPS = bd, wp
        r = rep.timing("decode", f"conv update BD={bd} warps={wp}", ms(conv_steps, graph=True) / ROT, cbytes)
        t = r["ms"]
        rep.say(f"   conv update BD={bd:4d} warps={wp}: {t * 1e3:.1f} us, {r['gb_per_s']:.0f} GB/s = "
                f"{r['of_copy_bandwidth']:.1%} of copy bw ({cbytes / 1e6:.1f} MB; strided (D, W-1) state rows)")
        if best_conv is None or t < best_conv[0]:
            best_conv = (t, bd, wp)
    conv_tri.UPD_BD, conv_tri.UPD_WARPS = conv_cfgs[0]
    # Why the conv update is slow: what a launch of its grid costs with no work, and the update without the
    # slot-index load in front of the state load (rows b of a disjoint slice of the pool per step).
    grids = [(Bn, triton.cdiv(D, conv_tri.UPD_BD))]
    if sweep:  # what fewer, larger programs could save at most (several rows per program: measured slower)
        grids += [(Bn // 4, triton.cdiv(D, 256)), (Bn // 8, triton.cdiv(D, 512))]
    for i, grid in enumerate(grids):
        warps = conv_tri.UPD_WARPS if i == 0 else 4
        t = ms(lambda: [_empty_kernel[grid](y, num_warps=warps) for _ in slot_sets], graph=True) / ROT
        rep.timing("decode", f"launch floor, empty kernel, grid {grid}", t)
        where = "the conv update's grid" if i == 0 else "a"
        rep.say(f"   launch floor, empty kernel on {where} {grid}{'' if i == 0 else ' grid'}: {t * 1e3:.1f} us")
    pool_slices = [cs[i * Bn:(i + 1) * Bn] for i in range(ROT)]
    t = ms(lambda: [conv_tri.conv_update(x, c, cw, cb, "silu", None, out=y) for c in pool_slices], graph=True) / ROT
    rep.timing("decode", "conv update without slot indirection", t, cbytes)
    rep.say(f"   conv update without slot indirection (rows = slots): {t * 1e3:.1f} us")

    def full_step(ssu_cfg):
        def steps():
            for sl in slot_sets:
                xc = conv_tri.conv_update(x, cs, cw, cb, "silu", sl)
                ssu_tri.ssu(xc, dt, A, Bm, Cm, Dv, z, dtb, st, sl, True, out=y, block_d=ssu_cfg[0],
                            num_warps=ssu_cfg[1])
        return ms(steps, graph=True) / ROT

    r = rep.timing("decode", "full decode step (conv update + ssm update)", full_step(cfgs[0]), nbytes + cbytes)
    full = r["of_copy_bandwidth"]
    rep.say(f"   full decode step (conv update + ssm update): {r['ms'] * 1e3:.1f} us, {r['gb_per_s']:.0f} GB/s = "
            f"{full:.1%} of copy bw")
    if sweep:  # the fastest conv and SSM configurations together
        conv_tri.UPD_BD, conv_tri.UPD_WARPS = best_conv[1:]
        t = full_step(best_ssu)
        conv_tri.UPD_BD, conv_tri.UPD_WARPS = conv_cfgs[0]
        label = f"conv BD={best_conv[1]} warps={best_conv[2]} + ssm BD={best_ssu[0]} warps={best_ssu[1]}"
        r = rep.timing("decode", f"full decode step, {label}", t, nbytes + cbytes)
        full = max(full, r["of_copy_bandwidth"])
        rep.say(f"   full decode step, {label}: {t * 1e3:.1f} us, {r['gb_per_s']:.0f} GB/s = "
                f"{r['of_copy_bandwidth']:.1%} of copy bw")
    rep.summary["ssm_update_of_copy_bandwidth"] = best
    rep.summary["decode_step_of_copy_bandwidth"] = full


BENCHES = {"scan": bench_scan, "conv": bench_conv, "decode": bench_decode}


def run(rep: Report, sweep: bool = False, only: str | None = None) -> None:
    """The whole benchmark (or one kernel family) into `rep`, whose meta is already set."""
    props = torch.cuda.get_device_properties(0)
    rep.say("# sambay Mamba-1 kernel benchmark")
    rep.header()
    rep.say(f"SMs: {props.multi_processor_count}")
    rep.set_ceilings(*measure_ceilings(DEV))
    rep.say(f"measured copy bandwidth: {rep.copy_gb_s:.0f} GB/s (read + write); "
            f"bf16 matmul 8192^3: {rep.matmul_tflops:.0f} TFLOP/s")
    rep.say()
    for name, bench in BENCHES.items():
        if only in (None, name):
            bench(rep, sweep)
            rep.say()
    rep.say("targets: scan fwd >= 50% of copy bw; fwd+bwd <= 3x fwd; decode step >= 70% of copy bw")
    s = rep.summary
    if "scan_fwd_of_copy_bandwidth" in s:
        rep.say(f"result:  scan fwd {s['scan_fwd_of_copy_bandwidth']:.1%}; fwd+bwd {s['scan_fwd_bwd_x_fwd']:.2f}x")
    if "decode_step_of_copy_bandwidth" in s:
        rep.say(f"result:  ssm update {s['ssm_update_of_copy_bandwidth']:.1%}, full decode step (conv update + "
                f"ssm update) {s['decode_step_of_copy_bandwidth']:.1%} (best cfgs)")
    rep.flush()
