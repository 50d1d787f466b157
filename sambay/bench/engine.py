"""End-to-end engine throughput: what a user of `sambay.Engine` gets, beside the bare decode step.

1. `batch` requests of `prompt_len` random tokens and `gen_len` new tokens (ignore_eos, the given sampling
   settings) go through `Engine.add_request` / `step` until all finish. Reported: wall time, prefill time,
   decode tokens/s (tokens after each request's first, over the time from the first decode step to the
   last), time to first token and inter-token latency percentiles of the streams.
2. In the same process and engine, the bare captured decode step (`GraphedDecoder.step`, or the eager step)
   is timed at the same batch at the start and the end of the generation's context; its integral over the
   generation is the estimate the engine is compared with (`e2e / estimate`: the share of the step's speed
   that scheduling, sampling and output processing leave to the user).
3. Optionally (`long_prompt_len`), once every stream decodes, one long prompt is admitted: the streams'
   inter-token latencies while it is prefilled in chunks are reported beside those before it.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field

import torch

from sambay.bench.generate import integrate_steps, random_model
from sambay.config import ModelConfig
from sambay.engine import Engine, SamplingParams
from sambay.engine.decode import decode_step


@dataclass
class EngineReport:
    name: str
    batch: int
    prompt_len: int
    gen_len: int
    temperature: float
    top_p: float
    wall_s: float = 0.0
    decode_s: float = 0.0
    decode_tokens_per_s: float = 0.0
    estimate_tokens_per_s: float = 0.0  # the bare captured step integrated over the same contexts
    ttft_ms: dict = field(default_factory=dict)
    itl_ms: dict = field(default_factory=dict)
    step_ms: list[float] = field(default_factory=list)  # the bare step at the first and last context
    long_prompt_len: int = 0
    itl_before_long_ms: dict = field(default_factory=dict)
    itl_during_long_ms: dict = field(default_factory=dict)
    long_prompt_chunk: int = 0
    preemptions: int = 0

    @property
    def ratio(self) -> float:
        return self.decode_tokens_per_s / self.estimate_tokens_per_s if self.estimate_tokens_per_s else float("nan")


def percentiles(values: list[float]) -> dict:
    if not values:
        return {}
    xs = sorted(values)
    pick = lambda q: xs[min(len(xs) - 1, int(q * (len(xs) - 1) + 0.5))]
    return {"p50": pick(0.5) * 1e3, "p90": pick(0.9) * 1e3, "p99": pick(0.99) * 1e3, "max": xs[-1] * 1e3}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_engine(name: str, config: ModelConfig, *, batch: int, prompt_len: int, gen_len: int, dtype: torch.dtype,
                 device: torch.device, temperature: float = 0.7, top_p: float = 0.95, steps: int = 20,
                 max_num_batched_tokens: int = 8192, max_chunk: int | None = 2048, long_prompt_len: int = 0,
                 compile: bool = False, seed: int = 0) -> EngineReport:
    torch.manual_seed(seed)
    model = random_model(config, dtype, device)
    max_len = prompt_len + gen_len + 1 + long_prompt_len
    engine = Engine(model, max_num_seqs=batch + (1 if long_prompt_len else 0), max_model_len=max_len,
                    max_num_batched_tokens=max_num_batched_tokens, max_chunk=max_chunk, compile=compile)
    report = EngineReport(name, batch, prompt_len, gen_len, temperature, top_p, long_prompt_len=long_prompt_len,
                          long_prompt_chunk=max_chunk or max_num_batched_tokens)
    params = SamplingParams(temperature=temperature, top_p=top_p, max_new_tokens=gen_len, ignore_eos=True)
    g = torch.Generator().manual_seed(seed)
    last: dict[str, float] = {}  # request -> time of its latest token
    ttfts, gaps, gaps_before, gaps_during = [], [], [], []
    first_decode = long_id = None
    long_done = False
    _sync(device)
    start = time.perf_counter()
    for i in range(batch):
        engine.add_request(torch.randint(0, config.vocab_size, (prompt_len,), generator=g).tolist(), params, f"r{i}")
    while engine.has_unfinished_requests():
        outs = engine.step()
        now = time.perf_counter()
        for out in outs:
            if out.request_id == long_id:
                long_done = long_done or out.finished
                continue
            if out.request_id in last:
                gaps.append(now - last[out.request_id])
                if long_id is not None and not long_done:
                    gaps_during.append(gaps[-1])
            else:
                ttfts.append(now - start)
            last[out.request_id] = now
        if first_decode is None and len(last) == batch:
            first_decode = now
        if long_prompt_len and long_id is None and len(gaps) >= 4 * batch:  # every stream is decoding
            gaps_before = gaps[-2 * batch:]  # steady decoding, all prompts in
            long_id = engine.add_request(torch.randint(0, config.vocab_size, (long_prompt_len,),
                                                       generator=g).tolist(),
                                         SamplingParams(max_new_tokens=1, ignore_eos=True), "long")
    _sync(device)
    end = time.perf_counter()
    report.wall_s, report.decode_s = end - start, end - first_decode
    report.decode_tokens_per_s = batch * (gen_len - 1) / report.decode_s
    report.ttft_ms, report.itl_ms = percentiles(ttfts), percentiles(gaps)
    report.itl_before_long_ms, report.itl_during_long_ms = percentiles(gaps_before), percentiles(gaps_during)
    report.preemptions = engine.num_preemptions
    report.step_ms, report.estimate_tokens_per_s = _bare_step(engine, batch, [prompt_len, prompt_len + gen_len],
                                                              gen_len, steps, device)
    return report


def _bare_step(engine: Engine, batch: int, contexts: list[int], gen_len: int, steps: int,
               device: torch.device) -> tuple[list[float], float]:
    """Median time of the engine's own captured (or eager) step at `batch` rows whose slots hold each context
    (the slots' caches hold whatever their pages hold: the step's cost does not depend on the values)."""
    state = engine.state
    slots = [state.acquire() for _ in range(batch)]
    slot_t = torch.tensor(slots, device=device)
    tokens = torch.zeros(batch, dtype=torch.long, device=device)
    decoder = engine.runner.decoder
    run = (lambda: decoder.step(tokens, slot_t)) if decoder is not None else (
        lambda: decode_step(engine.model, state, tokens, slot_t))
    times = []
    try:
        for ctx in contexts:
            for s in slots:
                assert state.ensure_capacity(s, ctx + 1), "no pages for the bare-step measurement"
            state.lengths[slot_t] = ctx
            run()
            samples = []
            for _ in range(steps):
                state.lengths[slot_t] = ctx
                _sync(device)
                t = time.perf_counter()
                run()
                _sync(device)
                samples.append(time.perf_counter() - t)
            times.append(statistics.median(samples))
    finally:
        for s in slots:
            state.release(s)
    total = integrate_steps(contexts, times, contexts[0], gen_len)
    return [t * 1e3 for t in times], batch * gen_len / total


def format_report(reports: list[EngineReport]) -> str:
    lines = [f"{'model':<18}{'batch':>6}{'e2e tok/s':>12}{'step est.':>12}{'e2e/est':>9}{'ITL p50':>9}{'p99 ms':>8}"]
    for r in reports:
        lines.append(f"{r.name:<18}{r.batch:>6}{r.decode_tokens_per_s:>12,.0f}{r.estimate_tokens_per_s:>12,.0f}"
                     f"{r.ratio:>9.3f}{r.itl_ms.get('p50', float('nan')):>9.2f}{r.itl_ms.get('p99', float('nan')):>8.2f}")
        if r.long_prompt_len:
            lines.append(f"  one {r.long_prompt_len}-token prompt admitted (chunks of {r.long_prompt_chunk}): stream "
                         f"ITL p99 {r.itl_before_long_ms.get('p99', float('nan')):.2f} ms before, "
                         f"{r.itl_during_long_ms.get('p99', float('nan')):.2f} ms while it prefills")
    return "\n".join(lines)
