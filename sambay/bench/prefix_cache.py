"""Prefix caching through the public Engine, on two workloads, with the cache off, in vLLM's align mode, and
with sambay's policy, in one process on one device.

* chat: `conversations` conversations of `turns` turns over a shared `system_len`-token system prompt; each
  turn adds a user message of 200-500 tokens (drawn per turn) to the conversation so far, and the model's
  answer (`answer_len` tokens, ignore_eos) becomes part of the next turn's prompt, token for token. Every
  conversation's next turn is added as soon as its previous one finishes (closed loop).
* few-shot: `requests` requests of one shared `prefix_len`-token header and a unique `tail_len`-token tail,
  all added at once (`answer_len` tokens each).

Reported per policy: time to first token p50 / p99 (from add_request; requests queue for a slot, so the
scheduling delay is included, as a user sees it), prompt tokens, the prompt tokens actually prefilled
(prompt tokens minus cache hits), the hit rate, and wall time. Random token ids: the weights and text do not
matter to what is measured.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from sambay.bench.engine import percentiles
from sambay.bench.generate import random_model
from sambay.config import ModelConfig
from sambay.engine import Engine, SamplingParams

POLICIES = ("off", "align", "sambay")


@dataclass
class CacheReport:
    model: str
    workload: str
    policy: str
    requests: int = 0
    prompt_tokens: int = 0
    prefilled_tokens: int = 0
    hit_rate: float = 0.0
    ttft_ms: dict = field(default_factory=dict)
    wall_s: float = 0.0
    snapshots: int = 0
    snapshot_bytes: int = 0


def _tokens(g: torch.Generator, vocab: int, n: int) -> list[int]:
    return torch.randint(0, vocab, (n,), generator=g).tolist()


def chat_trace(vocab: int, conversations: int, turns: int, system_len: int, seed: int = 0):
    """-> (system prompt, per conversation the user messages of each turn)."""
    g = torch.Generator().manual_seed(seed)
    system = _tokens(g, vocab, system_len)
    users = [[_tokens(g, vocab, int(torch.randint(200, 501, (1,), generator=g))) for _ in range(turns)]
             for _ in range(conversations)]
    return system, users


def run_chat(engine: Engine, system: list[int], users: list[list[list[int]]], answer_len: int) -> list[float]:
    """Closed-loop conversations; -> each turn's time to first token (s)."""
    params = SamplingParams(temperature=0, max_new_tokens=answer_len, ignore_eos=True)
    history = {c: list(system) for c in range(len(users))}
    turn = dict.fromkeys(history, 0)
    added: dict[str, float] = {}
    ttfts = []

    def add(c: int) -> None:
        history[c] += users[c][turn[c]]
        rid = f"c{c}.t{turn[c]}"
        added[rid] = time.perf_counter()
        engine.add_request(history[c], params, rid)

    for c in history:
        add(c)
    while engine.has_unfinished_requests():
        for out in engine.step():
            c = int(out.request_id[1:].split(".")[0])
            if out.request_id in added and out.token_ids and len(out.token_ids) == len(out.delta_token_ids):
                ttfts.append(time.perf_counter() - added[out.request_id])
            if out.finished:
                history[c] += out.token_ids
                turn[c] += 1
                if turn[c] < len(users[c]):
                    add(c)
    return ttfts


def run_fewshot(engine: Engine, vocab: int, requests: int, prefix_len: int, tail_len: int, answer_len: int,
                seed: int = 0) -> list[float]:
    g = torch.Generator().manual_seed(seed + 1)
    header = _tokens(g, vocab, prefix_len)
    params = SamplingParams(temperature=0, max_new_tokens=answer_len, ignore_eos=True)
    added, ttfts = {}, []
    for i in range(requests):
        rid = f"q{i}"
        added[rid] = time.perf_counter()
        engine.add_request(header + _tokens(g, vocab, tail_len), params, rid)
    while engine.has_unfinished_requests():
        for out in engine.step():
            if out.token_ids and len(out.token_ids) == len(out.delta_token_ids):
                ttfts.append(time.perf_counter() - added[out.request_id])
    return ttfts


