"""Gated Memory Unit: re-weights the memory published earlier in the stack with a gate on the current input.

    GMU(x, m)  = out_proj( silu(in_proj(x)) * m )
    nGMU(x, m) = out_proj( RMSNorm(silu(in_proj(x)) * m) )   (config.gmu_norm; for linear-attention memories)

`m` is the memory at the same token position (the scan output of the layer with the "memory" role), so a
GMU is token-wise and keeps no inference state: prefill and decode are its forward.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from sambay.model.mixers.base import Mixer
from sambay.model.norm import RMSNorm, swiglu

if TYPE_CHECKING:
    from sambay.config import ModelConfig


class GMU(Mixer):
    name, symbol = "gmu", "G"
    reads = ("memory",)
    checkpoint_names = {"archscale": (("", "attn.gmu."),), "phi4flash": (("", "attn."),)}

    def __init__(self, config: ModelConfig, layer_idx: int, role: str | None = None):
        super().__init__(config, layer_idx, role)
        d_mem = config.d_inner  # the memory is the SSM's scan output, width expand · d_model
        self.in_proj = nn.Linear(config.d_model, d_mem, bias=False)
        self.out_proj = nn.Linear(d_mem, config.d_model, bias=False)
        self.norm = RMSNorm(d_mem, config.norm_eps) if config.gmu_norm else None

    def forward(self, x: torch.Tensor, ctx) -> torch.Tensor:
        """x (B, T, d), ctx.memory (B, T, d_mem) -> (B, T, d)."""
        memory = ctx.memory
        if memory is None:
            raise RuntimeError("GMU layer ran before a memory layer published its memory")
        gate = self.in_proj(x)
        if self.norm is None:
            return self.out_proj(swiglu(gate, memory.to(gate.dtype)))
        return self.out_proj(self.norm(F.silu(gate) * memory.to(gate.dtype)))
