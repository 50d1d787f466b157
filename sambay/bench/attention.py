"""`sambay bench attention`: attention on one GPU, decode (split-K Triton) and prefill (SDPA / flex / varlen).

Measures the two ceilings in the same run (device-to-device copy bandwidth counting bytes read + written;
an 8192^3 bf16 matmul), then:
  * decode attention at B = 64 x 32K context, Phi-4-flash dims (H 40, G 20, hs 64), all sequences full
    and ragged, plus differential attention (both softmaxes of a KV head pair in one pass over
    [v_2g || v_2g+1]): achieved GB/s (bytes = every valid K and V byte read once + q + out)
    vs the measured copy bandwidth; `sweep` also times n_splits variants (`full_sweep`: tiles too);
  * prefill at B = 8, T = 4096, H 16, G 4, hs 128: full causal through each SDPA backend, sliding window
    512 through flex / varlen, forward and forward + backward: TFLOP/s counting only unmasked pairs
    (backward = 2.5x forward) vs the measured matmul rate; also dv = 2*hs (differential attention).
Times are medians of triton.testing.do_bench (warm-up excluded). Every case is guarded: a failure prints
its error and the run goes on; `budget_s` stops starting new cases when the time is spent.
"""

from __future__ import annotations

import inspect
import time
import traceback

import torch

from sambay.bench.report import Report, do_bench_ms, measure_ceilings
from sambay.ops.attention import decode_triton as dtri
from sambay.ops.attention import prefill as pf


class _Run:
    """One benchmark run: its report, its time budget and whether tile variants are timed too."""

    def __init__(self, rep: Report, budget_s: float, full_sweep: bool):
        self.rep, self.deadline, self.full_sweep = rep, time.time() + budget_s, full_sweep

    def guarded(self, section: str, label: str, fn):
        """fn() unless the budget is spent; a failure is printed and recorded, and the run goes on."""
        if time.time() > self.deadline:
            self.rep.say(f"{label}: skipped (budget spent)")
            self.rep.failure(section, label, "skipped (budget spent)")
            return None
        try:
            return fn()
        except Exception as e:  # keep going, but say what broke
            msg = f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"
            self.rep.say(f"{label}: FAILED {msg}")
            self.rep.failure(section, label, msg)
            traceback.print_exc()
            return None


# --------------------------------------------------------------------------------------------- decode
def decode_bytes(B, n_kv, lens, hs, dv, H, n_out=1, esize=2):
    """Bytes one call must move: every valid K and V element once, q, and the output (n_out x dv wide)."""
    tokens = int(lens.sum().item())
    return tokens * n_kv * (hs + dv) * esize + B * H * hs * esize + B * H * dv * n_out * esize


