"""Tests for the safetensors IO of sambay.interop (json_files, safetensors_header, weight_files, tensor_loading,
sharded_save, state_dict_check): folder reading, validation and sharded writing (CPU, fast)."""

from __future__ import annotations

import io
import json
import struct
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from sambay.interop.errors import CheckpointError
from sambay.interop.safetensors_header import TensorInfo, read_header, read_safetensors_metadata
from sambay.interop.sharded_save import parse_size, save_safetensors_sharded
from sambay.interop.state_dict_check import check_state_dict
from sambay.interop.tensor_loading import ProgressPrinter, iter_tensors, load_safetensors_folder
from sambay.interop.weight_files import list_weight_files, read_checkpoint_header, read_config_json


def _state() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    sd: dict[str, torch.Tensor] = {}
    for i in range(4):
        sd[f"model.layers.{i}.mlp.fc1.weight"] = torch.randn(64, 32, generator=g).to(torch.bfloat16)  # 4 KB
        sd[f"model.layers.{i}.attn.A_log"] = torch.randn(16, 8, generator=g)  # fp32, 512 B
        sd[f"model.layers.{i}.attn.D"] = torch.randn(16, generator=g, dtype=torch.float64)
    sd["model.embed_tokens.weight"] = torch.randn(100, 32, generator=g).to(torch.float16)
    sd["model.step"] = torch.tensor(7, dtype=torch.int64)  # 0-dim
    sd["model.mask"] = torch.tensor([True, False, True])
    sd["model.empty"] = torch.zeros(0, 5)
    sd["model.fp8"] = torch.randn(4, 4, generator=g).to(torch.float8_e4m3fn)
    return sd


def _assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert set(a) == set(b)
    for k in a:
        assert a[k].dtype == b[k].dtype, k
        assert a[k].shape == b[k].shape, k
        assert torch.equal(a[k].view(torch.uint8) if a[k].dtype == torch.float8_e4m3fn else a[k],
                           b[k].view(torch.uint8) if b[k].dtype == torch.float8_e4m3fn else b[k]), k


# ---------------------------------------------------------------------------------------------------
# round trips
# ---------------------------------------------------------------------------------------------------


def test_single_file_round_trip_readable_by_safetensors(tmp_path: Path) -> None:
    sd = _state()
    written = save_safetensors_sharded(sd, tmp_path, metadata={"producer": "test"})
    assert written == [tmp_path / "model.safetensors"]
    assert not (tmp_path / "model.safetensors.index.json").exists()
    assert list_weight_files(tmp_path) == written
    # Our writer's output must be readable by the reference safetensors reader.
    with safe_open(str(written[0]), framework="pt") as f:
        assert set(f.keys()) == set(sd)
        assert f.metadata() == {"format": "pt", "producer": "test"}
        torch.testing.assert_close(f.get_tensor("model.layers.0.attn.A_log"), sd["model.layers.0.attn.A_log"])
    _assert_same(load_safetensors_folder(tmp_path), sd)
    assert read_safetensors_metadata(written[0])["producer"] == "test"
    hdr = read_header(written[0])
    assert hdr["model.layers.1.mlp.fc1.weight"] == TensorInfo("BF16", (64, 32))
    dtype, shape = hdr["model.step"]
    assert (dtype, shape) == ("I64", ())
    # No temporary files left behind.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors"]


