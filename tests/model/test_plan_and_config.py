
import re

import pytest

from sambay import ConfigError, ModelConfig
from sambay.config import PRESETS, tiny
from sambay.plan import PlanError, render, validate

PAPER_PRESETS = ["transformer++", "transformer-ls", "samba", "swa-yoco", "samba-yoco", "sambay", "sambay-da"]


def test_sambay_d16_layer_plan_matches_the_paper():
    config = ModelConfig.from_preset("sambay", depth=16)
    assert config.layer_plan == ["mamba", "swa"] * 4 + ["mamba_memory", "full_kv"] + ["gmu", "cross"] * 3
    assert render(config.layer_plan) == "M S M S M S M S M* F^ | G X G X G X"
    assert config.d_model == 124 * 16 and config.n_head == 16 and config.n_kv_head == 4 and config.head_dim == 128
    assert config.positional == "none" and config.window == 128 and config.parametrization == "mup++"


def test_phi4_mini_flash_plan_and_dimensions():
    c = ModelConfig.from_preset("phi4-mini-flash")
    assert c.layer_plan[:16] == ["mamba", "swa"] * 8
    assert c.layer_plan[16:18] == ["mamba_memory", "full_kv"]
    assert c.layer_plan[18:] == ["gmu", "cross"] * 7
    assert (c.d_model, c.n_head, c.head_dim, c.n_kv_head, c.window, c.vocab_size) == (2560, 40, 64, 20, 512, 200064)
    assert c.diff_attn and c.norm == "layernorm" and c.attn_bias and c.attn_out_bias and c.tie_embeddings
    assert c.positional == "none" and c.d_inner == 5120 and c.dt_rank == 160


def test_phi4_mini_is_a_rope_transformer_with_partial_rotary():
    c = ModelConfig.from_preset("phi4-mini")
    assert c.layer_plan == ["full"] * 32
    assert (c.d_model, c.n_head, c.head_dim, c.n_kv_head, c.d_ff) == (3072, 24, 128, 8, 8192)
    assert c.positional == "rope" and c.rotary_dim == 96 and c.tie_embeddings


@pytest.mark.parametrize("preset,ratio", [("transformer++", 128), ("transformer-ls", 128), ("samba", 122),
                                          ("swa-yoco", 130), ("samba-yoco", 126), ("sambay", 124), ("sambay-da", 124)])
@pytest.mark.parametrize("depth", [8, 12, 16, 20, 24])
def test_width_is_aspect_ratio_times_depth(preset, ratio, depth):
    if preset == "sambay-da" and depth in (12, 20):
        with pytest.raises(ConfigError, match="must both be even"):
            ModelConfig.from_preset(preset, depth=depth)
        return
    c = ModelConfig.from_preset(preset, depth=depth)
    assert c.d_model == ratio * depth and c.n_layer == depth and c.n_head == depth and c.n_kv_head == depth // 4


