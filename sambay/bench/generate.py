"""Long-generation throughput: the paper's 2K-prompt / 32K-generation setting, side by side in one process.

For each model (random weights in the requested dtype):
  1. prefill `batch` prompts of `prompt_len` random tokens (timed; chunked, in groups that bound activations);
  2. decode with CUDA graphs (eager on CPU) at context lengths sampled along the generation
     (prompt_len ... prompt_len + gen_len); at each point the K/V caches hold random values and the
     per-step time is the median of `steps` timed steps after warm-up;
  3. the time of the whole generation is the integral of the per-step time over the context (piecewise
     linear between the sampled points), so the throughput is batch · gen_len / that time. Running all
     32K steps would take tens of minutes per model; the step time is linear in the context, which the
     sampled points show.
Each point also gets its memory-bandwidth roofline: the bytes a step must move (weights once, every K/V it
reads, Mamba state read + write) over the copy bandwidth measured in the same run.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass, field

import torch

from sambay.config import ModelConfig
from sambay.engine.decode import decode_step
from sambay.engine.prefill import prefill
from sambay.engine.state import InferenceState, allocated_bytes
from sambay.model.model import CausalLM


@dataclass
class ModelReport:
    name: str
    layer_plan: str
    parameters: int
    batch: int
    prompt_len: int
    gen_len: int
    prefill_s: float  # all `batch` prompts
    contexts: list[int] = field(default_factory=list)
    step_ms: list[float] = field(default_factory=list)  # median decode step time at each context
    roofline_ms: list[float] = field(default_factory=list)
    decode_s: float = 0.0  # integrated over the generation
    decode_tokens_per_s: float = 0.0
    peak_memory_gb: float = 0.0
    cuda_graphs: bool = False
    compiled: bool = False
    long_prompt_len: int = 0  # one prompt of this many tokens, prefilled alone (0: not measured)
    long_prefill_s: float = 0.0

    def fraction_of_roofline(self) -> list[float]:
        return [r / s for r, s in zip(self.roofline_ms, self.step_ms)]


def measure_bandwidth(device: torch.device, nbytes: int = 2 * 2**30) -> float:
    """Device-to-device copy bandwidth in bytes/s (read + write counted), median of 10 copies."""
    if device.type != "cuda":
        return float("nan")
    a = torch.empty(nbytes // 2, dtype=torch.uint8, device=device)
    b = torch.empty_like(a)
    times = []
    for i in range(13):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        b.copy_(a)
        end.record()
        torch.cuda.synchronize()
        if i >= 3:
            times.append(start.elapsed_time(end) / 1e3)
    del a, b
    return nbytes / statistics.median(times)


def step_bytes(config: ModelConfig, n_params: int, batch: int, context: int, dtype: torch.dtype) -> int:
    """Minimal bytes one decode step moves: every weight once, plus each sequence's state traffic as each
    mixer declares it (`Mixer.decode_state_bytes`: K/V reads, recurrent state read + write)."""
    itemsize = dtype.itemsize
    per_seq = sum(spec.mixer_class.decode_state_bytes(config, context, itemsize) for spec in config.layers)
    return n_params * itemsize + batch * per_seq


def random_model(config: ModelConfig, dtype: torch.dtype, device: torch.device) -> CausalLM:
    """Random weights built directly on the device in `dtype` (no fp32 copy of a 3.8B model)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = CausalLM(config)
    finally:
        torch.set_default_dtype(previous)
    if model.lm_head is not None and config.parametrization == "mup++":
        torch.nn.init.normal_(model.lm_head.weight, std=0.02)  # μP's zero head would make greedy degenerate
    return model.eval()


