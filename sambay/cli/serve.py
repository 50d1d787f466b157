"""`sambay serve --model DIR`: an OpenAI-compatible HTTP server (sambay.serve) for one model."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from sambay.cli.main import CLIError, add_threads_option, parse_count
from sambay.cli.models import DTYPES, MODEL_HELP, load_model, load_tokenizer_or_exit

EPILOG = MODEL_HELP + """

Call it with any OpenAI client:
  from openai import OpenAI
  client = OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="EMPTY")
  client.chat.completions.create(model=client.models.list().data[0].id, messages=[{"role": "user", "content": "Hi"}])

SIGTERM (or Ctrl-C) drains: no new requests; running ones get --drain-timeout seconds to finish."""


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "serve", help="serve a model over an OpenAI-compatible HTTP API",
        description="Serve one model over HTTP: /v1/completions, /v1/chat/completions, /v1/models, /health, "
        "/metrics (Prometheus), /tokenize, /detokenize, /version.", epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, metavar="MODEL", help="DIR, PRESET or tiny:PRESET (see below)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="TCP port (default 8000)")
    p.add_argument("--served-model-name", default=None, metavar="NAME",
                   help="the model id clients send (default: the folder's name, or the preset)")
    p.add_argument("--api-key", default=None, metavar="KEY",
                   help="require 'Authorization: Bearer KEY' on /v1/* (default: $SAMBAY_API_KEY, else none)")
    p.add_argument("--tokenizer", default=None, metavar="PATH", help="tokenizer folder or tokenizer.json "
                   "(default: the model folder's)")
    p.add_argument("--chat-template", default=None, metavar="FILE_OR_TEXT",
                   help="a Jinja chat template (a file, or the template itself) instead of the tokenizer's")
    p.add_argument("--generation-config", default="auto", metavar="auto|none|PATH",
                   help="default sampling for fields a request leaves out: auto = the model folder's "
                   "generation_config.json (default), none = OpenAI's defaults, or a file or folder")
    p.add_argument("--reasoning-parser", default=None, choices=("deepseek_r1", "qwen3"),
                   help="split chat answers into reasoning_content (<think>...</think>) and content; deepseek_r1 "
                   "suits Phi-4-mini-flash-reasoning (the opening <think> may be missing)")
    p.add_argument("--dtype", default=None, choices=sorted(DTYPES), help="model dtype (default: the checkpoint's)")
    p.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")
    p.add_argument("--depth", type=int, default=None, help="layers of a PRESET or tiny:PRESET model")
    p.add_argument("--max-model-len", type=int, default=None, metavar="N",
                   help="prompt + generated tokens per request (default: the model's max_seq_len)")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--gpu-memory-utilization", type=float, default=None, metavar="FRACTION",
                        help="share of free GPU memory for the state pool (default 0.9 on CUDA)")
    budget.add_argument("--memory-budget", type=parse_count, default=None, metavar="BYTES",
                        help="bytes for the state pool, e.g. 8G (needed on CPU to go past the default 16 slots)")
    p.add_argument("--max-num-seqs", type=int, default=None, metavar="N", help="requests running at once")
    p.add_argument("--max-num-batched-tokens", type=int, default=4096, metavar="N",
                   help="tokens per engine step: one per decoding request, the rest for prompt chunks (default 4096)")
    p.add_argument("--block-size", type=int, default=64, metavar="N", help="tokens per K/V cache page (default 64)")
    p.add_argument("--compile", action="store_true", help="compile the CUDA-graph decode step (CUDA only)")
    p.add_argument("--enable-prefix-caching", action=argparse.BooleanOptionalAction, default=None,
                   help="reuse the state of shared prompt prefixes and previous turns (default: on)")
    p.add_argument("--prefix-cache-snapshots", type=int, default=None, metavar="N",
                   help="state snapshots the prefix cache keeps (default: a tenth of the memory budget)")
    p.add_argument("--max-waiting-requests", type=int, default=1024, metavar="N",
                   help="queued requests beyond which new ones get 429 with Retry-After (default 1024)")
    p.add_argument("--max-request-bytes", type=parse_count, default=32 << 20, metavar="BYTES",
                   help="largest request body (default 32M)")
    p.add_argument("--drain-timeout", type=float, default=30.0, metavar="SECONDS",
                   help="on SIGTERM, how long running requests may still run (default 30)")
    add_threads_option(p)
    p.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"), help="log level")
    p.set_defaults(func=run)


def _check(args) -> None:
    for name in ("max_model_len", "max_num_seqs"):
        value = getattr(args, name)
        if value is not None and value < 2 - (name == "max_num_seqs"):
            raise CLIError(f"--{name.replace('_', '-')} must be >= {2 - (name == 'max_num_seqs')} (got {value})")
    if args.prefix_cache_snapshots is not None and args.prefix_cache_snapshots < 1:
        raise CLIError(f"--prefix-cache-snapshots must be >= 1 (got {args.prefix_cache_snapshots})")
    for name, low in (("port", 0), ("max_num_batched_tokens", 1), ("block_size", 1), ("max_waiting_requests", 1),
                      ("max_request_bytes", 1024)):
        if getattr(args, name) < low:
            raise CLIError(f"--{name.replace('_', '-')} must be >= {low} (got {getattr(args, name)})")
    if args.port > 65535:
        raise CLIError(f"--port must be <= 65535 (got {args.port})")
    if not args.drain_timeout >= 0:
        raise CLIError(f"--drain-timeout must be >= 0 (got {args.drain_timeout})")
    if args.gpu_memory_utilization is not None and not 0 < args.gpu_memory_utilization <= 1:
        raise CLIError(f"--gpu-memory-utilization must be in (0, 1] (got {args.gpu_memory_utilization})")


def run(args) -> int:
    import torch

    from sambay.engine import Engine
    from sambay.interop.errors import CheckpointError
    from sambay.serve import ServedModel, ServeOptions, generation_defaults, serve

    _check(args)
    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise CLIError("--device cuda but no CUDA device is available")
    if args.compile and not args.device.startswith("cuda"):
        raise CLIError("--compile compiles the CUDA-graph decode step; it needs a CUDA device")
    if args.tokenizer is not None and not Path(args.tokenizer).expanduser().exists():
        raise CLIError(f"--tokenizer {args.tokenizer}: no such file or folder")
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    model, tokenizer = load_model(args)
    folder = Path(args.model).expanduser()
    if args.tokenizer is not None:
        tokenizer = load_tokenizer_or_exit(Path(args.tokenizer).expanduser())
    if args.chat_template is not None:
        if tokenizer is None:
            raise CLIError("--chat-template needs a tokenizer (a model folder with one, or --tokenizer)")
        tokenizer = _with_template(tokenizer, args.chat_template)
    try:
        defaults = generation_defaults(args.generation_config, folder if folder.is_dir() else None)
    except CheckpointError as e:
        raise CLIError(f"--generation-config: {e}") from None
    budget = args.gpu_memory_utilization if args.gpu_memory_utilization is not None else args.memory_budget
    try:
        engine = Engine(model, tokenizer, max_num_seqs=args.max_num_seqs, max_model_len=args.max_model_len,
                        max_num_batched_tokens=args.max_num_batched_tokens, memory_budget=budget,
                        block_size=args.block_size, compile=args.compile,
                        enable_prefix_caching=args.enable_prefix_caching,
                        prefix_cache_snapshots=args.prefix_cache_snapshots)
    except ValueError as e:
        raise CLIError(str(e)) from None
    name = args.served_model_name or (folder.name if folder.is_dir() else args.model)
    options = ServeOptions(served_model_name=name, api_key=args.api_key or os.environ.get("SAMBAY_API_KEY") or None,
                           reasoning_parser=args.reasoning_parser, defaults=defaults,
                           max_request_bytes=args.max_request_bytes, max_waiting_requests=args.max_waiting_requests,
                           drain_timeout=args.drain_timeout)
    served = ServedModel(engine, tokenizer, options)
    state = engine.state
    pages = f"{state.num_blocks} K/V pages of {state.block_size} tokens" if state.paged else "contiguous K/V"
    cache = engine.prefix_cache
    pages += f", prefix cache of {len(cache.snapshots.free)} snapshots" if cache is not None else ", no prefix cache"
    print(f"[sambay serve] {name}: {model.config.arch}, {args.device}, {engine.max_num_seqs} slots, {pages}, "
          f"max length {engine.max_model_len}, defaults {defaults or 'none'} -> http://{args.host}:{args.port}/v1",
          file=sys.stderr, flush=True)
    serve(served, args.host, args.port, args.log_level)
    return 0


def _with_template(tokenizer, source: str):
    from sambay.tokenizer import load_tokenizer

    path = Path(source).expanduser()
    text = path.read_text() if len(source) < 4096 and path.is_file() else source
    try:
        return load_tokenizer(tokenizer.path, chat_template=text)
    except Exception as e:  # the loader's errors are one readable line
        raise CLIError(f"--chat-template: {e}") from None
