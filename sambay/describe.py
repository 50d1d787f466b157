"""Human-readable summary of a config: the layer plan, per-layer parameters, totals and inference state."""

from __future__ import annotations

import torch

from sambay.config import ModelConfig
from sambay.model.model import CausalLM
from sambay.model.state import state_bytes_per_sequence, state_nbytes
from sambay.plan import render


def _fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    raise AssertionError


def describe(config: ModelConfig, seq_len: int | None = None, dtype: torch.dtype = torch.bfloat16) -> str:
    with torch.device("meta"):  # shapes only: no memory, no init
        model = CausalLM(config, init=False)
    lines = [f"{config.arch}: {config.n_layer} layers, d_model {config.d_model}, {config.n_head} heads x "
             f"{config.head_dim} ({config.n_kv_head} KV), window {config.window}, positional {config.positional}, "
             f"diff_attn {config.diff_attn}, {config.parametrization}",
             f"plan: {render(config.layer_plan)}", "",
             f"{'layer':>5}  {'kind':<13}{'mixer':>14}{'mlp+norms':>14}"]
    for i, block in enumerate(model.layers):
        mixer = sum(p.numel() for p in block.mixer.parameters())
        rest = sum(p.numel() for p in block.parameters()) - mixer
        decoder = "" if i != config.split_index or not config.is_yoco else "   <- cross-decoder starts"
        lines.append(f"{i:>5}  {block.kind:<13}{mixer:>14,}{rest:>14,}{decoder}")
    total, non_embed = model.num_parameters(), model.num_parameters(exclude_embeddings=True)
    per_token, constant = state_bytes_per_sequence(config, dtype)
    lines += ["", f"parameters: {total:,} total, {non_embed:,} non-embedding "
              f"({'tied' if config.tie_embeddings else 'untied'} embeddings)",
              f"inference state per sequence ({str(dtype).removeprefix('torch.')} K/V, fp32 SSM): "
              f"{_fmt_bytes(per_token)} per token of K/V + {_fmt_bytes(constant)} constant (Mamba + windows)"]
    if seq_len is not None:
        lines.append(f"  at {seq_len:,} tokens: {_fmt_bytes(state_nbytes(config, 1, seq_len, dtype))} per sequence "
                     "(what the engine allocates)")
    return "\n".join(lines)