def decode_section(run: _Run, sweep: bool):
    rep = run.rep
    B, H, G, hs, N = 64, 40, 20, 64, 32768
    torch.manual_seed(0)
    kc = torch.randn(B, G, N, hs, device="cuda", dtype=torch.bfloat16)
    vc = torch.randn(B, G, N, hs, device="cuda", dtype=torch.bfloat16)
    q = torch.randn(B, H, hs, device="cuda", dtype=torch.bfloat16)
    full = torch.full((B,), N, device="cuda", dtype=torch.int32)
    ragged = torch.randint(1, N + 1, (B,), device="cuda", dtype=torch.int32)
    slots = torch.randperm(B, device="cuda").to(torch.int32)
    rep.say(f"\n== decode attention: B={B} N={N} H={H} G={G} hs={hs} bf16, cache {2 * kc.numel() * 2 / 1e9:.2f} GB; "
            f"default n_splits={dtri.default_splits(B, G, N, q.device)} block_n={dtri.BLOCK_N_DEFAULT} "
            f"warps={dtri.NUM_WARPS_DEFAULT} stages={dtri.NUM_STAGES_DEFAULT}")
    rep.say(f"{'case':<44} {'ms':>8} {'GB/s':>8} {'% of copy bw':>13}")

    ref_out = {}

    def plain(*args, **kw):
        return dtri.decode_attention(*args, **kw)

    def diff(*args, **kw):  # both softmaxes in one kernel; [o1; o2] along heads
        return torch.cat(dtri.decode_diff_attention(*args, **kw), dim=1)

    v_pair = torch.cat([vc[:, 0::2], vc[:, 1::2]], -1)  # (B, G/2, N, 2hs), built once outside the timing

    def two_calls(q, k, v, lens, slots):  # one plain call per softmax: each reads all of V
        o1 = dtri.decode_attention(q[:, 0::2], k[:, 0::2], v_pair, lens, slots)
        return torch.cat([o1, dtri.decode_attention(q[:, 1::2], k[:, 1::2], v_pair, lens, slots)], 1)

    def one(label, fn, args, nbytes, **kw):
        def go():
            out = fn(*args, **kw)
            key = (fn, id(args[0]), id(args[3]))
            if key in ref_out:  # every variant must compute the same function as the default config
                err = ((out.float() - ref_out[key]).norm() / ref_out[key].norm()).item()
                if not err < 1e-2:
                    raise AssertionError(f"differs from the default config: rel err {err:.2e}")
            else:
                ref_out[key] = out.float()
            row = rep.timing("decode", label, do_bench_ms(lambda: fn(*args, **kw), warmup=25, rep=100), nbytes)
            rep.say(f"{label:<44} {row['ms']:8.3f} {row['gb_per_s']:8.0f} {100 * row['of_copy_bandwidth']:12.1f}%")
            return row["gb_per_s"]
        return run.guarded("decode", label, go)

    plain_full = (q, kc, vc, full, slots)
    nb_full = decode_bytes(B, G, full, hs, hs, H)
    best = one("plain, all 32K (default)", plain, plain_full, nb_full)
    one("plain, ragged lengths (default)", plain, (q, kc, vc, ragged, slots), decode_bytes(B, G, ragged, hs, hs, H))
    nb_da = decode_bytes(B, G, full, hs, hs, H, n_out=2)
    one("diff-attn, all 32K (default)", diff, plain_full, nb_da)
    one("diff-attn, ragged (default)", diff, (q, kc, vc, ragged, slots), decode_bytes(B, G, ragged, hs, hs, H, 2))
    one("diff-attn as two plain calls (V read twice)", two_calls, plain_full, nb_da)
    # SWA ring buffer: 512 slots per sequence (a strided view of the big cache stands in for the ring)
    swa_lens = torch.full((B,), 512, device="cuda", dtype=torch.int32)
    one("plain, SWA ring 512 (default)", plain, (q, kc[:, :, :512], vc[:, :, :512], swa_lens, slots),
        decode_bytes(B, G, swa_lens, hs, hs, H))
    # small batch: split-K matters most here
    small = (q[:4], kc, vc, full[:4], slots[:4])
    one("plain, B=4 all 32K (default)", plain, small, decode_bytes(4, G, full[:4], hs, hs, H))
    if sweep:
        for ns in (1, 2, 8, 16):
            one(f"plain all 32K n_splits={ns}", plain, plain_full, nb_full, n_splits=ns)
        for ns in (1, 4, 16, 64):
            one(f"plain B=4 n_splits={ns}", plain, small, decode_bytes(4, G, full[:4], hs, hs, H), n_splits=ns)
        if run.full_sweep:
            for bn, w, st in ((32, 2, 3), (64, 2, 3), (64, 4, 2), (64, 4, 4), (128, 4, 3), (128, 8, 3),
                              (64, 8, 3), (128, 4, 2), (256, 8, 2)):
                for ns in (2, 8):
                    one(f"plain all 32K ns={ns} bn={bn} w={w} st={st}", plain, plain_full, nb_full,
                        n_splits=ns, block_n=bn, num_warps=w, num_stages=st)
        for ns in (1, 2, 8, 16):
            one(f"diff-attn all 32K n_splits={ns}", diff, plain_full, nb_da, n_splits=ns)
        for bn, w, st in ((32, 4, 3), (64, 8, 3), (128, 8, 2), (32, 2, 4)):
            one(f"diff-attn all 32K bn={bn} w={w} st={st}", diff, plain_full, nb_da,
                block_n=bn, num_warps=w, num_stages=st)
    del kc, vc
    torch.cuda.empty_cache()
    if best is not None:
        rep.summary["decode_gb_per_s"] = best
        rep.summary["decode_of_copy_bandwidth"] = best / rep.copy_gb_s


