"""`TrainConfig` (what the user asked for) and `TrainPlan` (what it resolves to for one launch).

Resolution follows ArchScale's `pretrain.setup`, with every rule a typed field
instead of a run-name substring:

* tokens: `--tokens N`, or `--budget chinchilla`: T = t0 · N / n0 with N the model's non-embedding
  parameter count (t0 = 1e11, n0 = 237568 · 16³: the paper's d16 model trains on 100B tokens);
* global batch b in tokens must be a multiple of m = world · micro_batch · seq_len (accumulation
  steps = b / m). Default: 2^21 rounded down to a multiple of m, but at most tokens/100 so a short run
  still takes ≥ ~100 optimizer steps (never below one micro-batch per rank);
* LR: η = η0·√(b/b0); μP++ adds Depth-μP η ·= √(d0/L); the model's optimizer groups then give
  matrices η·d0/L and vectors η (`CausalLM.optimizer_groups`);
* warm-up: `warmup_tokens` (default 1e9, capped at 10 % of the run for short runs).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import torch

from sambay.model.parametrization import mup_learning_rate
from sambay.train.data import data_seq_len

SCHEDULES = ("linear", "cosine", "wsd")
BUDGETS = ("chinchilla",)
DTYPES = ("fp32", "bf16")
BUDGET_T0 = 1e11  # tokens at the base depth 16 (release BaseHyperparameters)
BUDGET_N0 = 237568 * 16**3  # Transformer++ d16 non-embedding parameters (n0_mult · d0³)


class TrainConfigError(ValueError):
    """An inconsistent training configuration (reported by the CLI as a usage error)."""


@dataclass
class TrainConfig:
    # model
    preset: str = "sambay"
    depth: int = 8
    tiny: bool = False  # sambay.config.tiny(preset, depth=...) toy widths, for tests and CPU demos
    model_overrides: dict = field(default_factory=dict)  # ModelConfig fields, e.g. {"d_model": 32}
    parametrization: str | None = None  # None: the preset's ("mup++" for the research presets)
    # data
    data: str = "synthetic"  # a shard dir / file / glob, a mixture JSON {source: weight}, or "synthetic"
    val_data: str | None = None
    document_ids: bool = False  # document-masked (varlen) training from EOS positions
    # budget and batch
    tokens: int | None = None
    budget: str | None = None  # "chinchilla"
    max_steps: int | None = None  # stop after this optimizer step without changing the schedule
    batch_tokens: int | None = None
    micro_batch: int = 2
    seq_len: int | None = None  # None: min(4096, model max_seq_len)
    # optimizer and schedule
    eta0: float = 4e-4
    base_batch_tokens: int = 2**21
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    grad_clip: float = 1.0
    schedule: str = "linear"
    warmup_tokens: float | None = None
    wsd_decay_fraction: float = 2 / 7  # WSD: decay over the last 2/7 of the post-warm-up span
    # system
    device: str = "auto"
    dtype: str | None = None  # None: bf16 on CUDA, fp32 on CPU
    parallel: str = "auto"  # auto | none | ddp | fsdp
    activation_checkpointing: bool = False
    compile: bool = False
    seed: int = 3407
    deterministic: bool = False
    threads: int | None = None  # torch intra-op threads per process
    # run directory, checkpoints, evaluation, logging
    run_dir: str = "runs/sambay"
    resume: str | None = None  # None | "auto" | a checkpoint directory
    overwrite: bool = False  # start over in a run directory that holds another run
    ckpt_every: int = 1000
    keep_last: int = 3
    eval_every: int = 1000
    eval_batches: int = 50
    eval_2x: bool = True  # also validate at 2x the training length (length extrapolation)
    log_every: int = 10
    progress: bool = True
    tensorboard: bool | None = None  # None: when installed
    peak_flops: float | None = None  # per device, for MFU; None: known GPUs only

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Values no run can use are refused, naming the option (the CLI spells it --name-with-dashes)."""
        def need(ok: bool, name: str, rule: str) -> None:
            if not ok:
                raise TrainConfigError(f"--{name.replace('_', '-')} {rule} (got {getattr(self, name)!r})")

        def number(name: str) -> bool:
            value = getattr(self, name)
            return type(value) in (int, float) and math.isfinite(value)

        for name in ("eta0", "eps"):
            need(number(name) and getattr(self, name) > 0, name, "must be a positive number")
        for name in ("beta1", "beta2"):
            need(number(name) and 0 <= getattr(self, name) < 1, name, "must be in [0, 1)")
        need(number("weight_decay") and self.weight_decay >= 0, "weight_decay", "must be >= 0")
        need(number("grad_clip") and self.grad_clip > 0, "grad_clip", "must be > 0 (clipping cannot be turned off "
             "with a negative value; use a very large one)")
        need(number("wsd_decay_fraction") and 0 < self.wsd_decay_fraction <= 1, "wsd_decay_fraction", "must be in (0, 1]")
        for name in ("seq_len", "batch_tokens", "tokens", "max_steps", "threads"):
            value = getattr(self, name)
            need(value is None or (type(value) is int and value > 0), name, "must be a positive integer")
        for name in ("depth", "micro_batch", "ckpt_every", "keep_last", "eval_every", "eval_batches", "log_every",
                     "base_batch_tokens"):
            need(type(getattr(self, name)) is int and getattr(self, name) > 0, name, "must be a positive integer")
        need(self.warmup_tokens is None or (number("warmup_tokens") and self.warmup_tokens >= 0), "warmup_tokens",
             "must be >= 0")
        need(self.peak_flops is None or (number("peak_flops") and self.peak_flops > 0), "peak_flops",
             "must be a positive number")
        if self.device == "cuda" and not torch.cuda.is_available():
            raise TrainConfigError("--device cuda: no CUDA device is available (use --device cpu, or install a "
                                   "CUDA build of torch)")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise TrainConfigError(f"unknown train config key(s) {unknown}")
        return cls(**d)