def test_reads_files_written_by_safetensors(tmp_path: Path) -> None:
    sd = {"a": torch.arange(6, dtype=torch.float32).reshape(2, 3), "b": torch.ones(3, dtype=torch.bfloat16)}
    save_file(sd, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    assert read_header(tmp_path / "model.safetensors") == {"a": ("F32", (2, 3)), "b": ("BF16", (3,))}
    _assert_same(dict(iter_tensors(list_weight_files(tmp_path))), sd)


def test_sharded_round_trip_and_index(tmp_path: Path) -> None:
    sd = _state()
    files = save_safetensors_sharded(sd, tmp_path, max_shard_size=5000)
    assert len(files) >= 3
    n = len(files)
    assert [f.name for f in files] == [f"model-{i:05d}-of-{n:05d}.safetensors" for i in range(1, n + 1)]
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    assert index["metadata"]["total_size"] == sum(t.numel() * t.element_size() for t in sd.values())
    assert set(index["weight_map"]) == set(sd)
    assert set(index["weight_map"].values()) == {f.name for f in files}
    for f in files:  # every shard respects the limit unless it holds one oversized tensor
        hdr = read_header(f)
        size = sum(torch.Size(s).numel() for _, s in hdr.values())
        assert len(hdr) == 1 or f.stat().st_size < 5000 + 2000, (f, size)
        for name in hdr:
            assert index["weight_map"][name] == f.name
    assert list_weight_files(tmp_path) == files
    _assert_same(load_safetensors_folder(tmp_path), sd)
    assert {k: v.shape for k, v in read_checkpoint_header(tmp_path).items()} == {
        k: tuple(v.shape) for k, v in sd.items()
    }


def test_resave_replaces_old_layout(tmp_path: Path) -> None:
    sd = _state()
    save_safetensors_sharded(sd, tmp_path, max_shard_size="5KB")
    (tmp_path / "config.json").write_text("{}")
    save_safetensors_sharded(sd, tmp_path)  # now fits in one file: old shards and index must go
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors"]
    files = save_safetensors_sharded(sd, tmp_path, max_shard_size="6KB")  # back to sharded
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["config.json", "model.safetensors.index.json", *(f.name for f in files)]
    )
    _assert_same(load_safetensors_folder(tmp_path), sd)


def test_failed_save_leaves_no_partial_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sambay.interop.sharded_save as sio

    calls = {"n": 0}
    real = sio._write_safetensors_file

    def flaky(path, items, meta):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError("disk full")
        real(path, items, meta)

    monkeypatch.setattr(sio, "_write_safetensors_file", flaky)
    with pytest.raises(OSError, match="disk full"):
        save_safetensors_sharded(_state(), tmp_path, max_shard_size=5000)
    assert list(tmp_path.iterdir()) == []


def test_non_contiguous_and_views_are_saved_by_value(tmp_path: Path) -> None:
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    other = torch.arange(12, dtype=torch.bfloat16).reshape(3, 4)
    # A transposed (non-contiguous) tensor, and disjoint views of one storage (fine: nothing is aliased).
    sd = {"t": other.t(), "top": base[:2], "bottom": base[2:], "col": torch.randn(5, 3)[:, 1]}
    save_safetensors_sharded(sd, tmp_path)
    out = load_safetensors_folder(tmp_path)
    for k in sd:
        assert torch.equal(out[k], sd[k])
        assert out[k].is_contiguous()


def test_tied_tensors_refused_unless_copy(tmp_path: Path) -> None:
    emb = torch.randn(10, 4)
    sd = {"model.embed_tokens.weight": emb, "lm_head.weight": emb}
    with pytest.raises(ValueError, match="share memory") as ei:
        save_safetensors_sharded(sd, tmp_path)
    assert "lm_head.weight" in str(ei.value) and "shared='copy'" in str(ei.value)
    assert list(tmp_path.iterdir()) == []
    save_safetensors_sharded(sd, tmp_path, shared="copy")
    out = load_safetensors_folder(tmp_path)
    assert torch.equal(out["lm_head.weight"], emb)


@pytest.mark.parametrize(
    ("text", "value"),
    [("500MB", 500 * 10**6), ("2GB", 2 * 10**9), ("1.5 GiB", int(1.5 * 2**30)), ("4096", 4096),
     ("10kb", 10_000), (123, 123), ("7B", 7)],
)
def test_parse_size(text: str | int, value: int) -> None:
    assert parse_size(text) == value


