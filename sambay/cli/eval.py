"""`sambay eval TASK`: evaluation through sambay's engine (a local model) or a running `sambay serve`
(`--base-url`). Each task prints a table and writes JSON (and plots) under --output."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from sambay.cli.main import CLIError
from sambay.cli.models import DTYPES

EXTRA = 'pip install "sambay[eval]"'


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("eval", help="long-context, reasoning and lm-evaluation-harness evaluation",
                              description="Evaluate a model (--model DIR) or a running sambay serve (--base-url).")
    sub = p.add_subparsers(dest="task", required=True, metavar="TASK")

    r = sub.add_parser("reasoning", help="pass@1 over k samples and pass@k on a JSONL of math problems",
                       description="Each {question, answer} line is asked through the chat template with 'Please "
                       "reason step by step, and put your final answer within \\boxed{}.', sampled k times, and "
                       "checked with math-verify.")
    _target_options(r)
    r.add_argument("--data", required=True, type=Path, help="JSONL: one {\"question\", \"answer\"} per line")
    r.add_argument("--samples", type=int, default=8, metavar="K", help="samples per problem (default 8)")
    r.add_argument("--max-new-tokens", type=int, default=32768, help="per sample (default 32768)")
    r.add_argument("--temperature", type=float, default=0.6, help="default 0.6 (the model card's)")
    r.add_argument("--top-p", type=float, default=0.95, help="default 0.95 (the model card's)")
    r.set_defaults(func=run_reasoning)

    h = sub.add_parser("harness", help="lm-evaluation-harness tasks with the 'sambay' model, offline",
                       description="Runs lm_eval.simple_evaluate with sambay's lm-eval model on local task "
                       "definitions (--include-path) or lm-eval's own tasks whose data needs no download.")
    _target_options(h)
    h.add_argument("--tasks", required=True, help="comma-separated task names")
    h.add_argument("--include-path", type=Path, default=None, help="a folder of task YAML files")
    h.add_argument("--limit", type=int, default=None, help="documents per task (default: all)")
    h.add_argument("--num-fewshot", type=int, default=None, help="few-shot examples (default: the task's)")
    h.add_argument("--metadata", default=None, metavar="JSON",
                   help='task metadata, e.g. \'{"max_seq_lengths": [4096]}\' for lm-eval\'s RULER tasks')
    h.set_defaults(func=run_harness)


def _target_options(p) -> None:
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--model", help="a checkpoint folder with its tokenizer")
    target.add_argument("--base-url", help="a running sambay serve (e.g. http://127.0.0.1:8000)")
    p.add_argument("--api-key", default=None, help="for --base-url")
    p.add_argument("--served-model-name", default=None, help="for --base-url (default: the server's model)")
    p.add_argument("--dtype", default=None, choices=sorted(DTYPES), help="model dtype (default: the checkpoint's)")
    p.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")
    p.add_argument("--max-model-len", type=int, default=None, help="prompt + generated tokens per request")
    p.add_argument("--max-num-seqs", type=int, default=64, help="requests the engine runs at once (default 64)")
    p.add_argument("--seed", type=int, default=0, help="sampling and data seed (default 0)")
    p.add_argument("--output", type=Path, default=None, metavar="DIR", help="write results (JSON, plots) here")


def backend_from(args):
    """A LocalBackend or RemoteBackend for the common options."""
    if args.base_url is not None:
        from sambay.eval.backend import RemoteBackend

        try:
            return RemoteBackend(args.base_url, api_key=args.api_key, model=args.served_model_name)
        except Exception as e:  # connection refused, wrong model: one line
            raise CLIError(f"--base-url {args.base_url}: {e}") from None
    import torch

    from sambay.cli.models import load_model
    from sambay.eval.backend import LocalBackend

    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    args.tokenizer, args.depth = None, None
    model, tokenizer = load_model(args)
    if tokenizer is None:
        raise CLIError(f"--model {args.model}: evaluation needs the model's tokenizer (a folder with tokenizer.json)")
    try:
        return LocalBackend(model, tokenizer, max_num_seqs=args.max_num_seqs, max_model_len=args.max_model_len)
    except ValueError as e:
        raise CLIError(str(e)) from None


def _need(module: str) -> None:
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise CLIError(f"this needs the {module} package: {EXTRA}")


def _write(args, name: str, payload: dict) -> None:
    if args.output is None:
        return
    from sambay.bench.meta import metadata, write_json

    args.output.mkdir(parents=True, exist_ok=True)
    write_json(args.output / name, {"meta": metadata(), **payload})
    print(f"[sambay eval] wrote {args.output / name}", file=sys.stderr)


def run_reasoning(args) -> int:
    _need("math_verify")
    from sambay.eval.reasoning import evaluate_reasoning, load_problems

    for name in ("samples", "max_new_tokens"):
        if getattr(args, name) < 1:
            raise CLIError(f"--{name.replace('_', '-')} must be >= 1 (got {getattr(args, name)})")
    if not 0 < args.top_p <= 1 or not args.temperature >= 0:
        raise CLIError("--top-p must be in (0, 1] and --temperature >= 0")
    try:
        problems = load_problems(args.data)
    except ValueError as e:
        raise CLIError(f"--data: {e}") from None
    backend = backend_from(args)
    report = evaluate_reasoning(backend, problems, samples=args.samples, max_new_tokens=args.max_new_tokens,
                                temperature=args.temperature, top_p=args.top_p, seed=args.seed)
    print(f"{report.problems} problems x {report.samples} samples: pass@1 {report.pass_at_1:.2%}  " +
          "  ".join(f"pass@{k} {v:.2%}" for k, v in report.pass_at_k.items() if k > 1) +
          f"  | {report.mean_new_tokens:,.0f} new tokens per sample, {report.wall_s:,.1f} s")
    _write(args, "reasoning.json", {"report": report})
    return 0


def run_harness(args) -> int:
    _need("lm_eval")
    import os

    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")  # no network at run time
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import lm_eval
    from lm_eval.tasks import TaskManager

    from sambay.eval.harness import SambayLM

    try:
        metadata = json.loads(args.metadata) if args.metadata else {}
    except json.JSONDecodeError as e:
        raise CLIError(f"--metadata is not JSON: {e}") from None
    if not isinstance(metadata, dict):
        raise CLIError("--metadata must be a JSON object")
    if args.model is not None:
        metadata.setdefault("tokenizer", args.model)
        metadata.setdefault("pretrained", args.model)
    if args.include_path is not None and not args.include_path.is_dir():
        raise CLIError(f"--include-path {args.include_path}: no such folder")
    model_args = {"batch_size": args.max_num_seqs, "max_length": args.max_model_len, "dtype": args.dtype,
                  "device": args.device}
    if args.base_url is not None:
        lm = SambayLM(base_url=args.base_url, api_key=args.api_key, model=args.served_model_name)
    else:
        lm = SambayLM(pretrained=args.model, **{k: v for k, v in model_args.items() if v is not None})
    manager = TaskManager(include_path=str(args.include_path) if args.include_path else None, metadata=metadata)
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    unknown = [t for t in tasks if t not in manager.all_tasks]
    if unknown:
        raise CLIError(f"unknown task(s): {', '.join(unknown)} (see --include-path, or lm-eval's task list)")
    out = lm_eval.simple_evaluate(model=lm, tasks=tasks, task_manager=manager, limit=args.limit,
                                  num_fewshot=args.num_fewshot, random_seed=args.seed, numpy_random_seed=args.seed,
                                  torch_random_seed=args.seed, fewshot_random_seed=args.seed)
    from lm_eval.utils import make_table

    print(make_table(out))
    _write(args, "harness.json", {"results": out["results"], "configs": out.get("configs", {})})
    return 0
