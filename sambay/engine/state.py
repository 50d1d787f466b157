"""The inference state of a batch of sequences: a static slot pool sized from the layer plan.

Each mixer declares what it keeps per slot (`Mixer.state_spec`); the engine owns the tensors. Every tensor is allocated once, with
`max_batch` slots on its first dim, and never resized. For SambaY:

    mamba (M)     conv_state (S, E, d_conv-1) model dtype, ssm_state (S, E, N) fp32
    swa (S)       ring buffer k, v (S, G, window, hs): position p lives at index p % window
    full (F)      k, v (S, G, max_len, hs): position p lives at index p (the shared-K/V layer's is read by
                  every cross-attention layer; Transformer++ has one per layer)
    gmu, cross    nothing

plus `lengths` (S,) int64: tokens already in each slot's state (= the position of its next token).

With `block_size`, the growing caches (full attention's K/V) are paged instead: each is one pool of
`num_blocks` pages of `block_size` tokens, (pages, G, block_size, hs), and `block_table` (S, max_len /
block_size) int32 maps a slot's token p to page block_table[slot, p // block_size]. Pages are taken as a
sequence grows (`ensure_capacity`) and returned when its slot is released, so memory follows the tokens in
use rather than max_len x slots. Every layer's dict of a paged cache also holds the shared `block_table`.
Pages are reference-counted: a prefix cache (`sambay.engine.prefix_cache`) shares the full pages of a
prompt between sequences (`share_pages`), and a page goes back to the free list when its last holder lets
it go. A shared page is never written: sequences only write at positions past the shared prefix.

Requests take a slot with `acquire()` and give it back with `release()`, so a scheduler can admit new
sequences while others decode (continuous batching) without moving any state. Keys are cached after RoPE,
so ring order never matters: only which indices hold a position inside the window.
"""

from __future__ import annotations

import torch

from sambay.config import ModelConfig
from sambay.model.state import state_nbytes


def allocated_bytes(config: ModelConfig, batch: int, max_len: int, dtype: torch.dtype = torch.bfloat16) -> int:
    """Bytes of state tensors `InferenceState(config, batch, max_len, dtype)` allocates (the `lengths`
    bookkeeping, 8 bytes a slot, is not counted). `sambay describe` reports the same number."""
    return state_nbytes(config, batch, max_len, dtype)


