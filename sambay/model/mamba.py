"""Mamba-1 mixer (selective state space), optionally publishing its scan output as the GMU memory.

    [x | z]      = in_proj(u)                       x, z: (B, T, E), E = expand·d
    x'           = silu(causal_conv1d(x))           depthwise, width d_conv
    [dt | B | C] = x_proj(x')                       dt_rank | d_state | d_state
    y            = scan(x', dt_proj(dt), A = −exp(A_log), B, C) + D·x'    (softplus(dt + dt_bias) inside)
    out          = out_proj(y · silu(z))

The `mamba_memory` layer publishes `y` (including D·x', before the z gate and before out_proj) as the
memory every GMU layer reads; the memory is not detached, so GMU gradients flow into this layer.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from sambay.config import ModelConfig
from sambay.model.context import ForwardContext
from sambay.model.norm import swiglu
from sambay.ops.causal_conv1d import causal_conv1d
from sambay.ops.selective_scan import selective_scan


class Mamba(nn.Module):
    def __init__(self, config: ModelConfig, layer_idx: int, writes_memory: bool = False):
        super().__init__()
        d, E, N, R = config.d_model, config.d_inner, config.d_state, config.dt_rank
        self.writes_memory = writes_memory
        self.d_state, self.dt_rank = N, R
        self.in_proj = nn.Linear(d, 2 * E, bias=False)
        self.conv1d = nn.Conv1d(E, E, config.d_conv, groups=E, bias=True)  # weight (E, 1, d_conv)
        self.x_proj = nn.Linear(E, R + 2 * N, bias=False)
        self.dt_proj = nn.Linear(R, E, bias=True)  # the bias is the scan's delta bias (inside softplus)
        self.A_log = nn.Parameter(torch.log(torch.arange(1, N + 1, dtype=torch.float32)).repeat(E, 1))
        self.D = nn.Parameter(torch.ones(E))
        self.out_proj = nn.Linear(E, d, bias=False)
        self.reset_ssm_parameters()

    @torch.no_grad()
    def reset_ssm_parameters(self, dt_min: float = 1e-3, dt_max: float = 0.1, dt_floor: float = 1e-4) -> None:
        """S4D-real A, D = 1, dt bias = softplus⁻¹(dt) with dt log-uniform in [dt_min, dt_max]."""
        E, N = self.A_log.shape
        self.A_log.copy_(torch.log(torch.arange(1, N + 1, dtype=torch.float32)).repeat(E, 1))
        self.D.fill_(1.0)
        nn.init.uniform_(self.dt_proj.weight, -self.dt_rank ** -0.5, self.dt_rank ** -0.5)
        dt = torch.exp(torch.rand(E) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)).clamp(min=dt_floor)
        self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # inverse of softplus

    def ssm_inputs(self, x: torch.Tensor):
        """x (B, T, E) post-conv -> dt (B, T, E) without bias, B and C (B, T, N), A (E, N) fp32.

        The products run on copies of x_proj / dt_proj padded with zeros from dt_rank to a multiple of 8
        (values unchanged): with dt_rank + 2N columns (94 at d_model 992) every row of x_proj's output and
        of dt_proj's input is misaligned for 16-byte vector loads, which the GEMMs and the scan's B / C
        reads would otherwise pay for."""
        R, N = self.dt_rank, self.d_state
        pad = -R % 8
        w_x, w_dt = self.x_proj.weight, self.dt_proj.weight
        if pad:
            w_x = torch.cat([w_x[:R], w_x.new_zeros(pad, w_x.shape[1]), w_x[R:]])
            w_dt = F.pad(w_dt, (0, pad))
        dt_low, B, C = F.linear(x, w_x).split([R + pad, N, N], dim=-1)
        dt = F.linear(dt_low, w_dt)
        return dt, B, C, -torch.exp(self.A_log.float())

    def forward(self, u: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:
        """u (B, T, d) -> (B, T, d); publishes ctx.memory (B, T, E) when this is the memory layer."""
        x, z = self.in_proj(u).chunk(2, dim=-1)
        x = causal_conv1d(x, self.conv1d.weight.squeeze(1), self.conv1d.bias, activation="silu",
                          seq_idx=ctx.document_ids)
        dt, B, C, A = self.ssm_inputs(x)
        if not self.writes_memory:
            y = selective_scan(x, dt, A, B, C, self.D, z=z, delta_bias=self.dt_proj.bias, seq_idx=ctx.document_ids)
            return self.out_proj(y)
        y = selective_scan(x, dt, A, B, C, self.D, z=None, delta_bias=self.dt_proj.bias, seq_idx=ctx.document_ids)
        ctx.memory = y
        return self.out_proj(swiglu(z, y))
