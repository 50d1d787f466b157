"""`sambay bench train`: training throughput of one preset/depth, tokens/s and MFU against the measured bf16
matmul peak.

Runs the real trainer step (forward, backward, clipping, AdamW; accumulation = batch / (world·micro·seq),
1 by default) for `warmup` untimed steps (compilation, autotuning, allocator warm-up), then `steps`
timed ones. MFU uses `sambay.train.metrics.flops_per_token` (6·N + causal attention FLOPs) and two peaks:
the bf16 matmul rate measured here (8192² GEMM, the practical ceiling) and the data-sheet dense peak when
the GPU is known. Under torchrun (`torchrun --nproc_per_node N -m sambay bench train --parallel fsdp ...`)
the numbers are global tokens/s and per-device FLOP/s; rank 0 reports.
"""

from __future__ import annotations

import tempfile
import time

import torch

from sambay.train import distributed as D
from sambay.train.config import TrainConfig
from sambay.train.metrics import known_peak_flops, measure_matmul_peak
from sambay.train.trainer import Trainer, materialize


def run(preset: str = "sambay", depth: int = 8, *, tiny: bool = False, data: str = "synthetic", steps: int = 20,
        warmup: int = 5, seq_len: int = 4096, micro_batch: int = 2, batch_tokens: int | None = None,
        device: str = "auto", dtype: str | None = None, parallel: str = "auto", compile: bool = False,
        activation_checkpointing: bool = False, document_ids: bool = False, profile: int = 0) -> dict | None:
    """Time `steps` trainer steps after `warmup` untimed ones. Returns the result on the main rank (None on
    the others); `profile` > 0 prints that many of the most expensive kernels of one more step."""
    dist = D.init_distributed(device)
    unit = dist.world_size * micro_batch * seq_len
    batch = batch_tokens or unit
    with tempfile.TemporaryDirectory() as run_dir:
        cfg = TrainConfig(preset=preset, depth=depth, tiny=tiny, data=data, document_ids=document_ids,
                          tokens=batch * (warmup + steps) * 10, batch_tokens=batch, micro_batch=micro_batch,
                          seq_len=seq_len, device=device, dtype=dtype, parallel=parallel, compile=compile,
                          activation_checkpointing=activation_checkpointing, run_dir=run_dir,
                          progress=False, tensorboard=False, eval_2x=False)
        trainer = Trainer(cfg, dist)
        dev = dist.device
        sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
        t0 = time.perf_counter()
        for _ in range(warmup):
            trainer.train_step()
        sync()
        warm_s = time.perf_counter() - t0
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
        t0 = time.perf_counter()
        for _ in range(steps):  # queued back to back, as `Trainer.fit` runs them
            rec = trainer.launch_step()
        rec = materialize(rec)
        sync()
        elapsed = time.perf_counter() - t0
        tokens_per_s = steps * trainer.plan.batch_tokens / elapsed  # global
        flops = trainer.flops_per_token * tokens_per_s / dist.world_size  # achieved per device
        plan = trainer.plan
        result = {
            "preset": preset, "depth": depth, "tiny": tiny, "world_size": dist.world_size, "parallel": plan.parallel,
            "dtype": plan.dtype, "compile": compile, "activation_checkpointing": activation_checkpointing,
            "seq_len": plan.seq_len, "micro_batch": plan.micro_batch, "grad_accum": plan.grad_accum,
            "batch_tokens": plan.batch_tokens, "non_embedding_params": plan.non_embedding_params,
            "flops_per_token": trainer.flops_per_token, "steps": steps, "step_s": elapsed / steps,
            "warmup_steps": warmup, "warmup_s": warm_s, "tokens_per_s": tokens_per_s,
            "tflops_per_device": flops / 1e12, "last_loss": float(rec["loss"]),
        }
        if dev.type == "cuda":
            result["peak_memory_gib"] = torch.cuda.max_memory_allocated(dev) / 2**30
            measured = measure_matmul_peak(dev, torch.bfloat16)
            result["measured_bf16_matmul_tflops"] = measured / 1e12
            result["mfu_vs_measured"] = flops / measured
            sheet = known_peak_flops(dev, "bf16")
            if sheet:
                result["mfu_vs_datasheet"] = flops / sheet
        if profile and dist.is_main:
            print_profile(trainer, dev, profile)
        trainer.close()
    return result if dist.is_main else None


def format_result(result: dict) -> str:
    return "\n".join(f"{k:>28}: {v:.4g}" if isinstance(v, float) else f"{k:>28}: {v}" for k, v in result.items())


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