def bench_prefix_cache(name: str, config: ModelConfig, *, workload: str, dtype: torch.dtype, device: torch.device,
                       conversations: int = 64, turns: int = 8, system_len: int = 1024, requests: int = 1000,
                       prefix_len: int = 4096, tail_len: int = 100, answer_len: int = 64, max_num_seqs: int = 64,
                       max_num_batched_tokens: int = 8192, max_chunk: int | None = 2048,
                       memory_budget: float | int | None = None, policies=POLICIES, seed: int = 0) -> list[CacheReport]:
    torch.manual_seed(seed)
    model = random_model(config, dtype, device)
    if workload == "chat":
        system, users = chat_trace(config.vocab_size, conversations, turns, system_len, seed)
        max_len = system_len + sum(max(len(u) for u in conv) for conv in zip(*users)) + turns * answer_len + 1
    else:
        max_len = prefix_len + tail_len + answer_len + 1
    reports = []
    for policy in policies:
        engine = Engine(model, max_num_seqs=max_num_seqs, max_model_len=max_len,
                        max_num_batched_tokens=max_num_batched_tokens, max_chunk=max_chunk,
                        memory_budget=memory_budget, enable_prefix_caching=policy != "off",
                        prefix_cache_policy="sambay" if policy == "off" else policy)
        _warm_up(engine, config.vocab_size)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        if workload == "chat":
            ttfts = run_chat(engine, system, users, answer_len)
        else:
            ttfts = run_fewshot(engine, config.vocab_size, requests, prefix_len, tail_len, answer_len, seed)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        report = CacheReport(name, workload, policy, requests=len(ttfts), ttft_ms=percentiles(ttfts),
                             wall_s=time.perf_counter() - start)
        cache = engine.prefix_cache
        if cache is not None:
            s = cache.stats
            report.prompt_tokens, report.prefilled_tokens = s.queries, s.queries - s.hits
            report.hit_rate = s.hits / s.queries if s.queries else 0.0
            report.snapshots, report.snapshot_bytes = s.snapshots, s.snapshot_bytes
        reports.append(report)
        del engine
        if device.type == "cuda":
            torch.cuda.empty_cache()
    off = next((r for r in reports if r.policy == "off"), None)
    if off is not None:  # with the cache off every prompt token is prefilled
        off.prompt_tokens = off.prefilled_tokens = max((r.prompt_tokens for r in reports), default=0)
    return reports


def _warm_up(engine: Engine, vocab: int) -> None:
    """One short request first (kernel autotuning, allocator), then an empty cache with fresh counters."""
    engine.add_request(list(range(min(vocab, 100))), SamplingParams(temperature=0, max_new_tokens=2), "warm-up")
    while engine.has_unfinished_requests():
        engine.step()
    if engine.prefix_cache is not None:
        engine.prefix_cache.clear()
        engine.prefix_cache.stats = type(engine.prefix_cache.stats)()


def format_report(reports: list[CacheReport]) -> str:
    lines = [f"{'model':<18}{'workload':<10}{'policy':<8}{'requests':>9}{'prompt tok':>12}{'prefilled':>11}"
             f"{'hit rate':>9}{'TTFT p50':>10}{'p99 ms':>9}{'wall s':>8}"]
    for r in reports:
        lines.append(f"{r.model:<18}{r.workload:<10}{r.policy:<8}{r.requests:>9}{r.prompt_tokens:>12,}"
                     f"{r.prefilled_tokens:>11,}{r.hit_rate:>9.1%}{r.ttft_ms.get('p50', float('nan')):>10.1f}"
                     f"{r.ttft_ms.get('p99', float('nan')):>9.1f}{r.wall_s:>8.1f}")
    return "\n".join(lines)
