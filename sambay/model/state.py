"""What a model keeps between decode steps, from its plan: the single source for the engine's allocation and
for `sambay describe`. Each mixer declares its own per-slot state (`Mixer.state_spec`)."""

from __future__ import annotations

import math

import torch

from sambay.config import ModelConfig


def layer_state_shapes(config: ModelConfig, layer: int, batch: int, max_len: int,
                       dtype: torch.dtype) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """name -> (shape, dtype) of the state layer `layer` keeps for `batch` sequences of up to `max_len` tokens."""
    spec = config.layers[layer]
    return {name: ((batch, *s.shape), dtype if s.dtype is None else s.dtype)
            for name, s in spec.mixer_class.state_spec(config, max_len).items()}


def state_nbytes(config: ModelConfig, batch: int, max_len: int, dtype: torch.dtype = torch.bfloat16) -> int:
    """Bytes of every state tensor for `batch` sequences of up to `max_len` tokens (what the engine allocates)."""
    total = 0
    for i in range(config.n_layer):
        for shape, dt in layer_state_shapes(config, i, batch, max_len, dtype).values():
            total += math.prod(shape) * dt.itemsize
    return total


def state_bytes_per_sequence(config: ModelConfig, dtype: torch.dtype = torch.bfloat16) -> tuple[int, int]:
    """(bytes per token of growing K/V, constant bytes of recurrent / window state) for one sequence that is
    at least one window long (shorter sequences allocate rings of only max_len entries)."""
    n = config.window or 1  # from here on only the full-attention caches grow
    per_token = state_nbytes(config, 1, n + 1, dtype) - state_nbytes(config, 1, n, dtype)
    return per_token, state_nbytes(config, 1, n, dtype) - n * per_token
