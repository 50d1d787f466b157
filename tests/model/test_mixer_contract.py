"""The mixer contract: every registered mixer declares its state, roles, reads and costs, and the generic
loops built on it (plan parsing, state allocation, FLOPs, decode bytes) give what the kind-specific code did."""

from __future__ import annotations

import pytest
import torch

from sambay.bench.generate import step_bytes
from sambay.config import ModelConfig, tiny
from sambay.model.mixers import MIXERS, Mixer
from sambay.plan import LayerSpec, PlanError, kinds, parse, render, validate
from sambay.train.metrics import flops_per_token

TODAYS_KINDS = {"mamba", "mamba_memory", "swa", "full", "full_kv", "gmu", "cross"}


def test_plan_entries_print_as_their_kind_strings_and_parse_back():
    assert TODAYS_KINDS | {"mamba2", "mamba2_memory"} == set(kinds())
    for kind in kinds():
        assert str(parse(kind)) == kind
    assert parse("mamba_memory") == LayerSpec("mamba", "memory")
    assert parse("full_kv") == LayerSpec("full", "shared_kv")


@pytest.mark.parametrize("kind", ["swa_kv", "gmu_memory", "cross_kv", "full_memory", "mamba_kv", "", 3, None])
def test_a_role_the_mixer_cannot_take_is_an_unknown_kind(kind):
    with pytest.raises(PlanError, match="unknown layer kind"):
        parse(kind)


def test_rendering_marks_roles_and_the_cross_decoder_split():
    assert render(["mamba2", "swa", "mamba2_memory", "full_kv", "gmu", "cross"]) == "M2 S M2* F^ | G X"


def test_a_plan_with_mamba2_memory_feeds_the_gmu_and_one_without_a_publisher_is_refused():
    validate(["mamba2", "swa", "mamba2_memory", "full_kv", "gmu", "cross"])
    with pytest.raises(PlanError, match="no 'mamba_memory' / 'mamba2_memory' layer precedes it"):
        validate(["mamba2", "full_kv", "gmu", "cross"])


@pytest.mark.parametrize("name", list(MIXERS))
def test_every_mixer_declares_a_consistent_contract(name):
    cls = MIXERS[name]
    assert issubclass(cls, Mixer) and cls.name == name
    config = tiny("sambay")
    spec = cls.state_spec(config, 16)
    assert cls.keeps_state == bool(spec), "keeps_state must say whether state_spec is empty"
    for state in spec.values():
        assert all(isinstance(n, int) and n > 0 for n in state.shape)
    assert cls.decode_state_bytes(config, 16, 2) >= 0 and cls.flops_per_token(config, 16) >= 0
    assert set(cls.reads) <= {"memory", "shared_kv"} and set(cls.roles) <= {"memory", "shared_kv"}
    # every mixer overrides step exactly when it keeps state (the default runs the forward)
    assert (cls.step is not Mixer.step) == cls.keeps_state or name == "cross"


def test_symbols_are_unique():
    symbols = [cls.symbol for cls in MIXERS.values()]
    assert len(symbols) == len(set(symbols))


def test_a_config_saved_before_the_mamba2_fields_still_loads():
    saved = ModelConfig.from_preset("sambay", depth=8).to_dict()
    for key in ("ssm_head_dim", "ssm_groups"):
        saved.pop(key)
    config = ModelConfig.from_dict(saved)
    assert config.layer_plan == ModelConfig.from_preset("sambay", depth=8).layer_plan


def test_mamba2_config_errors_name_the_rule():
    from sambay.config import ConfigError

    with pytest.raises(ConfigError, match="divisible by ssm_head_dim"):
        ModelConfig.from_preset("sambay-mamba2", depth=8, ssm_head_dim=100)
    with pytest.raises(ConfigError, match="ssm_groups must be a positive integer"):
        ModelConfig.from_preset("sambay-mamba2", depth=8, ssm_groups=0)


@pytest.mark.parametrize("preset", ["sambay", "transformer-ls", "samba", "sambay-mamba2"])
def test_training_flops_are_six_n_plus_attention_scores_and_values(preset):
    config = ModelConfig.from_preset(preset, depth=8)
    T = 4096

    def keys(window):  # mean keys per query under a causal, optionally windowed, mask
        return sum(min(t + 1, window or T) for t in range(T)) / T

    attention = sum(12 * config.n_head * config.head_dim * keys(config.window if k == "swa" else None)
                    for k in config.layer_plan if k in ("swa", "full", "full_kv", "cross"))
    expected = 6 * (1_000_000 + config.vocab_size * config.d_model) + attention
    assert flops_per_token(config, T, 1_000_000) == pytest.approx(expected, rel=1e-12)


def test_decode_bytes_count_kv_reads_and_recurrent_state_read_and_write():
    config = ModelConfig.from_preset("phi4-mini-flash")
    ctx, batch, el = 8192, 4, 2
    kv = 2 * config.n_kv_head * config.head_dim * el
    mamba = 2 * (config.d_inner * config.d_state * 4 + config.d_inner * (config.d_conv - 1) * el)
    per_seq = {"full_kv": ctx * kv, "cross": ctx * kv, "swa": config.window * kv, "mamba": mamba,
               "mamba_memory": mamba, "gmu": 0}
    expected = 1000 * el + batch * sum(per_seq[k] for k in config.layer_plan)
    assert step_bytes(config, 1000, batch, ctx, torch.bfloat16) == expected
