import math

import pytest
import torch

from sambay import CausalLM, ModelConfig
from sambay.config import tiny
from sambay.model.parametrization import matrix_parameter_names, mup_learning_rate


def groups_by_name(model, lr):
    groups = {g["name"]: g for g in model.optimizer_groups(lr=lr, weight_decay=0.1)}
    names = {id(p): n for n, p in model.named_parameters()}
    return {k: (g, {names[id(p)] for p in g["params"]}) for k, g in groups.items()}


@pytest.mark.parametrize("depth,vec,mat,logit,branch", [
    (8, 5.66e-4, 1.13e-3, 2.0, 0.250), (12, 4.62e-4, 6.16e-4, 1.333, 0.204), (16, 4.00e-4, 4.00e-4, 1.0, 0.177),
    (20, 3.58e-4, 2.86e-4, 0.8, 0.158), (24, 3.27e-4, 2.18e-4, 0.667, 0.144),
])
def test_mup_plus_plus_matches_the_reference_worked_example(depth, vec, mat, logit, branch):
    config = ModelConfig.from_preset("sambay", depth=depth)
    with torch.device("meta"):
        model = CausalLM(config, init=False)
    lr = mup_learning_rate(4e-4, depth=depth, batch_tokens=2**21)
    groups = {g["name"]: g for g in model.optimizer_groups(lr=lr, weight_decay=0.1)}
    assert groups["vectors"]["lr"] == pytest.approx(vec, rel=3e-3)
    assert groups["matrices"]["lr"] == pytest.approx(mat, rel=3e-3)
    assert groups["vectors"]["weight_decay"] == 0.0 and groups["matrices"]["weight_decay"] == 0.1
    assert model.logit_scale == pytest.approx(logit, rel=1e-3)
    assert model.layers[0].branch_scale == pytest.approx(branch, abs=1e-3)


def test_square_root_batch_scaling():
    assert mup_learning_rate(4e-4, 16, 2**19) == pytest.approx(2e-4)


def test_vector_and_matrix_groups_follow_the_reference_rule():
    model = CausalLM(tiny("sambay-da"))
    (mat_group, mats), (vec_group, vecs) = groups_by_name(model, 1e-3)["matrices"], groups_by_name(model, 1e-3)["vectors"]
    assert mats == matrix_parameter_names(model)
    assert mats.isdisjoint(vecs) and mats | vecs == {n for n, _ in model.named_parameters()}
    for suffix in ("A_log", "D", "conv1d.weight", "conv1d.bias", "dt_proj.bias", "lambda_q1", "subln.weight",
                   "norm1.weight", "final_norm.weight", "embed.weight", "lm_head.weight"):
        assert any(n.endswith(suffix) for n in vecs), suffix
        assert not any(n.endswith(suffix) for n in mats), suffix
    for suffix in ("qkv.weight", "q_proj.weight", "mixer.out_proj.weight", "in_proj.weight", "x_proj.weight",
                   "dt_proj.weight", "fc1.weight", "fc2.weight"):
        assert any(n.endswith(suffix) for n in mats), suffix
    assert mat_group["lr_multiplier"] == 16 / 8 and vec_group["lr_multiplier"] == 1.0


def test_sp_uses_one_decayed_group():
    model = CausalLM(tiny("sambay", parametrization="sp"))
    (group,) = model.optimizer_groups(lr=1e-3, weight_decay=0.1)
    assert group["weight_decay"] == 0.1 and len(group["params"]) == len(list(model.parameters()))
    assert model.logit_scale == 1.0 and model.layers[0].branch_scale == 1.0


def test_mup_init_rules():
    config = tiny("sambay", d_model=128)
    model = CausalLM(config)
    assert torch.all(model.lm_head.weight == 0)  # zero readout
    assert model.embed.weight.std().item() == pytest.approx(1e-4, rel=0.05)
    fc1 = model.layers[0].mlp.fc1.weight
    bound = 1 / math.sqrt(fc1.shape[1])
    assert fc1.abs().max() <= bound and fc1.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.05)
    mamba = model.layers[0].mixer
    assert torch.allclose(mamba.A_log[3], torch.log(torch.arange(1, 17.0)))
    dt = torch.nn.functional.softplus(mamba.dt_proj.bias)
    assert dt.min() >= 1e-4 - 1e-7 and dt.max() <= 0.1 + 1e-6


def test_sp_init_rules():
    config = tiny("sambay", d_model=128, parametrization="sp")
    model = CausalLM(config)
    w = model.layers[0].mlp.fc1.weight
    out = model.layers[0].mlp.fc2.weight
    assert w.std().item() == pytest.approx(0.02, rel=0.05)
    assert out.std().item() == pytest.approx(0.02 / math.sqrt(2 * config.n_layer), rel=0.05)
    assert model.layers[0].mixer.dt_proj.weight.std().item() == pytest.approx(0.02, rel=0.1)
    assert model.layers[0].mixer.dt_proj.bias.abs().sum() > 0  # the dt bias keeps its S4D init


def test_initial_weights_do_not_depend_on_the_python_hash_seed():
    import subprocess
    import sys

    code = ("import torch; from sambay import CausalLM; from sambay.config import tiny; torch.manual_seed(0); "
            "m = CausalLM(tiny('sambay')); print(sum(float(p.double().sum()) for p in m.parameters()))")
    sums = {subprocess.run([sys.executable, "-c", code], env={**__import__("os").environ, "PYTHONHASHSEED": seed},
                           capture_output=True, text=True, check=True).stdout for seed in ("1", "2")}
    assert len(sums) == 1
