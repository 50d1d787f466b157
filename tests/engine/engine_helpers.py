"""Helpers for the engine tests: tiny models whose every weight matters, one CPU thread."""

from __future__ import annotations

import math

import torch

from sambay.config import PRESETS, tiny
from sambay.model import CausalLM

ALL_PRESETS = list(PRESETS)
YOCO_PRESETS = [p for p in PRESETS if tiny(p).is_yoco]
ATOL = 2e-5  # the full forward itself moves by up to ~8e-6 between prompt lengths (logits up to ~9)
RTOL = 1e-5


def randomize(model: CausalLM, seed: int = 1) -> CausalLM:
    """Give every weight O(1) influence (μP++ zero-initialises the head and biases, which would hide bugs):
    matrices ~ N(0, 1/fan_in), norm gains 1 + 0.1 N, biases / D / λ 0.1 N; A_log and dt biases keep their init."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("A_log", "dt_proj.bias", "dt_bias")):
                continue
            if p.ndim >= 2:
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(p.shape[-1]))
            elif "norm" in name or "subln" in name:
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
    return model.eval()


def make_model(preset: str, depth: int = 8, dtype: torch.dtype = torch.float32, **overrides) -> CausalLM:
    """A tiny (d_model 64, window 8, vocab 256) fully random model of `preset`."""
    torch.manual_seed(0)
    return randomize(CausalLM(tiny(preset, depth=depth, **overrides))).to(dtype)


def random_add_abort_step(engine, prompts: dict[str, list[int]], news: dict[str, int], rng, *,
                          p_add: float = 0.4, p_abort: float = 0.1) -> dict:
    """Drive `engine` with a random interleaving of add_request (greedy, news[rid] tokens), abort and step
    until every request ended; checks on the way that every output belongs to its request and that deltas
    add up to the tokens, and at the end that aborted requests (and only they) end with "abort".
    Returns request id -> final RequestOutput."""
    from sambay import SamplingParams

    todo, added, aborted, final, streamed = list(prompts), [], set(), {}, {}
    while todo or engine.has_unfinished_requests():
        op = rng.random()
        if todo and op < p_add:
            rid = todo.pop()
            engine.add_request(prompts[rid], SamplingParams(temperature=0, max_new_tokens=news[rid]), rid)
            added.append(rid)
        elif added and op < p_add + p_abort:
            rid = rng.choice(added)
            if rid not in final:
                engine.abort(rid)
                aborted.add(rid)
        else:
            for out in engine.step():
                assert out.request_id not in final and out.prompt_token_ids == prompts[out.request_id]
                streamed.setdefault(out.request_id, []).extend(out.delta_token_ids)
                assert streamed[out.request_id] == out.token_ids
                if out.finished:
                    final[out.request_id] = out
    assert set(final) == set(prompts)
    assert all(out.finish_reason == "length" or (out.finish_reason == "abort" and rid in aborted)
               for rid, out in final.items())
    return final
