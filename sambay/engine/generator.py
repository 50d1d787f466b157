"""`Generator`: prompts in, tokens (and text) out, for a batch of requests with their own settings.

    gen = sambay.Generator(model, tokenizer)
    for result in gen.generate(["Hello", [1, 2, 3]], sambay.SamplingParams(temperature=0, max_new_tokens=32)):
        print(result.text, result.finish_reason, result.timings.decode_tokens_per_s)
    for chunk in gen.stream("Hello", sambay.SamplingParams(max_new_tokens=32)):
        print(chunk.text, end="", flush=True)

`Generator` is the simple synchronous client of `sambay.Engine`: it adds the prompts as requests and steps
the engine until they finish. The engine (and its state pool and CUDA graphs) is built once, with the
Generator; several calls, and interleaved streams, share it.
"""

from __future__ import annotations

import itertools
import time
from collections import defaultdict, deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

from sambay.engine.core import Engine
from sambay.engine.request import RequestOutput
from sambay.engine.sampling import SamplingParams
from sambay.model.model import CausalLM

Prompt = str | Sequence[int]


@dataclass
class Timings:
    prefill_s: float  # wall time of the prefill call that admitted this request (shared by its batch)
    decode_s: float  # from the first generated token to the last
    decode_tokens_per_s: float  # tokens after the first / decode_s (0 when only one token was generated)
    time_to_first_token_s: float  # from the generate/stream call to the first token (includes queueing)


@dataclass
class GenerationResult:
    index: int  # position of the prompt in the call
    prompt_token_ids: list[int]
    token_ids: list[int]  # generated tokens only (a stop token that ended the request is included)
    text: str | None  # decoded generated text (None without a tokenizer); stop tokens / strings excluded
    finish_reason: str  # "stop" (stop token or string) or "length" (max_new_tokens or the model's limit)
    stop_reason: int | str | None  # the stop token id or stop string, when finish_reason == "stop"
    timings: Timings


@dataclass
class GenerationChunk:
    """One streamed step of one request."""

    index: int
    token_id: int | None  # None only for a request with max_new_tokens == 0
    text: str  # new text since the previous chunk of this request ("" without a tokenizer)
    finish_reason: str | None  # set on the request's last chunk
    result: GenerationResult | None = None  # the whole result, on the request's last chunk only


