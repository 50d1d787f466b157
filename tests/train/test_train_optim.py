"""μP++ learning-rate transfer (ArchScale's rules), parameter groups, schedules, plan resolution."""

import math

import pytest
import torch

from sambay.config import ModelConfig
from sambay.model import CausalLM
from sambay.train.config import (
    BUDGET_N0,
    TrainConfig,
    TrainConfigError,
    chinchilla_tokens,
    default_batch_tokens,
    resolve,
)
from sambay.train.optim import LRSchedule, build_optimizer


def _meta_model(config: ModelConfig) -> CausalLM:
    with torch.device("meta"):
        return CausalLM(config, init=False)


def _plan_and_optimizer(depth: int, parametrization: str = "mup++"):
    """The paper's setting: 8 GPUs x micro-batch 2 x seq 4096, b = b0 = 2^21 (32 accumulation steps)."""
    mc = ModelConfig.from_preset("sambay", depth=depth, parametrization=parametrization)
    model = _meta_model(mc)
    cfg = TrainConfig(depth=depth, budget="chinchilla", micro_batch=2, seq_len=4096, batch_tokens=2**21)
    plan = resolve(cfg, mc, model.num_parameters(exclude_embeddings=True), world_size=8, parallel="ddp",
                   dtype="bf16")
    opt = build_optimizer(model, plan.lr, cfg.weight_decay, (0.9, 0.95), 1e-8, torch.device("cpu"))
    return plan, opt


@pytest.mark.parametrize("depth, eta_vec, eta_mat", [(8, 5.66e-4, 1.13e-3), (16, 4.00e-4, 4.00e-4)],
                         ids=["L8", "L16"])
def test_mup_learning_rates_match_worked_example(depth, eta_vec, eta_mat):
    plan, opt = _plan_and_optimizer(depth)
    assert plan.batch_tokens == 2**21 and plan.grad_accum == 32
    assert plan.warmup_steps == 477  # 1e9 tokens / 2^21
    # the peak LR of each group (schedule factor 1 right after warm-up)
    LRSchedule(plan.total_steps, plan.warmup_steps).apply(opt, plan.lr, plan.warmup_steps)
    groups = {g["name"]: g for g in opt.param_groups}
    assert set(groups) == {"matrices", "vectors"}
    assert groups["vectors"]["lr"] == pytest.approx(eta_vec, abs=5e-7)  # table precision (3 digits)
    assert groups["matrices"]["lr"] == pytest.approx(eta_mat, abs=5e-6)
    assert groups["vectors"]["lr"] == pytest.approx(4e-4 * math.sqrt(16 / depth), rel=1e-12)
    assert groups["matrices"]["lr"] == pytest.approx(4e-4 * math.sqrt(16 / depth) * 16 / depth, rel=1e-12)
    # zero weight decay on vector-like parameters, 0.1 on matrices
    assert groups["vectors"]["weight_decay"] == 0.0 and groups["matrices"]["weight_decay"] == 0.1


def test_mup_groups_cover_every_parameter_once():
    _, opt = _plan_and_optimizer(8)
    model_params = set()
    for g in opt.param_groups:
        ids = {id(p) for p in g["params"]}
        assert not ids & model_params
        model_params |= ids
    groups = {g["name"]: g for g in opt.param_groups}
    shapes = [p.dim() for p in groups["matrices"]["params"]]
    assert all(d == 2 for d in shapes)  # every matrix-group member is a Linear weight


def test_sp_single_group_with_batch_rule_only():
    plan, opt = _plan_and_optimizer(8, "sp")
    (g,) = opt.param_groups
    assert g["name"] == "all" and g["weight_decay"] == 0.1
    assert plan.lr == pytest.approx(4e-4)  # √(b/b0) = 1 and no depth transfer under SP


def test_square_root_batch_scaling():
    mc = ModelConfig.from_preset("sambay", depth=16)
    n = _meta_model(mc).num_parameters(exclude_embeddings=True)
    cfg = TrainConfig(tokens=10**12, micro_batch=1, seq_len=4096, batch_tokens=2**19)
    plan = resolve(cfg, mc, n, world_size=1, parallel="none", dtype="fp32")
    assert plan.lr == pytest.approx(4e-4 * 0.5)  # b = b0/4


