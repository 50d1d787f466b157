"""Compiled blocks: every block kind of a hybrid plan stays compiled through training and evaluation."""

import pytest
import torch

from sambay.config import tiny
from sambay.model.model import CausalLM
from sambay.train.parallel import apply_compile


@pytest.mark.parametrize("preset", ["sambay", "transformer++"])
def test_compiled_blocks_never_hit_the_recompile_limit_in_train_and_eval_at_two_lengths(preset, monkeypatch):
    # SambaY d8 has six block kinds sharing Block.forward's code object: with dynamo's default limit of 8
    # the blocks past it silently ran eagerly (seen in compiled d8 training on the H200).
    monkeypatch.setattr(torch._dynamo.config, "recompile_limit", 8)
    monkeypatch.setattr(torch._dynamo.config, "fail_on_recompile_limit_hit", True)
    torch._dynamo.reset()
    model = CausalLM(tiny(preset))
    apply_compile(model, backend="eager")
    ids = torch.randint(0, 256, (2, 64))
    model(ids, labels=ids).loss.backward()
    with torch.no_grad():  # evaluation at the training length and at 2x
        for length in (64, 128):
            ids = torch.randint(0, 256, (2, length))
            assert torch.isfinite(model(ids, labels=ids).loss)
    torch._dynamo.reset()
