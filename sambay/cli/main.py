"""`sambay <command>`: one CLI; each subcommand module registers itself through `add_parser`."""

from __future__ import annotations

import argparse
import importlib
import re
import sys

# Every subcommand module, in help order. Each exposes add_parser(subparsers) and sets `func` (args -> int).
COMMAND_MODULES = (
    "sambay.cli.describe",
    "sambay.cli.generate",
    "sambay.cli.serve",
    "sambay.cli.eval",
    "sambay.cli.convert",
    "sambay.cli.train",
    "sambay.cli.data",
    "sambay.cli.tokenizer",
    "sambay.cli.scaling",
    "sambay.cli.bench",
)


class CLIError(Exception):
    """A bad command-line argument: printed as one line, exit code 2."""


_SUFFIX = {"": 1, "K": 10**3, "M": 10**6, "B": 10**9, "G": 10**9, "T": 10**12}


def parse_count(text: str) -> int:
    """'4096', '1e9', '2**21', '12.7B', '500M' -> int."""
    s = str(text).strip().replace("_", "")
    m = re.fullmatch(r"(\d+)\*\*(\d+)", s)
    if m:
        return int(m.group(1)) ** int(m.group(2))
    m = re.fullmatch(r"([0-9.]+(?:[eE][+-]?\d+)?)([KMBGT]?)", s, flags=re.IGNORECASE)
    if not m:
        raise argparse.ArgumentTypeError(f"not a count: {text!r} (examples: 4096, 1e9, 2**21, 12.7B)")
    return int(round(float(m.group(1)) * _SUFFIX[m.group(2).upper()]))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sambay", description="SambaY language models: describe, generate, "
                                     "serve, eval, convert, train, data, tokenizer, scaling, bench")
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


def add_threads_option(p: argparse.ArgumentParser) -> None:
    """--threads for a command that runs a model on the CPU (applied by `main` before the command runs)."""
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="CPU threads for torch (default: torch's; on a busy or small machine 1 is often fastest)")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    args.argv = argv  # the exact command, for result files
    try:
        threads = getattr(args, "threads", None)
        if threads is not None and args.command != "train":  # (train applies its own, per process)
            if threads < 1:
                raise CLIError(f"--threads must be >= 1 (got {threads})")
            import torch

            torch.set_num_threads(threads)
        return int(args.func(args) or 0)
    except CLIError as e:
        print(f"sambay {args.command}: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # e.g. `sambay generate ... | head`
        return 0


if __name__ == "__main__":
    # `python -m sambay.cli.main`: this file runs as `__main__`, a second copy of the module next to the
    # `sambay.cli.main` that the subcommands import CLIError from; run that one, so its `except CLIError` matches.
    from sambay.cli.main import main as _imported_main

    sys.exit(_imported_main())
