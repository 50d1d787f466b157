"""``sambay data prepare``: tokenize corpora into resumable binary token shards."""

from __future__ import annotations

import argparse
import sys


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("data", help="prepare training data")
    sub = p.add_subparsers(dest="data_command", required=True)
    d = sub.add_parser(
        "prepare", help="tokenize text into binary token shards",
        description="Tokenize documents (EOS appended, no BOS) into packed binary shards plus a "
                    "manifest.json. Rerunning skips inputs that are already complete.")
    d.add_argument("--tokenizer", required=True, help="tokenizer.json or the directory holding it")
    d.add_argument("--input", nargs="+", required=True, metavar="FILE_OR_GLOB",
                   help=".txt (whole file = one document), .jsonl (one document per line), .parquet "
                        "(needs pyarrow); .txt/.jsonl may be .gz; directories and globs expand")
    d.add_argument("--output", required=True, metavar="DIR", help="folder for the shards and manifest.json")
    d.add_argument("--workers", type=int, default=1, help="processes, one input file at a time each")
    d.add_argument("--shard-tokens", type=int, default=1 << 26, help="max tokens per shard")
    d.add_argument("--text-field", default="text", help="JSON/parquet field holding the text")
    d.add_argument("--quiet", action="store_true", help="no progress output")
    d.set_defaults(func=run_prepare)


def run_prepare(args: argparse.Namespace) -> int:
    from sambay.data.prepare import PrepareConfig, prepare
    from sambay.data.sources import DataError

    config = PrepareConfig(tokenizer=args.tokenizer, inputs=list(args.input), output=args.output,
                           workers=args.workers, shard_tokens=args.shard_tokens,
                           text_field=args.text_field, progress=not args.quiet)
    try:
        result = prepare(config)
    except (DataError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    m = result.manifest
    print(f"{args.output}: {m['total_tokens']:,} tokens in "
          f"{sum(len(e['shards']) for e in m['inputs'].values())} shards ({m['dtype']}); "
          f"{len(result.processed)} inputs tokenized, {len(result.skipped)} already done")
    return 0
