"""`sambay bench generate`: long-generation throughput of a SambaY model vs its baselines, one process."""

from __future__ import annotations

import datetime
import shlex
import sys
from pathlib import Path

from sambay.cli.main import CLIError
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
    g.add_argument("--prompt-len", type=int, default=2000)
    g.add_argument("--gen-len", type=int, default=32000)
    size = g.add_mutually_exclusive_group()
    size.add_argument("--batch", type=int, default=None, help="sequences decoded together")
    size.add_argument("--fill", action="store_true", help="the largest batch that fits in GPU memory (default)")
    g.add_argument("--long-prompt", type=int, default=0, metavar="N",
                   help="also time the prefill of one N-token prompt per model (e.g. 32768)")
    g.add_argument("--points", type=int, default=5, help="context lengths sampled along the generation")
    g.add_argument("--steps", type=int, default=10, help="timed decode steps per sampled context")
    g.add_argument("--dtype", choices=sorted(DTYPES), default="bf16")
    g.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    g.add_argument("--tiny", action="store_true", help="tiny versions of the presets (CPU smoke runs)")
    g.add_argument("--hf-new-tokens", type=int, default=256, help="tokens generated in the HF comparison")
    g.add_argument("--json", type=Path, default=None, help="write the numbers here")
    g.add_argument("--compile", action="store_true",
                   help="time the decode step compiled by inductor (CUDA graphs; sambay.engine.cuda_graphs)")
    g.set_defaults(func=run_generate)


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

    for flag in ("prompt_len", "gen_len", "points", "steps", "hf_new_tokens"):
        if getattr(args, flag) < 1:
            raise CLIError(f"--{flag.replace('_', '-')} must be >= 1 (got {getattr(args, flag)})")
    if args.long_prompt < 0:
        raise CLIError(f"--long-prompt must be >= 0 (got {args.long_prompt})")
    if args.batch is not None and args.batch < 1:
        raise CLIError(f"--batch must be >= 1 (got {args.batch})")
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CLIError("--device cuda but no CUDA device is available")
    if args.compile and device.type != "cuda":
        raise CLIError("--compile times the compiled CUDA-graph decode step; it needs a CUDA device")
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
        meta = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                "date": datetime.date.today().isoformat(), "command": "sambay " + shlex.join(args.argv),
                "torch": torch.__version__, "bandwidth_bytes_per_s": bandwidth, "hf_comparison": hf}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(bench.to_json(reports, meta))
    return 0


def _hf_comparison(args, configs, reports, dtype, device):
    import torch

    try:
        import transformers  # noqa: F401
    except ImportError:
        raise CLIError("--baseline hf needs the transformers package") from None
    if device.type != "cuda":
        raise CLIError("--baseline hf runs on a CUDA device only")
    name, cfg = next(((n, c) for n, c in configs if "full_kv" not in c.layer_plan), (None, None))
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
