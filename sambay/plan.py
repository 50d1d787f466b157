"""Layer plans: which mixer every layer of a model uses.

A plan is a tuple of layer kinds, one per layer:

    mamba         Mamba-1 layer (self-decoder)
    mamba_memory  the Mamba-1 layer at L/2 whose scan output is published as the GMU memory
    swa           sliding-window self-attention
    full          full causal self-attention
    full_kv       the full-attention layer at L/2+1 whose K/V is the one shared (growing) cache
    gmu           Gated Memory Unit: out_proj(silu(in_proj(x)) * memory)
    cross         cross-attention over the shared K/V (query and output projections only)

The cross-decoder starts right after the `full_kv` layer. Baselines are other plans, not other models.
"""

from __future__ import annotations

from collections.abc import Sequence

KINDS = ("mamba", "mamba_memory", "swa", "full", "full_kv", "gmu", "cross")
SYMBOLS = {"mamba": "M", "mamba_memory": "M*", "swa": "S", "full": "F", "full_kv": "F^", "gmu": "G", "cross": "X"}


class PlanError(ValueError):
    """A layer plan breaks one of the invariants in `validate`."""


def _samba_self_decoder(i: int, mamba_every: int) -> str:
    return "mamba" if mamba_every > 0 and i % mamba_every == 0 else "swa"


def transformer_plan(depth: int) -> list[str]:
    return ["full"] * depth


def transformer_ls_plan(depth: int, full_every: int = 4) -> list[str]:
    """SWA everywhere except one full-attention layer every `full_every` layers (at i % 4 == 3)."""
    return ["full" if i % full_every == full_every - 1 else "swa" for i in range(depth)]


def samba_plan(depth: int) -> list[str]:
    return [_samba_self_decoder(i, 2) for i in range(depth)]


def yoco_plan(depth: int, mamba_every: int, gmu: bool) -> list[str]:
    """YOCO-family plan (SWA+YOCO, Samba+YOCO, SambaY, MambaY).

    Layers i < L/2: Mamba where i % mamba_every == 0, else SWA. Layer L/2: Mamba (the memory writer when
    `gmu`) or SWA. Layer L/2+1: full attention whose K/V is shared. Layers >= L/2+2: GMU at even i (when
    `gmu`), cross-attention otherwise.
    """
    if depth % 4 != 0:
        raise PlanError(f"YOCO plans need depth divisible by 4 (got {depth}): the cross-decoder must alternate "
                        "GMU/cross starting at an even index")
    half = depth // 2
    plan = [_samba_self_decoder(i, mamba_every) for i in range(half)]
    middle = "mamba" if mamba_every > 0 else "swa"
    plan.append("mamba_memory" if gmu and middle == "mamba" else middle)
    plan.append("full_kv")
    plan += ["gmu" if gmu and i % 2 == 0 else "cross" for i in range(half + 2, depth)]
    return plan


def split_index(plan: Sequence[str]) -> int:
    """Index of the first cross-decoder layer (len(plan) when the plan has no cross-decoder)."""
    return plan.index("full_kv") + 1 if "full_kv" in plan else len(plan)


def validate(plan: Sequence[str]) -> None:
    """Raise PlanError naming the broken rule."""
    if not plan:
        raise PlanError("a layer plan needs at least one layer")
    unknown = sorted({k for k in plan if k not in KINDS})
    if unknown:
        raise PlanError(f"unknown layer kind(s) {unknown}; valid kinds: {', '.join(KINDS)}")
    if plan.count("full_kv") > 1:
        raise PlanError("a plan may have at most one 'full_kv' layer (the one shared K/V cache)")
    if plan.count("mamba_memory") > 1:
        raise PlanError("a plan may have at most one 'mamba_memory' layer (the one GMU memory)")
    split = split_index(plan)
    for i, kind in enumerate(plan):
        if kind == "cross" and i < split:
            raise PlanError(f"layer {i} is 'cross' but no 'full_kv' layer precedes it")
        if kind == "gmu" and "mamba_memory" not in plan[:i]:
            raise PlanError(f"layer {i} is 'gmu' but no 'mamba_memory' layer precedes it")
        if i >= split and kind not in ("gmu", "cross"):
            raise PlanError(f"layer {i} is '{kind}' after the 'full_kv' layer; the cross-decoder holds only "
                            "'gmu' and 'cross' layers (nothing after the split may keep its own cache)")
    if "full_kv" in plan and split == len(plan):
        raise PlanError("'full_kv' is the last layer: its shared K/V would have no reader")


def render(plan: Sequence[str]) -> str:
    """One line, e.g. `M S M S M* F^ | G X` (M Mamba, S SWA, F full, G GMU, X cross; * memory, ^ shared KV)."""
    symbols = [SYMBOLS[k] for k in plan]
    split = split_index(plan)
    if split < len(plan):
        symbols.insert(split, "|")
    return " ".join(symbols)
