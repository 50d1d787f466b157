"""Decode: one token for every sequence of the batch, reading and updating the state in place.

`decode_step` is a small function over static buffers: token ids, slot indices and positions are device
tensors, the shapes depend only on the batch size and the state's capacity, and the only Python branches
are on the (static) layer plan. That is what a later CUDA-graph capture (gpt-fast style) needs. Every
layer runs on the new token, the cross-decoder included.
"""

from __future__ import annotations

import torch

from sambay.engine import layers
from sambay.engine.prefill import MAMBA, gmu
from sambay.engine.state import InferenceState
from sambay.model.model import CausalLM


@torch.inference_mode()
def decode_step(model: CausalLM, state: InferenceState, tokens: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
    """tokens (B,) int64: the newest token of each sequence; slots (B,) int64, distinct.

    The token at row b enters slot slots[b] at position state.lengths[slots[b]]; that length is then
    incremented. Returns the next-token logits (B, V) in the model dtype. The caller keeps every length
    below state.max_len (nothing here syncs with the host to check it).
    """
    pos = state.lengths[slots]  # (B,)
    x = model.embed(tokens[:, None]).float()  # (B, 1, d) fp32 residual
    memory = shared = None
    for block, st in zip(model.layers, state.layers):
        kind, mixer = block.kind, block.mixer
        if kind in MAMBA:
            x, published = layers.around_mamba(block, x, lambda h, mixer=mixer, st=st: layers.mamba_step(mixer, h, slots, st))
            memory = published if kind == "mamba_memory" else memory
        elif kind in ("swa", "full", "full_kv"):
            x = block.around(x, lambda h, mixer=mixer, st=st: layers.self_attention_step(mixer, h, pos, slots, st))
            shared = st if kind == "full_kv" else shared  # the cross layers read this layer's K/V cache
        elif kind == "gmu":
            x = block.around(x, lambda h, mixer=mixer: gmu(mixer, h, memory))
        elif kind == "cross":
            x = block.around(x, lambda h, mixer=mixer: layers.cross_attention(mixer, h, pos, slots, shared))
        else:  # pragma: no cover - plans are validated
            raise ValueError(f"unknown layer kind {kind!r}")
    state.lengths[slots] = pos + 1
    return model.logits(x)[:, 0]
