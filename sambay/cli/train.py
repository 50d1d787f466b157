"""``sambay train``: pre-train a model of the family (μP++ by default), on one process or under torchrun.

    sambay train --preset sambay --depth 8 --data DIR --val-data DIR --budget chinchilla
    torchrun --nproc_per_node 8 -m sambay train --preset sambay --depth 16 --data DIR --tokens 100B
    sambay train --tiny --d-model 32 --data synthetic --tokens 2M --device cpu     # CPU smoke test
"""

from __future__ import annotations

import argparse
import json

from sambay.cli.main import CLIError, parse_count


def _override(text: str) -> tuple[str, object]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value  # a bare string such as norm=layernorm


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "train", help="pre-train a model (μP++ by default; DDP / FSDP2 under torchrun)",
        description="Pre-train a SambaY-family model. μP++ transfer rules by default: LR = eta0·√(b/b0)·√(d0/L), "
                    "matrices ×d0/L with weight decay, vectors ×1 without. Launch under torchrun for DDP/FSDP2 "
                    "(gloo on CPU, NCCL on CUDA).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    m = p.add_argument_group("model")
    m.add_argument("--preset", default="sambay", help="ModelConfig preset (see `sambay describe`)")
    m.add_argument("--depth", type=int, default=8, help="number of layers L")
    m.add_argument("--tiny", action="store_true", help="toy widths of the preset (tests, CPU demos)")
    m.add_argument("--d-model", type=int, help="with --tiny: the toy width (default 64)")
    m.add_argument("--model-override", type=_override, action="append", default=[], metavar="KEY=VALUE",
                   help="set a ModelConfig field (JSON value), repeatable, e.g. window=256")
    m.add_argument("--parametrization", choices=("mup++", "sp"), help="default: the preset's (μP++)")
    d = p.add_argument_group("data and budget")
    d.add_argument("--data", required=True, help="shard directory/file/glob, mixture JSON {source: weight}, "
                   "'synthetic', or 'mqar[:num_kv_pairs=K,seq_len=T,vocab_size=V,power_a=A]' (multi-query "
                   "associative recall, loss on the answers only: small architecture comparisons in minutes)")
    d.add_argument("--val-data", help="held-out shards (validation at 1x and 2x the training length)")
    d.add_argument("--document-ids", action="store_true", help="document-masked (varlen) training from EOS")
    d.add_argument("--tokens", type=parse_count, help="training tokens (e.g. 12.7B)")
    d.add_argument("--budget", choices=("chinchilla",), help="T = 1e11 · N_non-embedding / (237568·16³)")
    d.add_argument("--max-steps", type=int, help="stop after this step (the schedule still spans the budget)")
    d.add_argument("--batch-tokens", type=parse_count, help="global batch in tokens (default: 2^21 rounded "
                   "down to a multiple of world·micro·seq, at most tokens/100)")
    d.add_argument("--micro-batch", type=int, default=2, help="sequences per rank per forward")
    d.add_argument("--seq-len", type=int, help="training length (default min(4096, model max_seq_len))")
    o = p.add_argument_group("optimizer and schedule")
    o.add_argument("--eta0", type=float, default=None,
                   help="base LR η0, tuned at batch b0 (and depth d0 = 16 for μP++); the run's LR is "
                        "η0·√(b/b0)·√(d0/L) (default 4e-4, the paper's; 2e-3 with --tiny)")
    o.add_argument("--base-batch-tokens", type=parse_count, default=None,
                   help="b0 of the √ batch rule: the batch η0 was tuned at (default 2M tokens, the paper's; 16K "
                        "with --tiny, so that a small toy batch is not scaled down to an LR that cannot learn)")
    o.add_argument("--weight-decay", type=float, default=0.1, help="AdamW decay of the matrices (μP++: vectors get none)")
    o.add_argument("--beta1", type=float, default=0.9, help="AdamW first-moment decay, in [0, 1)")
    o.add_argument("--beta2", type=float, default=0.95, help="AdamW second-moment decay, in [0, 1)")
    o.add_argument("--eps", type=float, default=1e-8, help="AdamW epsilon")
    o.add_argument("--grad-clip", type=float, default=1.0, help="clip the global gradient norm to this (> 0)")
    o.add_argument("--schedule", choices=("linear", "cosine", "wsd"), default="linear",
                   help="LR after warm-up: linear or cosine decay to 0, or warmup-stable-decay (last 2/7 decays)")
    o.add_argument("--warmup-tokens", type=parse_count, help="default 1e9, capped at 10%% of the run")
    s = p.add_argument_group("system")
    s.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="auto: cuda when available")
    s.add_argument("--dtype", choices=("fp32", "bf16"), help="bf16 = autocast with fp32 master weights "
                   "(default bf16 on CUDA, fp32 on CPU)")
    s.add_argument("--parallel", choices=("auto", "none", "ddp", "fsdp"), default="auto",
                   help="auto: DDP when WORLD_SIZE > 1")
    s.add_argument("--activation-checkpointing", action="store_true", help="recompute each block in backward")
    s.add_argument("--compile", action="store_true", help="torch.compile each block")
    s.add_argument("--seed", type=int, default=3407, help="init, data order and sampling seed")
    s.add_argument("--deterministic", action="store_true", help="torch.use_deterministic_algorithms")
    s.add_argument("--threads", type=int, help="torch threads per process")
    r = p.add_argument_group("run directory, checkpoints, logging")
    r.add_argument("--run-dir", default="runs/sambay",
                   help="where config.json, metrics.jsonl and checkpoints/ go (one run per folder)")
    r.add_argument("--resume", help="'auto': the newest readable checkpoint in the run dir (if any), falling back "
                   "past unreadable ones; or a checkpoint dir")
    r.add_argument("--overwrite", action="store_true",
                   help="start over in a run dir that holds another run (its checkpoints and metrics are deleted)")
    r.add_argument("--ckpt-every", type=int, default=1000, help="optimizer steps between checkpoints")
    r.add_argument("--keep-last", type=int, default=3, help="checkpoints kept")
    r.add_argument("--eval-every", type=int, default=1000, help="optimizer steps between validations")
    r.add_argument("--eval-batches", type=int, default=50, help="validation batches per rank")
    r.add_argument("--no-eval-2x", action="store_true", help="skip validation at 2x the training length")
    r.add_argument("--log-every", type=int, default=10, help="optimizer steps between metrics.jsonl lines")
    r.add_argument("--no-progress", action="store_true", help="no progress bar on a terminal")
    r.add_argument("--tensorboard", action=argparse.BooleanOptionalAction, default=None,
                   help="default: when tensorboard is installed")
    r.add_argument("--peak-flops", type=float, help="per-device peak FLOP/s for MFU (default: known GPUs)")
    r.add_argument("--dry-run", action="store_true", help="print the resolved plan as JSON and exit")
    p.set_defaults(func=run_train)


