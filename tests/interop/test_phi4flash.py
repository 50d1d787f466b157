"""The Hugging Face phi4flash format: the reference fixture loads and reproduces the reference outputs, config
variants (scalar / per-layer sliding_window, missing mamba keys, tied head present or absent), bf16 numerics,
and phi4flash-format saves that keep the official names, shapes and config keys."""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import sambay
from sambay.config import tiny
from sambay.interop import phi4flash as p4f
from sambay.interop.errors import CheckpointError
from sambay.interop.weight_files import read_checkpoint_header

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "phi4flash-A"


@pytest.fixture(scope="module")
def expected():
    return load_file(FIXTURE / "expected.safetensors")


@pytest.fixture(scope="module")
def input_ids():
    return torch.tensor(json.loads((FIXTURE / "input_ids.json").read_text())["input_ids"])


@pytest.fixture(scope="module")
def fixture_model():
    return sambay.from_pretrained(FIXTURE)


def _copy_fixture(tmp_path: Path) -> Path:
    dst = tmp_path / "ckpt"
    shutil.copytree(FIXTURE, dst)
    for p in dst.iterdir():
        p.chmod(0o644)
    return dst


def _edit_config(folder: Path, **changes) -> None:
    cfg = json.loads((folder / "config.json").read_text())
    for k, v in changes.items():
        if v is _DELETE:
            cfg.pop(k, None)
        else:
            cfg[k] = v
    (folder / "config.json").write_text(json.dumps(cfg))


_DELETE = object()


def test_fixture_copy_matches_recorded_sha256():
    record = json.loads((FIXTURE / "fixture.json").read_text())["sha256"]
    for name, digest in record.items():
        assert hashlib.sha256((FIXTURE / name).read_bytes()).hexdigest() == digest, name


def test_fixture_logits_match_reference_in_float32(fixture_model, input_ids, expected):
    with torch.no_grad():
        out = fixture_model(input_ids)
    assert out.logits.dtype == torch.float32
    err = (out.logits - expected["logits"]).abs().max().item()
    assert err < 1e-4, err


def test_fixture_hidden_states_match_reference_at_every_layer(fixture_model, input_ids, expected):
    with torch.no_grad():
        hidden = torch.stack(fixture_model(input_ids, output_hidden_states=True).hidden_states)
    ref = expected["hidden_states"]
    assert hidden.shape == ref.shape  # 8 layer inputs + the final norm output
    per_layer = (hidden - ref).abs().amax(dim=(1, 2, 3))
    assert per_layer.max().item() < 1e-4, per_layer.tolist()


def test_fixture_config_maps_to_sambay_plan_with_documented_mamba_defaults(fixture_model):
    c = fixture_model.config
    assert c.layer_plan == ["mamba", "swa", "mamba", "swa", "mamba_memory", "full_kv", "gmu", "cross"]
    assert (c.d_model, c.n_head, c.n_kv_head, c.head_dim, c.d_ff, c.vocab_size) == (64, 4, 2, 16, 128, 256)
    assert (c.window, c.d_state, c.d_conv, c.mamba_expand, c.dt_rank) == (8, 16, 4, 2, math.ceil(64 / 16))
    assert c.diff_attn and c.norm == "layernorm" and c.tie_embeddings and c.parametrization == "sp"
    assert c.positional == "none" and c.attn_bias and c.attn_out_bias
    assert fixture_model.lm_head is None  # tied: the head is the embedding
    assert not fixture_model.training


def test_per_layer_sliding_window_list_loads_the_same_model(tmp_path, fixture_model, input_ids):
    folder = _copy_fixture(tmp_path)
    _edit_config(folder, sliding_window=[8 if i % 2 == 1 and i < 4 else None for i in range(8)])
    model = sambay.from_pretrained(folder)
    assert model.config.window == 8
    with torch.no_grad():
        assert torch.equal(model(input_ids).logits, fixture_model(input_ids).logits)


