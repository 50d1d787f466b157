"""Cost of the top-p building blocks on the GPU, to choose how `Sampler` filters without a full sort.

    python tools/sampling_ab.py [--batch 256] [--vocab 200064]

Times, at one batch and vocabulary (fp32 logits), each candidate's core in one process: the full sort the
sampler uses today, a top-k prefilter of K tokens, one pass of a probability-threshold bisection (a full
masked sum), softmax, and the sampler's whole `sample` call with top_p=0.95.
"""

from __future__ import annotations

import argparse

import torch

from sambay.engine.sampling import Sampler, SamplingParams


def timed(fn, iters: int = 20) -> float:
    for _ in range(3):
        fn()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(iters):
        fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / iters


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--vocab", type=int, default=200064)
    args = p.parse_args()
    dev = torch.device("cuda")
    logits = torch.randn(args.batch, args.vocab, device=dev) * 3
    probs = torch.softmax(logits, -1)
    tau = torch.full((args.batch, 1), 1e-6, device=dev)
    rows = {
        "softmax": lambda: torch.softmax(logits, -1),
        "sort (today)": lambda: logits.sort(-1, descending=True),
        "topk 64": lambda: probs.topk(64, -1),
        "topk 1024": lambda: probs.topk(1024, -1),
        "one bisection pass": lambda: (probs * (probs >= tau)).sum(-1),
    }
    sampler = Sampler(args.batch, args.vocab, dev)
    for s in range(args.batch):
        sampler.admit(s, SamplingParams(temperature=0.7, top_p=0.95), [0])
    slots = torch.arange(args.batch, device=dev)
    slot_list = list(range(args.batch))
    rows["Sampler.sample top_p=0.95"] = lambda: sampler.sample(logits, slots, slot_list)
    print(f"{torch.cuda.get_device_name(dev)}  batch {args.batch}  vocab {args.vocab}")
    for name, fn in rows.items():
        print(f"  {name:<28}{timed(fn):8.3f} ms")


if __name__ == "__main__":
    main()
