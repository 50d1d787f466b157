"""`sambay generate --model MODEL --prompt TEXT`: stream a completion to stdout."""

from __future__ import annotations

import argparse
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


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "generate", help="generate text with a model (streams tokens to stdout)",
        description="Generate a completion for one prompt, streaming it to stdout.", epilog=MODEL_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, metavar="MODEL", help="DIR, PRESET or tiny:PRESET (see below)")
    text = p.add_mutually_exclusive_group(required=True)
    text.add_argument("--prompt", help="the prompt text, fed as is")
    text.add_argument("--chat", metavar="MESSAGE", help="a user message, wrapped in the tokenizer's chat template "
                      "(generation stops at the model's end-of-turn tokens)")
    p.add_argument("--system", default=None, help="system message for --chat")
    p.add_argument("--max-new-tokens", type=int, default=128, metavar="N", help="tokens to generate (default 128)")
    p.add_argument("--temperature", type=float, default=1.0, metavar="T", help="0 = greedy (default 1.0)")
    p.add_argument("--top-p", type=float, default=1.0, metavar="P", help="nucleus sampling mass (default 1.0: off)")
    p.add_argument("--top-k", type=int, default=0, metavar="K", help="sample among the K most likely (default 0: off)")
    p.add_argument("--min-p", type=float, default=0.0, help="drop tokens below min-p x the top probability")
    p.add_argument("--repetition-penalty", type=float, default=1.0, help="> 1 discourages repeats (default 1.0)")
    p.add_argument("--seed", type=int, default=None, metavar="S", help="sampling seed (reproducible output)")
    p.add_argument("--stop", action="append", default=[], metavar="STR", help="stop string (repeatable)")
    p.add_argument("--depth", type=int, default=None, help="layers of a PRESET or tiny:PRESET model")
    p.add_argument("--tokenizer", default=None, metavar="PATH", help="tokenizer folder or tokenizer.json")
    p.add_argument("--dtype", default=None, choices=sorted(DTYPES),
                   help="model dtype (default: the checkpoint's; float32 for presets)")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.add_argument("--chunk-size", type=int, default=512, help="prefill chunk length (default 512)")
    p.add_argument("--stats", action="store_true", help="print timings to stderr at the end")
    p.add_argument("--compile", action="store_true",
                   help="compile the CUDA-graph decode step with inductor (CUDA only; faster steps after ~35 s of compiling)")
    p.set_defaults(func=run)


def _sampling(args):
    from sambay.engine import SamplingParams

    if args.max_new_tokens < 0:
        raise CLIError(f"--max-new-tokens must be >= 0 (got {args.max_new_tokens})")
    if args.temperature < 0:
        raise CLIError(f"--temperature must be >= 0 (0 = greedy; got {args.temperature})")
    if args.chunk_size < 1:
        raise CLIError(f"--chunk-size must be >= 1 (got {args.chunk_size})")
    if args.depth is not None and args.depth < 1:
        raise CLIError(f"--depth must be >= 1 (got {args.depth})")
    try:
        return SamplingParams(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_k=args.top_k,
                              top_p=args.top_p, min_p=args.min_p, repetition_penalty=args.repetition_penalty,
                              seed=args.seed, stop=tuple(args.stop))
    except ValueError as e:
        raise CLIError(str(e).replace("_", "-")) from None


def _chat_prompt(args, tokenizer) -> str:
    """Render --chat (and --system) with the tokenizer's chat template, ending with the assistant cue."""
    if not hasattr(tokenizer, "apply_chat_template"):
        raise CLIError("--chat needs a tokenizer with a chat template (a model folder with tokenizer files, "
                       "or --tokenizer)")
    if not args.chat:
        raise CLIError("--chat is empty")
    messages = ([{"role": "system", "content": args.system}] if args.system else []) + [
        {"role": "user", "content": args.chat}]
    try:
        return tokenizer.apply_chat_template(messages, add_generation_prompt=True)
    except Exception as e:  # no template, or the template rejected the messages
        raise CLIError(f"cannot apply the chat template: {e}") from None


def _load_tokenizer(path):
    from sambay.tokenizer import load_tokenizer

    try:
        return load_tokenizer(path)
    except Exception as e:  # the loader's errors are one readable line
        raise CLIError(f"cannot load the tokenizer from {path}: {e}") from None


def _model(args):
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
            tokenizer = _load_tokenizer(path)
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


def run(args) -> int:
    from sambay.engine import ByteTokenizer, Generator

    params = _sampling(args)
    if args.compile and not args.device.startswith("cuda"):
        raise CLIError(f"--compile compiles the CUDA-graph decode step; it needs --device cuda (got {args.device})")
    if args.tokenizer is not None and not Path(args.tokenizer).expanduser().exists():
        raise CLIError(f"--tokenizer {args.tokenizer}: no such file or folder")
    model, tokenizer = _model(args)
    if args.tokenizer is not None:
        tokenizer = _load_tokenizer(Path(args.tokenizer).expanduser())
    if tokenizer is None:
        if model.config.vocab_size < 256:
            raise CLIError(f"the model's vocabulary ({model.config.vocab_size}) is too small for byte prompts; "
                           "pass --tokenizer")
        tokenizer = ByteTokenizer()
    prompt = _chat_prompt(args, tokenizer) if args.chat is not None else args.prompt
    if not prompt:
        raise CLIError("--prompt is empty")
    generator = Generator(model, tokenizer, max_batch=1, chunk_size=args.chunk_size, compile=args.compile)
    try:
        stream = generator.stream(prompt, params)
        last = None
        for chunk in stream:
            if chunk.text:
                sys.stdout.write(chunk.text)
                sys.stdout.flush()
            last = chunk
    except ValueError as e:  # e.g. a prompt longer than the model's max_seq_len
        raise CLIError(str(e)) from None
    sys.stdout.write("\n")
    sys.stdout.flush()
    if args.stats and last is not None and last.result is not None:
        r, t = last.result, last.result.timings
        print(f"[{len(r.prompt_token_ids)} prompt tokens, {len(r.token_ids)} generated, finish: {r.finish_reason}; "
              f"prefill {t.prefill_s * 1e3:.1f} ms, decode {t.decode_tokens_per_s:.1f} tokens/s]", file=sys.stderr)
    return 0
