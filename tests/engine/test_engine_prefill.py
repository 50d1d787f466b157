"""Chunked prefill, left padding and the YOCO skip."""

from __future__ import annotations

import pytest
import torch
from engine_helpers import ALL_PRESETS, ATOL, RTOL, YOCO_PRESETS, make_model
from torch.testing import assert_close

from sambay.engine import InferenceState, decode_step, prefill
from sambay.engine.prefill import split_prompt

LENGTHS = [3, 8, 13, 20]  # around the window of 8


def _prompts(seed=5, lengths=LENGTHS):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 256, (n,), generator=g).tolist() for n in lengths]


def _prefilled(model, prompts, chunk_size, max_len=32):
    state = InferenceState(model.config, len(prompts), max_len)
    slots = [state.acquire() for _ in prompts]
    return state, prefill(model, state, prompts, slots, chunk_size)


def test_split_prompt_gives_the_remainder_to_the_first_piece():
    assert split_prompt(5, None) == [(0, 5)]
    assert split_prompt(5, 8) == [(0, 5)]
    assert split_prompt(10, 4) == [(0, 2), (2, 6), (6, 10)]
    assert split_prompt(8, 4) == [(0, 4), (4, 8)]


@pytest.mark.parametrize("preset", ALL_PRESETS)
@pytest.mark.parametrize("chunk_size", [1, 3, 8])
def test_chunked_prefill_equals_one_shot_prefill(preset, chunk_size):
    """Same next-token logits, same state (every Mamba state, ring buffer and K/V), same decode after."""
    model = make_model(preset)
    prompts = _prompts()
    ref_state, ref_logits = _prefilled(model, prompts, None)
    state, logits = _prefilled(model, prompts, chunk_size)
    assert_close(logits, ref_logits, atol=ATOL, rtol=RTOL)
    assert torch.equal(state.lengths, ref_state.lengths)
    for i, (a, b) in enumerate(zip(state.layers, ref_state.layers)):
        for name in a:
            assert_close(a[name], b[name], atol=ATOL, rtol=RTOL, msg=lambda m: f"layer {i} {name}: {m}")
    slots = torch.arange(len(prompts))
    tokens = torch.tensor([7, 8, 9, 10])
    assert_close(decode_step(model, state, tokens, slots), decode_step(model, ref_state, tokens, slots),
                 atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("preset", ["sambay", "samba", "transformer++", "phi4-mini-flash"])
def test_padding_never_enters_a_state_window_or_kv(preset):
    """A short prompt prefilled next to a long one (so it is left-padded) leaves exactly the state it
    leaves alone: same Mamba states, same ring buffers, same K/V, and untouched (zero) K/V rows beyond it."""
    model = make_model(preset)
    short, long = _prompts(seed=6, lengths=[3, 19])
    together, _ = _prefilled(model, [short, long], None)
    alone, _ = _prefilled(model, [short], None)
    for i, (a, b) in enumerate(zip(together.layers, alone.layers)):
        for name in a:
            assert_close(a[name][0], b[name][0], atol=ATOL, rtol=RTOL, msg=lambda m: f"layer {i} {name}: {m}")
            if name in ("k", "v") and a[name].shape[2] == together.max_len:  # full K/V: nothing past the prompt
                assert not a[name][0, :, len(short):].any()


@pytest.mark.parametrize("preset", YOCO_PRESETS)
@pytest.mark.parametrize("chunk_size", [None, 4])
def test_cross_decoder_runs_only_for_the_last_prompt_token(preset, chunk_size):
    """Count the tokens every Linear sees during a batched (and chunked) prefill: the self-decoder sees
    prompt token, but full_kv's output projection and MLP and every layer of the cross-decoder see one
    token per prompt (full_kv's K/V for every token is checked by the chunked-prefill state comparison)."""
    model = make_model(preset)
    prompts = _prompts(seed=7, lengths=[4, 9, 17])
    seen: dict[str, int] = {}

    def count(name):
        def hook(module, args, out):
            seen[name] = seen.get(name, 0) + args[0].shape[:-1].numel()
        return hook

    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear):
            module.register_forward_hook(count(name))
    _prefilled(model, prompts, chunk_size)
    split = model.config.split_index
    kv_layer = split - 1
    for name, n in seen.items():
        layer = int(name.split(".")[1])
        kv_tail = layer == kv_layer and (name.endswith("mixer.out_proj") or ".mlp." in name)
        if layer >= split or kv_tail:
            assert n == len(prompts), f"{name} saw {n} tokens, expected one per prompt"
        else:
            assert n >= sum(len(p) for p in prompts), f"{name} saw only {n} tokens"
    assert any(int(k.split(".")[1]) >= split for k in seen), "no cross-decoder layer ran at all"
