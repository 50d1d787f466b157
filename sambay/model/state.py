"""What each layer kind must keep between decode steps — the single source for the engine's allocation
and for `sambay describe`.

    mamba, mamba_memory  conv state (B, E, d_conv-1) in the model dtype + SSM state (B, E, N) in fp32: constant
    swa                  ring buffer of `window` keys and values (B, G, window, hs): constant
    full, full_kv        keys and values (B, G, max_len, hs): grows with the sequence (full_kv's is shared)
    gmu, cross           nothing (the memory is per token; cross layers read full_kv's cache)
"""

from __future__ import annotations

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
    if kind == "swa":
        return {"k": ((batch, G, config.window, hs), dtype), "v": ((batch, G, config.window, hs), dtype)}
    if kind in ("full", "full_kv"):
        return {"k": ((batch, G, max_len, hs), dtype), "v": ((batch, G, max_len, hs), dtype)}
    return {}


def _nbytes(shapes: dict) -> int:
    total = 0
    for shape, dtype in shapes.values():
        n = 1
        for s in shape:
            n *= s
        total += n * torch.empty((), dtype=dtype).element_size()
    return total


def state_bytes_per_sequence(config: ModelConfig, dtype: torch.dtype = torch.bfloat16) -> tuple[int, int]:
    """(bytes per token of growing K/V, constant bytes of Mamba/window state) for one sequence."""
    per_token = constant = 0
    for kind in config.layer_plan:
        if kind in ("full", "full_kv"):
            per_token += _nbytes(layer_state_shapes(config, kind, 1, 1, dtype))
        else:
            constant += _nbytes(layer_state_shapes(config, kind, 1, 0, dtype))
    return per_token, constant
