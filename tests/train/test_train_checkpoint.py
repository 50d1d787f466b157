"""Checkpoints: atomic under a crash mid-save, keep-last-k, exact state round trip, from_pretrained-loadable."""

import os

import pytest
import torch

import sambay.interop.sharded_save as interop_io
from sambay.interop import from_pretrained
from sambay.train import checkpoint as ckpt
from sambay.train.config import TrainConfig
from sambay.train.trainer import Trainer


def _trainer(run_dir, **kw) -> Trainer:
    cfg = TrainConfig(tiny=True, depth=8, model_overrides={"d_model": 32, "vocab_size": 64}, tokens=256 * 20,
                      seq_len=32, micro_batch=4, batch_tokens=256, eta0=2e-2, base_batch_tokens=256,
                      run_dir=str(run_dir), progress=False, tensorboard=False, ckpt_every=1000, keep_last=3, **kw)
    return Trainer(cfg)



def _weights(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_checkpoint_folder_loads_with_from_pretrained(tmp_path):
    t = _trainer(tmp_path)
    t.train_step()
    path = t.save()
    assert path.name == "step-00000001"
    assert sorted(p.name for p in path.iterdir()) == ["config.json", "model.safetensors", "train_state.pt"]
    loaded = from_pretrained(path)
    assert loaded.config == t.model_config
    ours = t.model.state_dict()
    for name, tensor in loaded.state_dict().items():
        assert torch.equal(tensor, ours[name]), name


def test_state_round_trip_is_exact(tmp_path):
    t = _trainer(tmp_path)
    for _ in range(3):
        t.train_step()
    t.save()
    expected_next = t.train_step()["loss"]
    fresh = _trainer(tmp_path, resume="auto")
    assert fresh.step == 3 and fresh.tokens == 3 * 256
    assert fresh.loader.step == 3 * fresh.plan.grad_accum  # micro-batches consumed
    saved = torch.load(ckpt.find_latest(tmp_path) / ckpt.TRAIN_STATE, weights_only=True)["optimizer"]["state"]
    restored = fresh.optimizer.state_dict()["state"]
    by_id = {id(p): n for n, p in fresh.model.named_parameters()}
    names = [by_id[id(p)] for g in fresh.optimizer.param_groups for p in g["params"]]  # torch's index order
    assert len(restored) == len(saved) == len(names)
    for i, name in enumerate(names):  # torch state is keyed by index, the checkpoint by parameter name
        for key in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(restored[i][key], saved[name][key]), (name, key)
    assert fresh.train_step()["loss"] == expected_next  # bitwise: same weights, moments, data, LR


def test_crash_during_save_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    t = _trainer(tmp_path)
    t.train_step()
    t.train_step()
    good = t.save()
    good_weights = _weights(from_pretrained(good))
    t.train_step()

    # 1) crash after the weights are written, while the trainer state is being written
    def crash(*args, **kwargs):
        raise RuntimeError("simulated crash in torch.save")

    monkeypatch.setattr(ckpt.torch, "save", crash)
    with pytest.raises(RuntimeError, match="simulated crash"):
        t.save()
    monkeypatch.undo()
    # 2) crash half-way through writing the safetensors file
    real_write = interop_io._write_safetensors_file

    def half_write(path, items, meta):
        real_write(path, items[: len(items) // 2], meta)
        raise OSError("simulated disk failure")

    monkeypatch.setattr(interop_io, "_write_safetensors_file", half_write)
    with pytest.raises(OSError, match="simulated disk failure"):
        t.save()
    monkeypatch.undo()
    # 3) a hard kill leaves its temporary directory behind (no exception handler ran)
    stale = ckpt.checkpoint_root(tmp_path) / ".tmp-step-00000003-999-deadbeef"
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"\x00" * 10)

    assert [s for s, _ in ckpt.list_checkpoints(tmp_path)] == [2]
    assert ckpt.find_latest(tmp_path) == good
    reloaded = from_pretrained(good)
    for name, tensor in reloaded.state_dict().items():
        assert torch.equal(tensor, good_weights[name]), name
    resumed = _trainer(tmp_path, resume="auto")
    assert resumed.step == 2
    # the next successful save cleans up the debris
    resumed.train_step()
    resumed.save()
    assert sorted(p.name for p in ckpt.checkpoint_root(tmp_path).iterdir()) == ["step-00000002", "step-00000003"]


def test_keep_last_k_and_resave(tmp_path):
    t = _trainer(tmp_path)
    t.cfg.keep_last = 2
    for _ in range(4):
        t.train_step()
        t.save()
    assert [s for s, _ in ckpt.list_checkpoints(tmp_path)] == [3, 4]
    again = t.save()  # the same step again: swapped in atomically
    assert again.is_dir() and [s for s, _ in ckpt.list_checkpoints(tmp_path)] == [3, 4]
    assert not [p for p in os.listdir(ckpt.checkpoint_root(tmp_path)) if p.startswith(".")]


def test_a_run_dir_holding_another_run_is_refused_unless_resumed_or_overwritten(tmp_path):
    from sambay.train.config import TrainConfigError

    first = _trainer(tmp_path)
    first.train_step()
    first.save()
    with pytest.raises(TrainConfigError, match="already holds a run .*--resume auto .*--overwrite"):
        _trainer(tmp_path)
    assert (tmp_path / "checkpoints" / "step-00000001").is_dir()  # nothing was touched
    again = _trainer(tmp_path, overwrite=True)
    assert again.step == 0 and not (tmp_path / "checkpoints").exists()
    (tmp_path / "file").write_text("x")
    with pytest.raises(TrainConfigError, match="is a file, not a directory"):
        _trainer(tmp_path / "file")


@pytest.mark.parametrize("damage", ["truncate train_state", "truncate weights", "delete weights"])
def test_resume_auto_falls_back_past_an_unreadable_newest_checkpoint_and_says_which(tmp_path, capsys, damage):
    t = _trainer(tmp_path)
    t.train_step()
    good = t.save()
    want = _weights(t.model)
    t.train_step()
    newest = t.save()
    target = newest / ("train_state.pt" if "train_state" in damage else "model.safetensors")
    if damage.startswith("truncate"):
        data = target.read_bytes()
        target.write_bytes(data[: len(data) // 2])
    else:
        target.unlink()  # a kill during pruning leaves such a folder
    resumed = _trainer(tmp_path, resume="auto")
    assert resumed.step == 1
    for name, tensor in _weights(resumed.model).items():
        assert torch.equal(tensor, want[name]), name
    err = capsys.readouterr().err
    assert f"skipping checkpoint {newest}" in err and str(good) not in err


def test_resume_auto_with_no_readable_checkpoint_is_one_clear_error(tmp_path):
    from sambay.train.config import TrainConfigError

    t = _trainer(tmp_path)
    t.train_step()
    path = t.save()
    (path / "train_state.pt").write_bytes(b"PK\x03\x04 not a zip")
    with pytest.raises(TrainConfigError, match=r"none of the 1 checkpoint\(s\) .* can be read"):
        _trainer(tmp_path, resume="auto")


def test_resuming_another_models_checkpoint_is_one_line_naming_the_difference(tmp_path):
    from sambay.train.config import TrainConfigError

    t = _trainer(tmp_path)
    t.train_step()
    t.save()
    cfg = TrainConfig(tiny=True, depth=8, model_overrides={"d_model": 64, "vocab_size": 64}, tokens=256 * 20,
                      seq_len=32, micro_batch=4, batch_tokens=256, eta0=2e-2, base_batch_tokens=256,
                      run_dir=str(tmp_path), progress=False, tensorboard=False, resume="auto")
    with pytest.raises(TrainConfigError, match="holds another model .*first difference"):
        Trainer(cfg)


def test_a_non_finite_loss_stops_the_run_before_any_checkpoint_is_written_or_pruned(tmp_path):
    from sambay.train.trainer import TrainingDiverged

    t = _trainer(tmp_path)
    t.train_step()
    good = t.save()
    with torch.no_grad():  # weights gone bad (a corrupt resume, a blow-up): every later loss is NaN
        t.model.layers[0].mixer.in_proj.weight.fill_(float("nan"))
    t.cfg.ckpt_every, t.cfg.keep_last = 1, 1  # the next save would prune `good`
    with pytest.raises(TrainingDiverged, match="step 2: the training loss is nan; stopped before"):
        t.fit()
    assert [p for _, p in ckpt.list_checkpoints(tmp_path)] == [good]


def test_resume_auto_before_any_checkpoint_starts_over_with_one_clean_curve(tmp_path):
    t = _trainer(tmp_path)
    t.train_step()
    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "loss": 4.1}\n{"step": 2, "lo')  # killed mid-line
    resumed = _trainer(tmp_path, resume="auto")
    assert resumed.step == 0
    assert (tmp_path / "metrics.jsonl").read_text() == ""  # the killed attempt's lines are gone
