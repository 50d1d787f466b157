"""`Generator`: prompts in, tokens (and text) out, for a batch of requests with their own settings.

    gen = sambay.Generator(model, tokenizer)
    for result in gen.generate(["Hello", [1, 2, 3]], sambay.SamplingParams(temperature=0, max_new_tokens=32)):
        print(result.text, result.finish_reason, result.timings.decode_tokens_per_s)
    for chunk in gen.stream("Hello", sambay.SamplingParams(max_new_tokens=32)):
        print(chunk.text, end="", flush=True)

The loop is a minimal continuous-batching scheduler over the slot pool: whenever slots are free, waiting
requests are prefilled together; then every running request decodes one token; a finished request gives its
slot back at once. Tokens come to the host once per step (to check stops and to stream them).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch

from sambay.engine.cuda_graphs import GraphedDecoder
from sambay.engine.decode import decode_step
from sambay.engine.prefill import prefill
from sambay.engine.sampling import Sampler, SamplingParams
from sambay.engine.state import InferenceState
from sambay.engine.text import TextCodec, find_stop, held_back
from sambay.model.model import CausalLM
from sambay.tokenizer.detokenizer import IncrementalDecoder

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


@dataclass
class _Request:
    index: int
    prompt: list[int]
    params: SamplingParams
    max_new: int
    stop_ids: frozenset[int]
    detok: IncrementalDecoder | None
    slot: int = -1
    token_ids: list[int] = field(default_factory=list)
    text: str = ""
    emitted: int = 0
    finish_reason: str | None = None
    stop_reason: int | str | None = None
    prefill_s: float = 0.0
    t_start: float = 0.0
    t_first: float = 0.0
    t_last: float = 0.0


class Generator:
    """Batched generation with a `CausalLM`.

    Args:
        model: the model (its device and weight dtype are used for the state).
        tokenizer: optional; anything with encode/decode (see `sambay.engine.text.TextCodec`). Needed for
            string prompts, `text` and stop strings.
        max_batch: slots in the state pool: at most this many requests run at once; more wait for a slot.
        chunk_size: prompts longer than this are prefilled in chunks (None: in one go).
        cuda_graphs: replay decode steps as CUDA graphs (`GraphedDecoder`); default: when the model is on a
            CUDA device. Same tokens as eager decode, far fewer kernel-launch gaps.
        compile: capture the decode step compiled by inductor (needs CUDA graphs): phi4-mini-flash on an
            H200 at context 4096 steps in 3.5 instead of 5.3 ms at batch 1 and 6.5 instead of 8.7 ms at
            batch 64, for about 35 s of compilation at the first step and again at the first batch > 1.
    """

    def __init__(self, model: CausalLM, tokenizer=None, *, max_batch: int = 16, chunk_size: int | None = 512,
                 cuda_graphs: bool | None = None, compile: bool = False):
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1 (got {max_batch})")
        self.model = model.eval()
        self.config = model.config
        self.codec = None if tokenizer is None else TextCodec(tokenizer)
        self.max_batch, self.chunk_size = max_batch, chunk_size
        weight = model.embed.weight
        self.device, self.dtype = weight.device, weight.dtype
        self.cuda_graphs = self.device.type == "cuda" if cuda_graphs is None else cuda_graphs
        if self.cuda_graphs and self.device.type != "cuda":
            raise ValueError("cuda_graphs=True needs the model on a CUDA device")
        if compile and not self.cuda_graphs:
            raise ValueError("compile=True compiles the CUDA-graph decode step: it needs cuda_graphs and a CUDA device")
        self.compile = compile
        self.state: InferenceState | None = None
        self._decoder = None  # GraphedDecoder over self.state (it holds one scratch slot)
        eos = set(self.codec.eos_token_ids if self.codec else ())
        if self.config.eos_token_id is not None:
            eos.add(self.config.eos_token_id)
        self.eos_token_ids = frozenset(eos)

    # ------------------------------------------------------------------ public
    def generate(self, prompts: Prompt | Sequence[Prompt],
                 params: SamplingParams | Sequence[SamplingParams] | None = None) -> list[GenerationResult]:
        """One result per prompt, in prompt order. A single prompt (a string or one list of ids) is fine."""
        requests = self._requests(prompts, params)
        start = time.perf_counter()
        for _ in self._run(requests, start):
            pass
        return [self._result(r) for r in requests]

    def stream(self, prompts: Prompt | Sequence[Prompt],
               params: SamplingParams | Sequence[SamplingParams] | None = None) -> Iterator[GenerationChunk]:
        """Yield a `GenerationChunk` for every generated token of every request, as soon as it exists."""
        requests = self._requests(prompts, params)
        yield from self._run(requests, time.perf_counter())

    # ------------------------------------------------------------------ requests
    def _requests(self, prompts, params) -> list[_Request]:
        if isinstance(prompts, str) or (isinstance(prompts, Sequence) and prompts and
                                        all(isinstance(t, int) for t in prompts)):
            prompts = [prompts]
        if isinstance(prompts, torch.Tensor):
            prompts = prompts.tolist() if prompts.dim() == 2 else [prompts.tolist()]
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
        limit, vocab = self.config.max_seq_len, self.config.vocab_size
        out = []
        for i, (prompt, p) in enumerate(zip(prompts, params)):
            if isinstance(prompt, str):
                if self.codec is None:
                    raise ValueError("string prompts need a tokenizer: Generator(model, tokenizer=...)")
                ids = self.codec.encode(prompt)
            else:
                ids = [int(t) for t in prompt]
            if not ids:
                raise ValueError(f"prompt {i} is empty")
            if min(ids) < 0 or max(ids) >= vocab:
                raise ValueError(f"prompt {i} has token ids outside the vocabulary [0, {vocab})")
            if len(ids) > limit:
                raise ValueError(f"prompt {i} has {len(ids)} tokens; the model's max_seq_len is {limit}")
            if p.stop and self.codec is None:
                raise ValueError("stop strings need a tokenizer")
            stop_ids = set(p.stop_token_ids) | (set() if p.ignore_eos else set(self.eos_token_ids))
            # special tokens are not part of the generated text (as in vLLM and HF)
            detok = None if self.codec is None else IncrementalDecoder(self.codec, skip_special_tokens=True)
            out.append(_Request(index=i, prompt=ids, params=p, max_new=min(p.max_new_tokens, limit - len(ids)),
                                stop_ids=frozenset(stop_ids), detok=detok))
        return out

    def _pool(self, requests: list[_Request]) -> tuple[InferenceState, Sampler]:
        # The last generated token never enters the state, hence the -1.
        need_len = max(len(r.prompt) + r.max_new - 1 for r in requests)
        need_batch = min(self.max_batch, len(requests))
        scratch = 1 if self.cuda_graphs else 0  # the graphed decoder's slot for padded rows
        s = self.state
        if (s is None or s.max_len < need_len or s.max_batch - scratch < need_batch
                or s.free_slots != s.max_batch - scratch):
            s = self.state = InferenceState(self.config, need_batch + scratch, need_len, self.dtype, self.device)
            self._decoder = GraphedDecoder(self.model, s, compile=self.compile) if self.cuda_graphs else None
        return s, Sampler(s.max_batch, self.config.vocab_size, self.device)

    def _decode(self, state: InferenceState, tokens: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
        if self._decoder is not None:
            return self._decoder.step(tokens, slots)
        return decode_step(self.model, state, tokens, slots)

    # ------------------------------------------------------------------ the loop
    def _run(self, requests: list[_Request], start: float) -> Iterator[GenerationChunk]:
        for r in requests:
            r.t_start = start
            if r.max_new <= 0:
                r.finish_reason = "length"
                r.t_first = r.t_last = start
                yield GenerationChunk(r.index, None, "", "length", self._result(r))
        waiting = deque(r for r in requests if r.max_new > 0)
        if not waiting:
            return
        state, sampler = self._pool(list(waiting))
        last_tokens = torch.zeros(state.max_batch, dtype=torch.long, device=self.device)
        active: list[_Request] = []
        try:
            while waiting or active:
                admitted = []
                while waiting and state.free_slots:
                    r = waiting.popleft()
                    r.slot = state.acquire()
                    sampler.admit(r.slot, r.params, r.prompt)
                    admitted.append(r)
                if admitted:
                    t0 = time.perf_counter()
                    slots = [r.slot for r in admitted]
                    slot_t = torch.tensor(slots, device=self.device)
                    logits = prefill(self.model, state, [r.prompt for r in admitted], slots, self.chunk_size)
                    tokens = sampler.sample(logits, slot_t, slots)
                    last_tokens[slot_t] = tokens
                    ids = tokens.tolist()  # the one host sync: deliver the tokens
                    now = time.perf_counter()
                    for r, tok in zip(admitted, ids):
                        r.prefill_s, r.t_first = now - t0, now
                        active.append(r)
                        yield from self._accept(r, tok, now, state, sampler)
                    active = [r for r in active if r.finish_reason is None]
                if active:
                    slots = [r.slot for r in active]
                    slot_t = torch.tensor(slots, device=self.device)
                    logits = self._decode(state, last_tokens[slot_t], slot_t)
                    tokens = sampler.sample(logits, slot_t, slots)
                    last_tokens[slot_t] = tokens
                    ids = tokens.tolist()
                    now = time.perf_counter()
                    for r, tok in zip(active, ids):
                        yield from self._accept(r, tok, now, state, sampler)
                    active = [r for r in active if r.finish_reason is None]
        finally:  # a consumer that stops iterating early must not leak slots
            for r in requests:
                if r.slot >= 0 and r.finish_reason is None:
                    state.release(r.slot)
                    sampler.release(r.slot)
                    r.slot = -1

    def _accept(self, r: _Request, tok: int, now: float, state: InferenceState, sampler: Sampler):
        """Record one token of `r`, decide whether it finished, yield its chunk."""
        r.token_ids.append(tok)
        r.t_last = now
        stops = r.params.stop
        if tok in r.stop_ids:
            r.finish_reason, r.stop_reason = "stop", tok
        elif r.detok is not None:
            piece = r.detok.push(tok)
            r.text += piece
            hit = find_stop(r.text, stops, len(r.text) - len(piece)) if stops and piece else None
            if hit is not None:
                r.text = r.text[:hit[0]]
                r.finish_reason, r.stop_reason = "stop", hit[1]
        if r.finish_reason is None and len(r.token_ids) >= r.max_new:
            r.finish_reason = "length"
        if r.finish_reason is not None and r.detok is not None and not isinstance(r.stop_reason, str):
            r.text += r.detok.flush()  # an incomplete character at the very end
        hold = 0 if r.finish_reason is not None else held_back(r.text, stops)
        end = max(r.emitted, len(r.text) - hold)
        delta, r.emitted = r.text[r.emitted:end], end
        if r.finish_reason is not None:
            state.release(r.slot)
            sampler.release(r.slot)
            r.slot = -1
        yield GenerationChunk(r.index, tok, delta, r.finish_reason,
                              None if r.finish_reason is None else self._result(r))

    def _result(self, r: _Request) -> GenerationResult:
        decode_s = r.t_last - r.t_first
        n = len(r.token_ids) - 1
        return GenerationResult(
            index=r.index, prompt_token_ids=r.prompt, token_ids=r.token_ids,
            text=None if self.codec is None else r.text, finish_reason=r.finish_reason,
            stop_reason=r.stop_reason,
            timings=Timings(prefill_s=r.prefill_s, decode_s=decode_s,
                            decode_tokens_per_s=n / decode_s if n > 0 and decode_s > 0 else 0.0,
                            time_to_first_token_s=r.t_first - r.t_start))
