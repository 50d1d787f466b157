"""Paged growing caches: the same logits and tokens as contiguous ones, pages taken and returned per slot."""

from __future__ import annotations

import pytest
import torch
from engine_helpers import ALL_PRESETS, ATOL, RTOL, make_model
from torch.testing import assert_close

from sambay.engine import InferenceState, decode_step, prefill


def _interleaved_pages(state: InferenceState, slots: list[int], n_tokens: int) -> None:
    """Give the slots their pages one token-block at a time, round robin, so each slot's pages are scattered."""
    for n in range(state.block_size, n_tokens + state.block_size, state.block_size):
        for s in slots:
            assert state.ensure_capacity(s, min(n, n_tokens))


@pytest.mark.parametrize("preset", ALL_PRESETS)
def test_paged_prefill_and_decode_equal_the_contiguous_state(preset):
    model = make_model(preset)
    g = torch.Generator().manual_seed(8)
    prompts = [torch.randint(0, 256, (n,), generator=g).tolist() for n in (1, 6, 13)]
    feed = torch.randint(0, 256, (10, 3), generator=g)
    results = []
    for block_size in (None, 4):
        state = InferenceState(model.config, 3, 24, block_size=block_size)
        slots = [state.acquire() for _ in prompts]
        if block_size:
            _interleaved_pages(state, slots, 24)
        out = [prefill(model, state, prompts, slots, chunk_size=5)]
        out += [decode_step(model, state, tok, torch.tensor(slots)) for tok in feed]
        results.append(torch.stack(out))
    assert_close(results[1], results[0], atol=ATOL, rtol=RTOL)


def test_pages_follow_the_tokens_and_come_back_with_the_slot():
    config = make_model("transformer++").config
    state = InferenceState(config, 2, 32, block_size=8, num_blocks=5)
    assert state.paged and state.free_blocks == 5
    a, b = state.acquire(), state.acquire()
    assert state.ensure_capacity(a, 17) and state.free_blocks == 2  # 3 pages of 8
    assert state.ensure_capacity(a, 24) and state.free_blocks == 2  # still 3 pages
    assert not state.ensure_capacity(b, 24) and state.free_blocks == 2  # needs 3, nothing taken
    assert state.ensure_capacity(b, 16) and state.free_blocks == 0
    state.release(a)
    assert state.free_blocks == 3 and state.can_hold(b, 40)
    samba = InferenceState(make_model("samba").config, 2, 32, block_size=8, num_blocks=0)
    assert not samba.paged and samba.ensure_capacity(samba.acquire(), 32)  # no growing cache: nothing to page


def test_a_fork_shares_the_full_pages_and_copies_the_partial_one():
    model = make_model("sambay")
    state = InferenceState(model.config, 3, 24, block_size=4)
    a, b = state.acquire(), state.acquire()
    state.ensure_capacity(a, 9)
    prefill(model, state, [list(range(9))], [a])
    state.copy_slot(a, b, 9)
    assert state._blocks[a][:2] == state._blocks[b][:2] and state._blocks[a][2] != state._blocks[b][2]
    tok = torch.tensor([3, 3])
    out = decode_step(model, state, tok, torch.tensor([a, b]))
    assert_close(out[0], out[1])
    state.release(a)
    state.release(b)
    assert state.free_blocks == state.num_blocks  # shared pages are freed once, by their last holder
