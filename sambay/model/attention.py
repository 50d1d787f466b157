"""Self-attention (full, sliding-window, or the shared-KV writer) and cross-attention, with optional
Differential Attention.

No positional encoding unless the config asks for RoPE: in SambaY the Mamba layers carry position.
"""

from __future__ import annotations

import torch
from torch import nn

from sambay.config import ModelConfig
from sambay.model.context import AttentionCore, ForwardContext
from sambay.model.norm import RMSNorm
from sambay.model.rope import apply_rope


class DiffAttention(nn.Module):
    """Differential Attention core (striped head pairing).

    Query heads pair as (2i, 2i+1): q1 = even heads, q2 = odd heads, likewise k1/k2 over KV heads. Each
    differential head j attends twice over the 2·hs-wide value [v_{2g} ‖ v_{2g+1}]:
        O_j = softmax(q1_j k1ᵀ) V̂ − λ · softmax(q2_j k2ᵀ) V̂,
    then RMSNorm over 2·hs, times (1 − λ_init). λ = exp(λq1·λk1) − exp(λq2·λk2) + λ_init is one scalar per
    layer, λ_init = 0.8 − 0.6·exp(−0.3·layer_idx) from the global 0-based layer index.
    """

    def __init__(self, config: ModelConfig, layer_idx: int):
        super().__init__()
        hs = config.head_dim
        self.lambda_init = config.lambda_init(layer_idx)
        self.lambda_q1 = nn.Parameter(torch.zeros(hs))
        self.lambda_k1 = nn.Parameter(torch.zeros(hs))
        self.lambda_q2 = nn.Parameter(torch.zeros(hs))
        self.lambda_k2 = nn.Parameter(torch.zeros(hs))
        self.subln = RMSNorm(2 * hs, config.norm_eps)

    def lam(self, dtype: torch.dtype) -> torch.Tensor:
        # Dot products in the parameter dtype, exp in fp32, rounded to the activation dtype (the reference).
        l1 = torch.exp((self.lambda_q1 * self.lambda_k1).sum().float()).to(dtype)
        l2 = torch.exp((self.lambda_q2 * self.lambda_k2).sum().float()).to(dtype)
        return l1 - l2 + self.lambda_init

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, core: AttentionCore) -> torch.Tensor:
        """q (B, Tq, H, hs), k/v (B, Tk, G, hs) -> (B, Tq, H·hs); `core` is the masked softmax attention."""
        batch, q_len, n_head, hs = q.shape
        k_len, n_kv = k.shape[1], k.shape[2]
        v_pair = v.reshape(batch, k_len, n_kv // 2, 2 * hs)  # (B, Tk, G/2, 2hs) = [v_2g ‖ v_2g+1]
        o1 = core(q[:, :, 0::2], k[:, :, 0::2], v_pair)  # (B, Tq, H/2, 2hs)
        o2 = core(q[:, :, 1::2], k[:, :, 1::2], v_pair)
        # Un-stripe: the 2hs-wide output of differential head j is heads 2j and 2j+1 side by side.
        return self.combine(o1, o2).reshape(batch, q_len, n_head * hs)

    def combine(self, o1: torch.Tensor, o2: torch.Tensor) -> torch.Tensor:
        """The two attention maps' outputs (..., H/2, 2hs) -> subln(o1 − λ·o2)·(1 − λ_init), same shape."""
        o = o1 - self.lam(o1.dtype) * o2
        return self.subln(o) * (1.0 - self.lambda_init)


class _AttentionBase(nn.Module):
    def __init__(self, config: ModelConfig, layer_idx: int):
        super().__init__()
        self.config = config
        self.n_head, self.n_kv, self.hs = config.n_head, config.n_kv_head, config.head_dim
        self.out_proj = nn.Linear(self.n_head * self.hs, config.d_model, bias=config.attn_out_bias)
        self.diff = DiffAttention(config, layer_idx) if config.diff_attn else None

    def _rope(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        if self.config.positional != "rope":
            return x
        return apply_rope(x, positions, self.config.rotary_dim, self.config.rope_base)

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, core: AttentionCore) -> torch.Tensor:
        """q (B, Tq, H, hs), k/v (B, Tk, G, hs) -> projected output (B, Tq, d).

        `core(q, k, v) -> (B, Tq, h, dv)` is the masked softmax attention to use (from the context in a
        full-sequence forward, a dense mask in the engine's prefill).
        """
        o = self.diff(q, k, v, core) if self.diff is not None else core(q, k, v).flatten(2)
        return self.out_proj(o)


class SelfAttention(_AttentionBase):
    """Causal self-attention over the layer's own K/V: `window` keys (SWA) or all previous keys (full).

    With `shares_kv` (the `full_kv` layer) its K/V is also published for every cross-attention layer.
    """

    def __init__(self, config: ModelConfig, layer_idx: int, window: int | None, shares_kv: bool = False):
        super().__init__(config, layer_idx)
        self.window = window
        self.shares_kv = shares_kv
        # Fused projection laid out [q | k | v] (the Hugging Face Phi-4-flash layout).
        self.qkv = nn.Linear(config.d_model, (self.n_head + 2 * self.n_kv) * self.hs, bias=config.attn_bias)

    def project_qkv(self, x: torch.Tensor, positions: torch.Tensor):
        """x (B, T, d) -> q (B, T, H, hs), k and v (B, T, G, hs), RoPE applied when configured."""
        batch, seqlen, _ = x.shape
        q, k, v = self.qkv(x).split([self.n_head * self.hs, self.n_kv * self.hs, self.n_kv * self.hs], dim=-1)
        q = self._rope(q.view(batch, seqlen, self.n_head, self.hs), positions)
        k = self._rope(k.view(batch, seqlen, self.n_kv, self.hs), positions)
        return q, k, v.view(batch, seqlen, self.n_kv, self.hs)

    def forward(self, x: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:
        q, k, v = self.project_qkv(x, ctx.positions)
        if self.shares_kv:
            ctx.shared_kv = (k, v)
        return self.attend(q, k, v, ctx.attention_core(self.window))


class CrossAttention(_AttentionBase):
    """Attention of this layer's queries over the shared K/V of the `full_kv` layer (causal, no window)."""

    def __init__(self, config: ModelConfig, layer_idx: int):
        super().__init__(config, layer_idx)
        self.q_proj = nn.Linear(config.d_model, self.n_head * self.hs, bias=config.attn_bias)

    def project_q(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        batch, seqlen, _ = x.shape
        return self._rope(self.q_proj(x).view(batch, seqlen, self.n_head, self.hs), positions)

    def forward(self, x: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:
        if ctx.shared_kv is None:
            raise RuntimeError("cross-attention ran before the 'full_kv' layer published its K/V")
        k, v = ctx.shared_kv
        return self.attend(self.project_q(x, ctx.positions), k, v, ctx.attention_core(None))