def test_chinchilla_budget_uses_non_embedding_count():
    mc = ModelConfig.from_preset("sambay", depth=8)
    n = _meta_model(mc).num_parameters(exclude_embeddings=True)
    assert 126e6 < n < 128e6  # the paper's table: 126.9M
    cfg = TrainConfig(budget="chinchilla", micro_batch=2, seq_len=4096)
    plan = resolve(cfg, mc, n, world_size=8, parallel="ddp", dtype="bf16")
    assert chinchilla_tokens(n) == int(1e11 * n / BUDGET_N0)
    assert plan.total_steps == chinchilla_tokens(n) // 2**21
    assert plan.total_tokens == plan.total_steps * 2**21


def test_batch_must_divide_and_defaults_scale_down():
    mc = ModelConfig.from_preset("sambay", depth=8)
    with pytest.raises(TrainConfigError, match="not a multiple"):
        resolve(TrainConfig(tokens=10**9, micro_batch=2, seq_len=4096, batch_tokens=10**6), mc, 1, 8, "ddp", "bf16")
    with pytest.raises(TrainConfigError, match="either --tokens or --budget"):
        resolve(TrainConfig(tokens=10**9, budget="chinchilla"), mc, 1, 1, "none", "fp32")
    # tiny run: 2^21 would be more than the whole budget; the default keeps >= ~100 steps
    assert default_batch_tokens(2 * 32, 100_000) == 960
    assert default_batch_tokens(4096, 10**12) == 2**21
    assert default_batch_tokens(3 * 4096, 10**12) == (2**21 // (3 * 4096)) * 3 * 4096  # floor(b0/m)·m


def test_schedules():
    lin = LRSchedule(total_steps=10, warmup_steps=2)
    assert [lin.factor(s) for s in range(10)] == pytest.approx([0.5, 1.0, 1.0, 7 / 8, 6 / 8, 5 / 8, 4 / 8, 3 / 8,
                                                                 2 / 8, 1 / 8])
    cos = LRSchedule(total_steps=10, warmup_steps=2, kind="cosine")
    assert cos.factor(2) == pytest.approx(1.0) and cos.factor(6) == pytest.approx(0.5)
    assert cos.factor(9) < 0.05
    wsd = LRSchedule(total_steps=16, warmup_steps=2, kind="wsd")  # 14 post-warm-up steps: 10 flat, 4 decay
    f = [wsd.factor(s) for s in range(16)]
    assert f[2:12] == [1.0] * 10 and f[12:] == pytest.approx([1.0, 0.75, 0.5, 0.25])
    assert all(0 <= x <= 1 for x in f)


def test_a_tiny_cli_run_gets_a_learning_rate_that_can_learn():
    """`sambay train --tiny --tokens 100K` once resolved to lr 1.25e-5 (the paper's b0 of 2M tokens scaled a
    4K batch down 22x); tiny runs now default to η0 2e-3 at b0 16K, and the paper's defaults stay otherwise."""
    import argparse

    from sambay.cli import train as cli
    from sambay.config import tiny

    p = argparse.ArgumentParser()
    cli.add_parser(p.add_subparsers())
    small = cli.config_from_args(p.parse_args(["train", "--tiny", "--tokens", "100K", "--data", "synthetic"]))
    big = cli.config_from_args(p.parse_args(["train", "--tokens", "100K", "--data", "synthetic"]))
    assert (small.eta0, small.base_batch_tokens) == (2e-3, 2**14) and (big.eta0, big.base_batch_tokens) == (4e-4, 2**21)
    mc = tiny("sambay", depth=8)
    plan = resolve(small, mc, _meta_model(mc).num_parameters(exclude_embeddings=True), world_size=1, parallel="none",
                   dtype="fp32")
    assert plan.lr >= 5e-4
