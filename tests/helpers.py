"""Shared test utilities."""

import torch

from sambay import CausalLM


def random_model(config, seed: int = 0) -> CausalLM:
    """A model whose every weight is random (μP++'s zero-initialised head would make all logits equal)."""
    torch.manual_seed(seed)
    model = CausalLM(config).eval()
    if model.lm_head is not None:
        torch.nn.init.normal_(model.lm_head.weight, std=0.5 / config.d_model ** 0.5)
    return model
