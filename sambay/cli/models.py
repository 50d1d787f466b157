"""What `--model` means for the commands that run a model (generate, serve): a checkpoint folder, a training
run folder (its newest checkpoint), a full-size preset or a tiny one, both with random weights."""

from __future__ import annotations

import sys
from pathlib import Path

from sambay.cli.main import CLIError
from sambay.config import PRESETS

MODEL_HELP = f"""\
what to run:
  DIR           a checkpoint folder (loaded with sambay.from_pretrained; its tokenizer, if any, is used)
  PRESET        a full-size preset with RANDOM weights (seed 0; mostly for timing): {', '.join(PRESETS)}
  tiny:PRESET   a tiny random-weight version of a preset (d_model 64, byte vocabulary), e.g. tiny:sambay

Without a tokenizer (presets, or --tokenizer not given) the prompt is fed as UTF-8 bytes (token ids 0-255)
and generated ids are printed as bytes (ids >= 256 as <|id|>); that needs a vocabulary of >= 256 tokens.
Random weights produce random text: this is a smoke test of the engine, not a demo of the model."""

DTYPES = {"float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16",
          "float16": "float16", "fp16": "float16"}


def load_tokenizer_or_exit(path):
    from sambay.tokenizer import load_tokenizer

    try:
        return load_tokenizer(path)
    except Exception as e:  # the loader's errors are one readable line
        raise CLIError(f"cannot load the tokenizer from {path}: {e}") from None


def load_model(args):
    """-> (model, tokenizer or None)."""
    import torch

    from sambay.config import ConfigError, ModelConfig, tiny

    spec = args.model
    dtype = DTYPES[args.dtype] if args.dtype else None
    path = Path(spec).expanduser()
    if (path / "checkpoints").is_dir():  # a training run folder: its newest checkpoint
        from sambay.train.checkpoint import find_latest

        latest = find_latest(path)
        if latest is None:
            raise CLIError(f"--model {spec}: this training run has no checkpoint yet")
        print(f"[sambay] using the newest checkpoint of the run: {latest}", file=sys.stderr)
        path = latest
    # a folder is a checkpoint only when it holds a config.json, so `--model sambay` run inside a checkout of
    # this repository (which has a sambay/ folder) still means the preset
    if path.is_dir() and (path / "config.json").is_file():
        if args.depth is not None:
            raise CLIError("--depth applies to presets only, not to a checkpoint folder")
        try:
            from sambay import from_pretrained
        except ImportError:
            raise CLIError("this build cannot load checkpoint folders (sambay.from_pretrained is missing)") from None
        try:
            model = from_pretrained(path, dtype=dtype, device=args.device)
        except Exception as e:
            raise CLIError(f"cannot load {path}: {e}") from None
        tokenizer = None
        if args.tokenizer is None and any((path / n).is_file() for n in ("tokenizer.json", "tokenizer_config.json")):
            tokenizer = load_tokenizer_or_exit(path)
        return model, tokenizer
    name = spec.removeprefix("tiny:")
    if name not in PRESETS:
        if path.is_dir():
            raise CLIError(f"--model {spec}: the folder has no config.json, so it is not a checkpoint folder")
        if path.exists():
            raise CLIError(f"--model {spec}: is a file, not a checkpoint folder")
        if "/" in spec or "\\" in spec or spec.startswith((".", "~")):
            raise CLIError(f"--model {spec}: no such checkpoint folder")
        raise CLIError(f"--model {spec}: not a preset or a folder; presets: {', '.join(PRESETS)} "
                       "(prefix tiny: for a tiny model, e.g. tiny:sambay)")
    try:
        if spec.startswith("tiny:"):
            config = tiny(name, depth=8 if args.depth is None else args.depth)
        else:
            config = ModelConfig.from_preset(name, depth=args.depth)
    except ConfigError as e:
        raise CLIError(str(e)) from None
    from sambay.model import CausalLM

    torch.manual_seed(0)
    try:
        model = CausalLM(config).to(device=args.device, dtype=getattr(torch, dtype or "float32"))
    except (RuntimeError, ValueError) as e:
        raise CLIError(f"cannot place the model on {args.device}: {e}") from None
    return model.eval(), None


