"""Mamba-1 mixer (selective state space), optionally publishing its scan output as the GMU memory.

    [x | z]      = in_proj(u)                       x, z: (B, T, E), E = expand·d
    x'           = silu(causal_conv1d(x))           depthwise, width d_conv
    [dt | B | C] = x_proj(x')                       dt_rank | d_state | d_state
    y            = scan(x', dt_proj(dt), A = −exp(A_log), B, C) + D·x'    (softplus(dt + dt_bias) inside)
    out          = out_proj(y · silu(z))

With the "memory" role the layer publishes `y` (including D·x', before the z gate and before out_proj) as the
memory every GMU layer reads; the memory is not detached, so GMU gradients flow into this layer.
Inference state per slot: the last d_conv − 1 raw conv inputs (model dtype) and the (E, N) SSM state (fp32).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from sambay.model.mixers.base import Mixer, Outputs, StateSpec
from sambay.model.norm import swiglu
from sambay.ops.causal_conv1d import causal_conv1d, causal_conv1d_update
from sambay.ops.selective_scan import selective_scan
from sambay.ops.selective_state_update import selective_state_update

if TYPE_CHECKING:
    from sambay.config import ModelConfig


def inverse_softplus_dt(n: int, dt_min: float = 1e-3, dt_max: float = 0.1, dt_floor: float = 1e-4) -> torch.Tensor:
    """(n,) biases b with softplus(b) = dt, dt log-uniform in [dt_min, dt_max] (the S4D / Mamba time-step init)."""
    dt = torch.exp(torch.rand(n) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)).clamp(min=dt_floor)
    return dt + torch.log(-torch.expm1(-dt))


class Mamba(Mixer):
    name, symbol = "mamba", "M"
    roles = frozenset({"memory"})
    keeps_state = True
    checkpoint_names = {"archscale": (("", "attn."),), "phi4flash": (("", "attn."),)}
    init_preserves = ("dt_proj.bias",)  # the S4D time-step init, not a zero bias

    def __init__(self, config: ModelConfig, layer_idx: int, role: str | None = None):
        super().__init__(config, layer_idx, role)
        d, E, N, R = config.d_model, config.d_inner, config.d_state, config.dt_rank
        self.d_state, self.dt_rank = N, R
        self.in_proj = nn.Linear(d, 2 * E, bias=False)
        self.conv1d = nn.Conv1d(E, E, config.d_conv, groups=E, bias=True)  # weight (E, 1, d_conv)
        self.x_proj = nn.Linear(E, R + 2 * N, bias=False)
        self.dt_proj = nn.Linear(R, E, bias=True)  # the bias is the scan's delta bias (inside softplus)
        self.A_log = nn.Parameter(torch.log(torch.arange(1, N + 1, dtype=torch.float32)).repeat(E, 1))
        self.D = nn.Parameter(torch.ones(E))
        self.out_proj = nn.Linear(E, d, bias=False)
        self.reset_ssm_parameters()

    @property
    def writes_memory(self) -> bool:
        return self.role == "memory"

    @torch.no_grad()
    def reset_ssm_parameters(self) -> None:
        """S4D-real A, D = 1, dt bias = softplus⁻¹(dt) with dt log-uniform in [1e-3, 0.1]."""
        E, N = self.A_log.shape
        self.A_log.copy_(torch.log(torch.arange(1, N + 1, dtype=torch.float32)).repeat(E, 1))
        self.D.fill_(1.0)
        nn.init.uniform_(self.dt_proj.weight, -self.dt_rank ** -0.5, self.dt_rank ** -0.5)
        self.dt_proj.bias.copy_(inverse_softplus_dt(E))

    def ssm_inputs(self, x: torch.Tensor):
        """x (..., E) post-conv -> dt (..., E) without bias, B and C (..., N), A (E, N) fp32.

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

    def _output(self, y: torch.Tensor, z: torch.Tensor, ctx) -> torch.Tensor:
        """Scan output y -> layer output. Without the memory role z is already applied inside the scan."""
        if not self.writes_memory:
            return self.out_proj(y)
        ctx.memory = y
        return self.out_proj(swiglu(z, y))

    def _scan(self, x, z, **kw):
        dt, B, C, A = self.ssm_inputs(x)
        # the memory is y before the gate, so the memory layer gates outside the scan
        return selective_scan(x, dt, A, B, C, self.D, z=None if self.writes_memory else z,
                              delta_bias=self.dt_proj.bias, **kw)

    def forward(self, u: torch.Tensor, ctx) -> torch.Tensor:
        """u (B, T, d) -> (B, T, d); publishes ctx.memory (B, T, E) with the memory role."""
        x, z = self.in_proj(u).chunk(2, dim=-1)
        x = causal_conv1d(x, self.conv1d.weight.squeeze(1), self.conv1d.bias, activation="silu",
                          seq_idx=ctx.document_ids)
        return self._output(self._scan(x, z, seq_idx=ctx.document_ids), z, ctx)

    # ------------------------------------------------------------------ inference
    @classmethod
    def state_spec(cls, config: ModelConfig, max_len: int) -> dict[str, StateSpec]:
        return {"conv_state": StateSpec((config.d_inner, config.d_conv - 1)),
                "ssm_state": StateSpec((config.d_inner, config.d_state), torch.float32)}

    def prefill(self, h, ctx, state, outputs: Outputs = "all"):
        conv_state, ssm_state = state["conv_state"], state["ssm_state"]
        x, z = self.in_proj(h).chunk(2, dim=-1)
        x, conv_final = causal_conv1d(x, self.conv1d.weight.squeeze(1), self.conv1d.bias, activation="silu",
                                      initial_state=conv_state[ctx.slots], seq_idx=ctx.document_ids,
                                      return_final_state=True)
        y, ssm_final = self._scan(x, z, initial_state=ssm_state[ctx.slots], seq_idx=ctx.document_ids,
                                  return_final_state=True)
        conv_state[ctx.slots] = conv_final.to(conv_state.dtype)
        ssm_state[ctx.slots] = ssm_final.to(ssm_state.dtype)
        if outputs == "none":
            return None
        return self._output(y, z, ctx) if outputs == "all" else self._output(y[:, -1:], z[:, -1:], ctx)

    def step(self, h, ctx, state):
        x, z = self.in_proj(h[:, 0]).chunk(2, dim=-1)
        x = causal_conv1d_update(x, state["conv_state"], self.conv1d.weight.squeeze(1), self.conv1d.bias,
                                 "silu", ctx.slots)
        dt, B, C, A = self.ssm_inputs(x)
        y = selective_state_update(x, dt, A, B, C, self.D, None if self.writes_memory else z, self.dt_proj.bias,
                                   state["ssm_state"], ctx.slots)
        return self._output(y[:, None], z[:, None], ctx)

    # ------------------------------------------------------------------ cost
    @classmethod
    def decode_state_bytes(cls, config: ModelConfig, context: int, itemsize: int) -> int:
        # the whole recurrent state is read and written back every step
        return 2 * (config.d_inner * config.d_state * 4 + config.d_inner * (config.d_conv - 1) * itemsize)

    # The scan and conv are O(E·N) per token, < 1 % of the matmuls at the research widths: MFU counts
    # matmul and attention FLOPs only, so flops_per_token stays 0.
