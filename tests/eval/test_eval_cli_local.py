"""`sambay eval mqar | perplexity`: the model's own forward (no extra packages)."""

import json

import pytest
import torch
from serve.serve_helpers import write_chat_model

from sambay import from_pretrained
from sambay.cli.main import main


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_chat_model(tmp_path_factory.mktemp("local") / "m", max_seq_len=128)


def test_mqar_prints_accuracy_per_number_of_pairs(folder, tmp_path, capsys):
    assert main(["eval", "mqar", "--model", str(folder), "--seq-len", "64", "--kv-pairs", "2,4", "--examples", "8",
                 "--output", str(tmp_path)]) == 0
    assert capsys.readouterr().out.count("accuracy") == 2
    report = json.loads((tmp_path / "mqar.json").read_text())
    assert set(report["accuracy"]) == {"2", "4"} and all(0 <= v <= 1 for v in report["accuracy"].values())


def test_perplexity_of_a_text_file_matches_the_models_loss(folder, tmp_path, capsys):
    text = tmp_path / "held_out.txt"
    text.write_text("the quick brown fox jumps over the lazy dog. " * 40)
    assert main(["eval", "perplexity", "--model", str(folder), "--data", str(text), "--lengths", "32,64",
                 "--output", str(tmp_path / "out")]) == 0
    results = json.loads((tmp_path / "out" / "perplexity.json").read_text())["results"]
    assert [r["length"] for r in results] == [32, 64]
    from sambay import load_tokenizer
    from sambay.eval.perplexity import load_token_ids

    ids = load_token_ids(text, load_tokenizer(folder))
    model = from_pretrained(folder)
    n = len(ids) // 64 * 64
    with torch.no_grad():  # stride == length: the model's own loss over the same non-overlapping windows
        loss = model(ids[:n].view(-1, 64), labels=ids[:n].view(-1, 64)).loss.item()
    assert results[1]["loss"] == pytest.approx(loss, rel=2e-3)


@pytest.mark.parametrize("argv, words", [
    (["mqar", "--base-url", "http://127.0.0.1:9"], "give --model"),
    (["mqar", "--model", "M", "--kv-pairs", "x"], "--kv-pairs takes comma-separated integers"),
    (["mqar", "--model", "M", "--seq-len", "8", "--kv-pairs", "16"], "too short"),
    (["perplexity", "--model", "M", "--data", "/nonexistent.txt"], "--data /nonexistent.txt"),
])
def test_bad_arguments_are_one_line_errors(folder, capsys, argv, words):
    argv = [str(folder) if a == "M" else a for a in argv]
    assert main(["eval", *argv]) == 2
    err = capsys.readouterr().err
    assert words in err and "Traceback" not in err
