"""Benchmark the Mamba-1 Triton kernels against the device's measured ceilings.

    python benchmarks/kernels.py [--sweep] [--out FILE]

Measures, in one run on one GPU: device-to-device copy bandwidth (bytes read + written) and bf16 matmul
TFLOP/s; then the selective scan forward (inference, no saved states), forward with saved states
(training), forward + backward, the sequential PyTorch reference at a smaller size, the causal conv1d,
and the decode step (conv update + fused SSM update) at batch 64 x d_inner 5120. Times are medians from
`triton.testing.do_bench` (warm-up excluded); the decode kernels are timed as CUDA-graph replays
(`do_bench_cudagraph`) because a single launch is shorter than Python's launch overhead.

Achieved bandwidth counts minimal bytes (every input read once, every output written once) and is
reported as a fraction of the measured copy bandwidth. `--sweep` also times block-size variants.
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys

import torch
import triton
from triton.testing import do_bench, do_bench_cudagraph

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from sambay.ops.causal_conv1d import triton as conv_tri  # noqa: E402
from sambay.ops.selective_scan import reference as scan_ref  # noqa: E402
from sambay.ops.selective_scan import triton as scan_tri  # noqa: E402
from sambay.ops.selective_state_update import triton as ssu_tri  # noqa: E402

DEV = "cuda"
BF = torch.bfloat16
out_lines: list[str] = []


def say(msg: str = "") -> None:
    print(msg, flush=True)
    out_lines.append(msg)


def ms(fn, graph=False) -> float:
    if graph:
        return do_bench_cudagraph(fn, rep=200, return_mode="median")
    return do_bench(fn, warmup=50, rep=300, return_mode="median")


def ceilings():
    n = 1 << 29  # 2^29 bf16 elements = 1 GiB per buffer
    a = torch.randn(n, device=DEV, dtype=BF)
    b = torch.empty_like(a)
    t = ms(lambda: b.copy_(a))
    copy_bw = 2 * a.numel() * a.element_size() / t / 1e6  # GB/s
    a = b = None  # free the buffers (rebinding keeps the closures above valid)
    m = 8192
    x = torch.randn(m, m, device=DEV, dtype=BF)
    y = torch.randn(m, m, device=DEV, dtype=BF)
    t = ms(lambda: x @ y)
    tflops = 2 * m**3 / t / 1e9
    return copy_bw, tflops


def sweep_variants(kind, names, configs, make, outputs, nbytes, copy_bw):
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
                say(f"   {kind} variant {label}: FAILED {type(e).__name__}: {e}"[:300])
                continue
            ref = got if cfg == default else ref
            err = max(rel_err(g, r) for g, r in zip(got, ref)) if ref is not None else float("nan")
            results[cfg] = t
            say(f"   {kind} variant {label}: {t:.3f} ms  (outputs vs default: {err:.1e})  "
                f"{nbytes / t / 1e6:.0f} GB/s = {nbytes / t / 1e6 / copy_bw:.1%} of copy bw  [{regs}]")
    finally:
        for n, v in zip(names, default):
            setattr(scan_tri, n, v)
    if len(configs) > 1 and results:
        best = min(results, key=results.get)
        say(f"   best {kind} variant: {best} {results[best]:.3f} ms")
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


def bench_scan(copy_bw, sweep):
    Bn, T, D, N = 8, 4096, 4096, 16
    u, delta, A, Bm, Cm, Dv, z, dtb = scan_inputs(Bn, T, D, N)
    fwd_bytes, bwd_bytes = scan_bytes(Bn, T, D, N)
    say(f"## selective scan  B={Bn} T={T} D={D} N={N} bf16, z + D + delta_bias (softplus)")
    say(f"   minimal bytes: fwd {fwd_bytes / 1e9:.3f} GB, bwd {bwd_bytes / 1e9:.3f} GB; "
        f"fwd roofline {fwd_bytes / copy_bw / 1e6:.3f} ms")
    exps = Bn * T * D * N
    say(f"   exp count {exps / 1e9:.2f} G (H100 MUFU ex2 ~16/clk/SM: ~{exps / (132 * 16 * 1.755e9) * 1e3:.2f} ms floor)")

    def fwd(save=False):
        return scan_tri.scan_fwd(u, delta, A, Bm, Cm, Dv, z, dtb, None, None, True, save)

    # inference forward variants: (prefetch rings for u/delta/z and for B/C rows in tokens, max warps per
    # program, time segments (0: automatic), unmasked clamped loads)
    names = ("FWD_ONEPASS_RING", "FWD_ONEPASS_BC_RING", "FWD_WARPS", "FWD_SEGMENTS", "FWD_CLAMP")
    configs = [tuple(getattr(scan_tri, n) for n in names)]
    if sweep:
        configs += [(8, 8, 8, 0, False), (1, 1, 8, 0, True), (2, 2, 8, 0, True), (4, 4, 8, 0, True),
                    (8, 8, 2, 0, True)]
    sweep_variants("fwd", names, configs, lambda: (lambda: fwd(False)), lambda r: r[:1], fwd_bytes, copy_bw)
    t_inf = ms(lambda: fwd(False))
    t_train = ms(lambda: fwd(True))
    if sweep:  # training forward (saving states) variants: (prefetch rings)
        sweep_variants("training fwd", ("FWD_ONEPASS_RING", "FWD_ONEPASS_BC_RING"),
                       [(scan_tri.FWD_ONEPASS_RING, scan_tri.FWD_ONEPASS_BC_RING), (4, 4), (2, 2)],
                       lambda: (lambda: fwd(True)), lambda r: r[:1], fwd_bytes, copy_bw)
    say(f"   scan fwd (inference, default cfg): {t_inf:.3f} ms, {fwd_bytes / t_inf / 1e6:.0f} GB/s = "
        f"{fwd_bytes / t_inf / 1e6 / copy_bw:.1%} of copy bw")
    say(f"   scan fwd (training, saves chunk states): {t_train:.3f} ms")

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
    sweep_variants("bwd", bnames, bcfgs, bwd_variant, lambda r: r[:5], bwd_bytes, copy_bw)

    def fwd_bwd():
        y, hT, hs = fwd(True)
        return scan_tri.scan_bwd(dy, None, u, delta, A, Bm, Cm, Dv, z, dtb, None, hs, True)

    t_fb = ms(fwd_bwd)
    say(f"   scan fwd+bwd (default cfg): {t_fb:.3f} ms = {t_fb / t_inf:.2f}x inference fwd, "
        f"{t_fb / t_train:.2f}x training fwd; {(fwd_bytes + bwd_bytes) / t_fb / 1e6 / copy_bw:.1%} of copy bw")

    # autograd path (what training calls), for the overhead of the wrapper
    leaves = [t.detach().requires_grad_() for t in (u, delta, Bm, Cm)]

    def autograd_step():
        for leaf in leaves:  # a fresh .grad each step: accumulating into the previous one would add 4 tensor adds
            leaf.grad = None
        yy = scan_tri.selective_scan(leaves[0], leaves[1], A, leaves[2], leaves[3], Dv, z, dtb)
        yy.backward(dy)

    t_ag = ms(autograd_step)
    say(f"   scan fwd+bwd through autograd.Function: {t_ag:.3f} ms")
    u = delta = z = y = dy = None
    torch.cuda.empty_cache()

    # a training shape: SambaY d8 (d_inner 1984) at 4 x 4096 tokens per micro-batch, where the (batch, channel)
    # grid is 4x smaller than above
    Bt, Dt = 4, 1984
    u, delta, A, Bm, Cm, Dv, z, dtb = scan_inputs(Bt, T, Dt, N)
    fb, bb = scan_bytes(Bt, T, Dt, N)
    y, hT, hs = scan_tri.scan_fwd(u, delta, A, Bm, Cm, Dv, z, dtb, None, None, True, True)
    dy = torch.randn_like(y)
    tf = ms(lambda: scan_tri.scan_fwd(u, delta, A, Bm, Cm, Dv, z, dtb, None, None, True, True))
    tb = ms(lambda: scan_tri.scan_bwd(dy, None, u, delta, A, Bm, Cm, Dv, z, dtb, None, hs, True))
    say(f"   training shape B={Bt} T={T} D={Dt}: fwd (saving states) {tf:.3f} ms = {fb / tf / 1e6 / copy_bw:.1%} "
        f"of copy bw; bwd {tb:.3f} ms = {bb / tb / 1e6 / copy_bw:.1%}")
    if sweep:
        fnames = ("FWD_SEGMENTS", "FWD_RING", "FWD_BC_RING")  # time segments (0: automatic), prefetch rings
        fcfgs = [tuple(getattr(scan_tri, n) for n in fnames)]
        fcfgs += [(1, 4, 4), (4, 4, 4), (0, 8, 8), (0, 8, 2), (0, 1, 1)]
        sweep_variants("training-shape fwd", fnames, fcfgs,
                       lambda: (lambda: scan_tri.scan_fwd(u, delta, A, Bm, Cm, Dv, z, dtb, None, None, True, True)),
                       lambda r: r[:1], fb, copy_bw)
        tcfgs = [tuple(getattr(scan_tri, n) for n in bnames)]
        tcfgs += [(8, 1, 0, False)] + [(8, 1, segs, True) for segs in (4, 8)]
        sweep_variants("training-shape bwd", bnames, tcfgs,
                       lambda: (lambda: scan_tri.scan_bwd(dy, None, u, delta, A, Bm, Cm, Dv, z, dtb, None, hs, True)),
                       lambda r: r[:5], bb, copy_bw)
    u = delta = z = y = dy = hs = None

    # the sequential PyTorch reference at a smaller size, and the kernel at the same size
    Bn2, T2, D2 = 2, 512, 1024
    u, delta, A, Bm, Cm, Dv, z, dtb = scan_inputs(Bn2, T2, D2, N)
    with torch.no_grad():
        t_ref = do_bench(lambda: scan_ref.selective_scan(u, delta, A, Bm, Cm, Dv, z, dtb), warmup=1, rep=20,
                         return_mode="median")
    t_tri = ms(lambda: scan_tri.scan_fwd(u, delta, A, Bm, Cm, Dv, z, dtb, None, None, True, False))
    say(f"   reference (sequential torch) fwd at B={Bn2} T={T2} D={D2}: {t_ref:.2f} ms vs Triton "
        f"{t_tri:.3f} ms ({t_ref / t_tri:.0f}x)")
    return t_inf, t_fb


def bench_conv(copy_bw, sweep=False):
    Bn, T, D, W = 8, 4096, 4096, 4
    g = torch.Generator(device=DEV).manual_seed(1)
    x = torch.randn(Bn, T, D, device=DEV, dtype=BF, generator=g)
    w = torch.randn(D, W, device=DEV, dtype=BF, generator=g)
    b = torch.randn(D, device=DEV, dtype=BF, generator=g)
    nbytes = 2 * x.numel() * 2
    t = ms(lambda: conv_tri.conv_fwd(x, w, b, "silu", None, None))
    say(f"## causal conv1d  B={Bn} T={T} D={D} W={W} bf16 + SiLU")
    say(f"   fwd: {t:.3f} ms, {nbytes / t / 1e6:.0f} GB/s = {nbytes / t / 1e6 / copy_bw:.1%} of copy bw")
    dout = torch.randn_like(x)
    tb = ms(lambda: conv_tri.conv_bwd(dout, x, w, b, "silu", None, None, None, False))
    bb = 3 * x.numel() * 2  # x, dout in; dx out (the fp32 dpre round trip is extra traffic)
    say(f"   bwd: {tb:.3f} ms, {bb / tb / 1e6:.0f} GB/s = {bb / tb / 1e6 / copy_bw:.1%} of copy bw (minimal bytes)")


@triton.jit
def _empty_kernel(ptr):
    pass


def bench_decode(copy_bw, sweep):
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
    say(f"## decode step  batch={Bn} d_inner={D} N={N} (fp32 state, slot-indexed, CUDA-graph replay)")
    say(f"   ssm update minimal bytes {nbytes / 1e6:.1f} MB -> roofline {nbytes / copy_bw / 1e3:.1f} us; each graph "
        f"replays {ROT} steps on disjoint slot sets of a {st.numel() * 4 / 1e6:.0f} MB pool (no L2 reuse)")
    cfgs = [(ssu_tri.BD_DEFAULT, ssu_tri.WARPS_DEFAULT)]
    if sweep:
        cfgs += [(16, 2), (32, 2), (32, 4), (64, 4), (128, 8), (256, 8)]
    best, best_ssu = None, cfgs[0]
    for bd, wp in cfgs:
        def steps():
            for sl in slot_sets:
                ssu_tri.ssu(x, dt, A, Bm, Cm, Dv, z, dtb, st, sl, True, out=y, block_d=bd, num_warps=wp)

        t = ms(steps, graph=True) / ROT
        frac = nbytes / t / 1e6 / copy_bw
        say(f"   ssm update BD={bd:3d} warps={wp}: {t * 1e3:.1f} us, {nbytes / t / 1e6:.0f} GB/s = {frac:.1%} of copy bw")
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
        t = ms(conv_steps, graph=True) / ROT
        say(f"   conv update BD={bd:4d} warps={wp}: {t * 1e3:.1f} us, {cbytes / t / 1e6:.0f} GB/s = "
            f"{cbytes / t / 1e6 / copy_bw:.1%} of copy bw ({cbytes / 1e6:.1f} MB; strided (D, W-1) state rows)")
        if best_conv is None or t < best_conv[0]:
            best_conv = (t, bd, wp)
    conv_tri.UPD_BD, conv_tri.UPD_WARPS = conv_cfgs[0]
    # Why the conv update is slow: what a launch of its grid costs with no work, and the update without the
    # slot-index load in front of the state load (rows b of a disjoint slice of the pool per step).
    grid = (Bn, triton.cdiv(D, conv_tri.UPD_BD))
    t = ms(lambda: [_empty_kernel[grid](y, num_warps=conv_tri.UPD_WARPS) for _ in slot_sets], graph=True) / ROT
    say(f"   launch floor, empty kernel on the conv update's grid {grid}: {t * 1e3:.1f} us")
    if sweep:  # what fewer, larger programs could save at most (several rows per program: measured slower)
        for small in ((Bn // 4, triton.cdiv(D, 256)), (Bn // 8, triton.cdiv(D, 512))):
            t = ms(lambda: [_empty_kernel[small](y, num_warps=4) for _ in slot_sets], graph=True) / ROT
            say(f"   launch floor, empty kernel on a {small} grid: {t * 1e3:.1f} us")
    pool_slices = [cs[i * Bn:(i + 1) * Bn] for i in range(ROT)]
    t = ms(lambda: [conv_tri.conv_update(x, c, cw, cb, "silu", None, out=y) for c in pool_slices], graph=True) / ROT
    say(f"   conv update without slot indirection (rows = slots): {t * 1e3:.1f} us")

    def full_step(ssu_cfg):
        def steps():
            for sl in slot_sets:
                xc = conv_tri.conv_update(x, cs, cw, cb, "silu", sl)
                ssu_tri.ssu(xc, dt, A, Bm, Cm, Dv, z, dtb, st, sl, True, out=y, block_d=ssu_cfg[0],
                            num_warps=ssu_cfg[1])
        return ms(steps, graph=True) / ROT

    tb = nbytes + cbytes
    t = full_step(cfgs[0])
    full = tb / t / 1e6 / copy_bw
    say(f"   full decode step (conv update + ssm update): {t * 1e3:.1f} us, {tb / t / 1e6:.0f} GB/s = "
        f"{full:.1%} of copy bw")
    if sweep:  # the fastest conv and SSM configurations together
        conv_tri.UPD_BD, conv_tri.UPD_WARPS = best_conv[1:]
        t = full_step(best_ssu)
        conv_tri.UPD_BD, conv_tri.UPD_WARPS = conv_cfgs[0]
        frac = tb / t / 1e6 / copy_bw
        full = max(full, frac)
        say(f"   full decode step, conv BD={best_conv[1]} warps={best_conv[2]} + ssm BD={best_ssu[0]} "
            f"warps={best_ssu[1]}: {t * 1e3:.1f} us, {tb / t / 1e6:.0f} GB/s = {frac:.1%} of copy bw")
    return best, full


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sweep", action="store_true", help="also time block-size variants")
    ap.add_argument("--out", default=None, help="also write the report to this file")
    ap.add_argument("--only", choices=("scan", "conv", "decode"), help="benchmark one kernel family")
    args = ap.parse_args()
    props = torch.cuda.get_device_properties(0)
    say("# sambay Mamba-1 kernel benchmark")
    say(f"device: {props.name} ({props.multi_processor_count} SMs), torch {torch.__version__}, triton {triton.__version__}")
    say(f"date: {datetime.datetime.now(datetime.UTC).isoformat(timespec='seconds')}")
    say(f"command: python {' '.join(sys.argv)}")
    copy_bw, tflops = ceilings()
    say(f"measured copy bandwidth: {copy_bw:.0f} GB/s (read + write); bf16 matmul 8192^3: {tflops:.0f} TFLOP/s")
    say()
    results = {}
    for name, bench in (("scan", bench_scan), ("conv", bench_conv), ("decode", bench_decode)):
        if args.only in (None, name):
            results[name] = bench(copy_bw, args.sweep)
            say()
    say("targets: scan fwd >= 50% of copy bw; fwd+bwd <= 3x fwd; decode step >= 70% of copy bw")
    if "scan" in results:
        t_inf, t_fb = results["scan"]
        say(f"result:  scan fwd {scan_bytes(8, 4096, 4096, 16)[0] / t_inf / 1e6 / copy_bw:.1%}; "
            f"fwd+bwd {t_fb / t_inf:.2f}x")
    if "decode" in results:
        ssu, full = results["decode"]
        say(f"result:  ssm update {ssu:.1%}, full decode step (conv update + ssm update) {full:.1%} (best cfgs)")
    if args.out:
        with open(args.out, "w") as f:
            f.write("\n".join(out_lines) + "\n")


if __name__ == "__main__":
    main()