def config_from_args(args: argparse.Namespace):
    from sambay.train.config import TrainConfig

    overrides = dict(args.model_override)
    if args.d_model is not None:
        if not args.tiny:
            raise CLIError("--d-model is for --tiny models; use --model-override d_model=N otherwise")
        overrides["d_model"] = args.d_model
    for name in ("ckpt_every", "eval_every", "log_every", "eval_batches", "micro_batch"):
        if getattr(args, name) < 1:
            raise CLIError(f"--{name.replace('_', '-')} must be >= 1")
    return TrainConfig(
        preset=args.preset, depth=args.depth, tiny=args.tiny, model_overrides=overrides,
        parametrization=args.parametrization, data=args.data, val_data=args.val_data,
        document_ids=args.document_ids, tokens=args.tokens, budget=args.budget, max_steps=args.max_steps,
        batch_tokens=args.batch_tokens, micro_batch=args.micro_batch, seq_len=args.seq_len,
        eta0=args.eta0 if args.eta0 is not None else (2e-3 if args.tiny else 4e-4),
        base_batch_tokens=args.base_batch_tokens or (2**14 if args.tiny else 2**21),
        weight_decay=args.weight_decay, beta1=args.beta1,
        beta2=args.beta2, eps=args.eps, grad_clip=args.grad_clip, schedule=args.schedule,
        warmup_tokens=args.warmup_tokens, device=args.device, dtype=args.dtype, parallel=args.parallel,
        activation_checkpointing=args.activation_checkpointing, compile=args.compile, seed=args.seed,
        deterministic=args.deterministic, threads=args.threads, run_dir=args.run_dir, resume=args.resume,
        overwrite=args.overwrite,
        ckpt_every=args.ckpt_every, keep_last=args.keep_last, eval_every=args.eval_every,
        eval_batches=args.eval_batches, eval_2x=not args.no_eval_2x, log_every=args.log_every,
        progress=not args.no_progress, tensorboard=args.tensorboard, peak_flops=args.peak_flops)


def run_train(args: argparse.Namespace) -> int:
    from sambay.config import ConfigError
    from sambay.data.shards import ShardError
    from sambay.data.sources import DataError
    from sambay.train.config import TrainConfigError

    try:
        cfg = config_from_args(args)
        if args.dry_run:
            from sambay.train.trainer import dry_run

            print(json.dumps(dry_run(cfg), indent=2))
            return 0
        from sambay.train.trainer import train

        summary = train(cfg)
    except (TrainConfigError, ConfigError, DataError) as e:
        raise CLIError(str(e)) from None
    except ShardError as e:
        hint = ""
        if str(args.data).endswith((".jsonl", ".json", ".txt", ".gz")):
            hint = (f"; --data takes token shards: turn a text corpus into shards first with "
                    f"`sambay data prepare --input {args.data} --tokenizer TOKENIZER --output DIR`")
        raise CLIError(f"{e}{hint}") from None
    if summary is not None:
        print(json.dumps(summary))
    return 0
