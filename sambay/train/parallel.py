"""Apply activation checkpointing, torch.compile and DDP / FSDP2 to an unmodified `CausalLM`.

Everything here acts from outside the model (torchtitan `parallelize.py` style) and keeps parameter names
unchanged, so optimizer groups, checkpoints and `from_pretrained` see the same names whatever was applied:

* activation checkpointing and compile replace the *instance* `forward` of each `Block` (no wrapper module,
  no `_checkpoint_wrapped_module.` / `_orig_mod.` prefixes);
* FSDP2 `fully_shard` is applied per block and then to the root (names stay, parameters become DTensors);
* DDP wraps the model; callers keep a handle on the unwrapped module (`Parallelized.module`).

Order (as torchtitan): activation checkpointing, then compile, then FSDP2 / DDP.
"""

from __future__ import annotations

import contextlib
import types
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

PARALLEL_MODES = ("none", "ddp", "fsdp")


@torch.no_grad()
def _broadcast_from_rank0(model: nn.Module) -> None:
    """Make every rank start from rank 0's weights before sharding (DDP does this itself).

    Seeding alone is not enough: the initialiser may consume the RNG in an order that differs between
    processes (e.g. iterating a set of names under hash randomisation), and each rank keeps only its own
    shard of its own initialisation.
    """
    import torch.distributed as dist

    for t in [*model.parameters(), *model.buffers()]:
        dist.broadcast(t.data, src=0)


def apply_activation_checkpointing(model: nn.Module) -> None:
    """Recompute each block's activations in backward (non-reentrant `torch.utils.checkpoint`).

    Memory per block drops to its input residual (B, T, d) fp32; compute grows by about one forward.
    """
    for block in model.layers:
        inner = block.forward

        def forward(self, x, ctx, _inner=inner):
            return checkpoint(_inner, x, ctx, use_reentrant=False)

        block.forward = types.MethodType(forward, block)


# Compiled variants one block kind may need: training, evaluation under no_grad, and a second sequence
# length (evaluation at 2x the training length), each at most once more for dynamic shapes.
VARIANTS_PER_KIND = 6


def apply_compile(model: nn.Module, backend: str = "inductor") -> None:
    """torch.compile each block's forward in place (parameter names unchanged).

    Only the forward body is compiled; module hooks (FSDP2 all-gather / reshard) stay eager, so the
    compiled region never contains collectives. Every block shares one code object (`Block.forward`), so
    dynamo's recompile limit (8 by default) counts the variants of all block kinds together; a hybrid plan
    (SambaY d8: six kinds) exceeds it, and blocks past the limit would silently run eagerly. The limit is
    raised to cover every kind of this plan.
    """
    kinds = len({block.kind for block in model.layers})
    limit = VARIANTS_PER_KIND * kinds
    if torch._dynamo.config.recompile_limit < limit:
        torch._dynamo.config.recompile_limit = limit
    for block in model.layers:
        block.forward = torch.compile(block.forward, backend=backend)


@dataclass
class Parallelized:
    """The model to call (`wrapped`, maybe a DDP module) and the plain `CausalLM` underneath (`module`)."""

    wrapped: nn.Module
    module: nn.Module
    mode: str

    def no_sync(self, last_micro_batch: bool):
        """Context for one micro-batch of gradient accumulation: skip the gradient all-reduce /
        reduce-scatter except on the last micro-batch (the reduced result is identical, one comm per step)."""
        if self.mode == "ddp" and not last_micro_batch:
            return self.wrapped.no_sync()
        if self.mode == "fsdp":
            self.module.set_requires_gradient_sync(last_micro_batch)
        return contextlib.nullcontext()


def parallelize(model: nn.Module, mode: str, *, device: torch.device, activation_checkpointing: bool = False,
                compile: bool = False, reshard_after_forward: bool = True) -> Parallelized:
    """Apply AC / compile / DDP or FSDP2 to `model` (already on `device`) in place where possible.

    mode: "none" (single process, or replicas without gradient sync: not useful), "ddp", "fsdp".
    FSDP2 keeps fp32 sharded parameters (master weights); bf16 compute comes from autocast in the trainer.
    """
    if mode not in PARALLEL_MODES:
        raise ValueError(f"parallel mode must be one of {PARALLEL_MODES}, got {mode!r}")
    if activation_checkpointing:
        apply_activation_checkpointing(model)
    if compile:
        apply_compile(model)
    if mode == "fsdp":
        from torch.distributed.fsdp import fully_shard

        _broadcast_from_rank0(model)

        n = len(model.layers)
        for i, block in enumerate(model.layers):
            # the last block is resharded by the root right away; keeping it gathered saves one all-gather
            fully_shard(block, reshard_after_forward=reshard_after_forward and i < n - 1)
        # The root never reshards after forward: its parameters (embedding, final norm, tied head) are the
        # first ones backward needs, and the loss is computed inside its forward. (Passing True overrides
        # FSDP2's own root heuristic; torch 2.11's FSDP2 then never re-gathered the root before backward,
        # which read freed storage: the illegal memory access seen over NCCL.)
        fully_shard(model, reshard_after_forward=False)
        return Parallelized(model, model, mode)
    if mode == "ddp":
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [device.index] if device.type == "cuda" else None
        return Parallelized(DDP(model, device_ids=ids), model, mode)
    return Parallelized(model, model, mode)
