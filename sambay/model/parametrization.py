"""Standard parametrization (SP) and μP++ (μP + Depth-μP + no weight decay on vector-like parameters).

Init (ArchScale release semantics):
  * SP: every Linear N(0, init_std²); output projections (attention/Mamba/GMU out_proj, MLP fc2) further
    divided by sqrt(2L); untied head N(0, init_std²).
  * μP++: every Linear U(±1/sqrt(fan_in)); untied head zero ("zero readout"); with tied embeddings the output
    projections are also divided by sqrt(2L) (a quirk of the reference code, kept for fidelity).
  * Both: embeddings N(0, 1e-4²) when untied, N(0, init_std²) when tied; Linear biases 0 except those a mixer
    keeps (`Mixer.init_preserves`: Mamba's dt_proj.bias, set by the S4D rules with A_log and D); whatever
    else a mixer needs in `Mixer.init_extra_parameters` (DA λ vectors N(0, 0.1²)); norm gains 1, biases 0.
Forward multipliers (μP++ only) live where they act: branch × 1/sqrt(2L) in `Block`, logits × d0/L in
`CausalLM`.
Optimizer groups (μP++): matrices (every Linear weight except the head) get LR × d0/L and weight decay;
vectors (embeddings, head, norms, biases, conv, A_log, D, DA λ and sub-norm) get LR × 1 and no decay.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def _is_output_projection(name: str) -> bool:
    return name.endswith("mixer.out_proj.weight") or name.endswith("mlp.fc2.weight")


def matrix_parameter_names(model: nn.Module) -> set[str]:
    """Names of the hidden matrices: every nn.Linear weight inside the blocks (not the LM head)."""
    names = set()
    for mod_name, module in model.named_modules():
        if isinstance(module, nn.Linear) and mod_name.startswith("layers."):
            names.add(f"{mod_name}.weight")
    return names


@torch.no_grad()
def init_weights(model: nn.Module) -> None:
    config = model.config
    mup = config.parametrization == "mup++"
    depth_scale = 1.0 / math.sqrt(2 * config.n_layer)
    matrices = matrix_parameter_names(model)
    params = dict(model.named_parameters())
    for name in sorted(matrices):  # a fixed order: the same seed gives the same weights in every process
        w = params[name]
        if mup:
            bound = 1.0 / math.sqrt(w.shape[1])
            nn.init.uniform_(w, -bound, bound)
        else:
            nn.init.normal_(w, std=config.init_std)
        if _is_output_projection(name) and (not mup or config.tie_embeddings):
            w.mul_(depth_scale)
    for block in model.layers:
        keep = {f"mixer.{n}" for n in block.mixer.init_preserves}
        for name, module in block.named_modules():
            if isinstance(module, nn.Linear) and module.bias is not None and f"{name}.bias" not in keep:
                module.bias.zero_()  # qkv, q_proj, out_proj biases
        block.mixer.init_extra_parameters()  # e.g. the DA λ vectors
    nn.init.normal_(model.embed.weight, std=config.init_std if config.tie_embeddings else 1e-4)
    if model.lm_head is not None:
        if mup:
            nn.init.zeros_(model.lm_head.weight)
        else:
            nn.init.normal_(model.lm_head.weight, std=config.init_std)


def mup_learning_rate(eta0: float, depth: int, batch_tokens: int, base_batch_tokens: int = 2**21,
                      base_depth: int = 16) -> float:
    """μP++ transfer of the base LR: square-root batch scaling, then Depth-μP √(d0/L) (the vector-group LR)."""
    return eta0 * math.sqrt(batch_tokens / base_batch_tokens) * math.sqrt(base_depth / depth)


def optimizer_groups(model: nn.Module, lr: float, weight_decay: float = 0.1) -> list[dict]:
    """AdamW parameter groups. Each group carries `lr_multiplier` so schedulers can rescale `lr`."""
    config = model.config
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if config.parametrization == "sp":
        return [dict(name="all", params=[p for _, p in trainable], lr=lr, weight_decay=weight_decay,
                     lr_multiplier=1.0)]
    matrices = matrix_parameter_names(model)
    mult = config.mup_base_depth / config.n_layer
    return [
        dict(name="matrices", params=[p for n, p in trainable if n in matrices], lr=lr * mult,
             weight_decay=weight_decay, lr_multiplier=mult),
        dict(name="vectors", params=[p for n, p in trainable if n not in matrices], lr=lr, weight_decay=0.0,
             lr_multiplier=1.0),
    ]
