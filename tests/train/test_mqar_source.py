"""`sambay train --data mqar:...`: the spec, the loader (loss only on the answers, a pure function of the
step), a short CPU run, and a resumed run that reproduces the uninterrupted losses."""

import json
import math

import pytest
import torch
from train_helpers import TINY, losses

from sambay.cli.main import main
from sambay.data.sources import DataError
from sambay.train.data import MQARLoader, is_mqar, parse_mqar

SPEC = "mqar:num_kv_pairs=4,seq_len=32"


def _args(data: str = SPEC, drop_seq_len: bool = True) -> list[str]:
    args = [data if a == "synthetic" else a for a in TINY]
    if drop_seq_len:  # the spec's seq_len is the training length
        i = args.index("--seq-len")
        args = args[:i] + args[i + 2:]
    i = args.index("--batch-tokens")
    args = args[:i] + ["--batch-tokens", "64", "--base-batch-tokens", "64"] + args[i + 4:]
    i = args.index("--warmup-tokens")
    return args[:i] + ["--warmup-tokens", "64"] + args[i + 2:]


def test_the_spec_is_parsed_with_defaults_and_unknown_keys_are_refused():
    assert is_mqar("mqar") and is_mqar(SPEC) and not is_mqar("synthetic") and not is_mqar("mqar_dir")
    assert parse_mqar("mqar") == {"num_kv_pairs": 8, "seq_len": None, "vocab_size": None, "power_a": 0.01,
                                  "random_non_queries": True}
    spec = parse_mqar("mqar: num_kv_pairs=16, seq_len=256,vocab_size=8192,power_a=0.1,random_non_queries=false")
    assert spec == {"num_kv_pairs": 16, "seq_len": 256, "vocab_size": 8192, "power_a": 0.1,
                    "random_non_queries": False}
    with pytest.raises(DataError, match="unknown mqar key 'kv'.*keys: num_kv_pairs, seq_len"):
        parse_mqar("mqar:kv=4")
    with pytest.raises(DataError, match="num_kv_pairs='four' is not a valid int"):
        parse_mqar("mqar:num_kv_pairs=four")
    with pytest.raises(DataError, match="expected KEY=VALUE"):
        parse_mqar("mqar:num_kv_pairs")


def test_the_loader_scores_only_the_answers_and_is_a_function_of_the_step():
    loader = MQARLoader(parse_mqar(SPEC), 64, 32, 3, seed=5)
    x, y = next(loader)
    assert x.shape == y.shape == (3, 32)
    assert ((y != -100).sum(1) == 4).all() and ((y == -100) | (y >= 32)).all()  # values are the upper half
    state = loader.state_dict()
    second = next(loader)
    fresh = MQARLoader(parse_mqar(SPEC), 64, 32, 3, seed=5)
    fresh.load_state_dict(state)
    assert all(torch.equal(a, b) for a, b in zip(next(fresh), second))
    with pytest.raises(ValueError, match="state mismatch in 'seed'"):
        MQARLoader(parse_mqar(SPEC), 64, 32, 3, seed=6).load_state_dict(state)
    with pytest.raises(DataError, match="seq_len 8 is too short for 4 key-value pairs"):
        MQARLoader(parse_mqar("mqar:num_kv_pairs=4"), 64, 8, 3)
    with pytest.raises(DataError, match="exceeds the model's vocabulary"):
        MQARLoader(parse_mqar("mqar:vocab_size=128"), 64, 32, 3)


@pytest.mark.parametrize("extra, message", [
    (["--data", "mqar:num_kv_pairs=4,colour=red"], "unknown mqar key 'colour'"),
    (["--data", "mqar:num_kv_pairs=4,seq_len=32", "--seq-len", "16"], "seq_len=32 but the training length is 16"),
    (["--data", "mqar:num_kv_pairs=16,seq_len=32"], "seq_len 32 is too short for 16 key-value pairs"),
], ids=["unknown-key", "seq-len-mismatch", "too-many-pairs"])
def test_bad_specs_are_usage_errors(extra, message, tmp_path, capsys):
    assert main(["train", *_args(), *extra, "--tokens", "64", "--run-dir", str(tmp_path / "run")]) == 2
    assert message in capsys.readouterr().err


def test_the_plan_takes_the_specs_sequence_length(capsys):
    assert main(["train", *_args("mqar:num_kv_pairs=4,seq_len=64"), "--batch-tokens", "128", "--tokens", "1280",
                 "--dry-run"]) == 0
    assert json.loads(capsys.readouterr().out)["plan"]["seq_len"] == 64


def test_a_short_cpu_run_trains_and_resumes_with_identical_losses(tmp_path, capsys):
    args = [*_args(), "--tokens", str(64 * 6), "--ckpt-every", "3", "--eval-every", "3", "--eval-batches", "1"]
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    assert main(["train", *args, "--run-dir", str(whole)]) == 0
    reference = losses(whole)
    assert sorted(reference) == list(range(1, 7))
    assert reference[1] == pytest.approx(math.log(64), rel=1e-4)  # μP++'s zero head: uniform over the vocabulary
    records = [json.loads(line) for line in (whole / "metrics.jsonl").read_text().splitlines()]
    assert any("val_loss" in r and "val_loss_2x" in r for r in records)

    assert main(["train", *args, "--run-dir", str(broken), "--max-steps", "3"]) == 0
    assert sorted(losses(broken)) == [1, 2, 3]
    assert main(["train", *args, "--run-dir", str(broken), "--resume", "auto"]) == 0
    assert "at step 3" in capsys.readouterr().out
    assert losses(broken) == reference
