"""Gated Memory Unit: re-weights the memory of layer L/2 with a gate on the current input.

    GMU(x, m)  = out_proj( silu(in_proj(x)) * m )
    nGMU(x, m) = out_proj( RMSNorm(silu(in_proj(x)) * m) )   (for linear-attention memories)

`m` is the memory published by the `mamba_memory` layer at the same token position, so a GMU keeps no
inference state of its own.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sambay.config import ModelConfig
from sambay.model.context import ForwardContext
from sambay.model.norm import RMSNorm, swiglu


class GMU(nn.Module):
    def __init__(self, config: ModelConfig, layer_idx: int):
        super().__init__()
        d_mem = config.d_inner  # the memory is the Mamba scan output, width 2·d_model
        self.in_proj = nn.Linear(config.d_model, d_mem, bias=False)
        self.out_proj = nn.Linear(d_mem, config.d_model, bias=False)
        self.norm = RMSNorm(d_mem, config.norm_eps) if config.gmu_norm else None

    def forward(self, x: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:
        """x (B, T, d), ctx.memory (B, T, d_mem) -> (B, T, d)."""
        memory = ctx.memory
        if memory is None:
            raise RuntimeError("GMU layer ran before any 'mamba_memory' layer published a memory")
        gate = self.in_proj(x)
        if self.norm is None:
            return self.out_proj(swiglu(gate, memory.to(gate.dtype)))
        return self.out_proj(self.norm(F.silu(gate) * memory.to(gate.dtype)))
