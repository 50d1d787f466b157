"""Attention mixers: sliding-window (`swa`), full (`full`, which may publish the shared K/V) and cross-attention
(`cross`, reading that shared K/V), each with optional Differential Attention.

No positional encoding unless the config asks for RoPE: in SambaY the Mamba layers carry position. Keys are
cached after RoPE, so a ring buffer's order never matters, only which entries hold positions in the window.

Inference state per slot: a ring of `window` keys and values for SWA (position p at index p % window), every
key and value for full attention (position p at index p), nothing for cross-attention, which reads the cache
of the shared-K/V layer in place.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from sambay.model.context import masked_core
from sambay.model.mixers.base import Mixer, Outputs, StateSpec
from sambay.model.norm import RMSNorm
from sambay.model.rope import apply_rope
from sambay.ops.attention.decode import decode_attention, decode_diff_attention

if TYPE_CHECKING:
    from sambay.config import ModelConfig
    from sambay.model.context import AttentionCore, InferenceContext


def mean_keys(seq_len: int, window: int | None) -> float:
    """Average number of keys per query under a causal mask limited to `window` keys (incl. itself)."""
    w = seq_len if window is None else min(window, seq_len)
    return (w * (w + 1) / 2 + (seq_len - w) * w) / seq_len


def write_kv(cache: dict[str, torch.Tensor], slots: torch.Tensor, index: torch.Tensor, k: torch.Tensor,
             v: torch.Tensor) -> None:
    """Store R tokens' k, v (R, G, hs) at entry index (R,) of cache rows slots (R,): through the block table
    when the cache is paged (pages (P, G, page, hs)), else rows (S, G, N, hs)."""
    if "block_table" in cache:
        page = cache["k"].shape[2]
        slots, index = cache["block_table"][slots, index // page].long(), index % page
    cache["k"][slots, :, index] = k.to(cache["k"].dtype)
    cache["v"][slots, :, index] = v.to(cache["v"].dtype)


def read_kv(cache: dict[str, torch.Tensor], slots: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first n entries of cache rows slots (B,) -> k, v (B, n, G, hs) (a gathered copy)."""
    if "block_table" not in cache:
        return cache["k"][slots, :, :n].transpose(1, 2), cache["v"][slots, :, :n].transpose(1, 2)
    page = cache["k"].shape[2]
    pages = cache["block_table"][slots, :-(-n // page)].long()  # (B, P)
    return tuple(cache[name][pages].permute(0, 1, 3, 2, 4).flatten(1, 2)[:, :n] for name in ("k", "v"))


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

    @torch.no_grad()
    def reset_lambdas(self) -> None:
        for p in (self.lambda_q1, self.lambda_k1, self.lambda_q2, self.lambda_k2):
            nn.init.normal_(p, std=0.1)

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


class Attention(Mixer):
    """What every attention mixer shares: heads, output projection, optional DA, RoPE, and attending over
    a pooled K/V cache at inference."""

    def __init__(self, config: ModelConfig, layer_idx: int, role: str | None = None):
        super().__init__(config, layer_idx, role)
        self.config = config
        self.n_head, self.n_kv, self.hs = config.n_head, config.n_kv_head, config.head_dim
        self.out_proj = nn.Linear(self.n_head * self.hs, config.d_model, bias=config.attn_out_bias)
        self.diff = DiffAttention(config, layer_idx) if config.diff_attn else None

    def init_extra_parameters(self) -> None:
        if self.diff is not None:
            self.diff.reset_lambdas()

    def rotate(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """x (B, T, h, hs) at positions (B, T) -> x with RoPE applied (unchanged without RoPE)."""
        if self.config.positional != "rope":
            return x
        return apply_rope(x, positions, self.config.rotary_dim, self.config.rope_base)

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, core: AttentionCore) -> torch.Tensor:
        """q (B, Tq, H, hs), k/v (B, Tk, G, hs) -> projected output (B, Tq, d), with `core(q, k, v) -> (B, Tq,
        h, dv)` the masked softmax attention to use."""
        o = self.diff(q, k, v, core) if self.diff is not None else core(q, k, v).flatten(2)
        return self.out_proj(o)

    def attend_cache(self, q: torch.Tensor, cache: dict[str, torch.Tensor], ctx: InferenceContext,
                     lens: torch.Tensor | None = None) -> torch.Tensor:
        """q (B, Tq, H, hs) at ctx.positions over the slots' cache rows (position p at index p) -> (B, Tq, d).

        One query per row reads the pooled (or paged) cache in place (split-K kernel on CUDA; lens (B,) valid
        entries, default position + 1); DA runs both softmaxes in one pass, so each K/V element is read once.
        Longer queries gather the first ctx.max_keys entries and mask them causally."""
        k_cache, v_cache = cache["k"], cache["v"]
        if q.shape[1] == 1:
            lens = ctx.positions[:, 0] + 1 if lens is None else lens
            table = cache.get("block_table")
            if self.diff is None:
                o = decode_attention(q[:, 0], k_cache, v_cache, lens, ctx.slots, block_table=table)  # (B, H, hs)
            else:
                o = self.diff.combine(*decode_diff_attention(q[:, 0], k_cache, v_cache, lens, ctx.slots,
                                                             block_table=table))
            return self.out_proj(o.flatten(1))[:, None]
        n = ctx.max_keys
        keys, values = read_kv(cache, ctx.slots, n)
        key_pos = torch.arange(n, device=q.device)
        mask = key_pos[None, None, :] <= ctx.positions[:, :, None]
        if ctx.real is not None:  # a padded query (never used) looks at key 0, so no softmax row is empty
            mask |= (~ctx.real)[:, :, None] & (key_pos == 0)
        return self.attend(q, keys, values, masked_core(mask[:, None]))


class SelfAttention(Attention):
    """Causal self-attention over the layer's own K/V: `window` keys (SWA) or all previous keys (full)."""

    keeps_state = True
    checkpoint_names = {
        "archscale": (("qkv.", "attn.attn."), ("out_proj.", "attn.proj."), ("diff.", "attn.da.")),
        "phi4flash": (("qkv.", "attn.Wqkv."), ("diff.", "attn.inner_cross_attn."), ("", "attn.")),
    }
    def __init__(self, config: ModelConfig, layer_idx: int, role: str | None = None):
        super().__init__(config, layer_idx, role)
        self.window = self.window_of(config)  # keys a query sees, itself included (None: all)
        # Fused projection laid out [q | k | v] (the Hugging Face Phi-4-flash layout).
        self.qkv = nn.Linear(config.d_model, (self.n_head + 2 * self.n_kv) * self.hs, bias=config.attn_bias)

    def project_qkv(self, x: torch.Tensor, positions: torch.Tensor):
        """x (B, T, d) -> q (B, T, H, hs), k and v (B, T, G, hs), RoPE applied when configured."""
        batch, seqlen, _ = x.shape
        q, k, v = self.qkv(x).split([self.n_head * self.hs, self.n_kv * self.hs, self.n_kv * self.hs], dim=-1)
        q = self.rotate(q.view(batch, seqlen, self.n_head, self.hs), positions)
        k = self.rotate(k.view(batch, seqlen, self.n_kv, self.hs), positions)
        return q, k, v.view(batch, seqlen, self.n_kv, self.hs)

    def project_q(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Only the query rows of the fused projection: x (B, T, d) -> (B, T, H, hs)."""
        nq = self.n_head * self.hs
        bias = None if self.qkv.bias is None else self.qkv.bias[:nq]
        return self.rotate(F.linear(x, self.qkv.weight[:nq], bias).view(*x.shape[:2], self.n_head, self.hs), positions)

    def project_kv(self, x: torch.Tensor, positions: torch.Tensor):
        """Only the key / value rows of the fused projection: x (B, T, d) -> k, v (B, T, G, hs)."""
        nq = self.n_head * self.hs
        bias = None if self.qkv.bias is None else self.qkv.bias[nq:]
        k, v = F.linear(x, self.qkv.weight[nq:], bias).view(*x.shape[:2], 2 * self.n_kv, self.hs).chunk(2, dim=2)
        return self.rotate(k, positions), v

    def forward(self, x: torch.Tensor, ctx) -> torch.Tensor:
        q, k, v = self.project_qkv(x, ctx.positions)
        if self.role == "shared_kv":
            ctx.shared_kv = (k, v)
        return self.attend(q, k, v, ctx.attention_core(self.window))

    def step(self, h, ctx, state):
        """Writes this token's K/V (index pos, or pos % window), then attends over the slot's cache: all
        pos + 1 keys, or the min(pos + 1, window) filled ring entries."""
        pos = ctx.positions[:, 0]
        q, k, v = self.project_qkv(h, ctx.positions)
        write_kv(state, ctx.slots, pos if self.window is None else pos % self.window, k[:, 0], v[:, 0])
        if self.role == "shared_kv":
            ctx.shared_kv = state
        lens = pos + 1 if self.window is None else torch.clamp(pos + 1, max=self.window)
        return self.attend_cache(q, state, ctx, lens)

    @classmethod
    def decode_state_bytes(cls, config: ModelConfig, context: int, itemsize: int) -> int:
        keys = context if cls.window_of(config) is None else min(context, cls.window_of(config))
        return keys * 2 * config.n_kv_head * config.head_dim * itemsize

    @classmethod
    def flops_per_token(cls, config: ModelConfig, seq_len: int) -> float:
        # q·k and p·v: 2 FLOPs per multiply-add, two products, per head dim and key
        return 4.0 * config.n_head * config.head_dim * mean_keys(seq_len, cls.window_of(config))

    @classmethod
    def attention_windows(cls, config: ModelConfig) -> tuple[int | None, ...]:
        return (cls.window_of(config),)

    @classmethod
    def window_of(cls, config: ModelConfig) -> int | None:
        return None


class FullAttention(SelfAttention):
    """Full causal self-attention; with the "shared_kv" role its K/V is the one cache the cross-decoder reads."""

    name, symbol = "full", "F"
    roles = frozenset({"shared_kv"})

    @classmethod
    def state_spec(cls, config: ModelConfig, max_len: int) -> dict[str, StateSpec]:
        shape = (config.n_kv_head, max_len, config.head_dim)
        return {"k": StateSpec(shape, grows=True), "v": StateSpec(shape, grows=True)}

    def prefill(self, h, ctx, state, outputs: Outputs = "all"):
        """Stores the chunk's K/V at their positions, then its queries attend over the cache (the YOCO skip:
        with outputs="last" only the last query runs)."""
        real = ctx.real_mask
        k, v = self.project_kv(h, ctx.positions)
        rows, cols = real.nonzero(as_tuple=True)
        write_kv(state, ctx.slots[rows], ctx.positions[rows, cols], k[rows, cols], v[rows, cols])
        if self.role == "shared_kv":
            ctx.shared_kv = state
        if outputs == "none":
            return None
        if outputs == "last":
            ctx = ctx.last_column()
            h = h[:, -1:]
        return self.attend_cache(self.project_q(h, ctx.positions), state, ctx)


class SlidingWindowAttention(SelfAttention):
    """Each query sees itself and the previous window − 1 tokens, in training, prefill and decode alike."""

    name, symbol = "swa", "S"

    @classmethod
    def window_of(cls, config: ModelConfig) -> int | None:
        return config.window

    @classmethod
    def check_config(cls, config: ModelConfig) -> str | None:
        return "the plan has 'swa' layers but window is None" if config.window is None else None

    @classmethod
    def state_spec(cls, config: ModelConfig, max_len: int) -> dict[str, StateSpec]:
        # a ring of `window` entries; sequences that never reach the window need only max_len
        shape = (config.n_kv_head, min(config.window, max_len), config.head_dim)
        return {"k": StateSpec(shape), "v": StateSpec(shape)}

    def prefill(self, h, ctx, state, outputs: Outputs = "all"):
        """Queries see the ring's keys still inside their window plus this chunk's keys; then the chunk's
        last `window` keys are written into the ring (index p % window)."""
        k_cache, v_cache = state["k"], state["v"]
        window, ring = self.window, k_cache.shape[2]
        pos, real = ctx.positions, ctx.real_mask
        k, v = self.project_kv(h, pos)
        if outputs != "none":
            if ctx.max_start == 0:
                keys, values, key_pos, key_ok = k, v, pos, real
            else:  # ring index j holds the newest position p < start with p % ring == j (if p >= 0)
                last = ctx.starts[:, None] - 1
                past_pos = last - torch.remainder(last - torch.arange(ring, device=pos.device), ring)
                keys = torch.cat([k_cache[ctx.slots].transpose(1, 2), k], 1)
                values = torch.cat([v_cache[ctx.slots].transpose(1, 2), v], 1)
                key_pos, key_ok = torch.cat([past_pos, pos], 1), torch.cat([past_pos >= 0, real], 1)
            q_pos, q_ok, q_h = (pos[:, -1:], real[:, -1:], h[:, -1:]) if outputs == "last" else (pos, real, h)
            q = self.project_q(q_h, q_pos)
            mask = key_ok[:, None, :] & q_ok[:, :, None] & (key_pos[:, None, :] <= q_pos[:, :, None])
            mask &= q_pos[:, :, None] - key_pos[:, None, :] < window
            if outputs == "all":  # a padded query (never used) looks at its own key only: no empty softmax row
                n_past = keys.shape[1] - k.shape[1]
                cols = torch.arange(k.shape[1], device=pos.device)
                own = torch.arange(keys.shape[1], device=pos.device)[None, :] == n_past + cols[:, None]
                mask |= (~q_ok)[:, :, None] & own
            out = self.attend(q, keys, values, masked_core(mask[:, None]))
        write = real & (torch.arange(k.shape[1], device=pos.device) >= k.shape[1] - window)
        rows, cols = write.nonzero(as_tuple=True)
        write_kv(state, ctx.slots[rows], pos[rows, cols] % window, k[rows, cols], v[rows, cols])
        return None if outputs == "none" else out


class CrossAttention(Attention):
    """Attention of this layer's queries over the shared K/V of the shared-K/V layer (causal, no window)."""

    name, symbol = "cross", "X"
    reads = ("shared_kv",)
    checkpoint_names = {
        "archscale": (("q_proj.", "attn.attn."), ("out_proj.", "attn.proj."), ("diff.", "attn.da.")),
        "phi4flash": (("q_proj.", "attn.Wqkv."), ("diff.", "attn.inner_cross_attn."), ("", "attn.")),
    }

    def __init__(self, config: ModelConfig, layer_idx: int, role: str | None = None):
        super().__init__(config, layer_idx, role)
        self.q_proj = nn.Linear(config.d_model, self.n_head * self.hs, bias=config.attn_bias)

    def project_q(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        batch, seqlen, _ = x.shape
        return self.rotate(self.q_proj(x).view(batch, seqlen, self.n_head, self.hs), positions)

    def forward(self, x: torch.Tensor, ctx) -> torch.Tensor:
        if ctx.shared_kv is None:
            raise RuntimeError("cross-attention ran before a shared-K/V layer published its K/V")
        k, v = ctx.shared_kv
        return self.attend(self.project_q(x, ctx.positions), k, v, ctx.attention_core(None))

    def prefill(self, h, ctx, state, outputs: Outputs = "all"):
        if outputs == "none":
            return None
        if outputs == "last":
            ctx, h = ctx.last_column(), h[:, -1:]
        return self.attend_cache(self.project_q(h, ctx.positions), ctx.shared_kv, ctx)

    def step(self, h, ctx, state):
        return self.attend_cache(self.project_q(h, ctx.positions), ctx.shared_kv, ctx)

    @classmethod
    def decode_state_bytes(cls, config: ModelConfig, context: int, itemsize: int) -> int:
        return context * 2 * config.n_kv_head * config.head_dim * itemsize  # reads the shared cache

    @classmethod
    def flops_per_token(cls, config: ModelConfig, seq_len: int) -> float:
        return 4.0 * config.n_head * config.head_dim * mean_keys(seq_len, None)

    @classmethod
    def attention_windows(cls, config: ModelConfig) -> tuple[int | None, ...]:
        return (None,)