@pytest.mark.parametrize("bad", ["5 parsecs", "GB", "", "-1GB", 0, -5, "1e9", True, 2.5])
def test_parse_size_rejects_garbage(bad: object, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="invalid size"):
        parse_size(bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="invalid size"):
        save_safetensors_sharded({"a": torch.zeros(1)}, tmp_path, max_shard_size=bad)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------------
# iter_tensors
# ---------------------------------------------------------------------------------------------------


def test_progress_callback_reaches_total(tmp_path: Path) -> None:
    sd = _state()
    files = save_safetensors_sharded(sd, tmp_path, max_shard_size=5000)
    calls: list[tuple[int, int]] = []
    got = dict(iter_tensors(files, progress=lambda d, t: calls.append((d, t))))
    total = sum(t.numel() * t.element_size() for t in sd.values())
    assert calls[0] == (0, total)
    assert calls[-1] == (total, total)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)
    assert len(calls) == len(sd) + 1
    _assert_same(got, sd)


def test_progress_printer(tmp_path: Path) -> None:
    files = save_safetensors_sharded(_state(), tmp_path)
    buf = io.StringIO()
    for _ in iter_tensors(files, progress=ProgressPrinter("load", stream=buf, every=0.25)):
        pass
    lines = buf.getvalue().splitlines()
    assert lines[0].startswith("load: 0 B") and lines[-1].endswith("(100%)")
    assert 2 <= len(lines) <= 6


def test_iter_tensors_names_dtype(tmp_path: Path) -> None:
    sd = _state()
    files = save_safetensors_sharded(sd, tmp_path, max_shard_size=5000)
    names = ["model.layers.3.attn.A_log", "model.step", "model.embed_tokens.weight"]
    got = dict(iter_tensors(files, names=names, dtype=torch.bfloat16))
    assert set(got) == set(names)
    assert got["model.layers.3.attn.A_log"].dtype == torch.bfloat16
    assert got["model.step"].dtype == torch.int64  # integers are never cast
    with pytest.raises(CheckpointError, match=r"1 requested tensor\(s\).*lm_head.weight"):
        iter_tensors(files, names=["lm_head.weight", "model.step"])  # raised eagerly, before iterating


def test_duplicate_names_across_shards(tmp_path: Path) -> None:
    save_file({"x": torch.zeros(2), "y": torch.zeros(1)}, str(tmp_path / "a.safetensors"))
    save_file({"x": torch.ones(2)}, str(tmp_path / "b.safetensors"))
    with pytest.raises(CheckpointError, match=r"x \(in a.safetensors and b.safetensors\)"):
        iter_tensors([tmp_path / "a.safetensors", tmp_path / "b.safetensors"])


# ---------------------------------------------------------------------------------------------------
# corrupt files
# ---------------------------------------------------------------------------------------------------


def _one_file(tmp_path: Path) -> Path:
    return save_safetensors_sharded({"w": torch.randn(32, 32), "b": torch.randn(32)}, tmp_path)[0]


def test_truncated_file(tmp_path: Path) -> None:
    f = _one_file(tmp_path)
    data = f.read_bytes()
    f.write_bytes(data[:-100])
    with pytest.raises(CheckpointError, match=r"model.safetensors is truncated.*100 bytes missing"):
        read_header(f)
    with pytest.raises(CheckpointError, match="truncated"):
        iter_tensors([f])
    f.write_bytes(data[:20])  # cut inside the header
    with pytest.raises(CheckpointError, match=r"truncated: its header needs \d+ bytes"):
        read_header(f)
    f.write_bytes(data[:3])
    with pytest.raises(CheckpointError, match="only 3 bytes"):
        read_header(f)


