"""SwiGLU MLP: every block of every architecture has one."""

from __future__ import annotations

import torch
from torch import nn

from sambay.config import ModelConfig
from sambay.model.norm import swiglu


class SwiGLU(nn.Module):
    """fc2(silu(gate) * up) with `fc1` producing [gate | up] in that order (d -> 2·d_ff), no biases."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.fc1 = nn.Linear(config.d_model, 2 * config.d_ff, bias=False)
        self.fc2 = nn.Linear(config.d_ff, config.d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, d) -> (B, T, d)
        gate, up = self.fc1(x).chunk(2, dim=-1)
        return self.fc2(swiglu(gate, up))
