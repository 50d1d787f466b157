"""`ModelConfig`: every architecture of the SambaY family as plain, serialisable data.

Presets are named functions of the depth (`ModelConfig.from_preset("sambay", depth=16)`); nothing is ever
parsed out of a name. The layer plan is stored in the config as a list of kind strings (see `sambay.plan`);
`config.layers` gives the parsed entries (mixer + role).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from sambay import plan as plans


class ConfigError(ValueError):
    """An invalid model configuration; the message names the rule that is broken."""


# Upper bounds on sizes, far above any real model, so that a hostile or mistyped config fails at once with
# the key named instead of allocating without end.
MAX_LAYERS = 4096
INT_LIMITS = {"d_model": 1 << 16, "n_head": 1024, "n_kv_head": 1024, "head_dim": 1024, "d_ff": 1 << 18,
              "vocab_size": 1 << 24, "d_state": 1024, "d_conv": 64, "mamba_expand": 16, "dt_rank": 1 << 16,
              "ssm_head_dim": 1024, "ssm_groups": 1024, "mup_base_depth": MAX_LAYERS, "max_seq_len": 1 << 24}
FLOAT_FIELDS = ("rope_base", "rotary_fraction", "norm_eps", "init_std")
TOKEN_ID_FIELDS = ("eos_token_id", "bos_token_id", "pad_token_id")
BOOL_FIELDS = ("diff_attn", "attn_bias", "attn_out_bias", "tie_embeddings", "gmu_norm")
PARAMETRIZATIONS = ("sp", "mup++")
NORMS = ("rmsnorm", "layernorm")
POSITIONAL = ("none", "rope")


@dataclass
class ModelConfig:
    """Hyper-parameters of one model. Derived fields are filled in `__post_init__`."""

    arch: str  # preset name this config came from (informational only; behaviour never depends on it)
    layer_plan: list[str]
    d_model: int
    n_head: int
    n_kv_head: int
    head_dim: int
    d_ff: int  # SwiGLU intermediate width
    vocab_size: int
    window: int | None = None  # sliding window in keys, including the current token
    positional: str = "none"  # "none" (NoPE) or "rope"
    rope_base: float = 10000.0
    rotary_fraction: float = 1.0  # fraction of head_dim that is rotated (phi4-mini: 0.75)
    diff_attn: bool = False
    norm: str = "rmsnorm"
    norm_eps: float = 1e-5
    attn_bias: bool = False  # bias on the qkv projection (and the cross-attention q projection)
    attn_out_bias: bool = False
    tie_embeddings: bool = False
    d_state: int = 16
    d_conv: int = 4
    mamba_expand: int = 2
    dt_rank: int | None = None  # None -> ceil(d_model / 16)
    ssm_head_dim: int = 64  # Mamba-2: channels per head (heads = d_inner / ssm_head_dim)
    ssm_groups: int = 1  # Mamba-2: groups of heads sharing B and C
    gmu_norm: bool = False  # nGMU: RMSNorm after gating (for linear-attention memories)
    parametrization: str = "mup++"  # "sp" or "mup++"
    mup_base_depth: int = 16  # d0 of the μP++ transfer rules
    init_std: float = 0.02  # SP init
    max_seq_len: int = 4096
    eos_token_id: int | None = None
    bos_token_id: int | None = None  # kept so that a converted checkpoint's config.json keeps its ids
    pad_token_id: int | None = None
    d_inner: int = field(init=False)

    def __post_init__(self) -> None:
        self._check_types()
        self.layer_plan = list(self.layer_plan)
        if self.dt_rank is None:
            self.dt_rank = math.ceil(self.d_model / 16)
        self.d_inner = self.mamba_expand * self.d_model
        self.validate()

    # ------------------------------------------------------------------ derived
    @property
    def n_layer(self) -> int:
        return len(self.layer_plan)

    @property
    def layers(self) -> list[plans.LayerSpec]:
        """The plan's entries (mixer name + role), one per layer."""
        return plans.parse_plan(self.layer_plan)

    @property
    def split_index(self) -> int:
        """First cross-decoder layer (== n_layer when there is no cross-decoder)."""
        return plans.split_index(self.layer_plan)

    @property
    def is_yoco(self) -> bool:
        """True when one layer publishes a shared K/V for a cross-decoder."""
        return any(spec.role == "shared_kv" for spec in self.layers)

    @property
    def last_stateful_layer(self) -> int:
        """Index of the last layer that keeps inference state (-1 if none): every later layer is token-wise
        given what earlier layers published, so a prefill needs their outputs for the last token only."""
        return max((i for i, spec in enumerate(self.layers) if spec.mixer_class.keeps_state), default=-1)

    @property
    def attention_windows(self) -> set[int | None]:
        """Key windows of the plan's attention layers (None: full causal; cross-attention is full)."""
        return {w for cls in {spec.mixer_class for spec in self.layers} for w in cls.attention_windows(self)}

    @property
    def rotary_dim(self) -> int:
        return int(self.head_dim * self.rotary_fraction) if self.positional == "rope" else 0

    def lambda_init(self, layer_idx: int) -> float:
        """Differential-attention λ_init from the 0-based global layer index."""
        return 0.8 - 0.6 * math.exp(-0.3 * layer_idx)

    # ------------------------------------------------------------------ checks
    def _check_types(self) -> None:
        """Types and sizes first (the derived fields multiply them): each failure names its key."""
        plan = self.layer_plan
        if not isinstance(plan, (list, tuple)):
            raise ConfigError(f"layer_plan must be a list of layer kinds (got {type(plan).__name__})")
        if len(plan) > MAX_LAYERS:
            raise ConfigError(f"layer_plan has {len(plan):,} layers; at most {MAX_LAYERS} are supported")
        for name, limit in INT_LIMITS.items():
            value = getattr(self, name)
            if value is None and name == "dt_rank":
                continue
            if type(value) is not int or not 0 < value <= limit:
                raise ConfigError(f"{name} must be a positive integer <= {limit:,} (got {value!r})")
        for name in FLOAT_FIELDS:
            value = getattr(self, name)
            if type(value) not in (int, float) or not math.isfinite(value):
                raise ConfigError(f"{name} must be a finite number (got {value!r})")
        for name in BOOL_FIELDS:
            if type(getattr(self, name)) is not bool:
                raise ConfigError(f"{name} must be true or false (got {getattr(self, name)!r})")
        for name in ("window", *TOKEN_ID_FIELDS):
            value = getattr(self, name)
            if value is not None and type(value) is not int:
                raise ConfigError(f"{name} must be an integer or null (got {value!r})")
        for name in ("arch", "positional", "norm", "parametrization"):
            if not isinstance(getattr(self, name), str):
                raise ConfigError(f"{name} must be a string (got {getattr(self, name)!r})")

    def validate(self) -> None:
        def need(ok: bool, msg: str) -> None:
            if not ok:
                raise ConfigError(msg)

        try:
            plans.validate(self.layer_plan)
        except plans.PlanError as e:
            raise ConfigError(f"layer_plan: {e}") from None
        self._check_types()
        need(self.n_head % self.n_kv_head == 0,
             f"n_head ({self.n_head}) must be a multiple of n_kv_head ({self.n_kv_head}) for grouped-query attention")
        if self.diff_attn:
            need(self.n_head % 2 == 0 and self.n_kv_head % 2 == 0,
                 f"differential attention pairs heads (2i, 2i+1): n_head ({self.n_head}) and n_kv_head "
                 f"({self.n_kv_head}) must both be even")
        if self.window is not None:
            need(isinstance(self.window, int) and self.window > 0, f"window must be a positive integer (got {self.window!r})")
        for cls in dict.fromkeys(spec.mixer_class for spec in self.layers):
            problem = cls.check_config(self)
            need(problem is None, problem)
        need(self.positional in POSITIONAL, f"positional must be one of {POSITIONAL} (got {self.positional!r})")
        need(self.norm in NORMS, f"norm must be one of {NORMS} (got {self.norm!r})")
        need(self.parametrization in PARAMETRIZATIONS,
             f"parametrization must be one of {PARAMETRIZATIONS} (got {self.parametrization!r})")
        need(0.0 < self.rotary_fraction <= 1.0, f"rotary_fraction must be in (0, 1] (got {self.rotary_fraction})")
        if self.positional == "rope":
            need(self.rotary_dim % 2 == 0 and self.rotary_dim > 0,
                 f"rotary dims (head_dim * rotary_fraction = {self.head_dim * self.rotary_fraction}) must be a positive even integer")
        need(self.norm_eps > 0, f"norm_eps must be > 0 (got {self.norm_eps})")
        for name in TOKEN_ID_FIELDS:
            value = getattr(self, name)
            need(value is None or 0 <= value < self.vocab_size,
                 f"{name} {value} is outside the vocabulary [0, {self.vocab_size})")

    # ------------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d.pop("d_inner")
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        if not isinstance(d, dict):
            raise ConfigError(f"a model config must be a JSON object, got {type(d).__name__}")
        known = {f.name for f in dataclasses.fields(cls) if f.init}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown config key(s) {unknown}")
        missing = sorted(f.name for f in dataclasses.fields(cls)
                         if f.init and f.default is dataclasses.MISSING and f.name not in d)
        if missing:
            raise ConfigError(f"config is missing required key(s) {missing}")
        return cls(**d)

    def to_json(self, path: str | Path | None = None) -> str:
        text = json.dumps(self.to_dict(), indent=2) + "\n"
        if path is not None:
            Path(path).write_text(text)
        return text

    @classmethod
    def from_json(cls, text_or_path: str | Path) -> ModelConfig:
        p = Path(text_or_path)
        text = p.read_text() if (isinstance(text_or_path, Path) or not str(text_or_path).lstrip().startswith("{")) else str(text_or_path)
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise ConfigError(f"model config is not valid JSON: {e}") from None
        return cls.from_dict(d)

    def replace(self, **changes) -> ModelConfig:
        d = self.to_dict()
        if "d_model" in changes and "dt_rank" not in changes and self.dt_rank == math.ceil(self.d_model / 16):
            d["dt_rank"] = None  # the rank was derived from the old width: derive it again
        d.update(changes)
        return ModelConfig.from_dict(d)

    # ------------------------------------------------------------------ presets
    @classmethod
    def from_preset(cls, name: str, depth: int | None = None, **overrides) -> ModelConfig:
        """Build a named preset, e.g. `from_preset("sambay", depth=16, window=256)`."""
        if name not in PRESETS:
            raise ConfigError(f"unknown preset {name!r}; available: {', '.join(PRESETS)}")
        builder, depths = PRESETS[name]
        if depth is None:
            depth = depths[0]
        if type(depth) is not int or not 0 < depth <= MAX_LAYERS:
            raise ConfigError(f"depth must be a positive integer <= {MAX_LAYERS} (got {depth!r})")
        if depths and depth not in depths and name in FIXED_DEPTH:
            raise ConfigError(f"preset {name!r} has a fixed depth of {depths[0]} (got {depth})")
        try:
            base = builder(depth)
        except plans.PlanError as e:
            raise ConfigError(f"preset {name!r} at depth {depth}: {e}") from None
        return base.replace(**overrides) if overrides else base


