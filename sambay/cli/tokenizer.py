"""``sambay tokenizer train``: byte-level BPE (digits split individually, ``<|endoftext|>`` as EOS)."""

from __future__ import annotations

import argparse
import sys


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("tokenizer", help="train tokenizers")
    sub = p.add_subparsers(dest="tokenizer_command", required=True)
    t = sub.add_parser("train", help="train a byte-level BPE tokenizer on text files",
                       description="Train a byte-level BPE (digits split one by one, <|endoftext|> as "
                                   "EOS) and write DIR/tokenizer.json + DIR/tokenizer_config.json.")
    t.add_argument("--input", nargs="+", required=True, metavar="FILE_OR_GLOB",
                   help=".txt (whole file = one document), .jsonl, .parquet files, dirs or globs")
    t.add_argument("--vocab-size", type=int, required=True, help="total vocab incl. 256 bytes + EOS")
    t.add_argument("--output", required=True, metavar="DIR", help="folder for tokenizer.json")
    t.add_argument("--text-field", default="text", help="JSON/parquet field holding the text")
    t.add_argument("--min-frequency", type=int, default=2, help="minimum pair count for a merge")
    t.add_argument("--force", action="store_true", help="replace a tokenizer already in --output")
    t.set_defaults(func=run_train)


def run_train(args: argparse.Namespace) -> int:
    from pathlib import Path

    from sambay.cli.main import CLIError
    from sambay.data.sources import DataError
    from sambay.tokenizer import load_tokenizer, train_tokenizer_from_files

    out = Path(args.output)
    if out.exists() and not out.is_dir():
        raise CLIError(f"--output {out} is a file, not a folder")
    if (out / "tokenizer.json").exists() and not args.force:
        raise CLIError(f"{out} already holds a tokenizer (tokenizer.json); pass --force to replace it")
    try:
        path = train_tokenizer_from_files(args.input, args.vocab_size, args.output,
                                          text_field=args.text_field, min_frequency=args.min_frequency,
                                          show_progress=sys.stderr.isatty())
    except (DataError, ValueError) as e:
        raise CLIError(str(e)) from None
    tok = load_tokenizer(path)
    note = "" if tok.vocab_size == args.vocab_size else (
        f" (asked for {args.vocab_size}; the corpus supports no more merges)")
    print(f"wrote {path}: vocab {tok.vocab_size}{note}, eos {tok.eos_token!r} = id {tok.eos_id}")
    return 0
