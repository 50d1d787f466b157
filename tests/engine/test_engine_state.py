"""The state pool: sized from the layer plan, what `describe` reports, constant per sequence except K/V."""

from __future__ import annotations

import pytest
import torch
from engine_helpers import ALL_PRESETS

from sambay.config import ModelConfig, tiny
from sambay.engine import InferenceState, allocated_bytes
from sambay.model.state import state_bytes_per_sequence


@pytest.mark.parametrize("preset", ALL_PRESETS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_engine_allocation_equals_allocated_bytes_and_describe_formula(preset, dtype):
    config = tiny(preset)
    state = InferenceState(config, max_batch=3, max_len=40, dtype=dtype)
    assert state.nbytes() == allocated_bytes(config, 3, 40, dtype)
    per_token, constant = state_bytes_per_sequence(config, dtype)  # what `sambay describe` prints
    assert allocated_bytes(config, 1, 40, dtype) == per_token * 40 + constant


def test_describe_reports_the_bytes_the_engine_allocates():
    from sambay.describe import _fmt_bytes, describe

    config = ModelConfig.from_preset("sambay", depth=8)
    with torch.device("meta"):  # the shapes are real, the memory is not
        state = InferenceState(config, 1, 4096, dtype=torch.bfloat16, device="meta")
    assert f"at 4,096 tokens: {_fmt_bytes(state.nbytes())} per sequence" in describe(config, seq_len=4096)


@pytest.mark.parametrize("preset", ALL_PRESETS)
def test_state_per_sequence_grows_only_with_the_kv_caches(preset):
    """Bytes per extra token = K/V of the shared full_kv layer only (YOCO), of every full layer
    (Transformer++, Transformer-LS), nothing for Samba; Mamba states and windows are constant."""
    config = tiny(preset)
    growth = allocated_bytes(config, 1, 1000) - allocated_bytes(config, 1, 500)
    kv_token = 2 * config.n_kv_head * config.head_dim * 2  # K + V, bf16
    growing = {"full", "full_kv"}
    n_growing = sum(kind in growing for kind in config.layer_plan)
    assert growth == 500 * kv_token * n_growing
    if config.is_yoco:
        assert n_growing == 1, "a YOCO model must keep exactly one growing cache"
    if preset == "samba":
        assert growth == 0


def test_ssm_state_is_fp32_for_a_bf16_model_and_windows_hold_window_keys():
    config = tiny("sambay")
    state = InferenceState(config, 2, 64, dtype=torch.bfloat16)
    kinds = config.layer_plan
    mamba = state.layers[kinds.index("mamba")]
    assert mamba["ssm_state"].dtype == torch.float32 and mamba["conv_state"].dtype == torch.bfloat16
    assert state.layers[kinds.index("swa")]["k"].shape == (2, config.n_kv_head, config.window, config.head_dim)
    assert state.layers[kinds.index("full_kv")]["k"].shape == (2, config.n_kv_head, 64, config.head_dim)
    assert all(not state.layers[i] for i, k in enumerate(kinds) if k in ("gmu", "cross"))


def test_slots_are_taken_released_and_cleared():
    state = InferenceState(tiny("sambay"), 2, 16)
    a, b = state.acquire(), state.acquire()
    assert (a, b) == (0, 1) and state.free_slots == 0
    with pytest.raises(RuntimeError, match="in use"):
        state.acquire()
    state.layers[0]["ssm_state"][a].fill_(1.0)
    state.lengths[a] = 5
    state.release(a)
    with pytest.raises(ValueError):
        state.release(a)
    assert state.acquire() == a
    assert not state.layers[0]["ssm_state"][a].any() and state.lengths[a] == 0
