"""`sambay generate --model MODEL --prompt TEXT`: stream a completion to stdout."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sambay.cli.main import CLIError, add_threads_option
from sambay.cli.models import DTYPES, MODEL_HELP, load_model, load_tokenizer_or_exit


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
    add_threads_option(p)
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


def run(args) -> int:
    from sambay.engine import ByteTokenizer, Generator

    params = _sampling(args)
    if args.compile and not args.device.startswith("cuda"):
        raise CLIError(f"--compile compiles the CUDA-graph decode step; it needs --device cuda (got {args.device})")
    if args.tokenizer is not None and not Path(args.tokenizer).expanduser().exists():
        raise CLIError(f"--tokenizer {args.tokenizer}: no such file or folder")
    model, tokenizer = load_model(args)
    if args.tokenizer is not None:
        tokenizer = load_tokenizer_or_exit(Path(args.tokenizer).expanduser())
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
