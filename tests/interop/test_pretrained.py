"""sambay's own folder format, the loader's memory behaviour, every bad-input case, the convert CLI and the
tokenizer re-export."""

from __future__ import annotations

import gc
import json
import shutil
import struct
import sys
from pathlib import Path

import pytest
import torch
from helpers import random_model
from safetensors.torch import load_file, save_file

import sambay
from sambay.cli.main import main as cli_main
from sambay.config import tiny
from sambay.interop import pretrained
from sambay.interop.errors import CheckpointError
from sambay.interop.safetensors_header import read_header, read_safetensors_metadata
from sambay.interop.weight_files import list_weight_files, read_checkpoint_header

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "phi4flash-A"
IDS = torch.randint(0, 256, (2, 12), generator=torch.Generator().manual_seed(1))


def _logits(model, ids=IDS):
    with torch.no_grad():
        return model(ids).logits


def _same_parameters(a, b) -> bool:
    pa, pb = dict(a.named_parameters()), dict(b.named_parameters())
    return pa.keys() == pb.keys() and all(pa[n].dtype == pb[n].dtype and torch.equal(pa[n], pb[n]) for n in pa)


@pytest.fixture
def saved(tmp_path):
    model = random_model(tiny("sambay-da"))
    folder = tmp_path / "m"
    model.save_pretrained(folder)
    return model, folder


# ------------------------------------------------------------------------------------------ round trips
@pytest.mark.parametrize("preset", ["sambay", "sambay-da", "samba", "phi4-mini", "phi4-mini-flash"])
def test_sambay_format_round_trip_is_bit_identical(tmp_path, preset):
    model = random_model(tiny(preset))
    model.save_pretrained(tmp_path / "m")
    again = sambay.from_pretrained(tmp_path / "m")
    assert again.config == model.config
    assert _same_parameters(model, again)
    assert torch.equal(_logits(again), _logits(model))


def test_sambay_format_config_json_is_plain_model_config(saved):
    model, folder = saved
    assert sambay.ModelConfig.from_json(folder / "config.json") == model.config
    assert read_safetensors_metadata(folder / "model.safetensors")["sambay_format"] == "1"
    assert "lm_head.weight" not in read_header(folder / "model.safetensors") or model.lm_head is not None


def test_sharded_sambay_format_loads_identically(tmp_path):
    model = random_model(tiny("sambay"))
    model.save_pretrained(tmp_path / "s", max_shard_size="64KB")
    files = list_weight_files(tmp_path / "s")
    assert len(files) > 5
    assert _same_parameters(model, sambay.from_pretrained(tmp_path / "s"))


def test_dtype_and_device_arguments(saved):
    model, folder = saved
    m16 = sambay.from_pretrained(folder, dtype="bf16", device="cpu")
    assert m16.embed.weight.dtype == torch.bfloat16 and m16.layers[0].mixer.A_log.dtype == torch.float32
    assert sambay.from_pretrained(folder, dtype="auto").embed.weight.dtype == torch.float32
    with pytest.raises(ValueError, match="unknown dtype"):
        sambay.from_pretrained(folder, dtype="int8")


# ------------------------------------------------------------------------------------------ memory
def test_model_is_built_on_meta_and_filled_tensor_by_tensor(saved, monkeypatch):
    _, folder = saved
    built_on = []
    real_empty = pretrained.empty_model

    def spy_empty(config):
        m = real_empty(config)
        built_on.append({p.device.type for p in m.parameters()})
        return m

    assigned_while_meta_left = []
    real_load = pretrained.load_state_into

    def spy_load(model, tensors, **kw):
        def watch():
            for name, t in tensors:
                assigned_while_meta_left.append(sum(p.is_meta for p in model.parameters()))
                yield name, t
        return real_load(model, watch(), **kw)

    monkeypatch.setattr(pretrained, "empty_model", spy_empty)
    monkeypatch.setattr(pretrained, "load_state_into", spy_load)
    model = sambay.from_pretrained(folder)
    assert built_on == [{"meta"}]
    n = len(list(model.parameters()))
    # each tensor is assigned as soon as it is read: the number still on meta drops by one per tensor
    assert assigned_while_meta_left == list(range(n, 0, -1))
    assert not any(p.is_meta for p in model.parameters())