def test_per_layer_sliding_window_list_with_different_values_is_rejected(tmp_path):
    folder = _copy_fixture(tmp_path)
    _edit_config(folder, sliding_window=[None, 8, None, 16, None, None, None, None])
    with pytest.raises(CheckpointError, match="different windows"):
        sambay.from_pretrained(folder)


def test_explicit_mamba_keys_are_read_and_wrong_ones_fail_with_shape_errors(tmp_path):
    folder = _copy_fixture(tmp_path)
    _edit_config(folder, mamba_d_state=16, mamba_d_conv=4, mamba_expand=2, mamba_dt_rank="auto", mb_per_layer=2)
    assert sambay.from_pretrained(folder).config.dt_rank == 4
    _edit_config(folder, mamba_d_state=8)
    with pytest.raises(CheckpointError) as e:
        sambay.from_pretrained(folder)
    assert "model.layers.0.attn.A_log: expected (128, 8), found (128, 16)" in str(e.value)


def test_mb_per_layer_other_than_two_is_a_clear_error(tmp_path):
    folder = _copy_fixture(tmp_path)
    _edit_config(folder, mb_per_layer=3)
    with pytest.raises(CheckpointError, match="mb_per_layer = 3 is not supported"):
        sambay.from_pretrained(folder)


def test_phi4flash_config_missing_required_key_is_named(tmp_path):
    folder = _copy_fixture(tmp_path)
    _edit_config(folder, hidden_size=_DELETE)
    with pytest.raises(CheckpointError, match=r"missing required key\(s\) \['hidden_size'\]"):
        sambay.from_pretrained(folder)


def test_unsupported_model_type_is_one_readable_error(tmp_path):
    folder = _copy_fixture(tmp_path)
    _edit_config(folder, model_type="llama")
    with pytest.raises(CheckpointError, match="unsupported model_type 'llama'"):
        sambay.from_pretrained(folder)


def test_tied_lm_head_present_in_file_and_equal_to_embedding_loads(tmp_path, fixture_model, input_ids):
    folder = _copy_fixture(tmp_path)
    state = load_file(folder / "model.safetensors")
    state["lm_head.weight"] = state["model.embed_tokens.weight"].clone()
    save_file(state, folder / "model.safetensors", metadata={"format": "pt"})
    model = sambay.from_pretrained(folder)
    assert model.lm_head is None
    with torch.no_grad():
        assert torch.equal(model(input_ids).logits, fixture_model(input_ids).logits)


def test_tied_lm_head_that_differs_from_embedding_is_rejected(tmp_path):
    folder = _copy_fixture(tmp_path)
    state = load_file(folder / "model.safetensors")
    state["lm_head.weight"] = state["model.embed_tokens.weight"] + 1.0
    save_file(state, folder / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match="lm_head.weight differs from the embedding"):
        sambay.from_pretrained(folder)


def test_untied_phi4flash_checkpoint_loads_lm_head(tmp_path, input_ids):
    folder = _copy_fixture(tmp_path)
    _edit_config(folder, tie_word_embeddings=False)
    state = load_file(folder / "model.safetensors")
    state["lm_head.weight"] = torch.randn_like(state["model.embed_tokens.weight"])
    save_file(state, folder / "model.safetensors", metadata={"format": "pt"})
    model = sambay.from_pretrained(folder)
    assert torch.equal(model.lm_head.weight, state["lm_head.weight"])
    _edit_config(folder, tie_word_embeddings=True)  # now the differing head must be refused
    with pytest.raises(CheckpointError, match="differs from the embedding"):
        sambay.from_pretrained(folder)


