"""`sambay convert`: checkpoints between ArchScale, Hugging Face phi4flash and sambay's own format.

    sambay convert --from archscale iter-050000-ckpt.pth --preset sambay --depth 16 --out DIR
    sambay convert --from phi4flash HF_DIR --out DIR                 # -> sambay format (default)
    sambay convert --from sambay DIR --to phi4flash --out HF_DIR      # export for the HF remote code
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from sambay.cli.main import CLIError

# Files copied from a source folder next to the converted weights (when present).
AUX_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
             "generation_config.json", "chat_template.jinja", "tokenizer.model")
# Remote-code files of the Hugging Face model: only meaningful next to a phi4flash-format folder.
REMOTE_CODE_FILES = ("configuration_phi4flash.py", "modeling_phi4flash.py")


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "convert", help="convert checkpoints (ArchScale .pth, Hugging Face phi4flash, sambay format)",
        description="Convert a checkpoint to a sambay-format or phi4flash-format (Hugging Face) folder. "
                    "Pickle files are read only for --from archscale, with torch.load(weights_only=True).")
    p.add_argument("source", help="ArchScale checkpoint file (iter-XXXXXX-ckpt.pth) or a checkpoint folder")
    p.add_argument("--from", dest="src_format", required=True, choices=("archscale", "phi4flash", "sambay"),
                   help="format of SOURCE")
    p.add_argument("--to", "--format", dest="dst_format", default="sambay", choices=("sambay", "phi4flash"),
                   help="format to write (default: sambay)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--preset", help="sambay preset of an ArchScale model (e.g. sambay, sambay-da, samba)")
    p.add_argument("--depth", type=int, help="depth of an ArchScale model (e.g. 16)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a ModelConfig field of an ArchScale import (VALUE is JSON, e.g. "
                        "--set parametrization='\"sp\"' or --set tie_embeddings=true); repeatable")
    p.add_argument("--dtype", default="auto", choices=("auto", "float32", "bfloat16", "float16"),
                   help="dtype of the written weights (default: as stored; A_log and D always keep theirs)")
    p.add_argument("--max-shard-size", default="5GB", help="largest safetensors shard (default 5GB)")
    p.add_argument("--force", action="store_true", help="write into an output folder that already has a checkpoint")
    p.set_defaults(func=run)


def _parse_overrides(items: list[str]) -> dict:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CLIError(f"--set expects KEY=VALUE, got {item!r}")
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value  # a bare string, e.g. --set parametrization=sp
    return out


def _copy_aux(src: Path, dst: Path, dst_format: str) -> list[str]:
    if not src.is_dir():
        return []
    names = AUX_FILES + (REMOTE_CODE_FILES if dst_format == "phi4flash" else ())
    copied = []
    for name in names:
        f = src / name
        # the source's generation_config.json replaces the one save_pretrained wrote: it holds what the
        # written one cannot, e.g. several eos ids ([<|end|>, <|endoftext|>]) and sampling defaults
        if f.is_file() and (name == "generation_config.json" or not (dst / name).exists()):
            shutil.copy2(f, dst / name)
            copied.append(name)
    return copied


def run(args: argparse.Namespace) -> int:
    from sambay.config import ConfigError
    from sambay.interop.errors import CheckpointError
    from sambay.interop.sharded_save import parse_size

    src, out = Path(args.source), Path(args.out)
    try:
        parse_size(args.max_shard_size)
    except ValueError as e:
        raise CLIError(str(e)) from None
    if not src.exists():
        raise CLIError(f"source not found: {src}")
    if out.exists() and not out.is_dir():
        raise CLIError(f"--out {out} is a file")
    if src.resolve() == out.resolve():
        raise CLIError("--out must differ from the source")
    if (out / "config.json").exists() and not args.force:
        raise CLIError(f"{out} already holds a checkpoint (config.json); pass --force to overwrite it")
    if args.src_format == "archscale":
        if args.preset is None or args.depth is None:
            raise CLIError("--from archscale needs --preset and --depth (e.g. --preset sambay --depth 16)")
    elif args.preset is not None or args.depth is not None or args.overrides:
        raise CLIError("--preset, --depth and --set apply to --from archscale only (a folder has its own config)")
    overrides = _parse_overrides(args.overrides)
    dtype = None if args.dtype == "auto" else args.dtype
    try:
        if args.src_format == "archscale":
            from sambay.interop.archscale import convert_archscale

            _, config = convert_archscale(src, args.preset, args.depth, out, format=args.dst_format,
                                          overrides=overrides, dtype=dtype, max_shard_size=args.max_shard_size)
        else:
            from sambay.interop.pretrained import from_pretrained, read_folder_config, save_pretrained

            found, _ = read_folder_config(src) if src.is_dir() else (None, None)
            if found is not None and found != args.src_format:
                raise CLIError(f"{src} is a {found}-format folder, not {args.src_format} (use --from {found})")
            model = from_pretrained(src, dtype=dtype)
            config = model.config
            save_pretrained(model, out, format=args.dst_format, max_shard_size=args.max_shard_size)
        copied = _copy_aux(src, out, args.dst_format)
    except (CheckpointError, ConfigError) as e:
        raise CLIError(str(e)) from None
    n_layer = config.n_layer
    extra = f"; copied {', '.join(copied)}" if copied else ""
    print(f"wrote {args.dst_format}-format checkpoint to {out} ({config.arch}, {n_layer} layers, "
          f"d_model {config.d_model}){extra}")
    return 0