@pytest.mark.parametrize("depth", [8, 16])
def test_baseline_plans(depth):
    half = depth // 2
    assert ModelConfig.from_preset("transformer++", depth=depth).layer_plan == ["full"] * depth
    ls = ModelConfig.from_preset("transformer-ls", depth=depth).layer_plan
    assert [i for i, k in enumerate(ls) if k == "full"] == list(range(3, depth, 4))
    assert ModelConfig.from_preset("samba", depth=depth).layer_plan == ["mamba", "swa"] * half
    swa_yoco = ModelConfig.from_preset("swa-yoco", depth=depth).layer_plan
    assert swa_yoco == ["swa"] * (half + 1) + ["full_kv"] + ["cross"] * (half - 2)
    samba_yoco = ModelConfig.from_preset("samba-yoco", depth=depth).layer_plan
    assert samba_yoco == ["mamba", "swa"] * (half // 2) + ["mamba", "full_kv"] + ["cross"] * (half - 2)


@pytest.mark.parametrize("bad,rule", [
    (dict(preset="sambay", depth=10), "divisible by 4"),
    (dict(preset="sambay", depth=16, window=0), "window must be a positive integer"),
    (dict(preset="sambay", depth=16, window=-5), "window must be a positive integer"),
    (dict(preset="sambay-da", depth=16, n_kv_head=3, n_head=6), "must both be even"),
    (dict(preset="sambay", depth=16, n_head=6), "multiple of n_kv_head"),
    (dict(preset="sambay", depth=16, norm="batchnorm"), "norm must be one of"),
    (dict(preset="sambay", depth=16, parametrization="mup"), "parametrization must be one of"),
    (dict(preset="nope"), "unknown preset"),
    (dict(preset="phi4-mini-flash", depth=16), "fixed depth"),
    (dict(preset="sambay", depth=16, layer_plan=["gmu", "full_kv", "cross"]), "no 'mamba_memory'"),
])
def test_invalid_configs_name_the_broken_rule(bad, rule):
    bad = dict(bad)
    with pytest.raises(ConfigError, match=rule):
        ModelConfig.from_preset(bad.pop("preset"), depth=bad.pop("depth", None), **bad)


@pytest.mark.parametrize("plan,rule", [
    (["mamba", "cross"], "no 'full_kv'"),
    (["mamba_memory", "full_kv", "swa", "cross"], "after the 'full_kv'"),
    (["full_kv", "full_kv", "cross"], "at most one 'full_kv'"),
    (["mamba", "attention"], "unknown layer kind"),
    (["mamba", "full_kv"], "no reader"),
])
def test_plan_invariants_are_enforced(plan, rule):
    with pytest.raises(PlanError, match=rule):
        validate(plan)


@pytest.mark.parametrize("preset", list(PRESETS))
def test_config_json_round_trip(preset, tmp_path):
    c = ModelConfig.from_preset(preset)
    path = tmp_path / "config.json"
    c.to_json(path)
    assert ModelConfig.from_json(path) == c
    assert ModelConfig.from_json(c.to_json()) == c


def test_config_json_errors_are_readable(tmp_path):
    with pytest.raises(ConfigError, match="not valid JSON"):
        ModelConfig.from_json("{not json")
    d = ModelConfig.from_preset("sambay").to_dict()
    d["bogus"] = 1
    with pytest.raises(ConfigError, match="unknown config key"):
        ModelConfig.from_dict(d)
    d.pop("bogus")
    d.pop("d_model")
    with pytest.raises(ConfigError, match="missing required key"):
        ModelConfig.from_dict(d)


def test_lambda_init_uses_the_global_layer_index():
    c = ModelConfig.from_preset("phi4-mini-flash")
    assert c.lambda_init(1) == pytest.approx(0.35551, abs=1e-5)
    assert c.lambda_init(17) == pytest.approx(0.79634, abs=1e-5)
    assert c.lambda_init(31) == pytest.approx(0.79995, abs=1e-5)
    assert c.lambda_init(9) == pytest.approx(0.760, abs=1e-3)


@pytest.mark.parametrize("preset", list(PRESETS))
def test_tiny_configs_keep_the_preset_plan_rule(preset):
    c = tiny(preset)
    assert c.n_layer == 8
    assert c.positional == ModelConfig.from_preset(preset).positional


@pytest.mark.parametrize("change, message", [
    (dict(d_model=True), "d_model must be a positive integer <= 65,536 (got True)"),
    (dict(d_model=10**9), "d_model must be a positive integer <= 65,536"),
    (dict(vocab_size=2**40), "vocab_size must be a positive integer"),
    (dict(norm_eps="1e-5"), "norm_eps must be a finite number (got '1e-5')"),
    (dict(rope_base=float("nan")), "rope_base must be a finite number"),
    (dict(diff_attn="yes"), "diff_attn must be true or false"),
    (dict(window=True), "window must be an integer or null"),
    (dict(eos_token_id=2.0), "eos_token_id must be an integer or null"),
    (dict(layer_plan="mamba"), "layer_plan must be a list of layer kinds"),
    (dict(layer_plan=["mamba"] * 10**6), "layer_plan has 1,000,000 layers; at most 4096"),
])
def test_a_hostile_or_mistyped_config_fails_at_once_naming_the_key(change, message):
    d = ModelConfig.from_preset("sambay", depth=8).to_dict()
    d.update(change)
    with pytest.raises(ConfigError, match=re.escape(message)):
        ModelConfig.from_dict(d)


def test_a_huge_depth_is_refused_before_any_plan_is_built(capsys):
    from sambay.cli.main import main

    with pytest.raises(ConfigError, match="depth must be a positive integer <= 4096"):
        ModelConfig.from_preset("sambay", depth=10**9)
    assert main(["describe", "sambay", "--depth", "1000000000"]) == 2
    assert "depth must be a positive integer <= 4096" in capsys.readouterr().err
