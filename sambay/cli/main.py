"""`sambay <command>`: one CLI; each subcommand module registers itself through `add_parser`."""

from __future__ import annotations

import argparse
import importlib
import sys

# Every subcommand module, in help order. Each exposes add_parser(subparsers) and sets `func` (args -> int).
COMMAND_MODULES = (
    "sambay.cli.describe",
    "sambay.cli.generate",
    "sambay.cli.convert",
    "sambay.cli.train",
    "sambay.cli.data",
    "sambay.cli.tokenizer",
    "sambay.cli.scaling",
    "sambay.cli.bench",
)


class CLIError(Exception):
    """A bad command-line argument: printed as one line, exit code 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sambay", description="SambaY language models: describe, generate, "
                                     "convert, train, data, tokenizer, scaling, bench")
    from sambay import __version__

    parser.add_argument("--version", action="version", version=f"sambay {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name == name:  # subcommand not installed in this build
                continue
            raise
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    args.argv = argv  # the exact command, for result files
    try:
        return int(args.func(args) or 0)
    except CLIError as e:
        print(f"sambay {args.command}: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # e.g. `sambay generate ... | head`
        return 0


if __name__ == "__main__":
    sys.exit(main())
