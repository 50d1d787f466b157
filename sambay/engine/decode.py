"""Decode: one token for every sequence of the batch, reading and updating the state in place.

`decode_step` is a small function over static buffers: token ids, slot indices and positions are device
tensors, the shapes depend only on the batch size and the state's capacity, and the loop over layers is
fixed by the model. That is what a CUDA-graph capture (gpt-fast style) needs. Every layer runs on the new
token, the cross-decoder included.
"""

from __future__ import annotations

import torch

from sambay.engine.state import InferenceState
from sambay.model.context import InferenceContext
from sambay.model.model import CausalLM


@torch.inference_mode()
def decode_step(model: CausalLM, state: InferenceState, tokens: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
    """tokens (B,) int64: the newest token of each sequence; slots (B,) int64, distinct.

    The token at row b enters slot slots[b] at position state.lengths[slots[b]]; that length is then
    incremented. Returns the next-token logits (B, V) in the model dtype. The caller keeps every length
    below state.max_len (nothing here syncs with the host to check it).
    """
    pos = state.lengths[slots]  # (B,)
    ctx = InferenceContext.decode(slots, pos)
    x = model.embed(tokens[:, None]).float()  # (B, 1, d) fp32 residual
    for block, layer_state in zip(model.layers, state.layers):
        x = block.step(x, ctx, layer_state)
    state.lengths[slots] = pos + 1
    return model.logits(x)[:, 0]
