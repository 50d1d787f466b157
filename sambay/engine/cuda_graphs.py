"""CUDA-graph decode: one captured `decode_step` per batch-size bucket (gpt-fast style).

A decode step launches a few hundred small kernels; replaying them as one graph removes the launch gaps
that otherwise dominate at small batch. Static input buffers (token ids, slot ids) are written in place
before each replay; rows beyond the live batch point at a scratch slot that this decoder holds, so padding
never touches a real sequence's state. Everything in `decode_step` reads positions from device tensors, so
one capture serves every step.
"""

from __future__ import annotations

import functools

import torch

from sambay.engine.decode import decode_step
from sambay.engine.state import InferenceState
from sambay.model.model import CausalLM

DEFAULT_BUCKETS = (1, 2, 4, 8, 16, 32, 48, 64, 96, 128, 192, 256, 384, 512)


@functools.cache
def compiled_decode_step():
    """`decode_step` compiled by inductor, once per process. Inductor fuses the norms, residual adds, casts
    and gates between the matmuls and the sambay ops (registered custom ops, called as they are): at
    phi4-mini-flash's batch 1 a step falls from 1210 kernels to 411. `emulate_precision_casts` keeps
    every bf16 rounding of the eager step (inductor would otherwise skip a round trip such as the fp32
    residual's cast to bf16 before a norm that upcasts again)."""
    step = torch.compile(decode_step.__wrapped__, options={"emulate_precision_casts": True})

    @functools.wraps(decode_step)
    def compiled(*args):
        with torch.inference_mode():  # compiled inside, like the eager step (which is decorated)
            return step(*args)
    return compiled


class GraphedDecoder:
    """`step(tokens, slots)` with the same result as `decode_step(model, state, tokens, slots)`.

    Takes one slot of `state` as scratch for padded rows (so the pool needs max_batch + 1 slots for
    max_batch live sequences). Graphs are captured lazily, the first time a bucket is needed.
    With `compile=True` the captured step is `compiled_decode_step()`: inductor compiles it at the first
    capture of batch 1 and once more, with a dynamic batch size, for all larger buckets (about 35 s each
    for phi4-mini-flash on an H200; benchmarks/results/experiments/decode-compile-h200.txt).
    """

    def __init__(self, model: CausalLM, state: InferenceState, buckets: tuple[int, ...] = DEFAULT_BUCKETS,
                 compile: bool = False):
        if state.device.type != "cuda":
            raise ValueError("CUDA graphs need the model and the inference state on a CUDA device")
        self.model, self.state = model, state
        self.decode_step = compiled_decode_step() if compile else decode_step
        self.pad_slot = state.acquire()
        largest = state.max_batch - 1  # every live batch must have a bucket
        self.buckets = tuple(sorted({b for b in buckets if b < largest} | {largest}))
        self.pool = torch.cuda.graph_pool_handle()  # all buckets share one memory pool
        self._graphs: dict[int, tuple[torch.cuda.CUDAGraph, torch.Tensor, torch.Tensor, torch.Tensor]] = {}

    def _bucket(self, n: int) -> int:
        for b in self.buckets:
            if b >= n:
                return b
        raise ValueError(f"batch of {n} exceeds the largest captured bucket {self.buckets[-1]}")

    def _capture(self, size: int):
        device = self.state.device
        tokens = torch.zeros(size, dtype=torch.long, device=device)
        slots = torch.full((size,), self.pad_slot, dtype=torch.long, device=device)
        for t in (tokens, slots):  # one compiled graph for every bucket > 1 (size 1 is always specialised)
            torch._dynamo.maybe_mark_dynamic(t, 0)

        def body():
            logits = self.decode_step(self.model, self.state, tokens, slots)
            self.state.lengths[self.pad_slot : self.pad_slot + 1].zero_()  # scratch never fills (no host copy)
            return logits

        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):  # warm-up: compiles Triton kernels, allocates workspaces
            for _ in range(2):
                body()
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool):
            logits = body()
        return graph, tokens, slots, logits

    @torch.inference_mode()
    def capture_all(self) -> None:
        """Capture every bucket now (at startup), so that no step ever waits for a capture or a compile."""
        for size in self.buckets:
            if size not in self._graphs:
                self._graphs[size] = self._capture(size)

    @torch.inference_mode()
    def step(self, tokens: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
        """tokens (B,), slots (B,) distinct live slots -> next-token logits (B, V) (a view into a static
        buffer: overwritten by the next step of the same bucket)."""
        n = tokens.shape[0]
        size = self._bucket(n)
        if size not in self._graphs:
            self._graphs[size] = self._capture(size)
        graph, static_tokens, static_slots, logits = self._graphs[size]
        static_tokens[:n].copy_(tokens)
        static_slots[:n].copy_(slots)
        static_slots[n:].fill_(self.pad_slot)
        graph.replay()
        return logits[:n]
