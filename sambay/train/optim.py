"""AdamW over the model's parameter groups, and the LR schedules (same shape for every group).

Groups come from `CausalLM.optimizer_groups(lr, weight_decay)`: μP++ -> "matrices" (LR × d0/L, decay) and
"vectors" (LR × 1, no decay); SP -> one "all" group with decay. Each group keeps its `lr_multiplier`; the
schedule sets `group["lr"] = peak_lr · lr_multiplier · factor(step)`.

Schedules (as in ArchScale's pretraining script; step = optimizer step counted from 0):
* warm-up: factor = (step + 1) / warmup for step < warmup (never a zero-LR first step);
* "linear": then linear decay reaching 0 one step after the last (the last step has factor 1/(S-W));
* "cosine": then 0.5·(1 + cos(π·p)) with the same progress p;
* "wsd": constant, then linear decay to 0 over the final `decay_fraction` (2/7) of the post-warm-up span.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class LRSchedule:
    total_steps: int
    warmup_steps: int
    kind: str = "linear"
    decay_fraction: float = 2 / 7

    def __post_init__(self) -> None:
        if self.kind not in ("linear", "cosine", "wsd"):
            raise ValueError(f"unknown schedule {self.kind!r}")
        if not 0 <= self.warmup_steps < max(self.total_steps, 1):
            raise ValueError(f"warmup_steps {self.warmup_steps} must be in [0, total_steps={self.total_steps})")

    def factor(self, step: int) -> float:
        """LR multiplier in [0, 1] for optimizer step `step` (0-based)."""
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        span = self.total_steps - self.warmup_steps
        done = step - self.warmup_steps  # 0 .. span-1
        if self.kind == "linear":
            return max(0.0, 1.0 - done / span)
        if self.kind == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * min(done / span, 1.0)))
        decay = max(1, round(span * self.decay_fraction))
        stable = span - decay
        return 1.0 if done < stable else max(0.0, 1.0 - (done - stable) / decay)

    def apply(self, optimizer: torch.optim.Optimizer, peak_lr: float, step: int) -> float:
        """Set every group's LR for `step`; returns the schedule factor."""
        f = self.factor(step)
        for g in optimizer.param_groups:
            g["lr"] = peak_lr * g.get("lr_multiplier", 1.0) * f
        return f


def build_optimizer(model: nn.Module, lr: float, weight_decay: float, betas: tuple[float, float],
                    eps: float, device: torch.device) -> torch.optim.AdamW:
    """AdamW (decoupled decay, multiplied by the group LR) over `model.optimizer_groups`.

    `model` is the plain `CausalLM` (after FSDP2 its parameters are DTensors; names are unchanged, so the
    μP++ name rules still apply). fused=True on CUDA as in the reference; foreach elsewhere.
    """
    groups = [g for g in model.optimizer_groups(lr, weight_decay) if g["params"]]
    fused = device.type == "cuda"
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                             fused=fused or None, foreach=None if fused else True)


def group_grad_norms(optimizer: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    """L2 norm of the gradients of each named group (DTensor shards reduced to the full norm)."""
    norms = {}
    for g in optimizer.param_groups:
        grads = [p.grad for p in g["params"] if p.grad is not None]
        if not grads:
            continue
        n = torch.nn.utils.get_total_norm(grads, norm_type=2.0)
        norms[g.get("name", f"group{len(norms)}")] = n.full_tensor() if hasattr(n, "full_tensor") else n
    return norms


def clip_gradients(optimizer: torch.optim.Optimizer, max_norm: float) -> tuple[torch.Tensor, dict]:
    """Clip to a global norm over all groups; returns (total norm before clipping, per-group norms), all
    0-dim device tensors. Nothing here waits for the device: the scale min(1, max_norm / norm) is applied as
    a tensor, so a step's kernels are queued back to back (a host sync here idled the GPU every step)."""
    norms = group_grad_norms(optimizer)
    total = torch.stack([n.float() for n in norms.values()]).square().sum().sqrt()
    if max_norm > 0:
        coef = (max_norm / (total + 1e-6)).clamp(max=1.0)
        grads = [p.grad for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
        with _plain_tensors_as_replicated(grads):
            torch._foreach_mul_(grads, coef)
    return total, norms


def _plain_tensors_as_replicated(grads: list[torch.Tensor]):
    """FSDP2 gradients are DTensor shards: let the (plain, replicated) scale multiply them."""
    if torch.distributed.is_available():
        from torch.distributed.tensor import DTensor
        from torch.distributed.tensor.experimental import implicit_replication

        if any(isinstance(g, DTensor) for g in grads):
            return implicit_replication()
    return contextlib.nullcontext()
