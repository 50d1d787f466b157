"""Cost of top-p sampling on the GPU: the sorting reference against the sampler's sort-free draw.

    python tools/sampling_ab.py [--batch 256] [--vocab 200064]

For two kinds of logits (fp32, one batch): "flat" (Gaussian logits of std 1.1, like a random-weight
model's) and "peaked" (a Zipf-like fall-off, like a trained model's), at temperature 0.7 and top_p 0.95, it
times: the reference (`sorted_filter` plus the Gumbel pick), `Sampler.draw` (the sort-free path), the exact
redraw of the rows it rejects, and softmax as a floor; and it prints the share of rows redrawn.
"""

from __future__ import annotations

import argparse

import torch

from sambay.engine.nucleus import sorted_filter
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
    B, V = args.batch, args.vocab
    ranks = torch.arange(1, V + 1, device=dev).float()
    kinds = {"flat": torch.randn(B, V, device=dev) * 1.1,
             "peaked": (-2.0 * ranks.log())[None].expand(B, V)[:, torch.randperm(V, device=dev)] + torch.randn(B, V, device=dev)}
    sampler = Sampler(B, V, dev)
    for s in range(B):
        sampler.admit(s, SamplingParams(temperature=0.7, top_p=0.95), [0])
    slots = torch.arange(B, device=dev)
    slot_list = list(range(B))
    print(f"{torch.cuda.get_device_name(dev)}  batch {B}  vocab {V}  temperature 0.7  top_p 0.95")
    for kind, logits in kinds.items():
        scaled = logits / 0.7
        top_k, top_p, min_p = torch.full((B,), V, device=dev), torch.full((B,), 0.95, device=dev), torch.zeros(B, device=dev)

        def reference():
            probs, order = sorted_filter(scaled, top_k, top_p, min_p)
            noise = torch.empty_like(probs).exponential_().gather(-1, order)
            return order.gather(-1, (probs / noise).argmax(-1, keepdim=True))

        draw = sampler.draw(logits, slots, slot_list)
        redo = draw.incomplete.nonzero()[:, 0].tolist()
        rows = {"softmax (a floor)": lambda: torch.softmax(scaled, -1),
                "reference: sort + pick": reference,
                "Sampler.draw (sort-free)": lambda: sampler.draw(logits, slots, slot_list),
                f"redraw of the {len(redo)} rejected rows": lambda: sampler.redraw(draw, redo or [0]),
                "Sampler.sample (all of it, one sync)": lambda: sampler.sample(logits, slots, slot_list)}
        print(f"{kind} logits: {len(redo) / B:.1%} of rows redrawn")
        for name, fn in rows.items():
            print(f"  {name:<40}{timed(fn):8.3f} ms")


if __name__ == "__main__":
    main()