def test_bf16_load_keeps_fp32_residual_and_A_log_D_and_is_close_to_fp32(input_ids, expected):
    model = sambay.from_pretrained(FIXTURE, dtype="bfloat16")
    assert model.embed.weight.dtype == torch.bfloat16
    assert model.layers[1].mixer.qkv.weight.dtype == torch.bfloat16
    for i in (0, 2, 4):  # stored as float32 in the fixture: kept as loaded
        assert model.layers[i].mixer.A_log.dtype == torch.float32
        assert model.layers[i].mixer.D.dtype == torch.float32
    residual_dtypes = []
    hooks = [b.register_forward_pre_hook(lambda mod, args: residual_dtypes.append(args[0].dtype))
             for b in model.layers]
    with torch.no_grad():
        out = model(input_ids, output_hidden_states=True)
    for h in hooks:
        h.remove()
    assert set(residual_dtypes) == {torch.float32}
    assert all(h.dtype == torch.float32 for h in out.hidden_states[:-1])
    assert out.logits.dtype == torch.bfloat16
    err = (out.logits.float() - expected["logits"]).abs()
    # bf16 weights and activations over 8 random layers (logit std ~4): a loose but meaningful bound.
    assert err.mean().item() < 0.15 and err.max().item() < 1.5, (err.mean().item(), err.max().item())
    agree = (out.logits.float().argmax(-1) == expected["logits"].argmax(-1)).float().mean().item()
    assert agree > 0.9


def test_phi4flash_save_keeps_official_names_shapes_and_config_keys(tmp_path, fixture_model):
    out = tmp_path / "hf"
    fixture_model.save_pretrained(out, format="phi4flash")
    written = read_checkpoint_header(out)
    original = read_checkpoint_header(FIXTURE)
    assert {k: v.shape for k, v in written.items()} == {k: v.shape for k, v in original.items()}
    cfg = json.loads((out / "config.json").read_text())
    ref = json.loads((FIXTURE / "config.json").read_text())
    for key in ("model_type", "architectures", "auto_map", "hidden_size", "intermediate_size", "num_hidden_layers",
                "num_attention_heads", "num_key_value_heads", "vocab_size", "sliding_window", "layer_norm_eps",
                "tie_word_embeddings", "hidden_act", "max_position_embeddings"):
        assert cfg[key] == ref[key], key
    assert cfg["mb_per_layer"] == 2 and cfg["mamba_dt_rank"] == 4 and cfg["torch_dtype"] == "float32"


def test_phi4flash_round_trip_is_bit_identical(tmp_path, fixture_model, input_ids):
    out = tmp_path / "hf"
    fixture_model.save_pretrained(out, format="phi4flash")
    again = sambay.from_pretrained(out)
    a, b = dict(fixture_model.named_parameters()), dict(again.named_parameters())
    assert a.keys() == b.keys()
    assert all(torch.equal(a[n], b[n]) and a[n].dtype == b[n].dtype for n in a)
    assert again.config == fixture_model.config
    with torch.no_grad():
        assert torch.equal(again(input_ids).logits, fixture_model(input_ids).logits)
    # the file bytes of each tensor are the original ones
    orig, new = load_file(FIXTURE / "model.safetensors"), load_file(out / "model.safetensors")
    assert orig.keys() == new.keys() and all(torch.equal(orig[k], new[k]) for k in orig)


def test_bf16_phi4flash_round_trip_keeps_mixed_dtypes(tmp_path):
    model = sambay.from_pretrained(FIXTURE, dtype=torch.bfloat16)
    model.save_pretrained(tmp_path / "bf16", format="phi4flash")
    assert json.loads((tmp_path / "bf16" / "config.json").read_text())["torch_dtype"] == "bfloat16"
    again = sambay.from_pretrained(tmp_path / "bf16")
    for (n, p), (_, q) in zip(model.named_parameters(), again.named_parameters()):
        assert p.dtype == q.dtype and torch.equal(p, q), n


def test_sharded_phi4flash_save_loads_identically(tmp_path, fixture_model, input_ids):
    out = tmp_path / "sharded"
    fixture_model.save_pretrained(out, format="phi4flash", max_shard_size="200KB")
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 3
    assert not (out / "model.safetensors").exists()
    again = sambay.from_pretrained(out)
    with torch.no_grad():
        assert torch.equal(again(input_ids).logits, fixture_model(input_ids).logits)


