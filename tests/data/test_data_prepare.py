import json
import os
import shutil

import numpy as np
import pytest

from sambay.data.prepare import MANIFEST, PrepareConfig, prepare
from sambay.data.shards import read_shard
from sambay.data.sources import DataError
from sambay.tokenizer import load_tokenizer


def _decode_docs(out_dir, tok):
    """All documents of a prepared directory, in manifest order, split at EOS."""
    m = json.loads((out_dir / MANIFEST).read_text())
    stream = np.concatenate([read_shard(out_dir / s["file"]) for e in m["inputs"].values()
                             for s in e["shards"]]).astype(np.int64)
    assert stream[-1] == tok.eos_id  # every document, the last included, ends with EOS
    ends = np.flatnonzero(stream == tok.eos_id)
    starts = np.concatenate([[0], ends[:-1] + 1])
    return [tok.tokenizer.decode(stream[a:b].tolist()) for a, b in zip(starts, ends)], m


def _cfg(corpus, tok, out, **kw):
    kw.setdefault("progress", False)
    return PrepareConfig(tokenizer=str(tok), inputs=[str(corpus[0] / "*")], output=str(out), **kw)


def test_prepare_roundtrip_decodes_to_documents_plus_eos_across_small_shards(corpus, tokenizer_dir,
                                                                          tmp_path):
    root, docs = corpus
    tok = load_tokenizer(tokenizer_dir)
    prepare(_cfg(corpus, tokenizer_dir, tmp_path, shard_tokens=97))
    decoded, m = _decode_docs(tmp_path, tok)
    expected = [d for path in sorted(docs) for d in docs[path]]  # inputs in sorted path order
    assert decoded == expected
    shards = [s for e in m["inputs"].values() for s in e["shards"]]
    assert len(shards) > len(docs) and all(s["tokens"] <= 97 for s in shards)
    assert m["total_tokens"] == sum(s["tokens"] for s in shards)
    assert m["dtype"] == "uint16" and m["tokenizer"]["eos_id"] == tok.eos_id
    assert m["inputs"][str(root / "b.jsonl")]["documents"] == 12
    assert not list(tmp_path.glob(".tmp-*"))


def test_prepare_with_two_workers_gives_the_same_shards_as_one(corpus, tokenizer_dir, tmp_path):
    prepare(_cfg(corpus, tokenizer_dir, tmp_path / "w1", shard_tokens=500))
    prepare(_cfg(corpus, tokenizer_dir, tmp_path / "w2", shard_tokens=500, workers=2))
    for name in sorted(os.listdir(tmp_path / "w1")):
        if name.endswith(".bin"):
            assert (tmp_path / "w1" / name).read_bytes() == (tmp_path / "w2" / name).read_bytes()
    m1, m2 = (json.loads((tmp_path / w / MANIFEST).read_text()) for w in ("w1", "w2"))
    assert m1["inputs"].keys() == m2["inputs"].keys() and m1["total_tokens"] == m2["total_tokens"]


def test_rerun_skips_finished_inputs_and_only_tokenizes_new_or_changed_ones(corpus, tokenizer_dir,
                                                                           tmp_path):
    src = tmp_path / "src"
    shutil.copytree(corpus[0], src)
    cfg = PrepareConfig(tokenizer=str(tokenizer_dir), inputs=[str(src)], output=str(tmp_path / "out"),
                        progress=False)
    first = prepare(cfg)
    assert len(first.processed) == 3 and first.skipped == []
    again = prepare(cfg)
    assert again.processed == [] and len(again.skipped) == 3
    (src / "c.txt").write_text("a new document 7")
    with open(src / "a0.txt", "a") as f:
        f.write(" appended")
    third = prepare(cfg)
    assert sorted(third.processed) == [str((src / "a0.txt").resolve()), str((src / "c.txt").resolve())]
    decoded, _ = _decode_docs(tmp_path / "out", load_tokenizer(tokenizer_dir))
    assert decoded[0].endswith(" appended") and "a new document 7" in decoded


def test_interrupted_run_resumes_from_manifest_and_ignores_leftover_temp_files(corpus, tokenizer_dir,
                                                                               tmp_path):
    cfg = _cfg(corpus, tokenizer_dir, tmp_path)
    prepare(cfg)
    # simulate a crash after the first input: drop the others from the manifest, leave a temp file
    m = json.loads((tmp_path / MANIFEST).read_text())
    first = sorted(m["inputs"])[0]
    m["inputs"] = {first: m["inputs"][first]}
    (tmp_path / MANIFEST).write_text(json.dumps(m))
    (tmp_path / ".tmp-half.bin.123").write_bytes(b"junk")
    res = prepare(cfg)
    assert res.skipped == [first] and len(res.processed) == 2
    assert not (tmp_path / ".tmp-half.bin.123").exists()
    decoded, _ = _decode_docs(tmp_path, load_tokenizer(tokenizer_dir))
    assert decoded == [d for p in sorted(corpus[1]) for d in corpus[1][p]]


def test_rerun_with_a_different_tokenizer_is_refused(corpus, tokenizer_dir, tmp_path):
    prepare(_cfg(corpus, tokenizer_dir, tmp_path / "out"))
    other = tmp_path / "tok2"
    shutil.copytree(tokenizer_dir, other)
    data = json.loads((other / "tokenizer.json").read_text())
    data["added_tokens"].append({"id": max(data["model"]["vocab"].values()) + 1, "content": "<pad>",
                                 "single_word": False, "lstrip": False, "rstrip": False,
                                 "normalized": False, "special": True})
    (other / "tokenizer.json").write_text(json.dumps(data))
    with pytest.raises(DataError, match="different tokenizer"):
        prepare(_cfg(corpus, other, tmp_path / "out"))