# ---------------------------------------------------------------------- research presets (ArchScale scaling configs)
# Width = aspect_ratio * depth; n_head = depth, head_dim 128, n_kv_head = depth / 4, SwiGLU 4x, 32000 vocab.
RESEARCH_DEPTHS = (16, 8, 12, 20, 24)


def _research(arch: str, depth: int, aspect_ratio: int, layer_plan: list[str], *, window: int | None,
              positional: str, diff_attn: bool = False) -> ModelConfig:
    d_model = aspect_ratio * depth
    return ModelConfig(
        arch=arch, layer_plan=layer_plan, d_model=d_model, n_head=depth, n_kv_head=max(depth // 4, 1),
        head_dim=128, d_ff=4 * d_model, vocab_size=32000, window=window, positional=positional,
        diff_attn=diff_attn, norm="rmsnorm", tie_embeddings=False, parametrization="mup++", mup_base_depth=16,
        max_seq_len=4096, eos_token_id=2,
    )


def _phi4_mini_flash(depth: int) -> ModelConfig:
    return ModelConfig(
        arch="phi4-mini-flash", layer_plan=plans.yoco_plan(depth, 2, gmu=True), d_model=2560, n_head=40,
        n_kv_head=20, head_dim=64, d_ff=10240, vocab_size=200064, window=512, positional="none", diff_attn=True,
        norm="layernorm", attn_bias=True, attn_out_bias=True, tie_embeddings=True, parametrization="sp",
        max_seq_len=262144, eos_token_id=199999,
    )


def _phi4_mini(depth: int) -> ModelConfig:
    return ModelConfig(
        arch="phi4-mini", layer_plan=plans.transformer_plan(depth), d_model=3072, n_head=24, n_kv_head=8,
        head_dim=128, d_ff=8192, vocab_size=200064, positional="rope", rotary_fraction=0.75, norm="rmsnorm",
        tie_embeddings=True, parametrization="sp", max_seq_len=131072, eos_token_id=199999,
    )


PRESETS: dict[str, tuple[Callable[[int], ModelConfig], tuple[int, ...]]] = {
    "transformer++": (lambda L: _research("transformer++", L, 128, plans.transformer_plan(L), window=None,
                                          positional="rope"), RESEARCH_DEPTHS),
    "transformer-ls": (lambda L: _research("transformer-ls", L, 128, plans.transformer_ls_plan(L), window=128,
                                           positional="rope"), RESEARCH_DEPTHS),
    "samba": (lambda L: _research("samba", L, 122, plans.samba_plan(L), window=2048, positional="rope"),
              RESEARCH_DEPTHS),
    "swa-yoco": (lambda L: _research("swa-yoco", L, 130, plans.yoco_plan(L, 0, gmu=False), window=128,
                                     positional="rope"), RESEARCH_DEPTHS),
    "samba-yoco": (lambda L: _research("samba-yoco", L, 126, plans.yoco_plan(L, 2, gmu=False), window=128,
                                       positional="none"), RESEARCH_DEPTHS),
    "sambay": (lambda L: _research("sambay", L, 124, plans.yoco_plan(L, 2, gmu=True), window=128,
                                   positional="none"), RESEARCH_DEPTHS),
    "sambay-da": (lambda L: _research("sambay-da", L, 124, plans.yoco_plan(L, 2, gmu=True), window=128,
                                      positional="none", diff_attn=True), (16, 8, 24)),
    "mambay": (lambda L: _research("mambay", L, 120, plans.yoco_plan(L, 1, gmu=True), window=None,
                                   positional="none"), RESEARCH_DEPTHS),
    # SambaY with Mamba-2 (SSD, 64-channel heads, 64 states) in place of Mamba-1, memory layer included
    "sambay-mamba2": (lambda L: _research("sambay-mamba2", L, 124, plans.yoco_plan(L, 2, gmu=True, ssm="mamba2"),
                                          window=128, positional="none").replace(d_state=64), RESEARCH_DEPTHS),
    "phi4-mini-flash": (_phi4_mini_flash, (32,)),
    "phi4-mini": (_phi4_mini, (32,)),
}
FIXED_DEPTH = ("phi4-mini-flash", "phi4-mini")


def tiny(preset: str, *, depth: int = 8, d_model: int = 64, vocab_size: int = 256, **overrides) -> ModelConfig:
    """A tiny version of a preset for tests and CPU demos: same plan and options, toy widths."""
    base = ModelConfig.from_preset(preset, depth=None if preset in FIXED_DEPTH else depth)
    n_head = 4
    plan = base.layer_plan
    if preset in FIXED_DEPTH:  # keep the family's plan rule, at the requested depth
        plan = plans.yoco_plan(depth, 2, gmu=True) if base.is_yoco else plans.transformer_plan(depth)
    settings = dict(
        layer_plan=plan, d_model=d_model, n_head=n_head, n_kv_head=2, head_dim=d_model // n_head, d_ff=2 * d_model,
        vocab_size=vocab_size, window=None if base.window is None else 8, max_seq_len=512,
        eos_token_id=None, d_state=min(base.d_state, 16), ssm_head_dim=16,
    )
    settings.update(overrides)
    return base.replace(**settings)
