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