def test_corrupt_header(tmp_path: Path) -> None:
    f = _one_file(tmp_path)
    data = bytearray(f.read_bytes())
    (n,) = struct.unpack("<Q", data[:8])
    data[8:12] = b"\xff\xfe@@"  # garbage where the JSON header starts
    f.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"model.safetensors: corrupt safetensors header"):
        read_header(f)
    f.write_bytes(struct.pack("<Q", 2**40) + bytes(data[8:]))  # absurd header length
    with pytest.raises(CheckpointError, match="implausible"):
        iter_tensors([f])
    # Valid JSON but wrong offsets for the shape.
    header = json.loads(bytes(_one_file(tmp_path / "ok").read_bytes()[8 : 8 + n]))
    header["w"]["shape"] = [32, 31]
    raw = json.dumps(header).encode()
    f.write_bytes(struct.pack("<Q", len(raw)) + raw + b"\0" * (32 * 32 * 4 + 32 * 4))
    with pytest.raises(CheckpointError, match=r"tensor 'w': shape \(32, 31\) of F32 needs 3968 bytes"):
        read_header(f)


def test_trailing_garbage_rejected(tmp_path: Path) -> None:
    f = _one_file(tmp_path)
    f.write_bytes(f.read_bytes() + b"junk")
    with pytest.raises(CheckpointError, match="4 unexpected bytes after the last tensor"):
        read_header(f)


# ---------------------------------------------------------------------------------------------------
# config.json and folder discovery
# ---------------------------------------------------------------------------------------------------


