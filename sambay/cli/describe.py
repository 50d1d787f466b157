"""`sambay describe PRESET [--depth N] [--length T]`: the layer plan, parameter counts and state size."""

from __future__ import annotations

from sambay.cli.main import CLIError, parse_count
from sambay.config import PRESETS, ConfigError, ModelConfig


def add_parser(sub) -> None:
    p = sub.add_parser("describe", help="print a preset's layer plan, parameters and inference state size")
    p.add_argument("preset", help=f"one of: {', '.join(PRESETS)}")
    p.add_argument("--depth", type=int, default=None, help="number of layers (research presets: 8-24)")
    p.add_argument("--length", type=parse_count, default=None,
                   help="also report the state bytes at this sequence length (e.g. 32768; 32K means 32,000)")
    p.set_defaults(func=run)


def run(args) -> int:
    from sambay.describe import describe

    if args.length is not None and args.length < 0:
        raise CLIError(f"--length must be >= 0 (got {args.length})")
    try:
        config = ModelConfig.from_preset(args.preset, depth=args.depth)
    except ConfigError as e:
        raise CLIError(str(e)) from None
    print(describe(config, seq_len=args.length))
    return 0