def test_incompatible_model_cannot_be_saved_as_phi4flash_and_says_why(tmp_path):
    model = sambay.CausalLM(tiny("sambay"))  # μP++, RMSNorm, no DA
    with pytest.raises(CheckpointError) as e:
        model.save_pretrained(tmp_path / "x", format="phi4flash")
    msg = str(e.value)
    assert "diff_attn must be true" in msg and "norm must be 'layernorm'" in msg and "parametrization" in msg
    assert not (tmp_path / "x" / "config.json").exists()


def test_name_mapping_round_trips_for_every_parameter():
    config = tiny("phi4-mini-flash")
    model = sambay.CausalLM(config, init=False)
    for name, _ in model.named_parameters():
        hf = p4f.sambay_to_hf_name(name, config.layer_plan)
        assert p4f.hf_to_sambay_name(hf, config.layer_plan) == name
    assert p4f.sambay_to_hf_name("layers.7.mixer.q_proj.weight", config.layer_plan) == "model.layers.7.attn.Wqkv.weight"
    assert p4f.hf_to_sambay_name("model.layers.5.attn.Wqkv.bias", config.layer_plan) == "layers.5.mixer.qkv.bias"
    assert p4f.hf_to_sambay_name("model.layers.1.attn.inner_cross_attn.subln.weight", config.layer_plan) == \
        "layers.1.mixer.diff.subln.weight"


def test_a_billion_layer_config_is_refused_at_once(tmp_path):
    import json

    config = tiny("phi4-mini-flash")
    model = sambay.CausalLM(config, init=False)
    folder = tmp_path / "m"
    model.save_pretrained(folder, format="phi4flash")
    raw = json.loads((folder / "config.json").read_text())
    raw["num_hidden_layers"] = 10**9
    (folder / "config.json").write_text(json.dumps(raw))
    with pytest.raises(sambay.CheckpointError, match="num_hidden_layers = 1,000,000,000; at most 4096"):
        sambay.from_pretrained(folder)  # refused before any plan or module of that size is built


def _saved_phi4flash(tmp_path, eos=None):
    import json

    config = tiny("phi4-mini-flash", eos_token_id=eos)
    folder = tmp_path / "m"
    sambay.CausalLM(config).save_pretrained(folder, format="phi4flash")
    return folder, json.loads((folder / "config.json").read_text())


def test_config_json_eos_is_kept_without_a_generation_config(tmp_path):
    import json

    folder, raw = _saved_phi4flash(tmp_path)
    raw["eos_token_id"] = 2
    (folder / "config.json").write_text(json.dumps(raw))
    assert sambay.from_pretrained(folder).config.eos_token_id == 2


@pytest.mark.parametrize("eos", [999, -1, "2", [5000]])
def test_an_eos_id_outside_the_vocabulary_is_an_error_naming_the_file(tmp_path, eos):
    import json

    folder, _ = _saved_phi4flash(tmp_path, eos=7)
    (folder / "generation_config.json").write_text(json.dumps({"eos_token_id": eos}))
    with pytest.raises(sambay.CheckpointError, match="generation_config.json: eos_token_id .* is not a token id"):
        sambay.from_pretrained(folder)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_weights_are_refused_by_name_unless_allowed(tmp_path, value):
    config = tiny("sambay")
    model = sambay.CausalLM(config)
    with torch.no_grad():
        model.layers[2].mixer.in_proj.weight[3, 1] = value
    model.save_pretrained(tmp_path / "m")
    with pytest.raises(sambay.CheckpointError, match=r"tensor layers\.2\.mixer\.in_proj\.weight holds 1 NaN"):
        sambay.from_pretrained(tmp_path / "m")
    loaded = sambay.from_pretrained(tmp_path / "m", allow_non_finite=True)
    assert not torch.isfinite(loaded.layers[2].mixer.in_proj.weight).all()
