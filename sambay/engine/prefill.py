"""Prefill: run prompts into fresh state slots and return the next-token logits of each.

Linear prefill for YOCO plans (PHI4_FLASH_CHECKPOINT.md §8): the self-decoder runs on every prompt token;
the `full_kv` layer projects and stores K/V for every token, but its attention output, its MLP and the whole
cross-decoder run for the last token of each prompt only. That is exact for the next-token logits: the
cross-decoder keeps no state, GMU and MLP are token-wise and cross-attention reads only the stored K/V.

Chunking: a prompt longer than `chunk_size` is cut so that its *first* piece takes the remainder and every
later piece is exactly `chunk_size` long. Pieces are processed in rounds, aligned on the prompts' ends, so
in every round but the last the participating rows are mid-prompt (YOCO: stop after storing full_kv's K/V),
and in the last round every row ends its prompt (run the last-token path). Only a row's first piece is
padded, and it starts from a zero state, which is what makes the left padding exact.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from sambay.engine import layers
from sambay.engine.layers import PrefillBatch
from sambay.engine.state import InferenceState
from sambay.model.context import ForwardContext
from sambay.model.model import CausalLM

MAMBA = ("mamba", "mamba_memory")


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
        batch, ids = PrefillBatch.build([list(prompts[i][a:b]) for i, (a, b) in zip(rows, pieces)],
                                        [slots[i] for i in rows], [a for a, _ in pieces], state.device)
        logits = prefill_piece(model, state, batch, ids, last=r == rounds - 1)
        state.lengths[batch.slots] = batch.positions[:, -1] + 1
    return logits


def prefill_piece(model: CausalLM, state: InferenceState, batch: PrefillBatch, ids: torch.Tensor,
                  last: bool) -> torch.Tensor | None:
    """One round: ids (B, T) left-padded. Returns logits (B, V) when `last`, else None."""
    x = model.embed(ids).float()
    memory = None
    for block, st in zip(model.layers, state.layers):
        kind, mixer = block.kind, block.mixer
        if kind in MAMBA:
            x, published = layers.around_mamba(block, x, lambda h, mixer=mixer, st=st: layers.mamba_prefill(mixer, h, batch, st))
            memory = published if kind == "mamba_memory" else memory
        elif kind in ("swa", "full"):
            x = block.around(x, lambda h, mixer=mixer, st=st: layers.self_attention_prefill(mixer, h, batch, st))
        elif kind == "full_kv":
            if not last:  # nothing after this layer leaves state behind: store K/V and stop
                layers.write_kv_only(mixer, block.norm1(x.to(block.norm1.weight.dtype)), batch, st)
                return None
            # K/V of every token are stored; the rest of the model runs on the last column only.
            h_all = block.norm1(x.to(block.norm1.weight.dtype))
            attn_out = layers.self_attention_prefill(mixer, h_all, batch, st, last_only=True)
            x = block.around(x[:, -1:], lambda h: attn_out)
            memory = None if memory is None else memory[:, -1:]
            pos, shared = batch.positions[:, -1], st  # cross layers read this layer's cache in place
        elif kind == "gmu":
            x = block.around(x, lambda h, mixer=mixer, m=memory: gmu(mixer, h, m))
        elif kind == "cross":
            x = block.around(x, lambda h, mixer=mixer: layers.cross_attention(mixer, h, pos, batch.slots, shared))
        else:  # pragma: no cover - plans are validated
            raise ValueError(f"unknown layer kind {kind!r}")
    if not last:
        return None
    return model.logits(x[:, -1:])[:, 0]


def gmu(mixer, h: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
    """h (B, T, d), memory (B, T, E) -> (B, T, d). The GMU's forward reads only ctx.memory: reuse it."""
    return mixer(h, ForwardContext(positions=None, memory=memory))
