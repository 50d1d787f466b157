"""The engine's graphed decode step with and without programmatic dependent launch, in one process.

    python benchmarks/engine_pdl_ab.py --preset phi4-mini-flash --batch 1 16 64 --context 4096

For each batch size the same model and state get two `GraphedDecoder`s, one captured with `SAMBAY_PDL=0`
and one with PDL (`sambay.ops.pdl`: the Mamba decode kernels launch while the previous kernel finishes and
read their state early). Their replays alternate, so both see the same clocks and caches; the step time is
the median of `--steps` replays each. Before timing, both replay once from the same saved state and their
logits and state must be bitwise equal. Random bf16 weights; the K/V caches hold random values up to
`--context`.
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys

import torch
import triton

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from sambay.bench.generate import measure_bandwidth, random_model, step_bytes  # noqa: E402
from sambay.config import ModelConfig  # noqa: E402
from sambay.engine.cuda_graphs import GraphedDecoder  # noqa: E402
from sambay.engine.state import InferenceState  # noqa: E402


def captured(model, state, batch, tokens, slots, pdl: str) -> GraphedDecoder:
    os.environ["SAMBAY_PDL"] = pdl  # read at every launch, so it is fixed into the graph at capture
    decoder = GraphedDecoder(model, state, buckets=(batch,))
    decoder.step(tokens, slots)  # captures
    return decoder


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="phi4-mini-flash")
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 16, 64])
    ap.add_argument("--context", type=int, default=4096)
    ap.add_argument("--steps", type=int, default=50)
    args = ap.parse_args()
    dev = torch.device("cuda")
    props = torch.cuda.get_device_properties(dev)
    print(f"# engine decode step, plain launches vs PDL ({args.preset}, random bf16 weights, context {args.context})")
    print(f"device: {props.name}, torch {torch.__version__}, triton {triton.__version__}")
    print(f"date: {datetime.datetime.now(datetime.UTC).isoformat(timespec='seconds')}")
    print(f"command: python {' '.join(sys.argv)}")
    bandwidth = measure_bandwidth(dev)
    print(f"measured copy bandwidth: {bandwidth / 1e9:.0f} GB/s (read + write)")
    config = ModelConfig.from_preset(args.preset)
    torch.manual_seed(0)
    model = random_model(config, torch.bfloat16, dev)
    n_params = model.num_parameters()
    for batch in args.batch:
        state = InferenceState(config, batch + 3, args.context + 8, torch.bfloat16, dev)  # 2 scratch slots
        slots = torch.tensor([state.acquire() for _ in range(batch)], device=dev)
        for layer in state.layers:
            for t in layer.values():
                t.normal_()
        tokens = torch.randint(0, config.vocab_size, (batch,), device=dev)
        decoders = {}
        for name, pdl in (("plain", "0"), ("pdl", "1")):
            state.lengths[slots] = args.context
            decoders[name] = captured(model, state, batch, tokens, slots, pdl)
        os.environ.pop("SAMBAY_PDL")
        saved = [{k: t.clone() for k, t in layer.items()} for layer in state.layers]
        outs = {}
        for name, decoder in decoders.items():  # same inputs, same state: must agree bit for bit
            for layer, copy in zip(state.layers, saved):
                for k, t in layer.items():
                    t.copy_(copy[k])
            state.lengths[slots] = args.context
            logits = decoder.step(tokens, slots).clone()
            outs[name] = (logits, [t.clone() for layer in state.layers for t in layer.values()])
        same = torch.equal(outs["plain"][0], outs["pdl"][0]) and all(
            torch.equal(a, b) for a, b in zip(outs["plain"][1], outs["pdl"][1]))
        del saved, outs
        times = {name: [] for name in decoders}
        for _ in range(args.steps + 3):  # 3 warm-up rounds
            for name, decoder in decoders.items():
                state.lengths[slots] = args.context
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                decoder.step(tokens, slots)
                end.record()
                end.synchronize()
                times[name].append(start.elapsed_time(end))
        roof = step_bytes(config, n_params, batch, args.context, torch.bfloat16) / bandwidth * 1e3
        med = {name: statistics.median(t[3:]) for name, t in times.items()}
        print(f"batch {batch:4d}: plain {med['plain']:.3f} ms ({roof / med['plain']:.1%} of roofline), "
              f"pdl {med['pdl']:.3f} ms ({roof / med['pdl']:.1%}); pdl/plain {med['pdl'] / med['plain']:.3f}; "
              f"roofline {roof:.3f} ms; logits and state bitwise equal: {same}")
        del decoders, state
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
