"""Mamba-2 mixer (SSD: a scalar decay per head, multi-head x with B / C shared per group), optionally
publishing its scan output as the GMU memory.

    [z | xBC | dt] = in_proj(u)                    z: E, xBC: E + 2·G·N, dt: H      (E = expand·d, H = E / P)
    [x | B | C]    = silu(causal_conv1d(xBC))      one depthwise conv over x, B and C together
    y              = ssd(x, dt, A = −exp(A_log), B, C) + D·x       (softplus(dt + dt_bias) inside; per head)
    out            = out_proj(RMSNorm(y · silu(z)))

With the "memory" role the layer publishes `y` (B, T, E) (including D·x, before the gate) as the memory the
GMU layers read, exactly as the Mamba-1 memory layer does.
Inference state per slot: the last d_conv − 1 raw conv inputs (E + 2GN channels, model dtype) and the
(H, P, N) SSM state (fp32).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from sambay.model.mixers.base import Mixer, Outputs, StateSpec
from sambay.model.mixers.mamba import inverse_softplus_dt
from sambay.model.norm import RMSNorm, swiglu
from sambay.ops.causal_conv1d import causal_conv1d, causal_conv1d_update
from sambay.ops.ssd import ssd_scan, ssd_state_update

if TYPE_CHECKING:
    from sambay.config import ModelConfig


class Mamba2(Mixer):
    name, symbol = "mamba2", "M2"
    roles = frozenset({"memory"})
    keeps_state = True

    def __init__(self, config: ModelConfig, layer_idx: int, role: str | None = None):
        super().__init__(config, layer_idx, role)
        d, E, N, G = config.d_model, config.d_inner, config.d_state, config.ssm_groups
        self.n_head, self.head_dim, self.n_groups, self.d_state = E // config.ssm_head_dim, config.ssm_head_dim, G, N
        self.sizes = (E, E + 2 * G * N, self.n_head)  # z | xBC | dt
        self.in_proj = nn.Linear(d, sum(self.sizes), bias=False)
        self.conv1d = nn.Conv1d(E + 2 * G * N, E + 2 * G * N, config.d_conv, groups=E + 2 * G * N, bias=True)
        self.dt_bias = nn.Parameter(torch.empty(self.n_head))
        self.A_log = nn.Parameter(torch.empty(self.n_head))
        self.D = nn.Parameter(torch.empty(self.n_head))
        self.norm = RMSNorm(E, config.norm_eps)
        self.out_proj = nn.Linear(E, d, bias=False)
        self.reset_ssm_parameters()

    @torch.no_grad()
    def reset_ssm_parameters(self) -> None:
        """A = −U(1, 16) per head, D = 1, dt bias = softplus⁻¹(dt) with dt log-uniform in [1e-3, 0.1]."""
        self.A_log.copy_(torch.log(torch.empty(self.n_head).uniform_(1.0, 16.0)))
        self.D.fill_(1.0)
        self.dt_bias.copy_(inverse_softplus_dt(self.n_head))

    @classmethod
    def check_config(cls, config: ModelConfig) -> str | None:
        if config.d_inner % config.ssm_head_dim:
            return f"mamba2 needs d_inner ({config.d_inner}) divisible by ssm_head_dim ({config.ssm_head_dim})"
        if (config.d_inner // config.ssm_head_dim) % config.ssm_groups:
            return (f"mamba2 needs its {config.d_inner // config.ssm_head_dim} heads divisible by ssm_groups "
                    f"({config.ssm_groups})")
        return None

    def _split(self, xBC: torch.Tensor):
        """(..., E + 2GN) post-conv -> x (..., H, P), B and C (..., G, N)."""
        E, GN = self.sizes[0], self.n_groups * self.d_state
        x, B, C = xBC.split([E, GN, GN], dim=-1)
        lead = xBC.shape[:-1]
        return (x.reshape(*lead, self.n_head, self.head_dim), B.reshape(*lead, self.n_groups, self.d_state),
                C.reshape(*lead, self.n_groups, self.d_state))

    def _output(self, y: torch.Tensor, z: torch.Tensor, ctx) -> torch.Tensor:
        """y (..., E) scan output (published as the memory with that role) -> out_proj(norm(y · silu(z)))."""
        if self.role == "memory":
            ctx.memory = y
        return self.out_proj(self.norm(swiglu(z, y)))

    def _conv_weight(self):
        return self.conv1d.weight.squeeze(1), self.conv1d.bias

    def forward(self, u: torch.Tensor, ctx) -> torch.Tensor:
        """u (B, T, d) -> (B, T, d); publishes ctx.memory (B, T, E) with the memory role."""
        z, xBC, dt = self.in_proj(u).split(self.sizes, dim=-1)
        xBC = causal_conv1d(xBC, *self._conv_weight(), activation="silu", seq_idx=ctx.document_ids)
        x, B, C = self._split(xBC)
        y = ssd_scan(x, dt, -torch.exp(self.A_log.float()), B, C, self.D, self.dt_bias, seq_idx=ctx.document_ids)
        return self._output(y.flatten(2), z, ctx)

    # ------------------------------------------------------------------ inference
    @classmethod
    def state_spec(cls, config: ModelConfig, max_len: int) -> dict[str, StateSpec]:
        n_head = config.d_inner // config.ssm_head_dim
        return {"conv_state": StateSpec((config.d_inner + 2 * config.ssm_groups * config.d_state, config.d_conv - 1)),
                "ssm_state": StateSpec((n_head, config.ssm_head_dim, config.d_state), torch.float32)}

    def prefill(self, h, ctx, state, outputs: Outputs = "all"):
        conv_state, ssm_state = state["conv_state"], state["ssm_state"]
        z, xBC, dt = self.in_proj(h).split(self.sizes, dim=-1)
        xBC, conv_final = causal_conv1d(xBC, *self._conv_weight(), activation="silu",
                                        initial_state=conv_state[ctx.slots], seq_idx=ctx.document_ids,
                                        return_final_state=True)
        x, B, C = self._split(xBC)
        y, ssm_final = ssd_scan(x, dt, -torch.exp(self.A_log.float()), B, C, self.D, self.dt_bias,
                                initial_state=ssm_state[ctx.slots], seq_idx=ctx.document_ids,
                                return_final_state=True)
        conv_state[ctx.slots] = conv_final.to(conv_state.dtype)
        ssm_state[ctx.slots] = ssm_final.to(ssm_state.dtype)
        if outputs == "none":
            return None
        y = y.flatten(2)
        return self._output(y, z, ctx) if outputs == "all" else self._output(y[:, -1:], z[:, -1:], ctx)

    def step(self, h, ctx, state):
        z, xBC, dt = self.in_proj(h[:, 0]).split(self.sizes, dim=-1)
        xBC = causal_conv1d_update(xBC, state["conv_state"], *self._conv_weight(), "silu", ctx.slots)
        x, B, C = self._split(xBC)
        y = ssd_state_update(x, dt, -torch.exp(self.A_log.float()), B, C, self.D, self.dt_bias,
                             state["ssm_state"], ctx.slots)
        return self._output(y.flatten(1)[:, None], z[:, None], ctx)

    # ------------------------------------------------------------------ cost
    @classmethod
    def decode_state_bytes(cls, config: ModelConfig, context: int, itemsize: int) -> int:
        # the whole recurrent state is read and written back every step
        ssm = config.d_inner * config.d_state * 4  # H · P · N fp32
        conv = (config.d_inner + 2 * config.ssm_groups * config.d_state) * (config.d_conv - 1) * itemsize
        return 2 * (ssm + conv)