# -------------------------------------------------------------------------------------------- prefill
def prefill_section(run: _Run, sweep: bool):
    rep = run.rep
    B, T, H, G, hs = 8, 4096, 16, 4, 128
    rep.say(f"\n== prefill attention: B={B} T={T} H={H} G={G} hs={hs} bf16 (FLOPs: unmasked pairs only; bwd = 2.5x fwd)")
    rep.say(f"torch {torch.__version__}: varlen_attn with window_size+enable_gqa: {pf.varlen_available()}")
    try:
        from torch.nn.attention.varlen import varlen_attn
        rep.say(f"varlen_attn signature: {inspect.signature(varlen_attn)}")
    except Exception as e:
        rep.say(f"varlen_attn: not importable ({e})")
    rep.say(f"{'case':<58} {'fwd ms':>8} {'TFLOP/s':>8} {'%pk':>5} {'f+b ms':>8} {'TFLOP/s':>8} {'%pk':>5}")
    torch.manual_seed(1)

    def one(label, fn, flops, dvm=1):
        def go():
            q = torch.randn(B, T, H, hs, device="cuda", dtype=torch.bfloat16, requires_grad=True)
            k = torch.randn(B, T, G, hs, device="cuda", dtype=torch.bfloat16, requires_grad=True)
            v = torch.randn(B, T, G, dvm * hs, device="cuda", dtype=torch.bfloat16, requires_grad=True)
            with torch.no_grad():
                fn(q, k, v)
                ms_f = do_bench_ms(lambda: fn(q, k, v), warmup=25, rep=100)
            out = fn(q, k, v)
            go_ = torch.randn_like(out)

            def fb():
                o = fn(q, k, v)
                torch.autograd.grad(o, (q, k, v), go_)

            fb()
            f = rep.timing("prefill", f"{label} fwd", ms_f, flops=flops)
            b = rep.timing("prefill", f"{label} fwd+bwd", do_bench_ms(fb, warmup=10, rep=50), flops=3.5 * flops)
            rep.say(f"{label:<58} {f['ms']:8.3f} {f['tflops']:8.0f} {100 * f['of_matmul_peak']:4.0f}% "
                    f"{b['ms']:8.3f} {b['tflops']:8.0f} {100 * b['of_matmul_peak']:4.0f}%")
        return run.guarded("prefill", label, go)

    scale = hs ** -0.5
    for dvm in (1, 2):
        fl_full = pf.causal_flops(B, T, H, hs, dvm * hs)
        fl_swa = pf.causal_flops(B, T, H, hs, dvm * hs, 512)
        tag = "" if dvm == 1 else " dv=2hs"
        rep.say(f"-- full causal{tag}")
        combos = [("flash", True, False), ("cudnn", True, False), ("cudnn", False, False)]
        if run.full_sweep:  # EFFICIENT: no native GQA, 2-3x slower than cuDNN in the first H100 run
            combos += [("efficient", False, False)]
        if dvm == 2:
            combos = [(n, g, s) for n, g, _ in combos for s in (False, True)]
        for name, gqa, split in combos:
            one(f"sdpa {name:<9} gqa={'native' if gqa else 'repeat'}{' split-v' if split else ''}{tag}",
                lambda q, k, v, n=name, g=gqa, s=split: pf.sdpa_causal(q, k, v, scale, n, g, s), fl_full, dvm)
        one(f"auto (prefill_attention){tag}", lambda q, k, v: pf.prefill_attention(q, k, v), fl_full, dvm)
        rep.say(f"-- sliding window 512{tag}")
        one(f"flex window 512{tag}", lambda q, k, v: pf.prefill_attention(q, k, v, window=512, backend="flex"), fl_swa, dvm)
        if pf.varlen_available():
            one(f"varlen window 512{tag}",
                lambda q, k, v: pf.prefill_attention(q, k, v, window=512, backend="varlen"), fl_swa, dvm)
        one(f"auto window 512{tag}", lambda q, k, v: pf.prefill_attention(q, k, v, window=512), fl_swa, dvm)
        if dvm == 1:
            # documents: 4 per row (lengths 1024), FLOPs of the unmasked pairs only
            doc = (torch.arange(T, device="cuda") // 1024).to(torch.int32).expand(B, T).contiguous()
            fl_doc = pf.causal_flops(B, T, H, hs, hs, None, [1024] * 4 * B)
            fl_doc_swa = pf.causal_flops(B, T, H, hs, hs, 512, [1024] * 4 * B)
            rep.say("-- documents (4 x 1024 per row)")
            one("flex docs full", lambda q, k, v: pf.prefill_attention(q, k, v, document_ids=doc, backend="flex"), fl_doc)
            one("flex docs window 512",
                lambda q, k, v: pf.prefill_attention(q, k, v, window=512, document_ids=doc, backend="flex"), fl_doc_swa)
            if pf.varlen_available():
                one("varlen docs full", lambda q, k, v: pf.prefill_attention(q, k, v, document_ids=doc, backend="varlen"), fl_doc)
                one("varlen docs window 512",
                    lambda q, k, v: pf.prefill_attention(q, k, v, window=512, document_ids=doc, backend="varlen"),
                    fl_doc_swa)

            def block_masks():
                d2 = doc.clone()
                t = time.time()
                pf._BLOCK_MASKS.clear()
                pf.block_mask_for(B, T, 512, d2, d2.device)
                torch.cuda.synchronize()
                first = rep.timing("prefill", "block mask build with documents, first call incl. compile",
                                   1e3 * (time.time() - t))
                rep.say(f"block mask build with documents (B={B}, T={T}), first call incl. compile: {first['ms']:.0f} ms")
                ms = do_bench_ms(lambda: (pf._BLOCK_MASKS.clear(), pf.block_mask_for(B, T, 512, d2, d2.device)),
                                 warmup=3, rep=20)
                rep.timing("prefill", "block mask build with documents, steady state", ms)
                rep.say(f"block mask build with documents, steady state: {ms:.2f} ms per build (once per forward per window)")
            run.guarded("prefill", "block mask build", block_masks)


def run(rep: Report, sweep: bool = False, full_sweep: bool = False, budget_s: float = 1e9,
        decode: bool = True, prefill: bool = True) -> None:
    """The whole benchmark into `rep`, whose meta is already set."""
    t0 = time.time()
    state = _Run(rep, budget_s, full_sweep)
    props = torch.cuda.get_device_properties(0)
    rep.header()
    rep.say(f"SMs: {props.multi_processor_count}, memory {props.total_memory / 2**30:.0f} GiB, "
            f"cudnn {torch.backends.cudnn.version()}")
    rep.set_ceilings(*measure_ceilings("cuda"))
    rep.say(f"copy bandwidth (read+write, 1 GiB): {rep.copy_gb_s:.0f} GB/s   "
            f"bf16 matmul 8192^3: {rep.matmul_tflops:.0f} TFLOP/s")
    if decode:
        decode_section(state, sweep)
    if prefill:
        prefill_section(state, sweep)
    rep.say(f"\ntotal wall time {time.time() - t0:.0f} s")
    rep.flush()