def fill_batch(config: ModelConfig, max_len: int, dtype: torch.dtype, device: torch.device,
               weights_bytes: int, reserve_bytes: int = 16 * 2**30, cap: int = 1024) -> int:
    """Largest batch whose state (plus one scratch slot) fits in the device memory left after the weights."""
    free, _ = torch.cuda.mem_get_info(device)
    budget = free - reserve_bytes
    per_seq = allocated_bytes(config, 1, max_len, dtype)
    return max(1, min(cap, int(budget // per_seq) - 1))


def _timer(device: torch.device):
    if device.type == "cuda":
        def run(fn):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            return start.elapsed_time(end) / 1e3
    else:
        def run(fn):
            t = time.perf_counter()
            fn()
            return time.perf_counter() - t
    return run


def bench_model(name: str, config: ModelConfig, *, batch: int | None, prompt_len: int, gen_len: int,
                points: int, steps: int, dtype: torch.dtype, device: torch.device, bandwidth: float,
                prefill_tokens: int = 8192, chunk_size: int = 4096, seed: int = 0,
                long_prompt_len: int = 0, compile: bool = False) -> ModelReport:
    torch.manual_seed(seed)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    model = random_model(config, dtype, device)
    n_params = model.num_parameters()
    max_len = prompt_len + gen_len
    time_it = _timer(device)
    long_prefill_s = 0.0
    if long_prompt_len:  # one long prompt alone: the linear-prefill claim (before the big state is allocated)
        one = InferenceState(config, 1, long_prompt_len, dtype, device)
        ids = [torch.randint(0, config.vocab_size, (long_prompt_len,)).tolist()]
        prefill(model, one, [ids[0][:chunk_size]], [one.acquire()], chunk_size=chunk_size)  # warm-up
        one.reset(0)
        long_prefill_s = time_it(lambda: prefill(model, one, ids, [0], chunk_size=chunk_size))
        del one
    if batch is None:
        batch = fill_batch(config, max_len, dtype, device, n_params * 2)
    state = InferenceState(config, batch + 1, max_len, dtype, device)  # +1: scratch slot for CUDA graphs
    slots = [state.acquire() for _ in range(batch)]
    prompts = torch.randint(0, config.vocab_size, (batch, prompt_len)).tolist()
    group = max(1, prefill_tokens // prompt_len)  # bound the activations of one prefill call

    def run_prefill():
        for i in range(0, batch, group):
            prefill(model, state, prompts[i : i + group], slots[i : i + group], chunk_size=chunk_size)

    # warm-up on the first group (compilation must not count), then those slots start over
    prefill(model, state, prompts[:group], slots[:group], chunk_size=chunk_size)
    for slot in slots[:group]:
        state.reset(slot)
    prefill_s = time_it(run_prefill)
    for layer in state.layers:  # decode timings must not run on zero K/V beyond the prompt
        for key in ("k", "v"):
            if key in layer:
                layer[key].normal_()
    report = ModelReport(name=name, layer_plan=" ".join(config.layer_plan), parameters=n_params, batch=batch,
                         prompt_len=prompt_len, gen_len=gen_len, prefill_s=prefill_s,
                         long_prompt_len=long_prompt_len, long_prefill_s=long_prefill_s)
    slot_t = torch.tensor(slots, device=device)
    tokens = torch.randint(0, config.vocab_size, (batch,), device=device)
    if device.type == "cuda":
        from sambay.engine.cuda_graphs import GraphedDecoder

        step = GraphedDecoder(model, state, buckets=(batch,), compile=compile).step
        report.cuda_graphs, report.compiled = True, compile
    else:
        def step(tok, sl):
            return decode_step(model, state, tok, sl)

    contexts = sorted({prompt_len + round(gen_len * i / max(points - 1, 1)) - 1 for i in range(points)})
    contexts = [min(max(c, prompt_len), max_len - steps - 4) for c in contexts]
    for ctx in contexts:
        times = []
        for i in range(steps + 3):  # 3 warm-up steps (the first also captures the graph)
            state.lengths[slot_t] = ctx
            t = time_it(lambda: step(tokens, slot_t))
            if i >= 3:
                times.append(t)
        report.contexts.append(ctx)
        report.step_ms.append(1e3 * statistics.median(times))
        report.roofline_ms.append(1e3 * step_bytes(config, n_params, batch, ctx, dtype) / bandwidth)
    report.decode_s = integrate_steps(report.contexts, [t / 1e3 for t in report.step_ms], prompt_len, gen_len)
    report.decode_tokens_per_s = batch * gen_len / report.decode_s
    if device.type == "cuda":
        report.peak_memory_gb = torch.cuda.max_memory_allocated(device) / 1e9
    return report


def integrate_steps(contexts: list[int], step_s: list[float], prompt_len: int, gen_len: int) -> float:
    """Total time of gen_len decode steps at contexts prompt_len .. prompt_len + gen_len - 1, with the step
    time linear between the measured points (and flat beyond them)."""
    if len(contexts) == 1:
        return step_s[0] * gen_len
    total = 0.0
    for c in range(prompt_len, prompt_len + gen_len, max(1, gen_len // 4096)):
        j = min(max(1, sum(ci <= c for ci in contexts)), len(contexts) - 1)
        c0, c1, t0, t1 = contexts[j - 1], contexts[j], step_s[j - 1], step_s[j]
        frac = min(max((c - c0) / (c1 - c0), 0.0), 1.0) if c1 != c0 else 0.0
        total += (t0 + frac * (t1 - t0)) * max(1, gen_len // 4096)
    return total


def format_report(reports: list[ModelReport], bandwidth: float) -> str:
    lines = []
    if math.isfinite(bandwidth):
        lines.append(f"measured copy bandwidth: {bandwidth / 1e12:.2f} TB/s")
    for r in reports:
        lines.append(f"\n{r.name}: {r.parameters / 1e6:,.1f}M params, batch {r.batch}, prompt {r.prompt_len}, "
                     f"generation {r.gen_len}, cuda graphs {r.cuda_graphs}, compiled {r.compiled}")
        lines.append(f"  prefill: {r.prefill_s:.3f} s for {r.batch} x {r.prompt_len} tokens "
                     f"({r.batch * r.prompt_len / r.prefill_s:,.0f} tokens/s)")
        if r.long_prompt_len:
            lines.append(f"  prefill of one {r.long_prompt_len}-token prompt: {r.long_prefill_s:.3f} s")
        lines.append(f"  {'context':>8} {'step ms':>9} {'roofline ms':>12} {'of roofline':>12} {'ms/token/seq':>13}")
        fracs = r.fraction_of_roofline()
        for c, s, rf, f in zip(r.contexts, r.step_ms, r.roofline_ms, fracs):
            frac = f"{100 * f:.0f}%" if math.isfinite(f) else "n/a"
            lines.append(f"  {c:>8} {s:>9.3f} {rf:>12.3f} {frac:>12} {s / r.batch:>13.4f}")
        lines.append(f"  decode: {r.decode_s:.1f} s for {r.gen_len} tokens x {r.batch} sequences -> "
                     f"{r.decode_tokens_per_s:,.0f} tokens/s; peak GPU memory {r.peak_memory_gb:.1f} GB")
    if len(reports) > 1:
        base = reports[0]
        for r in reports[1:]:
            lines.append(f"\n{base.name} / {r.name}: decode throughput x{base.decode_tokens_per_s / r.decode_tokens_per_s:.2f}, "
                         f"prefill time per sequence x{(r.prefill_s / r.batch) / (base.prefill_s / base.batch):.2f} faster")
    return "\n".join(lines)
