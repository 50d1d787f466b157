import argparse
import hashlib
import json

import sambay
from sambay.tokenizer import EOS_TOKEN, Tokenizer, load_tokenizer


def test_trained_tokenizer_encodes_every_digit_as_its_own_token(tokenizer_dir):
    tok = load_tokenizer(tokenizer_dir).tokenizer
    enc = tok.encode("call 5551234 or room 42, year 1999")
    digit_tokens = [t for t in enc.tokens if any(ch.isdigit() for ch in t)]
    assert digit_tokens == list("5551234") + list("42") + list("1999")


def test_no_vocabulary_entry_merges_a_digit_with_anything(tokenizer_dir):
    # stronger than one example: BPE never learned a merge containing a digit
    vocab = load_tokenizer(tokenizer_dir).tokenizer.get_vocab()
    assert [t for t in vocab if any(ch.isdigit() for ch in t) and len(t) > 1] == []


def test_tokenizer_files_name_eos_and_decode_is_lossless(tokenizer_dir):
    lt = load_tokenizer(tokenizer_dir)
    assert lt.eos_token == EOS_TOKEN and lt.eos_id == lt.tokenizer.token_to_id(EOS_TOKEN)
    cfg = json.loads((tokenizer_dir / "tokenizer_config.json").read_text())
    assert cfg["eos_token"] == EOS_TOKEN and cfg["add_bos_token"] is False
    text = "  Mixed café 東京 text\twith 123 numbers\n\nand émojis 🙂!"
    ids = lt.tokenizer.encode(text, add_special_tokens=False).ids
    assert lt.tokenizer.decode(ids) == text  # byte-level: any UTF-8 round-trips, no <unk>
    assert lt.tokenizer.encode("x").ids[:1] != [lt.eos_id]  # no BOS/EOS added by encode


def test_cli_tokenizer_train_writes_tokenizer_json_and_config(corpus, tmp_path):
    from sambay.cli import tokenizer as cli

    p = argparse.ArgumentParser()
    cli.add_parser(p.add_subparsers())
    out = tmp_path / "tok"
    args = p.parse_args(["tokenizer", "train", "--input", str(corpus[0] / "*.txt"),
                         "--vocab-size", "300", "--output", str(out)])
    assert args.func(args) == 0
    assert (out / "tokenizer.json").is_file() and (out / "tokenizer_config.json").is_file()
    assert load_tokenizer(out).vocab_size <= 300


def test_trained_tokenizer_loads_as_the_one_tokenizer_type(tokenizer_dir):
    tok = load_tokenizer(tokenizer_dir)
    assert isinstance(tok, Tokenizer) and sambay.load_tokenizer is load_tokenizer
    assert tok.file == tokenizer_dir / "tokenizer.json" and tok.tokenizer is tok.backend
    assert tok.sha256 == hashlib.sha256(tok.file.read_bytes()).hexdigest()
    assert tok.eos_token_ids == [tok.eos_id] and tok.chat_template is None
    assert tok.encode("room 42") == tok.backend.encode("room 42").ids


def test_tokenizer_train_keeps_an_existing_tokenizer_unless_forced(corpus, tmp_path, capsys):
    from sambay.cli.main import main

    out = tmp_path / "tok"
    argv = ["tokenizer", "train", "--input", str(corpus[0] / "*.txt"), "--vocab-size", "300", "--output", str(out)]
    assert main(argv) == 0
    before = (out / "tokenizer.json").read_bytes()
    (out / "tokenizer.json").write_bytes(before + b" ")
    assert main(argv) == 2
    assert "already holds a tokenizer" in capsys.readouterr().err
    assert (out / "tokenizer.json").read_bytes() == before + b" "  # untouched
    assert main([*argv, "--force"]) == 0 and (out / "tokenizer.json").read_bytes() == before