def test_literal_eos_text_inside_a_document_is_not_a_document_boundary(tokenizer_dir, tmp_path):
    (tmp_path / "x.txt").write_text("before <|endoftext|> after")
    tok = load_tokenizer(tokenizer_dir)
    prepare(PrepareConfig(str(tokenizer_dir), [str(tmp_path / "x.txt")], str(tmp_path / "o"),
                          progress=False))
    tokens = np.concatenate([read_shard(p) for p in sorted((tmp_path / "o").glob("*.bin"))])
    assert int((tokens == tok.eos_id).sum()) == 1 and tokens[-1] == tok.eos_id


def test_input_errors_name_the_file_and_line(tokenizer_dir, tmp_path):
    def run(*inputs, **kw):
        prepare(PrepareConfig(str(tokenizer_dir), [str(i) for i in inputs], str(tmp_path / "o"),
                              progress=False, **kw))

    with pytest.raises(DataError, match="input file not found: .*nope.txt"):
        run(tmp_path / "nope.txt")
    with pytest.raises(DataError, match="matched no files"):
        run(tmp_path / "*.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n\n{"text": broken\n')
    with pytest.raises(DataError, match=r"bad\.jsonl:3: invalid JSON"):
        run(bad)
    bad.write_text('{"text": "ok"}\n{"body": "x"}\n')
    with pytest.raises(DataError, match=r"bad\.jsonl:2: field 'text' is missing"):
        run(bad)
    latin = tmp_path / "latin.txt"
    latin.write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(DataError, match="latin.txt: not valid UTF-8"):
        run(latin)
    with pytest.raises(DataError, match="tokenizer not found"):
        prepare(PrepareConfig(str(tmp_path / "no-tok"), [str(latin)], str(tmp_path / "o")))


def test_parquet_without_pyarrow_is_a_clear_error(tokenizer_dir, tmp_path):
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("pyarrow is installed")
    (tmp_path / "d.parquet").write_bytes(b"PAR1")
    with pytest.raises(DataError, match="needs the optional dependency pyarrow"):
        prepare(PrepareConfig(str(tokenizer_dir), [str(tmp_path / "d.parquet")], str(tmp_path / "o"),
                              progress=False))


def test_cli_data_prepare_runs_and_reports_errors(corpus, tokenizer_dir, tmp_path, capsys):
    import argparse

    from sambay.cli import data as cli

    p = argparse.ArgumentParser()
    cli.add_parser(p.add_subparsers())
    args = p.parse_args(["data", "prepare", "--tokenizer", str(tokenizer_dir), "--input",
                         str(corpus[0] / "*.txt"), "--output", str(tmp_path / "o"), "--quiet"])
    assert args.func(args) == 0
    assert "2 inputs tokenized" in capsys.readouterr().out
    args = p.parse_args(["data", "prepare", "--tokenizer", str(tokenizer_dir), "--input",
                         str(tmp_path / "missing.txt"), "--output", str(tmp_path / "o")])
    assert args.func(args) == 2
    assert "input file not found" in capsys.readouterr().err


def test_a_checkpoint_trained_on_prepared_data_carries_its_tokenizer_and_eos(corpus, tokenizer_dir, tmp_path):
    """Generating from a checkpoint of `sambay train` needs nothing else: the tokenizer the data was prepared
    with is copied in and the model config names the data's EOS id."""
    import sambay
    from sambay.data.prepare import PrepareConfig, prepare
    from sambay.tokenizer import load_tokenizer
    from sambay.train.config import TrainConfig
    from sambay.train.trainer import Trainer

    root, _ = corpus
    shards = tmp_path / "shards"
    manifest = prepare(PrepareConfig(tokenizer=str(tokenizer_dir), inputs=[str(root / "*")], output=str(shards),
                                     progress=False)).manifest
    cfg = TrainConfig(tiny=True, depth=8, model_overrides={"d_model": 32, "vocab_size": 400}, tokens=128 * 4,
                      seq_len=32, micro_batch=4, batch_tokens=128, data=str(shards), run_dir=str(tmp_path / "run"),
                      progress=False, tensorboard=False)
    trainer = Trainer(cfg)
    trainer.train_step()
    path = trainer.save()
    assert (path / "tokenizer.json").is_file()
    model = sambay.from_pretrained(path)
    assert model.config.eos_token_id == manifest["tokenizer"]["eos_id"]
    tok = load_tokenizer(path)
    assert tok.encode("the café") == load_tokenizer(tokenizer_dir).encode("the café")


def test_a_tiny_model_takes_its_vocabulary_from_the_prepared_data(corpus, tokenizer_dir, tmp_path):
    from sambay.data.prepare import PrepareConfig, prepare
    from sambay.train.config import TrainConfig
    from sambay.train.trainer import build_model_config

    root, _ = corpus
    shards = tmp_path / "shards"
    manifest = prepare(PrepareConfig(tokenizer=str(tokenizer_dir), inputs=[str(root / "*")], output=str(shards),
                                     progress=False)).manifest
    cfg = TrainConfig(tiny=True, depth=8, data=str(shards), tokens=1000, run_dir=str(tmp_path / "run"))
    assert build_model_config(cfg).vocab_size == manifest["tokenizer"]["vocab_size"]
    override = TrainConfig(tiny=True, depth=8, data=str(shards), tokens=1000, model_overrides={"vocab_size": 512})
    assert build_model_config(override).vocab_size == 512  # an explicit choice wins