@dataclass
class TrainPlan:
    """Numbers derived from a `TrainConfig`, the model and the world size (saved next to it as JSON)."""

    world_size: int
    seq_len: int
    micro_batch: int
    grad_accum: int
    batch_tokens: int
    total_tokens: int
    total_steps: int
    warmup_steps: int
    lr: float  # η after batch (and, for μP++, depth) transfer: the vector-group LR
    lr_multipliers: dict  # group name -> multiplier (matrices d0/L under μP++)
    non_embedding_params: int
    parametrization: str
    dtype: str
    parallel: str

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def chinchilla_tokens(non_embedding_params: int, t0: float = BUDGET_T0, n0: float = BUDGET_N0) -> int:
    """T = t0 · N / n0 (≈ 100 tokens per non-embedding parameter)."""
    return int(t0 * non_embedding_params / n0)


def default_batch_tokens(unit: int, total_tokens: int | None, base: int = 2**21) -> int:
    """Largest multiple of `unit` ≤ min(base, total/100); at least `unit` (one micro-batch per rank)."""
    cap = base if total_tokens is None else min(base, total_tokens // 100)
    return max(unit, cap // unit * unit)


def base_learning_rate(cfg: TrainConfig, parametrization: str, depth: int, base_depth: int,
                       batch_tokens: int) -> float:
    """η0 transferred to this batch (√ rule) and, for μP++, this depth (√(d0/L))."""
    if parametrization == "mup++":
        return mup_learning_rate(cfg.eta0, depth, batch_tokens, cfg.base_batch_tokens, base_depth)
    return cfg.eta0 * math.sqrt(batch_tokens / cfg.base_batch_tokens)


def resolve(cfg: TrainConfig, model_config, non_embedding_params: int, world_size: int,
            parallel: str, dtype: str) -> TrainPlan:
    """Check `cfg` and derive the batch, token budget, steps and LR. Raises TrainConfigError."""
    def need(ok: bool, msg: str) -> None:
        if not ok:
            raise TrainConfigError(msg)

    need(cfg.schedule in SCHEDULES, f"--schedule must be one of {SCHEDULES}")
    need(cfg.micro_batch >= 1, "--micro-batch must be >= 1")
    need(cfg.tokens is None or cfg.budget is None, "give either --tokens or --budget, not both")
    need(cfg.budget is None or cfg.budget in BUDGETS, f"--budget must be one of {BUDGETS}")
    need(cfg.tokens is not None or cfg.budget is not None or cfg.max_steps is not None,
         "give the training length: --tokens N or --budget chinchilla (or --max-steps)")
    seq_len = cfg.seq_len or data_seq_len(cfg.data) or min(4096, model_config.max_seq_len)  # mqar:seq_len=...
    need(seq_len >= 1, "--seq-len must be >= 1")
    unit = world_size * cfg.micro_batch * seq_len
    if cfg.tokens is not None:
        need(cfg.tokens > 0, "--tokens must be positive")
        total = int(cfg.tokens)
    elif cfg.budget == "chinchilla":
        total = chinchilla_tokens(non_embedding_params)
    else:
        total = None
    if cfg.batch_tokens is None:
        batch = default_batch_tokens(unit, total, cfg.base_batch_tokens)
    else:
        batch = int(cfg.batch_tokens)
        need(batch > 0 and batch % unit == 0,
             f"--batch-tokens {batch} is not a multiple of world_size·micro_batch·seq_len = "
             f"{world_size}·{cfg.micro_batch}·{seq_len} = {unit}")
    if total is None:  # only --max-steps: the schedule spans exactly those steps
        total = cfg.max_steps * batch
    steps = total // batch
    need(steps >= 1, f"the token budget ({total:,}) is smaller than one global batch ({batch:,} tokens)")
    warmup_tokens = cfg.warmup_tokens if cfg.warmup_tokens is not None else min(1e9, 0.1 * steps * batch)
    warmup = math.ceil(warmup_tokens / batch)
    need(0 <= warmup < steps or steps == 1, f"warm-up ({warmup} steps) must be shorter than the run ({steps})")
    need(cfg.max_steps is None or cfg.max_steps >= 1, "--max-steps must be >= 1")
    need(cfg.keep_last >= 1, "--keep-last must be >= 1")
    param = cfg.parametrization or model_config.parametrization
    lr = base_learning_rate(cfg, param, model_config.n_layer, model_config.mup_base_depth, batch)
    mult = ({"matrices": model_config.mup_base_depth / model_config.n_layer, "vectors": 1.0}
            if param == "mup++" else {"all": 1.0})
    return TrainPlan(world_size=world_size, seq_len=seq_len, micro_batch=cfg.micro_batch,
                     grad_accum=batch // unit, batch_tokens=batch, total_tokens=steps * batch,
                     total_steps=steps, warmup_steps=min(warmup, steps - 1), lr=lr, lr_multipliers=mult,
                     non_embedding_params=non_embedding_params, parametrization=param, dtype=dtype,
                     parallel=parallel)
