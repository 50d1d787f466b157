"""Where a small-batch decode step loses its time: kernels per step, their summed device time, the graphed
step, and the graphed step of the same function under torch.compile, in one process.

    python tools/decode_overhead.py --preset phi4-mini-flash --batch 1 16 --context 4096 [--no-compile]

Random bf16 weights; the K/V caches and Mamba states hold random values. For each batch size: one eager
step under torch.profiler (kernel count and summed kernel time per step), then `GraphedDecoder` replays
(median of `--steps`), then the same with the step compiled by inductor (`GraphedDecoder(compile=True)`), with
its compile and capture time and the relative logit difference to the eager step from the same state.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import sambay.engine.cuda_graphs as cuda_graphs  # noqa: E402
from sambay.bench.generate import measure_bandwidth, random_model, step_bytes  # noqa: E402
from sambay.bench.meta import header_lines, metadata  # noqa: E402
from sambay.config import ModelConfig  # noqa: E402
from sambay.engine.decode import decode_step  # noqa: E402
from sambay.engine.state import InferenceState  # noqa: E402


def kernel_stats(step, model, state, tokens, slots, context):
    """(kernels per step, summed kernel time per step in ms, the profile) of one un-graphed `step`."""
    state.lengths[slots] = context
    step(model, state, tokens, slots)
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        state.lengths[slots] = context
        step(model, state, tokens, slots)
        torch.cuda.synchronize()
    kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    launches = [e for e in kernels if not e.name.startswith(("Memcpy", "Memset"))]
    return len(launches), sum(e.device_time for e in launches) / 1e3, prof


def graphed_ms(decoder, state, tokens, slots, context, steps):
    times = []
    for i in range(steps + 3):
        state.lengths[slots] = context
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        decoder.step(tokens, slots)
        end.record()
        end.synchronize()
        if i >= 3:
            times.append(start.elapsed_time(end))
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="phi4-mini-flash")
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 16])
    ap.add_argument("--context", type=int, default=4096)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--top", type=int, default=15)
    ap.add_argument("--no-compile", action="store_true")
    args = ap.parse_args()
    dev = torch.device("cuda")
    print(f"# decode step overhead ({args.preset}, random bf16 weights, context {args.context})")
    print("\n".join(header_lines(metadata(dev))))
    bandwidth = measure_bandwidth(dev)
    print(f"measured copy bandwidth: {bandwidth / 1e9:.0f} GB/s (read + write)")
    config = ModelConfig.from_preset(args.preset)
    torch.manual_seed(0)
    model = random_model(config, torch.bfloat16, dev)
    n_params = model.num_parameters()
    for batch in args.batch:
        state = InferenceState(config, batch + 3, args.context + 8, torch.bfloat16, dev)
        slots = torch.tensor([state.acquire() for _ in range(batch)], device=dev)
        for layer in state.layers:
            for t in layer.values():
                t.normal_()
        tokens = torch.randint(0, config.vocab_size, (batch,), device=dev)
        roof = step_bytes(config, n_params, batch, args.context, torch.bfloat16) / bandwidth * 1e3
        n, kernel_ms, prof = kernel_stats(decode_step, model, state, tokens, slots, args.context)
        print(f"\n## batch {batch}: roofline {roof:.3f} ms")
        print(f"eager step: {n} kernels, {kernel_ms:.3f} ms of summed kernel time ({kernel_ms / n * 1e3:.1f} us each)")
        print(prof.key_averages().table(sort_by="self_device_time_total", row_limit=args.top,
                                        max_name_column_width=60))
        saved = [{k: t.clone() for k, t in layer.items()} for layer in state.layers]

        def restore(state=state, saved=saved):
            for layer, copy in zip(state.layers, saved):
                for k, t in layer.items():
                    t.copy_(copy[k])
            state.lengths[slots] = args.context

        eager = cuda_graphs.GraphedDecoder(model, state, buckets=(batch,))
        t_eager = graphed_ms(eager, state, tokens, slots, args.context, args.steps)
        print(f"graphed step: {t_eager:.3f} ms ({roof / t_eager:.1%} of roofline; "
              f"kernel time {kernel_ms / t_eager:.0%} of it)")
        if args.no_compile:
            continue
        restore()
        ref = eager.step(tokens, slots).float().clone()
        # what two correct implementations of the step differ by in bf16 on this random model: the eager
        # step with every sambay op on its PyTorch reference against the Triton one
        restore()
        os.environ["SAMBAY_KERNELS"] = "reference"
        try:
            alt = decode_step(model, state, tokens, slots).float()
        finally:
            del os.environ["SAMBAY_KERNELS"]
        print(f"logits ||reference ops - Triton ops|| / ||Triton ops|| (eager): "
              f"{((alt - ref).norm() / ref.norm()).item():.1e}")
        t0 = time.perf_counter()
        compiled = cuda_graphs.GraphedDecoder(model, state, buckets=(batch,), compile=True)
        restore()
        out = compiled.step(tokens, slots).float()
        compile_s = time.perf_counter() - t0
        err = ((out - ref).norm() / ref.norm()).item()
        n_c, kernel_c, _ = kernel_stats(cuda_graphs.compiled_decode_step(), model, state, tokens, slots,
                                        args.context)
        t_comp = graphed_ms(compiled, state, tokens, slots, args.context, args.steps)
        print(f"compiled + graphed step: {t_comp:.3f} ms ({roof / t_comp:.1%} of roofline); compile + capture "
              f"{compile_s:.0f} s; logits ||compiled - eager|| / ||eager||: {err:.1e}; compiled/eager "
              f"{t_comp / t_eager:.3f}; un-graphed: {n_c} kernels, {kernel_c:.3f} ms of kernel time")
        del eager, compiled, state, saved
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
