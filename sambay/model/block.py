"""The one block every architecture is made of: pre-norm mixer + pre-norm SwiGLU MLP, fp32 residual.

The mixer is whatever the plan entry names (`sambay.model.mixers`); the block adds the same residual
arithmetic around it in the training forward, in a prefill chunk and in a decode step. The MLP is token-wise
and keeps no state, so it is the same call in all three.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from sambay.config import ModelConfig
from sambay.model.mixers import Outputs
from sambay.model.mlp import SwiGLU
from sambay.model.norm import make_norm
from sambay.plan import parse


class Block(nn.Module):
    def __init__(self, config: ModelConfig, layer_idx: int):
        super().__init__()
        self.spec = parse(config.layer_plan[layer_idx])
        self.layer_idx = layer_idx
        self.norm1 = make_norm(config.norm, config.d_model, config.norm_eps)
        self.mixer = self.spec.mixer_class(config, layer_idx, self.spec.role)
        self.norm2 = make_norm(config.norm, config.d_model, config.norm_eps)
        self.mlp = SwiGLU(config)
        # μP++ (Depth-μP): every branch is scaled by 1/sqrt(2L) before it joins the residual stream.
        self.branch_scale = 1.0 / math.sqrt(2 * config.n_layer) if config.parametrization == "mup++" else 1.0

    @property
    def kind(self) -> str:
        """The plan entry's kind string, e.g. 'mamba_memory'."""
        return str(self.spec)

    def forward(self, x: torch.Tensor, ctx) -> torch.Tensor:
        """x (B, T, d) fp32 residual stream -> (B, T, d) fp32. Norm inputs are cast to the weight dtype."""
        return self._residual(x, self.mixer(self._norm1(x), ctx))

    def prefill(self, x: torch.Tensor, ctx, state: dict[str, torch.Tensor],
                outputs: Outputs = "all") -> torch.Tensor | None:
        """One prefill chunk x (B, T, d) -> (B, T, d), (B, 1, d) for outputs="last", or None for "none"
        (only the mixer's state is written)."""
        mixed = self.mixer.prefill(self._norm1(x), ctx, state, outputs)
        if mixed is None:
            return None
        return self._residual(x[:, -1:] if outputs == "last" else x, mixed)

    def step(self, x: torch.Tensor, ctx, state: dict[str, torch.Tensor]) -> torch.Tensor:
        """One decode step x (B, 1, d) -> (B, 1, d), updating the mixer's state at ctx.slots."""
        return self._residual(x, self.mixer.step(self._norm1(x), ctx, state))

    def _norm1(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm1(x.to(self.norm1.weight.dtype))

    def _residual(self, x: torch.Tensor, mixed: torch.Tensor) -> torch.Tensor:
        x = x + mixed.float() * self.branch_scale
        return x + self.mlp(self.norm2(x.to(self.norm2.weight.dtype))).float() * self.branch_scale
