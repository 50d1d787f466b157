"""The inference state of a batch of sequences: a static slot pool sized from the layer plan.

Each mixer declares what it keeps per slot (`Mixer.state_spec`, read through
`sambay.model.state.layer_state_shapes`); the engine owns the tensors. Every tensor is allocated once, with
`max_batch` slots on its first dim, and never resized. For SambaY:

    mamba (M)     conv_state (S, E, d_conv-1) model dtype, ssm_state (S, E, N) fp32
    swa (S)       ring buffer k, v (S, G, window, hs): position p lives at index p % window
    full (F)      k, v (S, G, max_len, hs): position p lives at index p (the shared-K/V layer's is read by
                  every cross-attention layer; Transformer++ has one per layer)
    gmu, cross    nothing

plus `lengths` (S,) int64: tokens already in each slot's state (= the position of its next token).

Requests take a slot with `acquire()` and give it back with `release()`, so a scheduler can admit new
sequences while others decode (continuous batching) without moving any state. Keys are cached after RoPE,
so ring order never matters: only which indices hold a position inside the window.
"""

from __future__ import annotations

import torch

from sambay.config import ModelConfig
from sambay.model.state import layer_state_shapes, state_nbytes


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
                 device: torch.device | str = "cpu"):
        if max_batch < 1 or max_len < 1:
            raise ValueError(f"max_batch and max_len must be >= 1 (got {max_batch}, {max_len})")
        self.config = config
        self.max_batch, self.max_len = max_batch, max_len
        self.dtype, self.device = dtype, torch.device(device)
        self.layers: list[dict[str, torch.Tensor]] = [
            {name: torch.zeros(shape, dtype=dt, device=self.device)
             for name, (shape, dt) in layer_state_shapes(config, i, max_batch, max_len, dtype).items()}
            for i in range(config.n_layer)
        ]
        self.lengths = torch.zeros(max_batch, dtype=torch.long, device=self.device)
        self._free = list(range(max_batch))

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
        if slot in self._free or not 0 <= slot < self.max_batch:
            raise ValueError(f"slot {slot} is not in use")
        self._free.append(slot)
        self._free.sort()

    def copy_slot(self, src: int, dst: int) -> None:
        """Make slot `dst` continue exactly where `src` is (every layer's state and the length): a fork."""
        for tensors in self.layers:
            for t in tensors.values():
                t[dst] = t[src]
        self.lengths[dst] = self.lengths[src]

    def reset(self, slot: int) -> None:
        """Zero one slot. Prefill relies on a fresh slot holding zero Mamba state and length 0."""
        for tensors in self.layers:
            for t in tensors.values():
                t[slot].zero_()
        self.lengths[slot] = 0

    # ------------------------------------------------------------------ accounting
    def nbytes(self) -> int:
        """Bytes held by the state tensors (what `allocated_bytes` predicts)."""
        return sum(t.numel() * t.element_size() for tensors in self.layers for t in tensors.values())

    def __repr__(self) -> str:
        return (f"InferenceState(slots={self.max_batch}, max_len={self.max_len}, dtype={self.dtype}, "
                f"{self.nbytes() / 2**20:.2f} MiB)")
