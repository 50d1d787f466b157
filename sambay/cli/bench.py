"""`sambay bench BENCH`: the benchmark suite, one subcommand per benchmark (benchmarks/README.md).

generate: long-generation throughput of a SambaY model vs its baselines, one process; engine: the same end to
end through `sambay.Engine` beside the bare decode step, and the streams' latency while a long prompt is
admitted; prefix-cache: chat and few-shot workloads with the prefix cache off, in align mode and on; train: training
tokens/s and MFU; kernels: the Mamba-1 Triton kernels; attention: decode and prefill attention; serve: a load
generator for a running OpenAI-compatible server (`sambay serve`), reporting TTFT, TPOT, ITL, throughput and
goodput as `vllm bench serve` defines them. Each prints a report and, with --json PATH, writes its numbers with
`sambay.bench.meta.metadata()` under "meta".
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path

from sambay.cli.main import CLIError, add_threads_option
from sambay.config import PRESETS, ConfigError, ModelConfig, tiny

DTYPES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}


def add_parser(sub) -> None:
    p = sub.add_parser("bench", help="benchmarks")
    bsub = p.add_subparsers(dest="bench", required=True, metavar="BENCH")
    g = bsub.add_parser("generate", help="2K-prompt / 32K-generation decode throughput, SambaY vs baselines")
    g.add_argument("--preset", default="phi4-mini-flash", help="the SambaY model (a preset name)")
    g.add_argument("--baseline", action="append", default=None,
                   help="baseline preset (repeatable; default phi4-mini); 'samba-yoco' = the preset's own dims "
                        "with the Samba+YOCO plan; 'hf' = Hugging Face generate on the Transformer baseline")
    g.add_argument("--prompt-len", type=int, default=2000, help="prompt tokens per sequence")
    g.add_argument("--gen-len", type=int, default=32000, help="generated tokens per sequence")
    size = g.add_mutually_exclusive_group()
    size.add_argument("--batch", type=int, default=None, help="sequences decoded together")
    size.add_argument("--fill", action="store_true", help="the largest batch that fits in GPU memory (default)")
    g.add_argument("--long-prompt", type=int, default=0, metavar="N",
                   help="also time the prefill of one N-token prompt per model (e.g. 32768)")
    g.add_argument("--points", type=int, default=5, help="context lengths sampled along the generation")
    g.add_argument("--steps", type=int, default=10, help="timed decode steps per sampled context")
    _inference_options(g)
    g.add_argument("--hf-new-tokens", type=int, default=256, help="tokens generated in the HF comparison")
    _json_option(g)
    g.add_argument("--compile", action="store_true",
                   help="time the decode step compiled by inductor (CUDA graphs; sambay.engine.cuda_graphs)")
    g.set_defaults(func=run_generate)

    e = bsub.add_parser("engine", help="end-to-end tokens/s through sambay.Engine vs the bare step; ITL under a long prompt",
                        description="Requests through the public Engine (add_request / step) with real sampling, "
                        "beside the engine's own captured decode step timed in the same process; optionally one "
                        "long prompt admitted while every stream decodes (its effect on their inter-token latency).")
    e.add_argument("--preset", default="phi4-mini-flash", help="the model (a preset; random weights)")
    e.add_argument("--baseline", action="append", default=None, help="more presets, run the same way (repeatable)")
    e.add_argument("--batch", type=int, default=256, help="requests, all added at once")
    e.add_argument("--prompt-len", type=int, default=2000, help="prompt tokens per request")
    e.add_argument("--gen-len", type=int, default=4000, help="generated tokens per request (ignore_eos)")
    e.add_argument("--temperature", type=float, default=0.7, help="sampling temperature")
    e.add_argument("--top-p", type=float, default=0.95, help="nucleus sampling mass")
    e.add_argument("--long-prompt", type=int, default=0, metavar="N", help="admit one N-token prompt mid-generation")
    e.add_argument("--max-num-batched-tokens", type=int, default=8192, help="the engine's token budget per step")
    e.add_argument("--max-chunk", type=int, default=2048, help="prompt tokens of one request per step")
    e.add_argument("--steps", type=int, default=20, help="timed bare steps per context")
    _inference_options(e)
    e.add_argument("--compile", action="store_true", help="the engine's decode step compiled by inductor")
    _json_option(e)
    e.set_defaults(func=run_engine)

    c = bsub.add_parser("prefix-cache", help="prefix caching on chat and few-shot workloads: off / align / sambay",
                        description="Multi-turn chats over a shared system prompt (closed loop: each answer becomes "
                        "part of the next turn) and requests with one shared few-shot header, through the Engine with "
                        "the prefix cache off, in vLLM's align mode, and with sambay's policy: time to first token, "
                        "prompt tokens actually prefilled, hit rate.")
    c.add_argument("--preset", default="phi4-mini-flash", help="the model (a preset; random weights)")
    c.add_argument("--baseline", action="append", default=None, help="more presets, run the same way (repeatable)")
    c.add_argument("--workload", choices=("chat", "fewshot", "both"), default="both", help="which workload(s)")
    c.add_argument("--conversations", type=int, default=64, help="chat: conversations")
    c.add_argument("--turns", type=int, default=8, help="chat: turns per conversation")
    c.add_argument("--system-len", type=int, default=1024, help="chat: shared system-prompt tokens")
    c.add_argument("--requests", type=int, default=1000, help="few-shot: requests")
    c.add_argument("--prefix-len", type=int, default=4096, help="few-shot: shared header tokens")
    c.add_argument("--tail-len", type=int, default=100, help="few-shot: unique tokens per request")
    c.add_argument("--answer-len", type=int, default=64, help="generated tokens per request (ignore_eos)")
    c.add_argument("--max-num-seqs", type=int, default=64, help="requests the engine runs at once")
    c.add_argument("--policy", action="append", choices=("off", "align", "sambay"), default=None,
                   help="policies to run (repeatable; default all three)")
    _inference_options(c)
    c.add_argument("--compile", action="store_true", help=argparse.SUPPRESS)
    _json_option(c)
    c.set_defaults(func=run_prefix_cache)

    t = bsub.add_parser("train", help="training tokens/s and MFU of one preset/depth (torchrun for several GPUs)",
                        description="Training throughput: the real trainer step, `--warmup` untimed steps, then "
                        "`--steps` timed ones; tokens/s and MFU against the bf16 matmul rate measured in the same "
                        "process. Several GPUs: torchrun --nproc_per_node N -m sambay bench train --parallel fsdp")
    t.add_argument("--preset", default="sambay", help="the model (a preset)")
    t.add_argument("--depth", type=int, default=8, help="layers")
    t.add_argument("--tiny", action="store_true", help="toy widths (CPU smoke runs)")
    t.add_argument("--data", default="synthetic", help="token shards (a directory) or 'synthetic'")
    t.add_argument("--steps", type=int, default=20, help="timed steps")
    t.add_argument("--warmup", type=int, default=5, help="untimed steps first (compilation, autotuning)")
    t.add_argument("--seq-len", type=int, default=4096, help="training length")
    t.add_argument("--micro-batch", type=int, default=2, help="sequences per rank per forward")
    t.add_argument("--batch-tokens", type=int, help="default: one micro-batch per rank (no accumulation)")
    t.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="auto: cuda when available")
    t.add_argument("--dtype", choices=("fp32", "bf16"), help="default bf16 on CUDA, fp32 on CPU")
    t.add_argument("--parallel", default="auto", choices=("auto", "none", "ddp", "fsdp"), help="auto: DDP when WORLD_SIZE > 1")
    t.add_argument("--compile", action="store_true", help="torch.compile each block")
    t.add_argument("--activation-checkpointing", action="store_true", help="recompute each block in backward")
    t.add_argument("--document-ids", action="store_true", help="document-masked training")
    t.add_argument("--profile", type=int, default=0, metavar="K",
                   help="after timing, profile one more step and print its K most expensive device kernels")
    _json_option(t)
    t.set_defaults(func=run_train)

    k = bsub.add_parser("kernels", help="Mamba-1 Triton kernels (scan, conv, decode step) vs measured ceilings",
                        description="The selective scan, causal conv1d and Mamba decode step against the copy "
                        "bandwidth and bf16 matmul rate measured in the same process (one CUDA GPU).")
    k.add_argument("--sweep", action="store_true", help="also time block-size variants")
    k.add_argument("--only", choices=("scan", "conv", "decode"), help="benchmark one kernel family")
    _json_option(k)
    k.set_defaults(func=run_kernels)

    a = bsub.add_parser("attention", help="decode (split-K Triton) and prefill (SDPA / flex / varlen) attention",
                        description="Decode attention at 64 x 32K context and prefill at 8 x 4096 tokens against "
                        "the copy bandwidth and bf16 matmul rate measured in the same process (one CUDA GPU).")
    a.add_argument("--sweep", action="store_true", help="also time n_splits variants")
    a.add_argument("--full-sweep", action="store_true", help="also decode tiles and SDPA EFFICIENT")
    a.add_argument("--budget", type=float, default=1e9, metavar="SECONDS",
                   help="start no new case after this many seconds")
    section = a.add_mutually_exclusive_group()
    section.add_argument("--skip-prefill", action="store_true", help="time decode attention only")
    section.add_argument("--skip-decode", action="store_true", help="time prefill attention only")
    _json_option(a)
    a.set_defaults(func=run_attention)

    s = bsub.add_parser("serve", help="load test of a running OpenAI-compatible server (sambay serve): TTFT, TPOT, "
                        "ITL, throughput, goodput",
                        description="Streams --num-prompts completions to BASE_URL/v1/completions at --request-rate "
                        "(gamma-distributed arrivals of shape --burstiness; inf: all at once), at most "
                        "--max-concurrency in flight, and reports vLLM's serving metrics (as `vllm bench serve`). "
                        "Start the server first: sambay serve --model DIR.")
    s.add_argument("--base-url", default="http://127.0.0.1:8000", metavar="URL",
                   help="the server's root URL, without /v1")
    s.add_argument("--model", default=None, metavar="NAME",
                   help="the model name sent (default: the first id of GET /v1/models)")
    s.add_argument("--api-key", default=None, metavar="KEY",
                   help="send 'Authorization: Bearer KEY' (default: $SAMBAY_API_KEY, else none)")
    s.add_argument("--dataset", choices=("random", "jsonl"), default="random",
                   help="random: prompts of random token ids; jsonl: --dataset-path, one JSON object a line: "
                        '{"prompt": str or [token ids], "max_tokens": int (optional)}')
    s.add_argument("--dataset-path", type=Path, default=None, metavar="PATH",
                   help="the JSONL file of --dataset jsonl")
    s.add_argument("--num-prompts", type=int, default=None, metavar="N",
                   help="requests to send (default 100; with --dataset jsonl, every line of the file)")
    s.add_argument("--input-len", type=int, default=1024, metavar="N", help="random: prompt tokens per request")
    s.add_argument("--output-len", type=int, default=128, metavar="N",
                   help="max_tokens per request (jsonl: where a line gives none)")
    s.add_argument("--range-ratio", type=float, default=0.0, metavar="RATIO",
                   help="random: draw prompt and output lengths uniformly within LEN * (1 +- RATIO); in [0, 1)")
    s.add_argument("--vocab-size", type=int, default=None, metavar="N",
                   help="random: token ids are drawn from [0, N) (default: the vocab_size of the model's card "
                        "in GET /v1/models)")
    s.add_argument("--seed", type=int, default=0, metavar="N",
                   help="seed of the random prompts and of the arrival times")
    s.add_argument("--request-rate", type=float, default=math.inf, metavar="R",
                   help="mean requests per second; inf (default) sends every request at once")
    s.add_argument("--burstiness", type=float, default=1.0, metavar="B",
                   help="shape of the gamma-distributed gaps between arrivals: 1 = Poisson, < 1 burstier, > 1 "
                        "more even")
    s.add_argument("--max-concurrency", type=int, default=None, metavar="N",
                   help="at most N requests in flight (default: no limit)")
    s.add_argument("--temperature", type=float, default=0.0, metavar="T",
                   help="sampling temperature sent with each request")
    s.add_argument("--ignore-eos", action="store_true",
                   help="send ignore_eos (a vLLM / sambay extension): every request generates max_tokens tokens")
    s.add_argument("--percentiles", default="50,90,99", metavar="P,P,...",
                   help="latency percentiles to report (default 50,90,99)")
    s.add_argument("--goodput", nargs="+", default=None, metavar="NAME:MS",
                   help="SLOs for goodput, any of ttft:MS tpot:MS e2el:MS: requests/s meeting all of them")
    s.add_argument("--timeout", type=float, default=3600.0, metavar="SECONDS",
                   help="a request not complete after this long counts as failed")
    _json_option(s)
    s.set_defaults(func=run_serve)


def _inference_options(p) -> None:
    p.add_argument("--dtype", choices=sorted(DTYPES), default="bf16", help="weights and K/V")
    p.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    p.add_argument("--tiny", action="store_true", help="tiny versions of the presets (CPU smoke runs)")


def _inference_device(args):
    """The device of `bench generate` / `bench engine`, checked against --compile."""
    import torch

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CLIError("--device cuda but no CUDA device is available")
    if args.compile and device.type != "cuda":
        raise CLIError("--compile times the compiled CUDA-graph decode step; it needs a CUDA device")
    return device


def _json_option(p) -> None:
    add_threads_option(p)
    p.add_argument("--json", type=Path, default=None, metavar="PATH",
                   help="write the numbers here, with the git commit, device, date, versions and command")


def _config(name: str, base: str, small: bool) -> ModelConfig:
    from sambay.plan import yoco_plan

    if name == "samba-yoco":  # the YOCO baseline at the SambaY model's own dimensions
        cfg = tiny(base) if small else ModelConfig.from_preset(base)
        return cfg.replace(arch=f"{base}+samba-yoco", layer_plan=yoco_plan(cfg.n_layer, 2, gmu=False))
    if name not in PRESETS:
        raise CLIError(f"unknown preset {name!r}; available: {', '.join(PRESETS)}, samba-yoco, hf")
    return tiny(name) if small else ModelConfig.from_preset(name)


def run_generate(args) -> int:
    import torch

    from sambay.bench import generate as bench
    from sambay.bench.meta import metadata, write_json

    for flag in ("prompt_len", "gen_len", "points", "steps", "hf_new_tokens"):
        if getattr(args, flag) < 1:
            raise CLIError(f"--{flag.replace('_', '-')} must be >= 1 (got {getattr(args, flag)})")
    if args.long_prompt < 0:
        raise CLIError(f"--long-prompt must be >= 0 (got {args.long_prompt})")
    if args.batch is not None and args.batch < 1:
        raise CLIError(f"--batch must be >= 1 (got {args.batch})")
    device = _inference_device(args)
    if device.type == "cpu" and args.batch is None:
        args.batch = 2  # --fill measures GPU memory
    dtype = getattr(torch, DTYPES[args.dtype])
    baselines = args.baseline or ["phi4-mini"]
    try:
        configs = [(args.preset, _config(args.preset, args.preset, args.tiny))]
        configs += [(b, _config(b, args.preset, args.tiny)) for b in baselines if b != "hf"]
    except ConfigError as e:
        raise CLIError(str(e)) from None
    if args.tiny:  # tiny models: a window and lengths that still cross the window boundary
        args.prompt_len, args.gen_len = min(args.prompt_len, 24), min(args.gen_len, 40)
    bandwidth = bench.measure_bandwidth(device)
    reports = []
    for name, cfg in configs:
        print(f"[bench] {name} ...", file=sys.stderr, flush=True)
        reports.append(bench.bench_model(name, cfg, batch=args.batch, prompt_len=args.prompt_len,
                                         gen_len=args.gen_len, points=args.points, steps=args.steps, dtype=dtype,
                                         device=device, bandwidth=bandwidth, compile=args.compile,
                                         long_prompt_len=min(args.long_prompt, 64) if args.tiny else args.long_prompt))
    print(bench.format_report(reports, bandwidth))
    hf = None
    if "hf" in baselines:
        hf = _hf_comparison(args, configs, reports, dtype, device)
    if args.json is not None:
        write_json(args.json, {"meta": metadata(device, args.argv), "bandwidth_bytes_per_s": bandwidth,
                               "models": reports, "hf_comparison": hf})
    return 0


def _hf_comparison(args, configs, reports, dtype, device):
    import torch

    try:
        import transformers  # noqa: F401
    except ImportError:
        raise CLIError("--baseline hf needs the transformers package") from None
    if device.type != "cuda":
        raise CLIError("--baseline hf runs on a CUDA device only")
    name, cfg = next(((n, c) for n, c in configs if not c.is_yoco), (None, None))
    if cfg is None:
        raise CLIError("--baseline hf compares on the Transformer baseline: add --baseline phi4-mini")
    batch = min(8, next(r.batch for r in reports if r.name == name))
    from sambay.bench.generate import random_model
    from sambay.bench.hf_baseline import hf_vs_sambay

    model = random_model(cfg, dtype, device)
    out = hf_vs_sambay(cfg, model, batch, args.prompt_len, args.hf_new_tokens)
    print(f"\nHF generate (static cache) vs sambay engine on {name}, batch {out['batch']}, prompt {out['prompt_len']}, "
          f"{out['new_tokens']} new tokens: HF {out['hf_tokens_per_s']:,.0f} tokens/s, sambay "
          f"{out['sambay_tokens_per_s']:,.0f} tokens/s (x{out['speedup']:.2f})")
    del model
    torch.cuda.empty_cache()
    return out


def run_engine(args) -> int:
    import torch

    from sambay.bench import engine as bench
    from sambay.bench.meta import metadata, write_json

    for flag in ("batch", "prompt_len", "gen_len", "steps", "max_num_batched_tokens", "max_chunk"):
        if getattr(args, flag) < 1:
            raise CLIError(f"--{flag.replace('_', '-')} must be >= 1 (got {getattr(args, flag)})")
    if args.gen_len < 2:
        raise CLIError(f"--gen-len must be >= 2 (got {args.gen_len}): decode speed needs a second token")
    if args.long_prompt < 0:
        raise CLIError(f"--long-prompt must be >= 0 (got {args.long_prompt})")
    device = _inference_device(args)
    try:
        configs = [(n, _config(n, args.preset, args.tiny)) for n in [args.preset, *(args.baseline or [])]]
    except ConfigError as e:
        raise CLIError(str(e)) from None
    reports = []
    for name, cfg in configs:
        print(f"[bench] {name} ...", file=sys.stderr, flush=True)
        reports.append(bench.bench_engine(
            name, cfg, batch=args.batch, prompt_len=args.prompt_len, gen_len=args.gen_len,
            dtype=getattr(torch, DTYPES[args.dtype]), device=device, temperature=args.temperature, top_p=args.top_p,
            steps=args.steps, max_num_batched_tokens=args.max_num_batched_tokens, max_chunk=args.max_chunk,
            long_prompt_len=args.long_prompt, compile=args.compile))
        torch.cuda.empty_cache() if device.type == "cuda" else None
    print(bench.format_report(reports))
    if args.json is not None:
        write_json(args.json, {"meta": metadata(device), "models": reports})
    return 0


def run_prefix_cache(args) -> int:
    import torch

    from sambay.bench import prefix_cache as bench
    from sambay.bench.meta import metadata, write_json

    for flag in ("conversations", "turns", "system_len", "requests", "prefix_len", "tail_len", "answer_len",
                 "max_num_seqs"):
        if getattr(args, flag) < 1:
            raise CLIError(f"--{flag.replace('_', '-')} must be >= 1 (got {getattr(args, flag)})")
    device = _inference_device(args)
    try:
        configs = [(n, _config(n, args.preset, args.tiny)) for n in [args.preset, *(args.baseline or [])]]
    except ConfigError as e:
        raise CLIError(str(e)) from None
    workloads = ("chat", "fewshot") if args.workload == "both" else (args.workload,)
    reports = []
    for name, cfg in configs:
        for workload in workloads:
            print(f"[bench] {name} {workload} ...", file=sys.stderr, flush=True)
            reports += bench.bench_prefix_cache(
                name, cfg, workload=workload, dtype=getattr(torch, DTYPES[args.dtype]), device=device,
                conversations=args.conversations, turns=args.turns, system_len=args.system_len,
                requests=args.requests, prefix_len=args.prefix_len, tail_len=args.tail_len,
                answer_len=args.answer_len, max_num_seqs=args.max_num_seqs,
                policies=tuple(args.policy or bench.POLICIES))
    print(bench.format_report(reports))
    if args.json is not None:
        write_json(args.json, {"meta": metadata(device), "reports": reports})
    return 0


def run_train(args) -> int:
    import torch

    from sambay.bench import train
    from sambay.bench.meta import metadata, write_json
    from sambay.data.sources import DataError
    from sambay.train.config import TrainConfigError

    for flag in ("depth", "steps", "seq_len", "micro_batch"):
        if getattr(args, flag) < 1:
            raise CLIError(f"--{flag.replace('_', '-')} must be >= 1 (got {getattr(args, flag)})")
    if args.warmup < 0 or args.profile < 0:
        raise CLIError("--warmup and --profile must be >= 0")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise CLIError("--device cuda but no CUDA device is available")
    try:
        result = train.run(args.preset, args.depth, tiny=args.tiny, data=args.data, steps=args.steps,
                           warmup=args.warmup, seq_len=args.seq_len, micro_batch=args.micro_batch,
                           batch_tokens=args.batch_tokens, device=args.device, dtype=args.dtype,
                           parallel=args.parallel, compile=args.compile,
                           activation_checkpointing=args.activation_checkpointing,
                           document_ids=args.document_ids, profile=args.profile)
    except (TrainConfigError, ConfigError, DataError) as e:
        raise CLIError(str(e)) from None
    if result is None:  # not the main rank
        return 0
    print(train.format_result(result))
    if args.json is not None:
        meta = metadata("cpu" if args.device == "cpu" else None, args.argv)
        write_json(args.json, {"meta": meta, "result": result})
    return 0


def _gpu_report(args, name: str):
    """The report of a one-GPU kernel benchmark; a CLIError where there is no CUDA device or no Triton."""
    import torch

    if not torch.cuda.is_available():
        raise CLIError(f"{name} times Triton kernels on a CUDA GPU; no CUDA device is available")
    try:
        import triton  # noqa: F401
    except ImportError:
        raise CLIError(f"{name} needs the triton package") from None
    from sambay.bench.meta import metadata
    from sambay.bench.report import Report

    return Report(name, metadata("cuda", args.argv), args.json)


def run_kernels(args) -> int:
    report = _gpu_report(args, "kernels")
    from sambay.bench import kernels

    kernels.run(report, sweep=args.sweep, only=args.only)
    return 0


def run_attention(args) -> int:
    report = _gpu_report(args, "attention")
    from sambay.bench import attention

    attention.run(report, sweep=args.sweep or args.full_sweep, full_sweep=args.full_sweep, budget_s=args.budget,
                  decode=not args.skip_decode, prefill=not args.skip_prefill)
    return 0


def _serve_options(args) -> tuple[list[float], dict[str, float]]:
    """Check `bench serve`'s arguments (CLIError naming the bad one); its percentiles and goodput SLOs."""
    from sambay.bench.serve_metrics import parse_goodput, parse_percentiles

    for flag in ("num_prompts", "input_len", "output_len", "vocab_size", "max_concurrency"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise CLIError(f"--{flag.replace('_', '-')} must be >= 1 (got {value})")
    if not 0 <= args.range_ratio < 1:
        raise CLIError(f"--range-ratio must be in [0, 1) (got {args.range_ratio})")
    if not args.request_rate > 0:  # also catches nan
        raise CLIError(f"--request-rate must be > 0 requests/s, or inf (got {args.request_rate})")
    if not (args.burstiness > 0 and math.isfinite(args.burstiness)):
        raise CLIError(f"--burstiness must be a finite number > 0 (got {args.burstiness})")
    if not (args.temperature >= 0 and math.isfinite(args.temperature)):
        raise CLIError(f"--temperature must be >= 0 (got {args.temperature})")
    if not args.timeout > 0:
        raise CLIError(f"--timeout must be > 0 seconds (got {args.timeout})")
    if not args.base_url.startswith(("http://", "https://")):
        raise CLIError(f"--base-url must be an http:// or https:// URL (got {args.base_url!r})")
    args.base_url = args.base_url.rstrip("/")
    if args.base_url.endswith("/v1"):
        raise CLIError(f"--base-url is the server's root, without /v1 (got {args.base_url!r})")
    if args.dataset == "jsonl":
        if args.dataset_path is None:
            raise CLIError("--dataset jsonl needs --dataset-path PATH")
        if not args.dataset_path.is_file():
            raise CLIError(f"--dataset-path {args.dataset_path}: no such file")
    elif args.dataset_path is not None:
        raise CLIError("--dataset-path is read with --dataset jsonl only")
    try:
        percentiles = parse_percentiles(args.percentiles)
    except ValueError as e:
        raise CLIError(f"--percentiles: {e}") from None
    try:
        slos = parse_goodput(args.goodput or [])
    except ValueError as e:
        raise CLIError(f"--goodput: {e}") from None
    return percentiles, slos


def run_serve(args) -> int:
    percentiles, slos = _serve_options(args)
    try:
        import httpx  # noqa: F401
    except ImportError:
        raise CLIError("bench serve needs httpx: pip install 'sambay[serve]'") from None
    from sambay.bench import serve as bench
    from sambay.bench import serve_load as load
    from sambay.bench.meta import metadata, write_json
    from sambay.bench.serve_metrics import compute_metrics, format_report, per_request

    api_key = args.api_key or os.environ.get("SAMBAY_API_KEY") or None
    requests, vocab_size = None, args.vocab_size
    if args.dataset == "jsonl":  # read before asking the server: a bad file is the first thing to hear about
        try:
            requests = load.jsonl_requests(args.dataset_path, args.output_len, limit=args.num_prompts)
        except load.DatasetError as e:
            raise CLIError(str(e)) from None
        if args.num_prompts is not None and len(requests) < args.num_prompts:
            print(f"[bench] {args.dataset_path} holds {len(requests)} requests; sending those", file=sys.stderr)
    card = None
    if args.model is None or (requests is None and args.vocab_size is None):
        try:
            card = bench.served_model(args.base_url, args.model, api_key)
        except bench.ServerError as e:
            raise CLIError(str(e)) from None
    model = args.model or card.id
    if requests is None:
        vocab_size = vocab_size or card.vocab_size
        if vocab_size is None:
            raise CLIError(f"the card of {model!r} in GET {args.base_url}/v1/models has no vocab_size: pass "
                           "--vocab-size N for the random prompts")
        requests = load.random_requests(args.num_prompts or 100, args.input_len, args.output_len, vocab_size,
                                        args.range_ratio, args.seed)
    send_times = load.arrival_times(len(requests), args.request_rate, args.burstiness, args.seed)
    print(f"[bench] {len(requests)} requests to {args.base_url} ({model}) ...", file=sys.stderr, flush=True)
    records, duration = bench.run(requests, send_times, base_url=args.base_url, model=model, api_key=api_key,
                                  max_concurrency=args.max_concurrency, temperature=args.temperature,
                                  ignore_eos=args.ignore_eos, timeout=args.timeout, progress=True)
    metrics = compute_metrics(records, duration, percentiles, slos)
    settings = [("Server", args.base_url), ("Model", model), ("Dataset", args.dataset_path or args.dataset),
                ("Request rate (req/s)", f"{args.request_rate:g}"), ("Burstiness", f"{args.burstiness:g}"),
                ("Max concurrency", args.max_concurrency or "none")]
    print(format_report(metrics, settings))
    if args.json is not None:
        meta = metadata("cpu", args.argv)
        meta["device"] = "remote"  # the model runs in the server; "server" below says which
        settings = {k: getattr(args, k) for k in ("dataset", "dataset_path", "input_len", "output_len", "range_ratio",
                                                  "seed", "burstiness", "max_concurrency", "temperature", "ignore_eos",
                                                  "timeout")}
        # "inf" spelled out: write_json would turn the float into null
        settings.update(num_prompts=len(requests), vocab_size=vocab_size, percentiles=percentiles,
                        request_rate=args.request_rate if math.isfinite(args.request_rate) else "inf")
        write_json(args.json, {"meta": meta, "server": {"base_url": args.base_url, "model": model,
                                                        "card": card.card if card else None},
                               "settings": settings, "metrics": metrics, "requests": per_request(records)})
    return 0
