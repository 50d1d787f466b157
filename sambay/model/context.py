"""What flows through the stack beside the residual stream: `ForwardContext` for a whole-sequence forward,
`InferenceContext` for one engine call (a prefill chunk or a decode step).

Each is built once per call (positions, document ids, masks are computed once and reused by every layer) and
filled in on the way: the layer with the "memory" role publishes `memory`, the layer with the "shared_kv"
role publishes `shared_kv`, and the cross-decoder reads both.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from sambay.ops.attention import attention
from sambay.ops.attention.prefill import flex_block_masks, prefill_attention

# core(q (B, Tq, H, hs), k (B, Tk, G, hs), v (B, Tk, G, dv)) -> (B, Tq, H, dv): masked softmax attention
AttentionCore = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def masked_core(mask: torch.Tensor) -> AttentionCore:
    """Attention under an explicit (B|1, 1, Tq, Tk) boolean mask."""
    return lambda q, k, v: attention(q, k, v, mask)


class ForwardContext:
    """Per-batch metadata plus what the memory / shared-K/V layers publish.

    A plain class on purpose: layers mutate it, and parallel wrappers (FSDP2) rebuild dataclass and
    container arguments that hold grad-requiring tensors, which would hand later blocks a copy.
    """

    __slots__ = ("positions", "document_ids", "memory", "shared_kv", "block_masks", "_masks")

    def __init__(self, positions: torch.Tensor, document_ids: torch.Tensor | None = None,
                 memory: torch.Tensor | None = None,
                 shared_kv: tuple[torch.Tensor, torch.Tensor] | None = None):
        self.positions = positions  # (B, T) int64 absolute positions of the queries
        self.document_ids = document_ids  # (B, T) int; tokens attend / carry state only within a document
        self.memory = memory  # (B, T, d_inner) GMU memory from the mamba_memory layer
        self.shared_kv = shared_kv  # (B, T, G, hs) each, from the full_kv layer
        self.block_masks: dict = {}  # window -> flex BlockMask, prebuilt by `for_tokens` (CUDA only)
        self._masks: dict = {}

    @classmethod
    def for_tokens(cls, input_ids: torch.Tensor, document_ids: torch.Tensor | None = None,
                   windows=()) -> ForwardContext:
        """Context for a (B, T) batch. `windows`: the attention windows the layers will ask for; on CUDA
        their flex block masks are built here, eagerly, so compiled blocks receive them as inputs."""
        batch, seqlen = input_ids.shape
        positions = torch.arange(seqlen, device=input_ids.device).expand(batch, seqlen)
        if document_ids is not None and document_ids.shape != input_ids.shape:
            raise ValueError(f"document_ids shape {tuple(document_ids.shape)} != input_ids shape {tuple(input_ids.shape)}")
        ctx = cls(positions=positions, document_ids=document_ids)
        if input_ids.is_cuda:
            ctx.block_masks = flex_block_masks(positions, windows, document_ids)
        return ctx

    def attention_core(self, window: int | None) -> AttentionCore:
        """Causal attention over this batch (`window` keys including the query, or all; within documents).

        CUDA: fused kernels that never build a dense mask (SDPA causal, flex_attention block masks); CPU: the
        dense mask below, built once per window and shared by every layer.
        """
        if self.positions.is_cuda:
            block_mask = self.block_masks.get(window)
            return lambda q, k, v: prefill_attention(q, k, v, window=window, document_ids=self.document_ids,
                                                     block_mask=block_mask)
        return masked_core(self.attention_mask(window))

    def attention_mask(self, window: int | None) -> torch.Tensor:
        """(B, 1, T, T) bool, True where query i may attend key j: j <= i, i - j < window, same document."""
        if window not in self._masks:
            q = self.positions[:, :, None]
            k = self.positions[:, None, :]
            mask = k <= q
            if window is not None:
                mask = mask & (q - k < window)  # true sliding window: `window` keys including the query itself
            if self.document_ids is not None:
                mask = mask & (self.document_ids[:, :, None] == self.document_ids[:, None, :])
            self._masks[window] = mask[:, None]
        return self._masks[window]


def document_ids_from_cu_seqlens(cu_seqlens: torch.Tensor, total: int) -> torch.Tensor:
    """cu_seqlens (n_docs + 1,) of one packed sequence -> (1, total) document ids."""
    cu = cu_seqlens.to(torch.long)
    if cu[0].item() != 0 or cu[-1].item() != total or bool((cu[1:] < cu[:-1]).any()):
        raise ValueError(f"cu_seqlens must start at 0, be non-decreasing and end at the sequence length {total}")
    lengths = cu[1:] - cu[:-1]
    return torch.repeat_interleave(torch.arange(len(lengths), device=cu.device), lengths)[None]


class InferenceContext:
    """One engine call over a batch of state slots: a prefill chunk (B, T) or a decode step (B, 1).

    Prefill rows are left-padded: every row's last token sits in the last column, and padded columns are a
    separate leading document (`document_ids`), so conv taps and scans reset at the first real token and a
    padded position never reaches a state, a window or a K/V cache.

    slots (B,) int64 state slots; positions (B, T) int64 absolute positions (negative on padding);
    real (B, T) bool, False on padding (None: nothing is padded); starts (B,) int64 tokens already in each
    slot before this call; max_start: max(starts) and max_keys: max(positions) + 1, as Python ints (they size
    key slices without a device sync; None in a decode step, whose attention reads lengths on the device).
    `memory` and `shared_kv` are
    what the memory / shared-K/V layers publish on the way (the latter is that layer's cache dict).
    """

    __slots__ = ("slots", "positions", "real", "starts", "max_start", "max_keys", "memory", "shared_kv")

    def __init__(self, slots: torch.Tensor, positions: torch.Tensor, real: torch.Tensor | None,
                 starts: torch.Tensor, max_start: int | None = None, max_keys: int | None = None):
        self.slots, self.positions, self.real = slots, positions, real
        self.starts, self.max_start, self.max_keys = starts, max_start, max_keys
        self.memory: torch.Tensor | None = None
        self.shared_kv: dict[str, torch.Tensor] | None = None

    @classmethod
    def decode(cls, slots: torch.Tensor, positions: torch.Tensor) -> InferenceContext:
        """One token per row: slots (B,), positions (B,) = tokens already in each slot."""
        return cls(slots, positions[:, None], None, positions)

    @classmethod
    def prefill(cls, pieces: list[list[int]], slots: list[int], starts: list[int],
                device) -> tuple[InferenceContext, torch.Tensor]:
        """Left-pad the pieces (piece b continues slot slots[b] at position starts[b]); returns the context
        and the (B, T) input ids (padding uses id 0)."""
        width = max(len(p) for p in pieces)
        ids = torch.zeros(len(pieces), width, dtype=torch.long)
        real = torch.zeros(len(pieces), width, dtype=torch.bool)
        positions = torch.empty(len(pieces), width, dtype=torch.long)
        for b, (piece, start) in enumerate(zip(pieces, starts)):
            pad = width - len(piece)
            ids[b, pad:] = torch.as_tensor(piece, dtype=torch.long)
            real[b, pad:] = True
            positions[b] = torch.arange(width) - pad + start
        ctx = cls(torch.as_tensor(slots, dtype=torch.long, device=device), positions.to(device),
                  None if bool(real.all()) else real.to(device),
                  torch.as_tensor(starts, dtype=torch.long, device=device), max(starts),
                  max(s + len(p) for s, p in zip(starts, pieces)))
        return ctx, ids.to(device)

    @property
    def document_ids(self) -> torch.Tensor | None:
        """(B, T): padding is document 0, the real tokens document 1 (None when nothing is padded)."""
        return None if self.real is None else self.real.long()

    @property
    def real_mask(self) -> torch.Tensor:
        """(B, T) bool, True on real tokens."""
        return torch.ones_like(self.positions, dtype=torch.bool) if self.real is None else self.real

    def last_column(self) -> InferenceContext:
        """The same call restricted to each row's last token (which is always real); published values too."""
        ctx = InferenceContext(self.slots, self.positions[:, -1:], None, self.starts, self.max_start, self.max_keys)
        ctx.memory = None if self.memory is None else self.memory[:, -1:]
        ctx.shared_kv = self.shared_kv
        return ctx