def test_progress_is_reported_per_tensor(saved):
    _, folder = saved
    calls = []
    sambay.from_pretrained(folder, progress=lambda done, total: calls.append((done, total)))
    assert calls[0][0] == 0 and calls[-1][0] == calls[-1][1] > 0
    assert len(calls) == len(read_checkpoint_header(folder)) + 1


def _status_bytes(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


def _reset_peak_rss() -> bool:
    try:  # Linux >= 4.0: writing 5 resets VmHWM (the peak RSS) to the current RSS
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_peak_rss_of_a_sharded_load_is_about_one_copy(tmp_path):
    config = tiny("phi4-mini-flash", depth=16, d_model=256, vocab_size=4000)
    model = sambay.CausalLM(config)
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    largest = max(p.numel() * p.element_size() for p in model.parameters())
    assert weight_bytes > 40e6 and largest < 5e6
    model.save_pretrained(tmp_path / "big", max_shard_size="4MB")
    del model
    sambay.from_pretrained(FIXTURE)  # first-use imports (meta-tensor machinery) are not part of the load
    gc.collect()
    if not _reset_peak_rss():
        pytest.skip("cannot reset the peak RSS (/proc/self/clear_refs)")
    base = _status_bytes("VmRSS")
    loaded = sambay.from_pretrained(tmp_path / "big")
    with torch.no_grad():  # make every (possibly memory-mapped) page resident
        sum(float(p.sum()) for p in loaded.parameters())
    delta = max(_status_bytes("VmHWM"), _status_bytes("VmRSS")) - base
    # one copy of the weights plus one memory-mapped shard and one tensor in flight (~8 MB here); building
    # the model normally and then loading a state dict would need two copies (> 2 × weight_bytes)
    assert delta < weight_bytes + 3 * 4e6 + 6e6, (delta / 1e6, weight_bytes / 1e6)


# ------------------------------------------------------------------------------------------ bad inputs
def test_missing_and_unexpected_tensors_are_listed_by_name(saved):
    _, folder = saved
    state = load_file(folder / "model.safetensors")
    del state["layers.1.mixer.qkv.weight"]
    state["layers.1.mixer.extra.weight"] = torch.zeros(3)
    save_file(state, folder / "model.safetensors")
    with pytest.raises(CheckpointError) as e:
        sambay.from_pretrained(folder)
    msg = str(e.value)
    assert "missing (1):\n  layers.1.mixer.qkv.weight" in msg
    assert "unexpected (1):\n  layers.1.mixer.extra.weight" in msg


def test_shape_mismatch_names_tensor_and_both_shapes(saved):
    _, folder = saved
    state = load_file(folder / "model.safetensors")
    state["layers.0.mlp.fc2.weight"] = torch.zeros(64, 99)
    save_file(state, folder / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"layers\.0\.mlp\.fc2\.weight: expected \(64, 128\), found \(64, 99\)"):
        sambay.from_pretrained(folder)


def test_truncated_safetensors_is_one_readable_error(saved):
    _, folder = saved
    f = folder / "model.safetensors"
    data = f.read_bytes()
    f.write_bytes(data[: len(data) - 1000])
    with pytest.raises(CheckpointError, match="truncated"):
        sambay.from_pretrained(folder)


def test_corrupt_safetensors_header_is_one_readable_error(saved):
    _, folder = saved
    f = folder / "model.safetensors"
    data = bytearray(f.read_bytes())
    (n,) = struct.unpack("<Q", data[:8])
    data[8:8 + n] = b"{" + b"x" * (n - 1)
    f.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="model.safetensors"):
        sambay.from_pretrained(folder)


def test_config_that_is_not_json_is_one_readable_error(saved):
    _, folder = saved
    (folder / "config.json").write_text("{ not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        sambay.from_pretrained(folder)


def test_sambay_config_missing_required_keys_is_named(saved):
    _, folder = saved
    cfg = json.loads((folder / "config.json").read_text())
    del cfg["d_model"]
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"missing required key\(s\) \['d_model'\]"):
        sambay.from_pretrained(folder)


def test_config_of_unknown_shape_is_rejected(saved):
    _, folder = saved
    (folder / "config.json").write_text(json.dumps({"hidden_size": 3}))
    with pytest.raises(CheckpointError, match="neither 'model_type'"):
        sambay.from_pretrained(folder)


