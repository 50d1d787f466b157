"""Issue 28 leftovers: special token ids survive a phi4flash -> sambay -> phi4flash round trip, integer / bool
weights are refused by name, weight files that are symlinks out of the folder are refused, and mistyped
config.json fields are errors naming the key."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import sambay
from sambay.cli.main import main as cli_main
from sambay.config import ConfigError, ModelConfig, tiny
from sambay.interop.errors import CheckpointError
from sambay.interop.weight_files import list_weight_files

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "phi4flash-A"
SPECIAL_IDS = ("bos_token_id", "eos_token_id", "pad_token_id")


def _config(folder: Path) -> dict:
    return json.loads((folder / "config.json").read_text())


@pytest.fixture
def saved(tmp_path):
    folder = tmp_path / "m"
    sambay.CausalLM(tiny("sambay")).save_pretrained(folder)
    return folder


# ------------------------------------------------------------------------------------------ special token ids
def test_phi4flash_to_sambay_to_phi4flash_keeps_bos_eos_and_pad(tmp_path):
    original = {k: _config(FIXTURE)[k] for k in SPECIAL_IDS}
    assert original == {"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0}
    assert cli_main(["convert", "--from", "phi4flash", str(FIXTURE), "--out", str(tmp_path / "s")]) == 0
    assert {k: _config(tmp_path / "s")[k] for k in SPECIAL_IDS} == original
    assert cli_main(["convert", "--from", "sambay", str(tmp_path / "s"), "--to", "phi4flash",
                     "--out", str(tmp_path / "h")]) == 0
    assert {k: _config(tmp_path / "h")[k] for k in SPECIAL_IDS} == original
    loaded = sambay.from_pretrained(tmp_path / "h").config
    assert (loaded.bos_token_id, loaded.eos_token_id, loaded.pad_token_id) == (1, 2, 0)
    assert sambay.from_pretrained(FIXTURE).config.eos_token_id == 2  # eos from config.json, no generation config


@pytest.mark.parametrize("key, value, message", [
    ("bos_token_id", 256, "bos_token_id 256 is not a token id of the vocabulary"),
    ("pad_token_id", "0", "pad_token_id '0' is not a token id of the vocabulary"),
])
def test_a_bad_special_token_id_in_a_phi4flash_config_is_named(tmp_path, key, value, message):
    folder = tmp_path / "p"
    shutil.copytree(FIXTURE, folder)
    (folder / "config.json").chmod(0o644)
    (folder / "config.json").write_text(json.dumps({**_config(FIXTURE), key: value}))
    with pytest.raises(CheckpointError, match=message):
        sambay.from_pretrained(folder)


# ------------------------------------------------------------------------------------------ integer weights
@pytest.mark.parametrize("dtype, st_name", [(torch.int32, "I32"), (torch.int64, "I64"), (torch.bool, "BOOL")])
@pytest.mark.parametrize("name", ["layers.0.mixer.in_proj.weight", "embed.weight"])
def test_integer_or_bool_weights_are_one_error_naming_tensor_and_dtype(saved, dtype, st_name, name):
    state = load_file(saved / "model.safetensors")
    state[name] = state[name].to(dtype)
    save_file(state, saved / "model.safetensors", metadata={"format": "pt"})
    for kwargs in ({}, {"dtype": "float32"}):
        with pytest.raises(CheckpointError, match=rf"tensor {name} .*stored as {st_name}.*floating-point"):
            sambay.from_pretrained(saved, **kwargs)


def test_integer_weights_given_to_load_state_into_are_named():
    from sambay.interop.pretrained import empty_model, load_state_into

    model = sambay.CausalLM(tiny("sambay"))
    state = {n: p.detach() for n, p in model.named_parameters()}
    state["final_norm.weight"] = state["final_norm.weight"].to(torch.int64)
    with pytest.raises(CheckpointError, match=r"tensor final_norm\.weight has dtype torch\.int64"):
        load_state_into(empty_model(model.config), state.items())


# ------------------------------------------------------------------------------------------ symlinks
def test_a_weight_file_linking_outside_the_folder_is_refused_unless_allowed(saved, tmp_path):
    outside = tmp_path / "elsewhere.safetensors"
    (saved / "model.safetensors").rename(outside)
    (saved / "model.safetensors").symlink_to(outside)
    with pytest.raises(CheckpointError, match=r"model\.safetensors is a symbolic link to .*elsewhere\.safetensors"
                                              r".*outside.*allow_external_links=True"):
        sambay.from_pretrained(saved)
    sambay.from_pretrained(saved, allow_external_links=True)


def test_a_shard_linking_outside_the_folder_is_named(tmp_path):
    folder = tmp_path / "s"
    sambay.CausalLM(tiny("sambay")).save_pretrained(folder, max_shard_size="64KB")
    victim = list_weight_files(folder)[1]
    outside = tmp_path / "stolen.safetensors"
    victim.rename(outside)
    victim.symlink_to(outside)
    with pytest.raises(CheckpointError, match=victim.name):
        sambay.from_pretrained(folder)


def test_links_that_stay_inside_the_folder_are_fine(saved):
    (saved / "blobs").mkdir()
    (saved / "model.safetensors").rename(saved / "blobs" / "abc123")
    (saved / "model.safetensors").symlink_to(Path("blobs") / "abc123")
    sambay.from_pretrained(saved)


def test_hugging_face_cache_layout_loads_but_links_leaving_the_cache_entry_do_not(saved, tmp_path):
    repo = tmp_path / "hub" / "models--org--tiny"
    snapshot = repo / "snapshots" / "0123abcd"
    (repo / "blobs").mkdir(parents=True)
    snapshot.mkdir(parents=True)
    for name in ("config.json", "model.safetensors"):
        shutil.move(saved / name, repo / "blobs" / f"blob-{name}")
        (snapshot / name).symlink_to(Path("../../blobs") / f"blob-{name}")
    sambay.from_pretrained(snapshot)
    shutil.move(repo / "blobs" / "blob-model.safetensors", tmp_path / "outside")
    (snapshot / "model.safetensors").unlink()
    (snapshot / "model.safetensors").symlink_to(Path("../../../../outside"))
    with pytest.raises(CheckpointError, match="models--org--tiny"):
        sambay.from_pretrained(snapshot)


# ------------------------------------------------------------------------------------------ mistyped config keys
@pytest.mark.parametrize("key, value, message", [
    ("norm_eps", "1e-5", "norm_eps must be a finite number (got '1e-5')"),
    ("d_model", True, "d_model must be a positive integer <= 65,536 (got True)"),
    ("d_model", 10**9, "d_model must be a positive integer <= 65,536 (got 1000000000)"),
    ("bos_token_id", 1.0, "bos_token_id must be an integer or null (got 1.0)"),
])
def test_a_mistyped_sambay_config_json_field_is_one_error_naming_the_key(saved, key, value, message):
    (saved / "config.json").write_text(json.dumps({**_config(saved), key: value}))
    with pytest.raises(ConfigError) as e:
        ModelConfig.from_json(saved / "config.json")
    assert str(e.value) == message
    with pytest.raises(CheckpointError) as e:
        sambay.from_pretrained(saved)
    assert str(e.value) == f"{saved / 'config.json'}: invalid sambay model config: {message}"


@pytest.mark.parametrize("key, value", [
    ("hidden_size", 10**9), ("hidden_size", True), ("intermediate_size", 10**9), ("vocab_size", 2**40),
    ("max_position_embeddings", 10**12), ("num_key_value_heads", 10**6), ("mamba_d_state", 10**6),
    ("layer_norm_eps", "1e-5"),
])
def test_a_mistyped_phi4flash_config_json_field_is_one_error_naming_the_key(tmp_path, key, value):
    folder = tmp_path / "p"
    shutil.copytree(FIXTURE, folder)
    (folder / "config.json").chmod(0o644)
    (folder / "config.json").write_text(json.dumps({**_config(FIXTURE), key: value}))
    with pytest.raises(CheckpointError, match=rf"config\.json: '{key}' must be a positive"):
        sambay.from_pretrained(folder)


def test_a_conversion_keeps_the_sources_generation_config(tmp_path):
    """Phi-4-mini-flash's generation_config.json has two eos ids and sampling defaults; save_pretrained can
    only write one eos, so the converted folder must carry the source's file, not its own."""
    src = tmp_path / "p"
    shutil.copytree(FIXTURE, src)
    gen = {"bos_token_id": 1, "eos_token_id": [2, 3], "pad_token_id": 0, "temperature": 0.6, "top_p": 0.95}
    (src / "generation_config.json").write_text(json.dumps(gen))
    assert cli_main(["convert", "--from", "phi4flash", str(src), "--out", str(tmp_path / "s")]) == 0
    assert cli_main(["convert", "--from", "sambay", str(tmp_path / "s"), "--to", "phi4flash",
                     "--out", str(tmp_path / "h")]) == 0
    for folder in (tmp_path / "s", tmp_path / "h"):
        assert json.loads((folder / "generation_config.json").read_text()) == gen
