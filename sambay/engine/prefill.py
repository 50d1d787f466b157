"""Prefill: run prompts into fresh state slots and return the next-token logits of each.

Linear prefill: every layer up to the last one that keeps inference state runs on every prompt token; that
layer writes its state for every token but computes its output for the last token only, and every later
layer (all token-wise: in SambaY the whole cross-decoder, which reads the shared K/V cache and the memory
in place) runs on the last token only. That is exact for the next-token logits. In a chunk that does not end
its prompt, nothing after that layer runs at all.

Chunking: a prompt longer than `chunk_size` is cut so that its *first* piece takes the remainder and every
later piece is exactly `chunk_size` long. Pieces are processed in rounds, aligned on the prompts' ends, so in
every round but the last the participating rows are mid-prompt, and in the last round every row ends its
prompt. Only a row's first piece is padded, and it starts from a zero state, which is what makes the left
padding exact.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from sambay.engine.state import InferenceState
from sambay.model.context import InferenceContext
from sambay.model.model import CausalLM


def split_prompt(n: int, chunk_size: int | None) -> list[tuple[int, int]]:
    """Pieces (start, end) of a prompt of n tokens: the first takes the remainder, the rest chunk_size."""
    if chunk_size is None or n <= chunk_size:
        return [(0, n)]
    rounds = math.ceil(n / chunk_size)
    first = n - (rounds - 1) * chunk_size
    return [(0, first)] + [(first + i * chunk_size, first + (i + 1) * chunk_size) for i in range(rounds - 1)]


@torch.inference_mode()
def prefill(model: CausalLM, state: InferenceState, prompts: Sequence[Sequence[int]], slots: Sequence[int],
            chunk_size: int | None = None) -> torch.Tensor:
    """Prefill each prompt (a list of token ids) into its fresh slot (length 0, zero state).

    Returns the logits (B, V) after the last token of each prompt, in the model dtype; sets
    `state.lengths[slots]` to the prompt lengths.
    """
    if len(prompts) != len(slots) or not prompts:
        raise ValueError(f"need one slot per prompt (got {len(prompts)} prompts, {len(slots)} slots)")
    if chunk_size is not None and chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1 (got {chunk_size})")
    for i, p in enumerate(prompts):
        if not 0 < len(p) <= state.max_len:
            raise ValueError(f"prompt {i} has {len(p)} tokens; the state holds 1..{state.max_len}")
    plans = [split_prompt(len(p), chunk_size) for p in prompts]
    rounds = max(len(pl) for pl in plans)
    logits = None
    for r in range(rounds):
        rows = [i for i, pl in enumerate(plans) if len(pl) >= rounds - r]
        pieces = [plans[i][r - (rounds - len(plans[i]))] for i in rows]
        ctx, ids = InferenceContext.prefill([list(prompts[i][a:b]) for i, (a, b) in zip(rows, pieces)],
                                            [slots[i] for i in rows], [a for a, _ in pieces], state.device)
        logits = prefill_chunk(model, state, ctx, ids, last=r == rounds - 1)
    return logits


def prefill_chunk(model: CausalLM, state: InferenceState, ctx: InferenceContext, ids: torch.Tensor,
                  last: bool, every_position: bool = False) -> torch.Tensor | None:
    """One chunk, ids (B, T) left-padded, continuing the slots' state; sets `state.lengths` of its slots.

    Returns the logits (B, V) after each row's last token when `last`, else None (skipping every layer after
    the last stateful one). Rows mid-prompt may share a `last` call: their logits are simply not used.
    With `every_position` every layer runs on every token and the logits (B, T, V) of every column come back
    (for prompt logprobs)."""
    logits = _run_chunk(model, state, ctx, ids, last, every_position)
    state.lengths[ctx.slots] = ctx.positions[:, -1] + 1
    return logits


def _run_chunk(model: CausalLM, state: InferenceState, ctx: InferenceContext, ids: torch.Tensor,
               last: bool, every_position: bool) -> torch.Tensor | None:
    if every_position:
        x = model.embed(ids).float()
        for block, layer_state in zip(model.layers, state.layers):
            x = block.prefill(x, ctx, layer_state)
        return model.logits(x)
    tail = model.config.last_stateful_layer  # after it, only each row's last token matters
    x = model.embed(ids).float()
    for i, (block, layer_state) in enumerate(zip(model.layers, state.layers)):
        if i < tail:
            x = block.prefill(x, ctx, layer_state)
        elif i == tail and not last:
            block.prefill(x, ctx, layer_state, outputs="none")
            return None
        elif i == tail:
            x = block.prefill(x, ctx, layer_state, outputs="last")
            ctx = ctx.last_column()
        else:
            x = block.prefill(x, ctx, layer_state)
    return model.logits(x[:, -1:])[:, 0] if last else None
