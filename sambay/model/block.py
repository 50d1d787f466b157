"""The one block every architecture is made of: pre-norm mixer + pre-norm SwiGLU MLP, fp32 residual."""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial

import torch
from torch import nn

from sambay.config import ModelConfig
from sambay.model.attention import CrossAttention, SelfAttention
from sambay.model.context import ForwardContext
from sambay.model.gmu import GMU
from sambay.model.mamba import Mamba
from sambay.model.mlp import SwiGLU
from sambay.model.norm import make_norm

# layer kind -> mixer constructor (config, global layer index)
MIXERS: dict[str, Callable[[ModelConfig, int], nn.Module]] = {
    "mamba": partial(Mamba, writes_memory=False),
    "mamba_memory": partial(Mamba, writes_memory=True),
    "swa": lambda c, i: SelfAttention(c, i, window=c.window),
    "full": lambda c, i: SelfAttention(c, i, window=None),
    "full_kv": lambda c, i: SelfAttention(c, i, window=None, shares_kv=True),
    "gmu": GMU,
    "cross": CrossAttention,
}


class Block(nn.Module):
    def __init__(self, config: ModelConfig, layer_idx: int):
        super().__init__()
        self.kind = config.layer_plan[layer_idx]
        self.layer_idx = layer_idx
        self.norm1 = make_norm(config.norm, config.d_model, config.norm_eps)
        self.mixer = MIXERS[self.kind](config, layer_idx)
        self.norm2 = make_norm(config.norm, config.d_model, config.norm_eps)
        self.mlp = SwiGLU(config)
        # μP++ (Depth-μP): every branch is scaled by 1/sqrt(2L) before it joins the residual stream.
        self.branch_scale = 1.0 / math.sqrt(2 * config.n_layer) if config.parametrization == "mup++" else 1.0

    def forward(self, x: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:
        """x (B, T, d) fp32 residual stream -> (B, T, d) fp32. Norm inputs are cast to the weight dtype."""
        return self.around(x, lambda h: self.mixer(h, ctx))

    def around(self, x: torch.Tensor, mix: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """The block around any mixer call `mix(norm1(x)) -> (B, T, d)`; the inference engine passes its
        stateful prefill / decode paths here so both paths share the residual arithmetic."""
        dtype = self.norm1.weight.dtype
        x = x + mix(self.norm1(x.to(dtype))).float() * self.branch_scale
        x = x + self.mlp(self.norm2(x.to(dtype))).float() * self.branch_scale
        return x
