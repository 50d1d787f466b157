"""Where one decode step's device time goes: per-kernel totals from torch.profiler.

    python tools/profile_decode.py --preset phi4-mini-flash --batch 64 --context 32768 [--top 20]

Random bf16 weights; the caches are filled with random K/V up to `--context` (no prefill needed for the
timing), then `--steps` eager decode steps run under the profiler. Kernel times are device times, so the
eager launch overhead that CUDA graphs remove does not count in them.
"""

from __future__ import annotations

import argparse
import os
import sys

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from sambay.bench.generate import random_model  # noqa: E402
from sambay.bench.meta import header_lines, metadata  # noqa: E402
from sambay.config import ModelConfig  # noqa: E402
from sambay.engine.decode import decode_step  # noqa: E402
from sambay.engine.state import InferenceState  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="phi4-mini-flash")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--context", type=int, default=32768)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--top", type=int, default=20)
    args = ap.parse_args()
    dev = torch.device("cuda")
    config = ModelConfig.from_preset(args.preset)
    model = random_model(config, torch.bfloat16, dev)
    state = InferenceState(config, args.batch, args.context + args.steps + 8, torch.bfloat16, dev)
    slots = torch.tensor([state.acquire() for _ in range(args.batch)], device=dev)
    for layer in state.layers:
        for key in ("k", "v"):
            if key in layer:
                layer[key].normal_()
    tokens = torch.randint(0, config.vocab_size, (args.batch,), device=dev)
    for _ in range(3):  # warm-up (Triton compilation)
        state.lengths[slots] = args.context
        decode_step(model, state, tokens, slots)
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(args.steps):
            state.lengths[slots] = args.context
            decode_step(model, state, tokens, slots)
        torch.cuda.synchronize()
    print("\n".join(header_lines(metadata(dev))))
    print(f"{args.preset}: batch {args.batch}, context {args.context}, {args.steps} eager decode steps")
    print(prof.key_averages().table(sort_by="self_device_time_total", row_limit=args.top,
                                    max_name_column_width=70))


if __name__ == "__main__":
    main()