class InferenceState:
    """Static state pool for up to `max_batch` sequences of at most `max_len` tokens (prompt + generated).

    Attributes:
        layers: one dict per layer, name -> tensor (see the module docstring); empty for stateless mixers.
        lengths: (max_batch,) int64 on `device`.
    """

    def __init__(self, config: ModelConfig, max_batch: int, max_len: int, dtype: torch.dtype = torch.float32,
                 device: torch.device | str = "cpu", *, block_size: int | None = None, num_blocks: int | None = None):
        if max_batch < 1 or max_len < 1:
            raise ValueError(f"max_batch and max_len must be >= 1 (got {max_batch}, {max_len})")
        if block_size is not None and (block_size < 1 or block_size & (block_size - 1)):
            raise ValueError(f"block_size must be a power of two (got {block_size})")
        self.config = config
        self.max_batch, self.max_len = max_batch, max_len
        self.dtype, self.device = dtype, torch.device(device)
        self.block_size = block_size
        pages_per_seq = 0 if block_size is None else -(-max_len // block_size)
        self.num_blocks = 0 if block_size is None else (max_batch * pages_per_seq if num_blocks is None else num_blocks)
        self.block_table = torch.zeros(max_batch, pages_per_seq, dtype=torch.int32, device=self.device)
        self.layers: list[dict[str, torch.Tensor]] = []
        self._slot_tensors: list[torch.Tensor] = []  # slot on dim 0: reset / copied per slot
        self._pages: list[torch.Tensor] = []  # page on dim 0
        for i in range(config.n_layer):
            tensors = {}
            for name, spec in config.layers[i].mixer_class.state_spec(config, max_len).items():
                dt = dtype if spec.dtype is None else spec.dtype
                if spec.grows and block_size is not None:
                    shape = (self.num_blocks, spec.shape[0], block_size, *spec.shape[2:])
                    tensors[name] = torch.zeros(shape, dtype=dt, device=self.device)
                    tensors["block_table"] = self.block_table
                    self._pages.append(tensors[name])
                else:
                    tensors[name] = torch.zeros((max_batch, *spec.shape), dtype=dt, device=self.device)
                    self._slot_tensors.append(tensors[name])
            self.layers.append(tensors)
        self.lengths = torch.zeros(max_batch, dtype=torch.long, device=self.device)
        self._free = list(range(max_batch))
        self._free_blocks = list(range(self.num_blocks))
        self._refs = [0] * self.num_blocks  # holders of each page: slots and prefix-cache entries
        self._blocks: list[list[int]] = [[] for _ in range(max_batch)]  # pages held by each slot, in order

    # ------------------------------------------------------------------ slots
    @property
    def free_slots(self) -> int:
        return len(self._free)

    def acquire(self) -> int:
        """Take a free slot (lowest index first), cleared; raises RuntimeError when the pool is full."""
        if not self._free:
            raise RuntimeError(f"all {self.max_batch} slots of the inference state are in use")
        slot = self._free.pop(0)
        self.reset(slot)
        return slot

    def release(self, slot: int) -> None:
        """Give a slot back, with every page it holds."""
        if slot in self._free or not 0 <= slot < self.max_batch:
            raise ValueError(f"slot {slot} is not in use")
        self.unref_pages(self._blocks[slot])
        self._blocks[slot] = []
        self._free.append(slot)
        self._free.sort()

    def copy_slot(self, src: int, dst: int, n_tokens: int) -> None:
        """Make the empty slot `dst` continue exactly where `src` is, holding n_tokens tokens: a fork. Full
        pages are shared (neither writes to them again); the partly filled last page is copied (raises
        RuntimeError when no page is free for it)."""
        for t in self._slot_tensors:
            t[dst] = t[src]
        if self._pages and n_tokens:
            full = n_tokens // self.block_size
            self.share_pages(dst, self._blocks[src][:full])
            if n_tokens % self.block_size:
                self.append_page_copy(dst, self._blocks[src][full])
        self.lengths[dst] = self.lengths[src]

    def reset(self, slot: int) -> None:
        """Zero one slot. Prefill relies on a fresh slot holding zero Mamba state and length 0 (pages are
        never read past a slot's length, so they need no clearing)."""
        for t in self._slot_tensors:
            t[slot].zero_()
        self.lengths[slot] = 0

    # ------------------------------------------------------------------ pages
    @property
    def paged(self) -> bool:
        return bool(self._pages)

    @property
    def free_blocks(self) -> int:
        return len(self._free_blocks)

    def blocks_for(self, n_tokens: int) -> int:
        return -(-n_tokens // self.block_size) if self.paged else 0

    def can_hold(self, slot: int, n_tokens: int) -> bool:
        """Whether `slot` holds, or can get pages for, its first n_tokens tokens."""
        return self.blocks_for(n_tokens) - len(self._blocks[slot]) <= len(self._free_blocks)

    def ensure_capacity(self, slot: int, n_tokens: int) -> bool:
        """Give `slot` pages for its first n_tokens tokens; False (nothing taken) when too few are free."""
        need = self.blocks_for(n_tokens) - len(self._blocks[slot])
        if need <= 0:
            return True
        if need > len(self._free_blocks):
            return False
        self._append_pages(slot, self.take_pages(need))
        return True

    def take_pages(self, n: int) -> list[int]:
        """n free pages, each with one holder (the caller); raises RuntimeError when too few are free."""
        if n > len(self._free_blocks):
            raise RuntimeError(f"{n} pages wanted, {len(self._free_blocks)} free")
        pages = [self._free_blocks.pop() for _ in range(n)]
        for page in pages:
            self._refs[page] = 1
        return pages

    def ref_pages(self, pages: list[int]) -> None:
        for page in pages:
            self._refs[page] += 1

    def unref_pages(self, pages: list[int]) -> None:
        """Drop one holder of each page; a page nobody holds is free again."""
        for page in pages:
            self._refs[page] -= 1
            if self._refs[page] == 0:
                self._free_blocks.append(page)

    def pages_of(self, slot: int) -> list[int]:
        return list(self._blocks[slot])

    def share_pages(self, slot: int, pages: list[int]) -> None:
        """Put `pages` (full, already filled; the caller's holds stay its own) first in the empty `slot`'s
        page list: the slot reads them as its first len(pages) x block_size tokens."""
        if self._blocks[slot]:
            raise ValueError(f"slot {slot} already holds pages")
        self.ref_pages(pages)
        self._append_pages(slot, pages)

    def copy_page(self, src: int, dst: int) -> None:
        """Copy one page's contents into another (copy-on-write of a partly filled page)."""
        for t in self._pages:
            t[dst] = t[src]

    def append_page_copy(self, slot: int, src: int) -> None:
        """Give `slot` a new page holding a copy of page `src` (raises RuntimeError when none is free)."""
        (own,) = self.take_pages(1)
        self.copy_page(src, own)
        self._append_pages(slot, [own])

    def _append_pages(self, slot: int, pages: list[int]) -> None:
        first = len(self._blocks[slot])
        self._blocks[slot] += pages
        if pages:
            self.block_table[slot, first:first + len(pages)] = torch.tensor(pages, dtype=torch.int32, device=self.device)

    @property
    def slot_tensors(self) -> list[torch.Tensor]:
        """The constant-size state tensors (slot on dim 0): what a prefix-cache snapshot copies."""
        return self._slot_tensors

    # ------------------------------------------------------------------ accounting
    def nbytes(self) -> int:
        """Bytes held by the state tensors (unpaged: what `allocated_bytes` predicts)."""
        return sum(t.numel() * t.element_size() for t in (*self._slot_tensors, *self._pages))

    def __repr__(self) -> str:
        return (f"InferenceState(slots={self.max_batch}, max_len={self.max_len}, dtype={self.dtype}, "
                f"{self.nbytes() / 2**20:.2f} MiB)")