def test_read_config_json(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text('{"hidden_size": 2560, "sliding_window": 512}')
    assert read_config_json(tmp_path) == {"hidden_size": 2560, "sliding_window": 512}
    assert read_config_json(tmp_path / "config.json")["hidden_size"] == 2560


def test_config_errors(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="model config not found: .*config.json"):
        read_config_json(tmp_path)
    with pytest.raises(CheckpointError, match="checkpoint folder not found"):
        read_config_json(tmp_path / "nope")
    (tmp_path / "config.json").write_text('{\n  "hidden_size": 2560,\n  "vocab_size": 200064,,\n}')
    with pytest.raises(CheckpointError, match=r"config.json is not valid JSON: .* at line 3, column 24"):
        read_config_json(tmp_path)
    (tmp_path / "config.json").write_text("[1, 2]")
    with pytest.raises(CheckpointError, match="must contain a JSON object.*found a JSON array"):
        read_config_json(tmp_path)
    (tmp_path / "config.json").write_text("")
    with pytest.raises(CheckpointError, match="the file is empty"):
        read_config_json(tmp_path)
    assert issubclass(CheckpointError, ValueError)


def test_index_pointing_at_missing_shard(tmp_path: Path) -> None:
    files = save_safetensors_sharded(_state(), tmp_path, max_shard_size=5000)
    files[1].unlink()
    with pytest.raises(CheckpointError, match=rf"1 shard file\(s\) that are not in .*: {files[1].name}"):
        list_weight_files(tmp_path)


def test_bad_index(tmp_path: Path) -> None:
    save_file({"x": torch.zeros(1)}, str(tmp_path / "s1.safetensors"))
    idx = tmp_path / "model.safetensors.index.json"
    idx.write_text('{"metadata": {}}')
    with pytest.raises(CheckpointError, match='no "weight_map"'):
        list_weight_files(tmp_path)
    idx.write_text('{"weight_map": {"x": "../s1.safetensors"}}')
    with pytest.raises(CheckpointError, match="plain file names"):
        list_weight_files(tmp_path)
    idx.write_text('{"weight_map": {"x": "s1.safetensors", "y": "s1.safetensors"}}')
    assert list_weight_files(tmp_path) == [tmp_path / "s1.safetensors"]
    with pytest.raises(CheckpointError, match="y: listed in the index"):
        read_checkpoint_header(tmp_path)
    idx.write_text('{"weight_map": {"x": "s1.safetensors"')
    with pytest.raises(CheckpointError, match="index .* is not valid JSON"):
        list_weight_files(tmp_path)


def test_pickle_only_folder_refused(tmp_path: Path) -> None:
    torch.save({"w": torch.zeros(2)}, tmp_path / "pytorch_model.bin")
    with pytest.raises(CheckpointError) as ei:
        list_weight_files(tmp_path)
    msg = str(ei.value)
    assert "pytorch_model.bin" in msg and "never loads them implicitly" in msg
    assert "save_safetensors_sharded" in msg and "weights_only=True" in msg


def test_no_weights_and_orphan_shards(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=f"no weights found in {tmp_path}"):
        list_weight_files(tmp_path)
    with pytest.raises(CheckpointError, match="checkpoint folder not found"):
        list_weight_files(tmp_path / "missing")
    save_file({"x": torch.zeros(1)}, str(tmp_path / "model-00001-of-00002.safetensors"))
    with pytest.raises(CheckpointError, match="no model.safetensors.index.json; the checkpoint is incomplete"):
        list_weight_files(tmp_path)


# ---------------------------------------------------------------------------------------------------
# check_state_dict
# ---------------------------------------------------------------------------------------------------


def test_check_state_dict_ok_and_accepts_headers(tmp_path: Path) -> None:
    sd = _state()
    save_safetensors_sharded(sd, tmp_path)
    check_state_dict({k: v.shape for k, v in sd.items()}, read_checkpoint_header(tmp_path), "ckpt")
    check_state_dict(sd, sd)


def test_check_state_dict_message() -> None:
    expected = {
        "model.embed_tokens.weight": (200064, 2560),
        "model.layers.0.attn.A_log": (5120, 16),
        "model.layers.2.attn.D": (5120,),
        "model.layers.10.attn.D": (5120,),
        "model.final_layernorm.weight": (2560,),
    }
    found = {
        "model.embed_tokens.weight": torch.Size([200064, 2560]),
        "model.layers.0.attn.A_log": (16, 5120),
        "model.final_layernorm.weight": [2560],
        "lm_head.weight": (200064, 2560),
    }
    with pytest.raises(CheckpointError) as ei:
        check_state_dict(expected, found, context="phi4flash checkpoint /x")
    msg = str(ei.value)
    assert msg.startswith("phi4flash checkpoint /x: tensors do not match the model "
                          "(2 missing, 1 unexpected, 1 with the wrong shape; expected 5 tensors, found 4)")
    assert "missing (2):\n  model.layers.2.attn.D\n  model.layers.10.attn.D\n" in msg  # natural order
    assert "unexpected (1):\n  lm_head.weight" in msg
    assert "model.layers.0.attn.A_log: expected (5120, 16), found (16, 5120)" in msg
    assert "final_layernorm" not in msg and "embed_tokens" not in msg


def test_check_state_dict_truncates_long_lists() -> None:
    expected = {f"model.layers.{i}.w": (1,) for i in range(100)}
    with pytest.raises(CheckpointError) as ei:
        check_state_dict(expected, {}, "ctx", max_items=5)
    msg = str(ei.value)
    assert "missing (100):" in msg and "... and 95 more" in msg
    assert "model.layers.4.w" in msg and "model.layers.5.w" not in msg
    assert len(msg.splitlines()) == 1 + 1 + 5 + 1


def test_a_config_json_that_is_a_fifo_fails_at_once_instead_of_blocking(tmp_path):
    import os

    import sambay

    folder = tmp_path / "m"
    folder.mkdir()
    os.mkfifo(folder / "config.json")
    with pytest.raises(sambay.CheckpointError, match="is not a regular file"):
        sambay.from_pretrained(folder)


def test_an_oversized_json_file_is_refused_with_its_size(tmp_path, monkeypatch):
    from sambay.interop import json_files

    path = tmp_path / "config.json"
    path.write_text('{"a": "' + "x" * 200 + '"}')
    monkeypatch.setattr(json_files, "MAX_JSON_BYTES", 100)
    with pytest.raises(json_files.CheckpointError, match="at most 100 are read"):
        json_files.read_json_file(path, what="model config")
