"""The contract every token mixer implements, so that the model, the engine, `describe`, the benchmarks and the
training metrics can loop over layers without knowing their kinds.

A mixer is the part of a block between the first norm and the residual add. It owns:

    forward(h, ctx)                       training / scoring over whole sequences (ctx: ForwardContext)
    state_spec(config, max_len)           what it keeps per inference slot: name -> StateSpec
    prefill(h, ctx, state, outputs)       a chunk of tokens into its slots, continuing from what they hold
    step(h, ctx, state)                   one token for each row of a batch of slots
    roles / reads                         what it can publish for later layers, and what it reads
    decode_state_bytes, flops_per_token   its cost per token, for the roofline and MFU reports
    checkpoint_names                      how its parameters are named in foreign checkpoint formats

`state` is the layer's dict name -> tensor (slots on dim 0) allocated from `state_spec`; `ctx` in prefill and
step is an `InferenceContext` (slots, positions and what earlier layers published). A mixer with a role
publishes on the context: "memory" sets `ctx.memory` (B, T, d_mem), "shared_kv" sets `ctx.shared_kv` (the
(k, v) tensors in a forward, the layer's own cache dict at inference).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, Literal, NamedTuple

import torch
from torch import nn

if TYPE_CHECKING:
    from sambay.config import ModelConfig
    from sambay.model.context import ForwardContext, InferenceContext

# Which columns of a prefill chunk the caller needs back: every token, only the last token of each row
# (every later layer is token-wise), or none (no later layer keeps state: only this layer's state matters).
Outputs = Literal["all", "last", "none"]


class StateSpec(NamedTuple):
    """One state tensor of one slot: its shape and dtype (None: the engine's state dtype, i.e. the model's).

    `grows`: the tensor holds one entry per token along its axis 1 (sized max_len): a cache the engine may
    page, storing it as (pages, shape[0], page_size, *shape[2:]) behind a per-slot block table.
    """

    shape: tuple[int, ...]
    dtype: torch.dtype | None = None
    grows: bool = False


class Mixer(nn.Module):
    """Base class of every mixer; the defaults describe a token-wise mixer without state or cost."""

    name: ClassVar[str]  # registry name, the kind string without a role suffix
    symbol: ClassVar[str]  # one or two letters in the rendered plan
    roles: ClassVar[frozenset[str]] = frozenset()  # roles this mixer can take ("memory", "shared_kv")
    reads: ClassVar[tuple[str, ...]] = ()  # context channels it needs from an earlier layer
    keeps_state: ClassVar[bool] = False  # True when state_spec is not empty (plans check it without a config)
    # format -> ((sambay name prefix under `mixer.`, that format's prefix under the layer), ...), first match wins
    checkpoint_names: ClassVar[dict[str, tuple[tuple[str, str], ...]]] = {}
    init_preserves: ClassVar[tuple[str, ...]] = ()  # Linear biases the model init leaves as the mixer set them

    def __init__(self, config: ModelConfig, layer_idx: int, role: str | None = None):
        super().__init__()
        self.layer_idx = layer_idx
        self.role = role

    def forward(self, h: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:
        """h (B, T, d) normed inputs of whole sequences -> (B, T, d); publishes on ctx with a role."""
        raise NotImplementedError

    def init_extra_parameters(self) -> None:
        """Called by the model init after the matrices (see `sambay.model.parametrization`) for parameters
        that follow a mixer-specific rule."""

    # ------------------------------------------------------------------ inference state
    @classmethod
    def state_spec(cls, config: ModelConfig, max_len: int) -> dict[str, StateSpec]:
        """name -> StateSpec of the state one slot keeps for sequences of up to `max_len` tokens."""
        return {}

    def prefill(self, h: torch.Tensor, ctx: InferenceContext, state: dict[str, torch.Tensor],
                outputs: Outputs = "all") -> torch.Tensor | None:
        """h (B, T, d) normed inputs of one chunk (left-padded; see `InferenceContext`) -> (B, T, d), (B, 1, d)
        for outputs="last", or None for outputs="none". Stateless default: the forward on the columns given."""
        if outputs == "none":
            return None
        return self.forward(h[:, -1:] if outputs == "last" else h, ctx)

    def step(self, h: torch.Tensor, ctx: InferenceContext, state: dict[str, torch.Tensor]) -> torch.Tensor:
        """h (B, 1, d) -> (B, 1, d): one token per row, reading and updating `state` at `ctx.slots` in place."""
        return self.forward(h, ctx)

    # ------------------------------------------------------------------ cost
    @classmethod
    def decode_state_bytes(cls, config: ModelConfig, context: int, itemsize: int) -> int:
        """Bytes of inference state one decode step must move per sequence at `context` tokens (reads of
        K/V, read + write of recurrent state); weights are counted separately. `itemsize`: the state dtype's."""
        return 0

    @classmethod
    def flops_per_token(cls, config: ModelConfig, seq_len: int) -> float:
        """Forward FLOPs per token beyond the weight matmuls (attention scores and values), averaged over a
        causal sequence of `seq_len` tokens."""
        return 0.0

    @classmethod
    def attention_windows(cls, config: ModelConfig) -> tuple[int | None, ...]:
        """Key windows this mixer attends with in a forward (None: full causal); () if it does not attend."""
        return ()

    @classmethod
    def check_config(cls, config: ModelConfig) -> str | None:
        """A message naming the broken rule when `config` cannot build this mixer, else None."""
        return None
