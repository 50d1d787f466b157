"""Layer plans: which mixer every layer uses, and which layers publish what the cross-decoder reads.

A plan is a list of layer entries. Each entry names a mixer from the registry (`sambay.model.mixers`) and,
optionally, a role in the data flow:

    mixer     M  mamba    Mamba-1            S  swa    sliding-window attention     F  full   full attention
              M2 mamba2   Mamba-2 (SSD)      G  gmu    Gated Memory Unit            X  cross  cross-attention
    role      memory     (*) the layer's scan output is published as the GMU memory   ('mamba_memory')
              shared_kv  (^) the layer's K/V is the one shared, growing cache          ('full_kv')

An entry prints as its kind string, the mixer name plus the role's suffix (`mamba`, `mamba_memory`, `full_kv`,
...): config.json stores those strings. The cross-decoder starts right after the shared-K/V layer and may
only hold mixers that keep no state of their own. Baselines are other plans, not other models.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

ROLES = {"memory": ("_memory", "*"), "shared_kv": ("_kv", "^")}  # role -> (kind suffix, plan symbol mark)


class PlanError(ValueError):
    """A layer plan breaks one of the invariants in `validate`."""


@dataclass(frozen=True)
class LayerSpec:
    """One plan entry: a registered mixer and its role (None, "memory" or "shared_kv")."""

    mixer: str
    role: str | None = None

    def __str__(self) -> str:
        return self.mixer + (ROLES[self.role][0] if self.role else "")

    @property
    def mixer_class(self):
        return mixer_registry()[self.mixer]

    @property
    def symbol(self) -> str:
        return self.mixer_class.symbol + (ROLES[self.role][1] if self.role else "")


def mixer_registry() -> dict:
    """name -> mixer class. Imported on use: the mixers are torch modules, plans are plain data that the
    config (imported by those modules' package) validates."""
    from sambay.model.mixers import MIXERS

    return MIXERS


def parse(kind: str) -> LayerSpec:
    """'mamba_memory' -> LayerSpec('mamba', 'memory'); raises PlanError for an unknown kind."""
    spec = _parse(kind) if isinstance(kind, str) else None
    if spec is None:
        raise PlanError(f"unknown layer kind {kind!r}; valid kinds: {', '.join(kinds())}")
    return spec


@functools.cache
def _parse(kind: str) -> LayerSpec | None:
    registry = mixer_registry()
    if kind in registry:
        return LayerSpec(kind)
    for role, (suffix, _) in ROLES.items():
        base = kind.removesuffix(suffix)
        if base != kind and base in registry and role in registry[base].roles:
            return LayerSpec(base, role)
    return None


def kinds() -> list[str]:
    """Every valid kind string: each mixer, and each mixer with each role it can take."""
    return [str(LayerSpec(name, role)) for name, cls in mixer_registry().items()
            for role in (None, *sorted(cls.roles))]


def parse_plan(plan: Sequence[str]) -> list[LayerSpec]:
    return [parse(k) for k in plan]


# ------------------------------------------------------------------------------------------ plan builders
def _samba_self_decoder(i: int, mamba_every: int, ssm: str) -> str:
    return ssm if mamba_every > 0 and i % mamba_every == 0 else "swa"


def transformer_plan(depth: int) -> list[str]:
    return ["full"] * depth


def transformer_ls_plan(depth: int, full_every: int = 4) -> list[str]:
    """SWA everywhere except one full-attention layer every `full_every` layers (at i % 4 == 3)."""
    return ["full" if i % full_every == full_every - 1 else "swa" for i in range(depth)]


def samba_plan(depth: int) -> list[str]:
    return [_samba_self_decoder(i, 2, "mamba") for i in range(depth)]


def yoco_plan(depth: int, mamba_every: int, gmu: bool, ssm: str = "mamba") -> list[str]:
    """YOCO-family plan (SWA+YOCO, Samba+YOCO, SambaY, MambaY; `ssm` picks the state-space mixer).

    Layers i < L/2: `ssm` where i % mamba_every == 0, else SWA. Layer L/2: `ssm` (publishing the memory when
    `gmu`) or SWA. Layer L/2+1: full attention publishing the shared K/V. Layers >= L/2+2: GMU at even i
    (when `gmu`), cross-attention otherwise.
    """
    if depth % 4 != 0:
        raise PlanError(f"YOCO plans need depth divisible by 4 (got {depth}): the cross-decoder must alternate "
                        "GMU/cross starting at an even index")
    half = depth // 2
    plan = [_samba_self_decoder(i, mamba_every, ssm) for i in range(half)]
    middle = ssm if mamba_every > 0 else "swa"
    plan.append(middle + "_memory" if gmu and middle == ssm else middle)
    plan.append("full_kv")
    plan += ["gmu" if gmu and i % 2 == 0 else "cross" for i in range(half + 2, depth)]
    return plan


# ------------------------------------------------------------------------------------------ invariants
def split_index(plan: Sequence[str]) -> int:
    """Index of the first cross-decoder layer: right after the shared-K/V layer (len(plan) if none)."""
    for i, spec in enumerate(parse_plan(plan)):
        if spec.role == "shared_kv":
            return i + 1
    return len(plan)


def _publishers(role: str) -> str:
    return " / ".join(f"'{LayerSpec(n, role)}'" for n, c in mixer_registry().items() if role in c.roles)


def validate(plan: Sequence[str]) -> None:
    """Raise PlanError naming the broken rule. Linear in the number of layers."""
    if not plan:
        raise PlanError("a layer plan needs at least one layer")
    specs = parse_plan(plan)
    published: dict[str, str] = {}  # role -> kind string of the layer that publishes it
    split = None
    for i, (kind, spec) in enumerate(zip(plan, specs)):
        cls = spec.mixer_class
        if spec.role in published:
            raise PlanError(f"a plan may have at most one '{kind}' layer (one layer publishes the "
                            f"{spec.role.replace('_', ' ')}; got layers {plan.index(kind)} and {i})")
        for channel in cls.reads:
            if channel not in published:
                raise PlanError(f"layer {i} is '{kind}' but no {_publishers(channel)} layer precedes it")
        if split is not None and cls.keeps_state:
            raise PlanError(f"layer {i} is '{kind}' after the '{plan[split - 1]}' layer; the cross-decoder holds "
                            "only layers without state of their own (gmu, cross)")
        if spec.role is not None:
            published[spec.role] = kind
            split = i + 1 if spec.role == "shared_kv" else split
    if split == len(plan):
        raise PlanError(f"'{plan[-1]}' is the last layer: its shared K/V would have no reader")


def render(plan: Sequence[str]) -> str:
    """One line, e.g. `M S M S M* F^ | G X` (M Mamba, S SWA, F full, G GMU, X cross; * memory, ^ shared KV)."""
    symbols = [spec.symbol for spec in parse_plan(plan)]
    split = split_index(plan)
    if split < len(plan):
        symbols.insert(split, "|")
    return " ".join(symbols)
