"""Import of ArchScale (lit-gpt) training checkpoints: names, the grouped-interleaved fused qkv, tying,
hparams hints, wrapper prefixes, and refusal of anything but tensors."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import random_model

import sambay
from sambay.cli.main import main as cli_main
from sambay.config import tiny
from sambay.interop import archscale
from sambay.interop.errors import CheckpointError

IDS = torch.randint(0, 256, (2, 12), generator=torch.Generator().manual_seed(3))
# the toy widths of `tiny` expressed as overrides of a full-size preset (what --set passes on the CLI)
TOY = dict(d_model=64, n_head=4, n_kv_head=2, head_dim=16, d_ff=128, vocab_size=256, window=8, max_seq_len=512,
           eos_token_id=None)


def _logits(model):
    with torch.no_grad():
        return model(IDS).logits


def _save_ckpt(path, state, **extra):
    torch.save({"model": state, "optimizer": {"state": {}}, "iter_num": 1000, "step_count": 250, **extra}, path)
    return path


def test_grouped_interleaved_qkv_rows_land_in_q_k_v_order():
    H, G, hs, d = 8, 2, 3, 5
    per = H // G
    # tag every ArchScale row by (group, slot, dim): slot < per is query head g*per + slot, then k, then v
    rows = torch.tensor([[g, s, i] for g in range(G) for s in range(per + 2) for i in range(hs)], dtype=torch.float32)
    w = torch.cat([rows, torch.zeros(len(rows), d - 3)], dim=1)
    out = archscale.qkv_grouped_to_concat(w, H, G, hs)
    q, k, v = out.split([H * hs, G * hs, G * hs])
    for h in range(H):  # query head h = g*per + j
        assert q[h * hs:(h + 1) * hs, :3].tolist() == [[h // per, h % per, i] for i in range(hs)]
    for g in range(G):
        assert k[g * hs:(g + 1) * hs, :3].tolist() == [[g, per, i] for i in range(hs)]
        assert v[g * hs:(g + 1) * hs, :3].tolist() == [[g, per + 1, i] for i in range(hs)]
    bias = torch.arange(G * (per + 2) * hs, dtype=torch.float32)
    assert torch.equal(archscale.qkv_concat_to_grouped(archscale.qkv_grouped_to_concat(bias, H, G, hs), H, G, hs), bias)


def test_archscale_names_match_lit_gpt_modules():
    config = tiny("sambay-da")  # plan M S M S M* F^ | G X
    name = lambda n: archscale.sambay_to_archscale_name(n, config.layer_plan)
    assert name("embed.weight") == "transformer.wte.weight"
    assert name("final_norm.weight") == "transformer.ln_f.weight"
    assert name("layers.0.norm1.weight") == "transformer.h.0.norm_1.weight"
    assert name("layers.0.mlp.fc1.weight") == "transformer.h.0.mlp.w1.weight"
    assert name("layers.0.mlp.fc2.weight") == "transformer.h.0.mlp.w3.weight"
    assert name("layers.0.mixer.A_log") == "transformer.h.0.attn.A_log"
    assert name("layers.4.mixer.dt_proj.bias") == "transformer.h.4.attn.dt_proj.bias"
    assert name("layers.1.mixer.qkv.weight") == "transformer.h.1.attn.attn.weight"
    assert name("layers.1.mixer.out_proj.weight") == "transformer.h.1.attn.proj.weight"
    assert name("layers.1.mixer.diff.subln.weight") == "transformer.h.1.attn.da.subln.weight"
    assert name("layers.6.mixer.in_proj.weight") == "transformer.h.6.attn.gmu.in_proj.weight"
    assert name("layers.7.mixer.q_proj.weight") == "transformer.h.7.attn.attn.weight"


@pytest.mark.parametrize("preset", ["sambay", "sambay-da"])
def test_convert_cli_reproduces_the_model(tmp_path, preset):
    model = random_model(tiny(preset))
    ckpt = _save_ckpt(tmp_path / "iter-001000-ckpt.pth", archscale.sambay_to_archscale(model),
                      hparams={"train_config": "scaling_mup", "depth": 8, "mup": True})
    sets = [a for k, v in TOY.items() for a in ("--set", f"{k}={json.dumps(v)}")]
    rc = cli_main(["convert", "--from", "archscale", str(ckpt), "--preset", preset, "--depth", "8",
                   "--out", str(tmp_path / "out"), *sets])
    assert rc == 0
    loaded = sambay.from_pretrained(tmp_path / "out")
    assert loaded.config.layer_plan == model.config.layer_plan
    assert loaded.config.parametrization == "mup++" and not loaded.config.tie_embeddings
    assert torch.equal(_logits(loaded), _logits(model))


def test_tied_sp_phi4flash_shaped_run_converts_straight_to_phi4flash_format(tmp_path):
    model = random_model(tiny("phi4-mini-flash"))
    state = archscale.sambay_to_archscale(model)
    assert state["lm_head.weight"] is state["transformer.wte.weight"]  # aliased, as ArchScale saves it
    ckpt = _save_ckpt(tmp_path / "c.pth", state, hparams={"train_config": "scaling", "depth": 8})
    out, config = archscale.convert_archscale(ckpt, "phi4-mini-flash", None, tmp_path / "hf", format="phi4flash",
                                              overrides=dict(TOY, layer_plan=model.config.layer_plan))
    assert config.tie_embeddings and config.parametrization == "sp"
    loaded = sambay.from_pretrained(out)
    assert torch.equal(_logits(loaded), _logits(model))


def test_bare_state_dict_with_wrapper_prefix_is_accepted(tmp_path):
    model = random_model(tiny("sambay"))
    state = {"_forward_module._orig_mod." + k: v for k, v in archscale.sambay_to_archscale(model).items()}
    torch.save(state, tmp_path / "bare.pth")
    read, hparams = archscale.read_archscale_checkpoint(tmp_path / "bare.pth")
    assert hparams == {} and "transformer.wte.weight" in read
    out, _ = archscale.convert_archscale(tmp_path / "bare.pth", "sambay", 8, tmp_path / "o", overrides=TOY)
    assert torch.equal(_logits(sambay.from_pretrained(out)), _logits(model))


def test_legacy_swiglu_mlp_layout_is_folded(tmp_path):
    model = random_model(tiny("sambay"))
    state = archscale.sambay_to_archscale(model)
    for i in range(8):
        w1 = state.pop(f"transformer.h.{i}.mlp.w1.weight")
        gate, up = w1.chunk(2)
        state[f"transformer.h.{i}.mlp.swiglu.w1.weight"] = gate
        state[f"transformer.h.{i}.mlp.swiglu.w2.weight"] = up
        state[f"transformer.h.{i}.mlp.swiglu.w3.weight"] = state.pop(f"transformer.h.{i}.mlp.w3.weight")
    converted = archscale.archscale_to_sambay(state, model.config)
    assert all(torch.equal(converted[n], p) for n, p in model.named_parameters())


def test_missing_and_misshaped_archscale_tensors_are_named_in_archscale_terms(tmp_path):
    model = random_model(tiny("sambay"))
    state = archscale.sambay_to_archscale(model)
    del state["transformer.h.3.attn.proj.weight"]
    state["transformer.h.2.attn.A_log"] = torch.zeros(128, 8)
    with pytest.raises(CheckpointError) as e:
        archscale.archscale_to_sambay(state, model.config, source="ckpt.pth")
    msg = str(e.value)
    assert "transformer.h.3.attn.proj.weight" in msg
    assert "transformer.h.2.attn.A_log: expected (128, 16), found (128, 8)" in msg


def test_wrong_depth_is_reported_as_missing_or_unexpected_layers(tmp_path):
    model = random_model(tiny("sambay"))
    ckpt = _save_ckpt(tmp_path / "c.pth", archscale.sambay_to_archscale(model))
    with pytest.raises(CheckpointError, match=r"33 missing, 2 unexpected(.|\n)*transformer.h.8.attn.gmu.in_proj.weight"):
        archscale.convert_archscale(ckpt, "sambay", 12, tmp_path / "o", overrides=TOY)
    ckpt = _save_ckpt(tmp_path / "d.pth", archscale.sambay_to_archscale(model), hparams={"depth": 8})
    with pytest.raises(CheckpointError, match="trained with depth 8"):
        archscale.convert_archscale(ckpt, "sambay", 16, tmp_path / "o", overrides=TOY)


def test_hparams_hints_are_read_and_original_mup_is_refused():
    assert archscale.infer_overrides({"train_config": "scaling_mup_tie_rbase_prolong_varlen"}) == \
        {"parametrization": "mup++", "tie_embeddings": True, "rope_base": 640000.0}
    assert archscale.infer_overrides({"train_name": "scaling", "swa_len": 512})["window"] == 512
    with pytest.raises(CheckpointError, match="original"):
        archscale.infer_overrides({"train_config": "scaling_ori_mup"})


class _NotATensor:
    pass


def test_checkpoint_with_arbitrary_objects_is_refused_not_unpickled(tmp_path):
    torch.save({"model": {"x": torch.zeros(1)}, "hparams": _NotATensor()}, tmp_path / "evil.pth")
    with pytest.raises(CheckpointError, match="weights_only"):
        archscale.read_archscale_checkpoint(tmp_path / "evil.pth")


def test_corrupt_checkpoint_file_is_one_readable_error(tmp_path):
    model = random_model(tiny("sambay"))
    path = _save_ckpt(tmp_path / "c.pth", archscale.sambay_to_archscale(model))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        archscale.read_archscale_checkpoint(path)