class Generator:
    """Batched generation with a `CausalLM`, through one `Engine`.

    Args:
        model: the model (its device and weight dtype are used for the state).
        tokenizer: optional; anything with encode/decode (see `sambay.engine.text.TextCodec`). Needed for
            string prompts, `text` and stop strings.
        max_batch: requests that run at once (the engine's max_num_seqs); more wait for a slot.
        chunk_size: at most this many prompt tokens of one request per step (None: whole prompts).
        cuda_graphs: replay decode steps as CUDA graphs; default: when the model is on a CUDA device. Same
            tokens as eager decode, far fewer kernel-launch gaps.
        compile: capture the decode step compiled by inductor (needs CUDA graphs): phi4-mini-flash on an
            H200 at context 4096 steps in 3.5 instead of 5.3 ms at batch 1 and 6.5 instead of 8.7 ms at
            batch 64, for about 35 s of compilation per graph family at construction.
        **engine_options: passed to `Engine` (max_model_len, memory_budget, max_num_batched_tokens).
    """

    def __init__(self, model: CausalLM, tokenizer=None, *, max_batch: int = 16, chunk_size: int | None = 512,
                 cuda_graphs: bool | None = None, compile: bool = False, **engine_options):
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1 (got {max_batch})")
        max_len = engine_options.get("max_model_len") or model.config.max_seq_len
        engine_options.setdefault("max_num_batched_tokens", max(4096, chunk_size or max_len))
        self.engine = Engine(model, tokenizer, max_num_seqs=max_batch, max_chunk=chunk_size,
                             cuda_graphs=cuda_graphs, compile=compile, **engine_options)
        self.state = self.engine.state
        self._ids = itertools.count()
        self._pending: dict[str, deque[RequestOutput]] = defaultdict(deque)  # outputs of other callers' streams

    # ------------------------------------------------------------------ public
    def generate(self, prompts: Prompt | Sequence[Prompt],
                 params: SamplingParams | Sequence[SamplingParams] | None = None) -> list[GenerationResult]:
        """One result per prompt, in prompt order. A single prompt (a string or one list of ids) is fine."""
        results = {}
        for chunk in self.stream(prompts, params):
            if chunk.result is not None:
                results[chunk.index] = chunk.result
        return [results[i] for i in range(len(results))]

    def stream(self, prompts: Prompt | Sequence[Prompt],
               params: SamplingParams | Sequence[SamplingParams] | None = None) -> Iterator[GenerationChunk]:
        """Yield a `GenerationChunk` for every generated token of every request, as soon as it exists."""
        prompts, params = self._normalise(prompts, params)
        start = time.perf_counter()
        ids = {}
        for i, (prompt, p) in enumerate(zip(prompts, params)):
            rid = f"gen-{next(self._ids)}"
            try:
                self.engine.add_request(prompt, p, request_id=rid)
            except (ValueError, TypeError) as e:
                for other in ids:
                    self.engine.abort(other)
                raise type(e)(f"prompt {i}: {e}") from None
            ids[rid] = i
        open_ids = set(ids)
        try:
            while open_ids:
                for out in self._outputs(open_ids):
                    if out.finished:
                        open_ids.discard(out.request_id)
                    yield self._chunk(ids[out.request_id], out, start)
        finally:  # a consumer that stops iterating early must not hold slots
            for rid in open_ids:
                self.engine.abort(rid)
            if open_ids:
                self.engine.step()
            for rid in ids:
                self._pending.pop(rid, None)

    # ------------------------------------------------------------------ helpers
    def _outputs(self, mine: set[str]) -> list[RequestOutput]:
        """This caller's next outputs: buffered ones first, else one engine step (buffering the others')."""
        ready = [out for rid in mine for out in self._drain(rid)]
        if ready:
            return ready
        outputs = []
        for out in self.engine.step():
            (outputs.append(out) if out.request_id in mine else self._pending[out.request_id].append(out))
        return outputs

    def _drain(self, rid: str) -> list[RequestOutput]:
        return list(self._pending.pop(rid, ()))

    def _normalise(self, prompts, params) -> tuple[list, list[SamplingParams]]:
        if isinstance(prompts, torch.Tensor):
            prompts = prompts.tolist() if prompts.dim() == 2 else [prompts.tolist()]
        if isinstance(prompts, str) or (isinstance(prompts, Sequence) and prompts and
                                        all(isinstance(t, int) for t in prompts)):
            prompts = [prompts]
        prompts = list(prompts)
        if not prompts:
            raise ValueError("no prompts given")
        if params is None:
            params = SamplingParams()
        if isinstance(params, SamplingParams):
            params = [params] * len(prompts)
        params = list(params)
        if len(params) != len(prompts):
            raise ValueError(f"got {len(params)} SamplingParams for {len(prompts)} prompts")
        if any(p.n != 1 for p in params):
            raise ValueError("Generator gives one result per prompt: for n > 1 completions use sambay.Engine")
        return prompts, params

    def _chunk(self, index: int, out: RequestOutput, start: float) -> GenerationChunk:
        token = out.delta_token_ids[-1] if out.delta_token_ids else None
        text = "" if out.text is None else out.delta_text
        return GenerationChunk(index, token, text, out.finish_reason,
                               self._result(index, out, start) if out.finished else None)

    @staticmethod
    def _result(index: int, out: RequestOutput, start: float) -> GenerationResult:
        m = out.metrics
        first = m.first_token_time or m.finished_time or start
        last = m.last_token_time or first
        n = len(out.token_ids) - 1
        decode_s = last - first
        return GenerationResult(
            index=index, prompt_token_ids=out.prompt_token_ids, token_ids=list(out.token_ids), text=out.text,
            finish_reason=out.finish_reason, stop_reason=out.stop_reason,
            timings=Timings(prefill_s=first - (m.first_scheduled_time or first), decode_s=decode_s,
                            decode_tokens_per_s=n / decode_s if n > 0 and decode_s > 0 else 0.0,
                            time_to_first_token_s=first - start))
