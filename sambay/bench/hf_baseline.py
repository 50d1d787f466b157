"""Hugging Face `generate` (static cache) on the Transformer baseline vs sambay's engine, same process.

Both generate `new_tokens` greedy tokens after `prompt_len`-token random prompts for the same batch, timed
end to end (prefill included) with random bf16 weights of Phi-4-mini's shape (Phi3 architecture).
"""

from __future__ import annotations

import time

import torch

from sambay.config import ModelConfig
from sambay.engine.cuda_graphs import GraphedDecoder
from sambay.engine.prefill import prefill
from sambay.engine.state import InferenceState


def _phi3_config(config: ModelConfig):
    from transformers import Phi3Config

    return Phi3Config(vocab_size=config.vocab_size, hidden_size=config.d_model, intermediate_size=config.d_ff,
                      num_hidden_layers=config.n_layer, num_attention_heads=config.n_head,
                      num_key_value_heads=config.n_kv_head, partial_rotary_factor=config.rotary_fraction,
                      max_position_embeddings=config.max_seq_len, tie_word_embeddings=config.tie_embeddings,
                      rope_theta=config.rope_base, pad_token_id=0, bos_token_id=None, eos_token_id=None)


def _sync_time(fn) -> float:
    torch.cuda.synchronize()
    t = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    return time.perf_counter() - t


def _time_hf(config: ModelConfig, prompts: torch.Tensor, new_tokens: int) -> float:
    """Seconds for HF generate of `new_tokens` greedy tokens after `prompts` (B, T), after a warm-up."""
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_config(_phi3_config(config), dtype=torch.bfloat16).to(prompts.device).eval()
    kwargs = dict(do_sample=False, cache_implementation="static")
    with torch.inference_mode():
        warm = prompts[:, :64]
        hf.generate(warm, attention_mask=torch.ones_like(warm), max_new_tokens=8, min_new_tokens=8, **kwargs)
        return _sync_time(lambda: hf.generate(prompts, attention_mask=torch.ones_like(prompts),
                                              max_new_tokens=new_tokens, min_new_tokens=new_tokens, **kwargs))


def hf_vs_sambay(config: ModelConfig, sambay_model, batch: int, prompt_len: int, new_tokens: int) -> dict:
    """Tokens/s of HF generate and of sambay's engine for the same work (decode tokens / total seconds)."""
    device = torch.device("cuda")
    prompts = torch.randint(0, config.vocab_size, (batch, prompt_len), device=device)
    hf_s = _time_hf(config, prompts, new_tokens)
    torch.cuda.empty_cache()

    state = InferenceState(config, batch + 1, prompt_len + new_tokens + 1, torch.bfloat16, device)
    decoder = GraphedDecoder(sambay_model, state, buckets=(batch,))
    ids = prompts.tolist()

    def ours():
        slots = [state.acquire() for _ in range(batch)]
        slot_t = torch.tensor(slots, device=device)
        logits = prefill(sambay_model, state, ids, slots, chunk_size=4096)
        for _ in range(new_tokens - 1):
            logits = decoder.step(logits.argmax(-1), slot_t)
        for s in slots:
            state.release(s)

    ours()  # warm-up (captures the graph)
    ours_s = _sync_time(ours)
    return {"batch": batch, "prompt_len": prompt_len, "new_tokens": new_tokens,
            "hf_tokens_per_s": batch * new_tokens / hf_s, "sambay_tokens_per_s": batch * new_tokens / ours_s,
            "speedup": hf_s / ours_s}