def test_pickle_only_folder_is_never_loaded(tmp_path):
    folder = tmp_path / "p"
    folder.mkdir()
    shutil.copy(FIXTURE / "config.json", folder / "config.json")
    torch.save({"x": torch.zeros(1)}, folder / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="only pickle weight files"):
        sambay.from_pretrained(folder)


def test_missing_folder_and_file_path_give_clear_errors(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        sambay.from_pretrained(tmp_path / "nope")
    f = tmp_path / "iter-000010-ckpt.pth"
    f.write_bytes(b"x")
    with pytest.raises(CheckpointError, match="convert --from archscale"):
        sambay.from_pretrained(f)


def test_missing_shard_of_an_index_is_named(tmp_path):
    model = random_model(tiny("sambay"))
    model.save_pretrained(tmp_path / "s", max_shard_size="64KB")
    victim = list_weight_files(tmp_path / "s")[2]
    victim.unlink()
    with pytest.raises(CheckpointError, match=victim.name):
        sambay.from_pretrained(tmp_path / "s")


# ------------------------------------------------------------------------------------------ CLI
def test_cli_convert_phi4flash_to_sambay_and_back(tmp_path, capsys):
    assert cli_main(["convert", "--from", "phi4flash", str(FIXTURE), "--out", str(tmp_path / "s")]) == 0
    assert json.loads((tmp_path / "s" / "config.json").read_text())["layer_plan"][4] == "mamba_memory"
    assert cli_main(["convert", "--from", "sambay", str(tmp_path / "s"), "--to", "phi4flash",
                     "--out", str(tmp_path / "h"), "--max-shard-size", "300KB"]) == 0
    assert "wrote phi4flash-format checkpoint" in capsys.readouterr().out
    a, b = sambay.from_pretrained(FIXTURE), sambay.from_pretrained(tmp_path / "h")
    assert _same_parameters(a, b)
    assert set(read_checkpoint_header(tmp_path / "h")) == set(read_checkpoint_header(FIXTURE))


def test_cli_convert_bad_arguments_exit_2_with_one_line(tmp_path, capsys):
    assert cli_main(["convert", "--from", "archscale", str(FIXTURE / "config.json"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("sambay convert: error:") and "--preset" in err and "\n" not in err
    assert cli_main(["convert", "--from", "phi4flash", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 2
    assert cli_main(["convert", "--from", "sambay", str(FIXTURE), "--out", str(tmp_path / "o")]) == 2
    assert "is a phi4flash-format folder" in capsys.readouterr().err


def test_cli_convert_refuses_to_overwrite_without_force(tmp_path):
    out = tmp_path / "o"
    assert cli_main(["convert", "--from", "phi4flash", str(FIXTURE), "--out", str(out)]) == 0
    assert cli_main(["convert", "--from", "phi4flash", str(FIXTURE), "--out", str(out)]) == 2
    assert cli_main(["convert", "--from", "phi4flash", str(FIXTURE), "--out", str(out), "--force"]) == 0


def test_cli_convert_bad_checkpoint_is_an_error_message_not_a_traceback(tmp_path, capsys):
    folder = tmp_path / "bad"
    shutil.copytree(FIXTURE, folder)
    (folder / "config.json").chmod(0o644)
    (folder / "config.json").write_text("[1, 2")
    assert cli_main(["convert", "--from", "phi4flash", str(folder), "--out", str(tmp_path / "o")]) == 2
    assert "not valid JSON" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------ tokenizer
def test_load_tokenizer_is_exported_and_round_trips_special_tokens(tmp_path):
    pytest.importorskip("tokenizers")
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|user|>", "<|assistant|>", "<|end|>"]
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(["hello world, the answer is 42."] * 20, trainer)
    folder = tmp_path / "t"
    folder.mkdir()
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<|endoftext|>"}))
    loaded = sambay.load_tokenizer(folder)
    text = "<|user|>hello wörld 🙂<|end|><|assistant|>42<|end|>"
    ids = loaded.encode(text)
    assert loaded.token_to_id("<|end|>") in ids
    assert loaded.decode(ids) == text
    # `sambay convert` carries the tokenizer files along with the weights
    model = random_model(tiny("sambay"))
    model.save_pretrained(folder)
    assert cli_main(["convert", "--from", "sambay", str(folder), "--out", str(tmp_path / "c")]) == 0
    assert sambay.load_tokenizer(tmp_path / "c").decode(ids) == text
