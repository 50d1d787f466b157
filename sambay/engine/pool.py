"""How big the engine's state pool is: slots for the constant per-sequence state (Mamba, SWA rings) and
pages for the growing caches (full-attention K/V), from a memory budget and max_model_len."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sambay.config import ModelConfig
from sambay.model.state import state_bytes


@dataclass(frozen=True)
class PoolSize:
    slots: int  # sequences that hold state at once
    num_blocks: int | None  # pages of block_size tokens for the growing caches (None: not paged)


def size_pool(config: ModelConfig, max_model_len: int, dtype: torch.dtype, *, max_num_seqs: int | None,
              memory_budget: int | None, block_size: int | None, num_blocks: int | None = None,
              default_seqs: int = 256) -> PoolSize:
    """Slots and pages. Without a budget: max_num_seqs (default 16) slots and, paged, enough pages for every
    slot to reach max_model_len (or `num_blocks`). With one: the slots' constant state and at least one
    max_model_len sequence's pages must fit; the rest of the budget becomes pages (at most what every slot at
    max_model_len would use), or slots when unpaged."""
    if max_num_seqs is not None and (not isinstance(max_num_seqs, int) or max_num_seqs < 1):
        raise ValueError(f"max_num_seqs must be an integer >= 1 (got {max_num_seqs!r})")
    constant, per_token = state_bytes(config, max_model_len, dtype)
    paged = block_size is not None and per_token > 0
    pages_per_seq = -(-max_model_len // block_size) if paged else 0
    if num_blocks is not None and num_blocks < pages_per_seq:
        raise ValueError(f"num_blocks ({num_blocks}) cannot hold one sequence of max_model_len {max_model_len} "
                         f"({pages_per_seq} pages of {block_size} tokens)")
    if memory_budget is None:
        slots = max_num_seqs or 16
        return PoolSize(slots, (num_blocks or slots * pages_per_seq) if paged else None)
    if not paged:
        per_seq = constant + per_token * max_model_len
        fits = int(memory_budget // per_seq)
        if fits < 1:
            raise ValueError(f"the state of one request of max_model_len {max_model_len} takes {per_seq:,} bytes; "
                             f"the memory budget is {memory_budget:,} bytes: lower max_model_len or raise the budget")
        return PoolSize(min(fits, max_num_seqs or default_seqs), None)
    page_bytes = per_token * block_size
    least = pages_per_seq * page_bytes  # one sequence of max_model_len must fit
    slots = max_num_seqs or max(1, min(default_seqs, int((memory_budget - least) // max(constant, 1))))
    pages = int((memory_budget - slots * constant) // page_bytes)
    if pages < pages_per_seq:
        raise ValueError(f"{slots} slots of {constant:,} bytes and the {least:,} bytes of pages for one request of "
                         f"max_model_len {max_model_len} do not fit the memory budget of {memory_budget:,} bytes: "
                         "lower max_model_len or max_num_seqs, or raise the budget")
    pages = min(pages, slots * pages_per_seq)  # more than every slot at max_model_len is never used
    return PoolSize(slots, pages if num_blocks is None else min(pages, num_blocks))
