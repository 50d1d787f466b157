"""What each layer kind must keep between decode steps — the single source for the engine's allocation
and for `sambay describe`.

    mamba, mamba_memory  conv state (B, E, d_conv-1) in the model dtype + SSM state (B, E, N) in fp32: constant
    swa                  ring buffer of `window` keys and values (B, G, window, hs): constant
    full, full_kv        keys and values (B, G, max_len, hs): grows with the sequence (full_kv's is shared)
    gmu, cross           nothing (the memory is per token; cross layers read full_kv's cache)
"""

from __future__ import annotations

import math

import torch

from sambay.config import ModelConfig


def layer_state_shapes(config: ModelConfig, kind: str, batch: int, max_len: int,
                       dtype: torch.dtype) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """name -> (shape, dtype) of the inference state one layer of `kind` keeps for `batch` sequences."""
    G, hs = config.n_kv_head, config.head_dim
    if kind in ("mamba", "mamba_memory"):
        return {
            "conv_state": ((batch, config.d_inner, config.d_conv - 1), dtype),
            "ssm_state": ((batch, config.d_inner, config.d_state), torch.float32),
        }
    if kind == "swa":  # a ring of `window` entries; sequences that never reach the window need only max_len
        ring = min(config.window, max_len)
        return {"k": ((batch, G, ring, hs), dtype), "v": ((batch, G, ring, hs), dtype)}
    if kind in ("full", "full_kv"):
        return {"k": ((batch, G, max_len, hs), dtype), "v": ((batch, G, max_len, hs), dtype)}
    return {}


def state_nbytes(config: ModelConfig, batch: int, max_len: int, dtype: torch.dtype = torch.bfloat16) -> int:
    """Bytes of every state tensor for `batch` sequences of up to `max_len` tokens (what the engine allocates)."""
    total = 0
    for kind in config.layer_plan:
        for shape, dt in layer_state_shapes(config, kind, batch, max_len, dtype).values():
            total += math.prod(shape) * torch.empty((), dtype=dt).element_size()
    return total


def state_bytes_per_sequence(config: ModelConfig, dtype: torch.dtype = torch.bfloat16) -> tuple[int, int]:
    """(bytes per token of growing K/V, constant bytes of Mamba/window state) for one sequence that is at
    least one window long (shorter sequences allocate rings of only max_len entries)."""
    n = config.window or 1  # from here on only the full-attention caches grow
    per_token = state_nbytes(config, 1, n + 1, dtype) - state_nbytes(config, 1, n, dtype)
    return per_token, state_nbytes(config, 1, n, dtype) - n * per_token
