"""What a model keeps between decode steps, from its plan: the single source for the engine's allocation and
for `sambay describe`. Each mixer declares its own per-slot state (`Mixer.state_spec`)."""

from __future__ import annotations

import math

import torch

from sambay.config import ModelConfig


def state_nbytes(config: ModelConfig, batch: int, max_len: int, dtype: torch.dtype = torch.bfloat16) -> int:
    """Bytes of every state tensor for `batch` sequences of up to `max_len` tokens (what the engine allocates
    with contiguous caches)."""
    constant, per_token = state_bytes(config, max_len, dtype)
    return batch * (constant + per_token * max_len)


def state_bytes(config: ModelConfig, max_len: int, dtype: torch.dtype) -> tuple[int, int]:
    """(bytes per slot of constant state, bytes per token of growing cache) for sequences up to max_len."""
    constant = per_token = 0
    for spec in config.layers:
        for s in spec.mixer_class.state_spec(config, max_len).values():
            itemsize = (dtype if s.dtype is None else s.dtype).itemsize
            if s.grows:
                per_token += math.prod(s.shape) // s.shape[1] * itemsize
            else:
                constant += math.prod(s.shape) * itemsize
    return constant, per_token


def state_bytes_per_sequence(config: ModelConfig, dtype: torch.dtype = torch.bfloat16) -> tuple[int, int]:
    """(bytes per token of growing K/V, constant bytes of recurrent / window state) for one sequence that is
    at least one window long (shorter sequences allocate rings of only max_len entries)."""
    constant, per_token = state_bytes(config, config.window or 1, dtype)
    return per_token, constant
