"""`sambay train` argument handling, the resolved plan, and a run on real token shards (train + held-out)."""

import json

import numpy as np
import pytest
from train_helpers import TINY, train_records

from sambay.cli.main import main
from sambay.data.shards import write_shard
from sambay.train.data import SyntheticLoader


def _without(args: list[str], flag: str) -> list[str]:
    i = args.index(flag)
    return args[:i] + args[i + 2:]


@pytest.mark.parametrize("extra, message", [
    (["--tokens", "1M", "--batch-tokens", "1000"], "not a multiple of world_size·micro_batch·seq_len"),
    (["--tokens", "1M", "--budget", "chinchilla"], "either --tokens or --budget"),
    ([], "give the training length"),
    (["--tokens", "1M", "--preset", "nope"], "unknown preset"),
    (["--tokens", "100", "--batch-tokens", "256"], "smaller than one global batch"),
], ids=["indivisible-batch", "tokens-and-budget", "no-length", "bad-preset", "budget-below-batch"])
def test_bad_arguments_are_usage_errors(extra, message, capsys, tmp_path):
    args = _without(TINY, "--batch-tokens") if "--batch-tokens" in extra else TINY
    code = main(["train", *args, *extra, "--run-dir", str(tmp_path), "--dry-run"])
    assert code == 2
    assert message in capsys.readouterr().err


def test_d_model_needs_tiny(capsys):
    assert main(["train", "--d-model", "32", "--data", "synthetic", "--tokens", "1M"]) == 2
    assert "--d-model is for --tiny" in capsys.readouterr().err


def test_dry_run_plan_for_chinchilla_d8(capsys):
    assert main(["train", "--preset", "sambay", "--depth", "8", "--data", "synthetic", "--budget", "chinchilla",
                 "--micro-batch", "2", "--seq-len", "4096", "--dry-run"]) == 0
    out = json.loads(capsys.readouterr().out)
    plan = out["plan"]
    assert plan["batch_tokens"] == 2**21 and plan["grad_accum"] == 256  # one process: 256 micro-batches
    assert plan["lr"] == pytest.approx(5.657e-4, rel=1e-3)
    assert plan["lr_multipliers"] == {"matrices": 2.0, "vectors": 1.0}
    assert 12.9e9 < plan["total_tokens"] < 13.1e9  # 1e11 · 126.9M / 973.1M
    assert out["flops_per_token"] > 6 * plan["non_embedding_params"]


def test_train_on_shards_with_validation_and_document_ids(tmp_path, capsys):
    # a corpus of the synthetic chain written as real token shards (two files) plus a held-out shard
    chain = SyntheticLoader(64, 4095, 1, seed=1)
    train_dir, val_dir = tmp_path / "train", tmp_path / "val"
    train_dir.mkdir(), val_dir.mkdir()
    for i in range(2):
        write_shard(train_dir / f"part-{i}.bin", next(chain)[0][0].numpy().astype(np.uint16), vocab_size=64)
    write_shard(val_dir / "part-0.bin", chain.batch(99)[0][0].numpy().astype(np.uint16), vocab_size=64)
    run_dir = tmp_path / "run"
    args = [str(train_dir) if a == "synthetic" else a for a in TINY]
    code = main(["train", *args, "--val-data", str(val_dir), "--model-override", "eos_token_id=0", "--document-ids",
                 "--tokens", str(256 * 12), "--eval-every", "6", "--schedule", "wsd", "--run-dir", str(run_dir)])
    assert code == 0, capsys.readouterr().err
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in records if "val_loss" in r]
    assert [r["step"] for r in evals] == [6, 12] and all("val_loss_2x" in r for r in evals)
    assert evals[-1]["val_loss"] < evals[0]["val_loss"]
    train = train_records(run_dir)
    assert {"lr_matrices", "lr_vectors", "grad_norm_matrices", "grad_norm_vectors", "tokens_per_s"} <= set(train[0])
    saved = json.loads((run_dir / "config.json").read_text())
    assert saved["train"]["document_ids"] and saved["model"]["eos_token_id"] == 0 and saved["depth"] == 8


@pytest.mark.parametrize("extra, message", [
    (["--eta0", "-1"], "--eta0 must be a positive number (got -1.0)"),
    (["--eta0", "nan"], "--eta0 must be a positive number (got nan)"),
    (["--beta1", "2"], "--beta1 must be in [0, 1) (got 2.0)"),
    (["--threads", "-3"], "--threads must be a positive integer (got -3)"),
    (["--seq-len", "0"], "--seq-len must be a positive integer (got 0)"),
    (["--grad-clip", "-1"], "--grad-clip must be > 0"),
    (["--weight-decay", "-0.5"], "--weight-decay must be >= 0"),
])
def test_values_no_run_can_use_are_one_line_naming_the_option(extra, message, capsys, tmp_path):
    assert main(["train", *TINY, *extra, "--run-dir", str(tmp_path), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_device_cuda_without_a_gpu_is_one_line(capsys, tmp_path, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["train", *TINY, "--device", "cuda", "--run-dir", str(tmp_path), "--dry-run"]) == 2
    assert "--device cuda: no CUDA device is available" in capsys.readouterr().err


def test_a_text_corpus_given_as_data_suggests_preparing_shards(capsys, tmp_path):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text('{"text": "hello"}\n')
    assert main(["train", *_without(TINY, "--data"), "--data", str(corpus), "--tokens", "2K",
                 "--run-dir", str(tmp_path / "r")]) == 2
    assert "sambay data prepare --input" in capsys.readouterr().err


def test_the_progress_line_shows_the_latest_measured_rate_between_log_steps(tmp_path, capsys):
    from sambay.train.metrics import MetricsLogger

    log = MetricsLogger(tmp_path, enabled=True, total_steps=10, progress=True, tensorboard=False)
    log.bar = None  # plain lines, as when stderr is not a terminal
    log.progress_update(1, 2.5, {})
    log.progress_update(2, 2.4, {"tokens_per_s": 1234.0})
    log.progress_update(3, 2.3, {})
    log.close()
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("step")]
    assert lines == ["step 1 loss 2.5000", "step 2 loss 2.4000 tok/s 1,234", "step 3 loss 2.3000 tok/s 1,234"]
