"""Training throughput of one preset/depth: tokens/s and MFU against the measured bf16 matmul peak.

    python benchmarks/train_throughput.py --preset sambay --depth 8 --steps 20 [--data DIR|synthetic]
        [--seq-len 4096 --micro-batch 2] [--compile] [--activation-checkpointing] [--dtype bf16]
    torchrun --nproc_per_node 8 benchmarks/train_throughput.py --depth 16 --parallel fsdp ...

Runs the real trainer step (forward, backward, clipping, AdamW; accumulation = batch / (world·micro·seq),
1 by default) for `--warmup` untimed steps (compilation, autotuning, allocator warm-up), then `--steps`
timed ones. MFU uses `sambay.train.metrics.flops_per_token` (6·N + causal attention FLOPs) and two peaks:
the bf16 matmul rate measured here (8192² GEMM, the practical ceiling) and the data-sheet dense peak when
the GPU is known. Prints one human-readable block and, with --json, a JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from sambay.train import distributed as D  # noqa: E402
from sambay.train.config import TrainConfig  # noqa: E402
from sambay.train.metrics import known_peak_flops, measure_matmul_peak  # noqa: E402
from sambay.train.trainer import Trainer, materialize  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="sambay")
    ap.add_argument("--depth", type=int, default=8)
    ap.add_argument("--tiny", action="store_true", help="toy widths (CPU smoke test of this script)")
    ap.add_argument("--data", default="synthetic")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--seq-len", type=int, default=4096)
    ap.add_argument("--micro-batch", type=int, default=2)
    ap.add_argument("--batch-tokens", type=int, help="default: one micro-batch per rank (no accumulation)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", choices=("fp32", "bf16"))
    ap.add_argument("--parallel", default="auto", choices=("auto", "none", "ddp", "fsdp"))
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--activation-checkpointing", action="store_true")
    ap.add_argument("--document-ids", action="store_true")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--profile", type=int, default=0, metavar="K",
                    help="after timing, profile one more step and print its K most expensive device kernels")
    args = ap.parse_args()

    dist = D.init_distributed(args.device)
    unit = dist.world_size * args.micro_batch * args.seq_len
    batch = args.batch_tokens or unit
    with tempfile.TemporaryDirectory() as run_dir:
        cfg = TrainConfig(preset=args.preset, depth=args.depth, tiny=args.tiny, data=args.data,
                          document_ids=args.document_ids, tokens=batch * (args.warmup + args.steps) * 10,
                          batch_tokens=batch, micro_batch=args.micro_batch, seq_len=args.seq_len,
                          device=args.device, dtype=args.dtype, parallel=args.parallel, compile=args.compile,
                          activation_checkpointing=args.activation_checkpointing, run_dir=run_dir,
                          progress=False, tensorboard=False, eval_2x=False)
        trainer = Trainer(cfg, dist)
        dev = dist.device
        sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
        t0 = time.perf_counter()
        for _ in range(args.warmup):
            trainer.train_step()
        sync()
        warm_s = time.perf_counter() - t0
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
        t0 = time.perf_counter()
        for _ in range(args.steps):  # queued back to back, as `Trainer.fit` runs them
            rec = trainer.launch_step()
        rec = materialize(rec)
        sync()
        elapsed = time.perf_counter() - t0
        tokens_per_s = args.steps * trainer.plan.batch_tokens / elapsed  # global
        flops = trainer.flops_per_token * tokens_per_s / dist.world_size  # achieved per device
        plan = trainer.plan
        result = {
            "preset": args.preset, "depth": args.depth, "world_size": dist.world_size, "parallel": plan.parallel,
            "dtype": plan.dtype, "compile": args.compile, "activation_checkpointing": args.activation_checkpointing,
            "seq_len": plan.seq_len, "micro_batch": plan.micro_batch, "grad_accum": plan.grad_accum,
            "batch_tokens": plan.batch_tokens, "non_embedding_params": plan.non_embedding_params,
            "flops_per_token": trainer.flops_per_token, "step_s": elapsed / args.steps, "warmup_s": warm_s,
            "tokens_per_s": tokens_per_s, "tflops_per_device": flops / 1e12, "last_loss": rec["loss"],
        }
        if dev.type == "cuda":
            result["device"] = torch.cuda.get_device_name(dev)
            result["peak_memory_gib"] = torch.cuda.max_memory_allocated(dev) / 2**30
            measured = measure_matmul_peak(dev, torch.bfloat16)
            result["measured_bf16_matmul_tflops"] = measured / 1e12
            result["mfu_vs_measured"] = flops / measured
            sheet = known_peak_flops(dev, "bf16")
            if sheet:
                result["mfu_vs_datasheet"] = flops / sheet
        if args.profile and dist.is_main:
            print_profile(trainer, dev, args.profile)
        trainer.close()
    if dist.is_main:
        for k, v in result.items():
            print(f"{k:>28}: {v:.4g}" if isinstance(v, float) else f"{k:>28}: {v}")
        if args.json:
            print(json.dumps(result))
    return 0


def print_profile(trainer, dev, top: int) -> None:
    """One step under torch.profiler: where the device time goes, grouped by kernel name, then the matrix
    products grouped by shape (device time, achieved TFLOP/s) so thin or misaligned GEMMs stand out."""
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])
    with profile(activities=acts, record_shapes=True) as prof:
        trainer.train_step()
        if dev.type == "cuda":
            torch.cuda.synchronize()
    key = "self_device_time_total" if dev.type == "cuda" else "self_cpu_time_total"
    print(prof.key_averages().table(sort_by=key, row_limit=top, max_name_column_width=60))
    print(gemm_table(prof.key_averages(group_by_input_shape=True), top, dev.type == "cuda"))


def gemm_table(averages, top: int, on_device: bool) -> str:
    """aten::mm / addmm / bmm rows by input shapes: calls, total ms, TFLOP/s (2·M·N·K per product)."""
    rows, total = [], 0.0
    for e in averages:
        if e.key not in ("aten::mm", "aten::addmm", "aten::bmm") or not e.input_shapes:
            continue
        # operands by position: addmm's first input is the bias, and inductor's mm(a, b, out=c) adds c last
        a, b = e.input_shapes[1:3] if e.key == "aten::addmm" else e.input_shapes[:2]
        flops = 2 * a[-2] * a[-1] * b[-1] * (a[0] if e.key == "aten::bmm" else 1) * e.count
        us = e.device_time_total if on_device else e.cpu_time_total
        total += us
        rows.append((us, e.key, f"{list(a)} x {list(b)}", e.count, flops / max(us, 1e-9) / 1e6))
    rows.sort(reverse=True)
    lines = [f"matrix products by shape (total {total / 1e3:.2f} ms)",
             f"{'ms':>8} {'calls':>5} {'TFLOP/s':>8}  op          shapes"]
    lines += [f"{us / 1e3:8.3f} {n:5d} {tf:8.1f}  {k:<11} {sh}" for us, k, sh, n, tf in rows[:top]]
    return "\n".join(lines)

if __name__ == "__main__":
    sys.exit(main())
