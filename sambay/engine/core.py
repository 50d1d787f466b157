"""`Engine`: requests in at any time, one `step()` at a time, `RequestOutput`s out (vLLM V1's engine core).

    engine = sambay.Engine(model, tokenizer, max_num_seqs=64)
    rid = engine.add_request("Hello", sambay.SamplingParams(max_new_tokens=32))
    while engine.has_unfinished_requests():
        for out in engine.step():
            print(out.request_id, out.delta_text, out.finish_reason)

    async for out in engine.generate("Hello", params):   # from asyncio code (a server): steps run in a thread
        ...

It is three parts: the `Scheduler` picks each step's decode rows and prefill chunks under a token budget;
the `ModelRunner` owns the state pool, the CUDA-graph decode and the sampler, and runs the step; the
`OutputProcessor` turns sampled ids into text, stops and deltas. The state pool is allocated once, at
construction, and every CUDA graph is captured then: nothing is resized or recaptured while serving.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

import torch

from sambay.engine.output import OutputProcessor
from sambay.engine.pool import size_pool
from sambay.engine.prefix_cache import PrefixCache
from sambay.engine.request import Request, RequestOutput, Status
from sambay.engine.runner import ModelRunner
from sambay.engine.sampling import SamplingParams
from sambay.engine.scheduler import Scheduler
from sambay.engine.state import InferenceState
from sambay.engine.text import TextCodec
from sambay.model.model import CausalLM
from sambay.model.state import state_bytes

Prompt = str | Sequence[int]
logger = logging.getLogger(__name__)


class Engine:
    """Continuous batching with chunked prefill over one fixed state pool.

    Args:
        model: the model (its device and weight dtype are used for the state).
        tokenizer: optional; anything with encode/decode (see `sambay.engine.text.TextCodec`). Needed for
            string prompts, `text` and stop strings.
        max_num_seqs: requests that hold a state slot at once (more wait). Default: as many as
            `memory_budget` allows, at most 256 (16 on CPU without a budget).
        max_model_len: prompt + generated tokens per request (default: the model's max_seq_len).
        max_num_batched_tokens: tokens per step: one per decoding request, the rest for prefill chunks.
        max_chunk: at most this many prompt tokens of one request per step (None: the budget's).
        memory_budget: bytes for the state pool, or a fraction of the device memory free at construction
            (CUDA default 0.9). A budget too small for one request is an error at construction.
        block_size: tokens per page of the growing caches (full attention's K/V): memory then follows the
            tokens in use, not max_model_len x slots; when pages run out the newest request is preempted and
            recomputed later (`num_preemptions`). None: one contiguous max_model_len cache per slot.
        num_blocks: pages (default: from the memory budget, else enough for every slot at max_model_len).
        cuda_graphs: replay decode steps as CUDA graphs (default: on a CUDA device).
        compile: capture the decode step compiled by inductor (needs CUDA graphs).
        enable_prefix_caching: reuse the state of shared prompt prefixes (`sambay.engine.prefix_cache`).
            Default: on whenever the growing caches are paged (or the model has none).
        prefix_cache_snapshots: snapshots the prefix cache keeps (default: a tenth of the memory budget,
            else twice max_num_seqs).
        prefix_cache_policy: "sambay" (default), or "align" (vLLM's align mode, for comparisons).
    """

    def __init__(self, model: CausalLM, tokenizer=None, *, max_num_seqs: int | None = None,
                 max_model_len: int | None = None, max_num_batched_tokens: int = 4096, max_chunk: int | None = None,
                 memory_budget: float | int | None = None, block_size: int | None = 64, num_blocks: int | None = None,
                 cuda_graphs: bool | None = None, compile: bool = False, enable_prefix_caching: bool | None = None,
                 prefix_cache_snapshots: int | None = None, prefix_cache_policy: str = "sambay"):
        self.model = model.eval()
        self.config = config = model.config
        self.codec = None if tokenizer is None else TextCodec(tokenizer)
        weight = model.embed.weight
        device, dtype = weight.device, weight.dtype
        cuda_graphs = device.type == "cuda" if cuda_graphs is None else cuda_graphs
        if cuda_graphs and device.type != "cuda":
            raise ValueError("cuda_graphs=True needs the model on a CUDA device")
        if compile and not cuda_graphs:
            raise ValueError("compile=True compiles the CUDA-graph decode step: it needs cuda_graphs and a CUDA device")
        self.max_model_len = config.max_seq_len if max_model_len is None else max_model_len
        if not isinstance(self.max_model_len, int) or self.max_model_len < 2:
            raise ValueError(f"max_model_len must be an integer >= 2 (got {max_model_len!r})")
        if max_chunk is not None and max_chunk < 1:
            raise ValueError(f"max_chunk must be >= 1 (got {max_chunk})")
        scratch = 1 if cuda_graphs else 0  # the graphed decoder's slot for padded rows
        budget = self._budget_bytes(memory_budget, device)
        constant, per_token = state_bytes(config, self.max_model_len, dtype)
        cacheable = per_token == 0 or block_size is not None
        if enable_prefix_caching and not cacheable:
            raise ValueError("prefix caching shares K/V pages: it needs block_size (a paged cache)")
        caching = cacheable if enable_prefix_caching is None else enable_prefix_caching
        snapshots = 0
        if caching:
            share = budget // 10 if budget is not None else None  # the snapshots' part of the budget
            snapshots = prefix_cache_snapshots or (max(1, share // constant) if share and constant else
                                                   2 * (max_num_seqs or 16))
            budget = None if budget is None else budget - snapshots * constant
        size = size_pool(config, self.max_model_len, dtype, max_num_seqs=max_num_seqs, block_size=block_size,
                         memory_budget=budget, num_blocks=num_blocks, default_seqs=256 - scratch)
        if caching and size.num_blocks is not None and budget is None and num_blocks is None:
            # without a budget the pool has exactly the slots' pages: give each snapshot room for the copy of
            # its partial last page, or a full pool would leave the cache nothing
            size = dataclasses.replace(size, num_blocks=size.num_blocks + snapshots)
        self.max_num_seqs = size.slots
        self.state = InferenceState(config, size.slots + scratch, self.max_model_len, dtype, device,
                                    block_size=block_size if size.num_blocks is not None else None,
                                    num_blocks=size.num_blocks)
        self.prefix_cache = PrefixCache(self.state, snapshots, block_size or 64, prefix_cache_policy) if caching else None
        self.scheduler = Scheduler(self.state, size.slots, max_num_batched_tokens, max_chunk, self.prefix_cache)
        self.num_preemptions = 0
        self.runner = ModelRunner(model, self.state, cuda_graphs=cuda_graphs, compile=compile,
                                  prefix_cache=self.prefix_cache)
        self.runner.warm_up()
        self.output = OutputProcessor(self.codec)
        eos = set(self.codec.eos_token_ids if self.codec else ())
        if config.eos_token_id is not None:
            eos.add(config.eos_token_id)
        self.eos_token_ids = frozenset(eos)
        self._requests: dict[str, Request] = {}
        self._arrivals = itertools.count()
        self._inbox: deque[Request] = deque()  # added since the last step (add_request may run in another thread)
        self._aborts: deque[str] = deque()
        self._lock = threading.Lock()  # one step at a time
        self._streams: dict[str, asyncio.Queue] = {}
        self._driver: asyncio.Task | None = None
        self.dead: BaseException | None = None  # the error of the step that failed

    @staticmethod
    def _budget_bytes(memory_budget, device) -> int | None:
        if memory_budget is None and device.type == "cuda":
            memory_budget = 0.9
        if isinstance(memory_budget, float):
            if not 0 < memory_budget <= 1:
                raise ValueError(f"a fractional memory_budget must be in (0, 1] (got {memory_budget})")
            if device.type != "cuda":
                raise ValueError("a fractional memory_budget is a share of free GPU memory: give bytes on a CPU")
            memory_budget = int(torch.cuda.mem_get_info(device)[0] * memory_budget)
        return memory_budget

    # ------------------------------------------------------------------ requests
    def add_request(self, prompt: Prompt, params: SamplingParams | None = None, request_id: str | None = None,
                    priority: int = 0) -> str:
        """Queue a request (a string or a list of token ids); returns its id. Higher priority runs first."""
        params = SamplingParams() if params is None else params
        if not isinstance(params, SamplingParams):
            raise TypeError(f"params must be a SamplingParams, got {type(params).__name__}")
        ids = self._encode(prompt)
        scoring_only = params.max_new_tokens == 0 and params.prompt_logprobs is not None
        if len(ids) > self.max_model_len or (len(ids) == self.max_model_len and not scoring_only):
            raise ValueError(f"the prompt has {len(ids)} tokens; max_model_len is {self.max_model_len}, which must "
                             "leave room for at least one generated token")
        if params.stop and self.codec is None:
            raise ValueError("stop strings need a tokenizer")
        request_id = str(next(self._arrivals)) if request_id is None else str(request_id)
        if request_id in self._requests:
            raise ValueError(f"request id {request_id!r} is already in use")
        stop_ids = set(params.stop_token_ids) | (set() if params.ignore_eos else set(self.eos_token_ids))
        max_new = min(params.max_new_tokens, self.max_model_len - len(ids))
        if params.n > self.max_num_seqs:
            raise ValueError(f"n = {params.n} completions need {params.n} state slots; max_num_seqs is {self.max_num_seqs}")
        request = Request(request_id, ids, params, max_new, frozenset(stop_ids), priority=priority,
                          arrival=next(self._arrivals))
        request.forks = [Request(request_id, ids, params, max_new, request.stop_ids, priority=priority,
                                 arrival=request.arrival, index=i, fork_of=request) for i in range(1, params.n)]
        for member in (request, *request.forks):
            self._requests[member.key] = member
        self._inbox.append(request)
        return request_id

    def _encode(self, prompt: Prompt) -> list[int]:
        if isinstance(prompt, str):
            if self.codec is None:
                raise ValueError("string prompts need a tokenizer: Engine(model, tokenizer=...)")
            ids = self.codec.encode(prompt)
        elif isinstance(prompt, (bytes, bytearray)) or not isinstance(prompt, Sequence | torch.Tensor):
            raise TypeError(f"a prompt is a string or a sequence of token ids, got {type(prompt).__name__}")
        else:
            ids = prompt.tolist() if isinstance(prompt, torch.Tensor) else list(prompt)
            if not all(isinstance(t, int) and not isinstance(t, bool) for t in ids):
                raise TypeError("token ids must be integers")
        if not ids:
            raise ValueError("the prompt is empty")
        if min(ids) < 0 or max(ids) >= self.config.vocab_size:
            raise ValueError(f"the prompt has token ids outside the vocabulary [0, {self.config.vocab_size})")
        return ids

    def abort(self, request_id: str) -> None:
        """Stop a request (all its completions); its slots are free after the next step, which reports it
        with finish_reason "abort"."""
        self._aborts.append(str(request_id))

    def has_unfinished_requests(self) -> bool:
        return bool(self._requests)

    # ------------------------------------------------------------------ the step
    def step(self) -> list[RequestOutput]:
        """Run one scheduled step; returns an output for every request that produced a token or ended."""
        with self._lock:
            outputs = self._take_inbox()
            plan = self.scheduler.schedule()
            for r, slot in plan.preempted:
                self.runner.preempted(r, slot)
            self.num_preemptions += len(plan.preempted)
            for r in plan.admitted:
                r.metrics.first_scheduled_time = r.metrics.first_scheduled_time or time.perf_counter()
                self.runner.admit(r)
            result = self.runner.execute(plan)
            outputs += self.output.process(result.sampled)
            for request in result.scored:
                outputs.append(self._finish(request, Status.FINISHED, "length"))
            for request, _, _ in result.sampled:
                if request.finished:
                    self._retire(request)
            return outputs

    def _take_inbox(self) -> list[RequestOutput]:
        outputs = []
        while self._inbox:
            request = self._inbox.popleft()
            group = [request, *request.forks]
            for member in group:
                self.output.add(member)
            if request.max_new > 0 or request.params.prompt_logprobs is not None:  # (the prompt is scored)
                self.scheduler.add(request)
                continue
            outputs += [self._finish(member, Status.FINISHED, "length") for member in group]  # nothing to do
        while self._aborts:
            request = self._requests.get(self._aborts.popleft())
            for member in () if request is None else (request, *request.forks):
                if not member.finished:
                    outputs.append(self._finish(member, Status.ABORTED, "abort"))
        return outputs

    def _finish(self, request: Request, status: Status, reason: str) -> RequestOutput:
        request.status, request.finish_reason = status, reason
        request.metrics.finished_time = time.perf_counter()
        output = self.output.output(request)
        self._retire(request)
        return output

    def _retire(self, request: Request) -> None:
        slot = request.slot
        cache = self.prefix_cache
        if cache is not None and cache.snapshots_answers and request.status is Status.FINISHED and slot >= 0 \
                and request.state_len:
            # the next turn of a conversation starts with this prompt and answer (all but the last token,
            # which never entered the state)
            if cache.insert(slot, (request.prompt_token_ids + request.output_token_ids)[:request.state_len]) \
                    and request.restored_from is not None:
                cache.superseded(request.restored_from)
        self.scheduler.remove(request)
        if slot >= 0:
            self.runner.release(slot)
        self._requests.pop(request.key, None)

    # ------------------------------------------------------------------ stats
    def stats(self) -> EngineStats:
        """What a metrics endpoint reports about the engine now (cheap; safe from another thread)."""
        state = self.state
        if state.paged:
            usage = 1 - state.free_blocks / max(state.num_blocks, 1)
        else:
            usage = len(self.scheduler.running) / self.max_num_seqs
        cache = self.prefix_cache.stats if self.prefix_cache is not None else None
        return EngineStats(num_running=len(self.scheduler.running), num_waiting=len(self.scheduler.waiting) +
                           len(self._inbox), kv_cache_usage=usage, num_preemptions=self.num_preemptions,
                           prefix_cache_queries=cache.queries if cache else 0, prefix_cache_hits=cache.hits if cache else 0,
                           prefix_cache_bytes=cache.snapshot_bytes if cache else 0)

    # ------------------------------------------------------------------ asyncio front
    async def generate(self, prompt: Prompt, params: SamplingParams | None = None, request_id: str | None = None,
                       priority: int = 0) -> AsyncIterator[RequestOutput]:
        """Yield this request's outputs (of every completion, told apart by `index`) as steps produce them;
        steps run in a worker thread. Leaving the loop early (or cancelling the task) aborts the request.
        Raises `EngineDeadError` once a step has failed: the engine's state can no longer be trusted."""
        stream = self.add_stream(prompt, params, request_id, priority)
        try:
            async for out in stream:
                yield out
        finally:
            stream.close()

    def add_stream(self, prompt: Prompt, params: SamplingParams | None = None, request_id: str | None = None,
                   priority: int = 0) -> OutputStream:
        """`generate`, except that the request is added (and checked, raising ValueError or TypeError) now,
        in this call. Iterate the stream in this event loop; `close()` it when done (it aborts the request if
        it has not finished)."""
        if self.dead is not None:
            raise EngineDeadError(f"the engine stopped after an error: {self.dead}")
        request_id = self.add_request(prompt, params, request_id, priority)
        stream = OutputStream(self, request_id, (SamplingParams() if params is None else params).n)
        self._streams[request_id] = stream.queue
        if self._driver is None or self._driver.done():
            self._driver = asyncio.get_running_loop().create_task(self._drive())
        return stream

    async def _drive(self) -> None:
        while self.has_unfinished_requests() and self.dead is None:
            try:
                outputs = await asyncio.to_thread(self.step)
            except Exception as e:  # noqa: BLE001 - a failed step ends every stream; the engine is dead
                logger.exception("engine step failed; the engine is stopped")
                self.dead = e
                for queue in self._streams.values():
                    queue.put_nowait(EngineDeadError(f"the engine stopped after an error: {type(e).__name__}: {e}"))
                return
            for out in outputs:
                queue = self._streams.get(out.request_id)
                if queue is not None:
                    queue.put_nowait(out)


class OutputStream:
    """The outputs of one request added with `Engine.add_stream`, as an async iterator."""

    def __init__(self, engine: Engine, request_id: str, n: int):
        self.engine, self.request_id = engine, request_id
        self.queue: asyncio.Queue = asyncio.Queue()
        self.open_completions = n

    def __aiter__(self) -> OutputStream:
        return self

    async def __anext__(self) -> RequestOutput:
        if not self.open_completions:
            self.close()
            raise StopAsyncIteration
        out = await self.queue.get()
        if isinstance(out, BaseException):
            self.close()
            raise out
        self.open_completions -= out.finished
        return out

    def close(self) -> None:
        """Stop listening; abort the request unless every completion has finished."""
        self.engine._streams.pop(self.request_id, None)
        if self.open_completions:
            self.open_completions = 0
            self.engine.abort(self.request_id)


class EngineDeadError(RuntimeError):
    """A step of the engine failed (its state may be corrupt): no request can run on it any more."""


@dataclass
class EngineStats:
    num_running: int  # requests holding a state slot
    num_waiting: int  # requests waiting for one (preempted ones included)
    kv_cache_usage: float  # share of the growing cache's pages in use (of the slots, without pages)
    num_preemptions: int  # since the engine started
    prefix_cache_queries: int = 0  # prompt tokens looked up in the prefix cache
    prefix_cache_hits: int = 0  # of which restored from it
    prefix_cache_bytes: int = 0  # memory of the snapshots it holds
