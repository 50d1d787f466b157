"""The scheduler: which requests run in the next engine step, and how many prompt tokens each prefills.

Each step spends a token budget (`max_num_batched_tokens`): every running request that has its whole prompt
in the state decodes one token first; what is left goes to prefill chunks, first of running requests whose
prompt is partly prefilled (oldest first), then of waiting requests admitted into free state slots (highest
priority first, then first come, first served). A long prompt is thus spread over several steps while the
others keep decoding, instead of stalling them for its whole prefill.

With a paged state, every scheduled token must have a page: a running request that cannot get one first
takes pages back from the prefix cache, then preempts the newest running request (which may be itself):
its slot and pages are freed and it waits again, at the head of its priority, to recompute its prompt and
what it generated so far (vLLM's RECOMPUTE). New requests are admitted only into pages that are free.

With a prefix cache, an admitted request starts from the longest cached snapshot of its prompt, and its
prefill chunks are cut at the positions where it should leave snapshots (`Request.snapshot_at`).
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field

from sambay.engine.prefix_cache import PrefixCache
from sambay.engine.request import Request, Status
from sambay.engine.state import InferenceState


@dataclass
class PrefillChunk:
    """Prompt tokens [start, end) of `request`, to be prefilled this step."""

    request: Request
    start: int
    end: int

    @property
    def completes_prompt(self) -> bool:
        return self.end == len(self.request.prefill_tokens)


@dataclass
class SchedulerOutput:
    decode: list[Request] = field(default_factory=list)  # one token each
    prefill: list[PrefillChunk] = field(default_factory=list)
    admitted: list[Request] = field(default_factory=list)  # took a slot this step (their first chunk is in prefill)
    preempted: list[tuple[Request, int]] = field(default_factory=list)  # (request, the slot it gave up)

    @property
    def num_tokens(self) -> int:
        return len(self.decode) + sum(c.end - c.start for c in self.prefill)

    def __bool__(self) -> bool:
        return bool(self.decode or self.prefill)


class Scheduler:
    """Waiting and running queues over the slots of one `InferenceState` (which it acquires and releases)."""

    def __init__(self, state: InferenceState, max_num_seqs: int, max_num_batched_tokens: int,
                 max_chunk: int | None = None, prefix_cache: PrefixCache | None = None):
        if max_num_batched_tokens < 1:
            raise ValueError(f"max_num_batched_tokens must be >= 1 (got {max_num_batched_tokens})")
        self.state = state
        self.max_num_seqs, self.budget, self.max_chunk = max_num_seqs, max_num_batched_tokens, max_chunk
        self.cache = prefix_cache
        self.waiting: list[tuple[int, int, int, Request]] = []  # heap of (-priority, arrival, index, request)
        self.running: list[Request] = []  # in admission order

    def add(self, request: Request) -> None:
        """Queue a request (with its forks, which are admitted with it)."""
        heapq.heappush(self.waiting, (-request.priority, request.arrival, request.index, request))

    def schedule(self) -> SchedulerOutput:
        out = SchedulerOutput()
        budget = self.budget
        for r in list(self.running):  # oldest first; preemption takes the newest
            if r in self.running and not r.prefilling and budget > 0 and self._reserve(r, r.state_len + 1, out):
                out.decode.append(r)
                budget -= 1
        for r in list(self.running):
            if r in self.running and r.prefilling and r.fork_of is None and budget > 0:  # forks copy their parent
                n = self._chunk_len(r, budget)
                if self._reserve(r, r.num_computed + n, out):
                    budget -= self._chunk(out, r, n)
        while self.waiting and budget > 0:
            r = self.waiting[0][-1]
            group = [r, *r.pending_forks]  # a request's n completions take their slots together
            if len(self.running) + len(group) > self.max_num_seqs or self.state.free_slots < len(group):
                break
            entry, known, digests = self._lookup(r)
            start = 0 if entry is None else entry.length
            n = min(len(r.prefill_tokens) - start, budget, self.max_chunk or budget)
            if not self._pages_free(self.state.blocks_for(start + n) + (entry is not None)):
                break
            heapq.heappop(self.waiting)
            for member in group:
                member.slot, member.status = self.state.acquire(), Status.RUNNING
                self.running.append(member)
                out.admitted.append(member)
            self._start(r, entry, known, digests)
            n = self._chunk_len(r, budget)
            self.state.ensure_capacity(r.slot, r.num_computed + n)
            budget -= self._chunk(out, r, n)
        return out

    def _lookup(self, r: Request):
        if self.cache is None or not _cacheable(r):
            return None, 0, []
        return self.cache.lookup(r.prefill_tokens)

    def _start(self, r: Request, entry, known: int, digests: list[bytes]) -> None:
        """Restore r's cached prefix (if any) and choose where its prefill leaves snapshots."""
        if self.cache is None or not _cacheable(r):
            return
        if entry is not None and not self.cache.restore(entry, r.slot):
            entry = None
        self.cache.record(len(r.prefill_tokens), entry)
        if entry is not None:
            r.num_computed = r.state_len = entry.length
        r.restored_from = entry
        r.snapshot_at = self.cache.snapshot_points(len(r.prefill_tokens), r.num_computed, known)
        self.cache.running(r, digests)

    def _chunk_len(self, r: Request, budget: int) -> int:
        """Prompt tokens r prefills this step: up to the budget and max_chunk, ending at a snapshot point."""
        n = min(len(r.prefill_tokens) - r.num_computed, budget, self.max_chunk or budget)
        cuts = [p - r.num_computed for p in r.snapshot_at if r.num_computed < p < r.num_computed + n]
        return min(cuts, default=n)

    def _pages_free(self, n: int) -> bool:
        if not self.state.paged or self.state.free_blocks >= n:
            return True
        return self.cache is not None and self.cache.free_pages_for(n)

    def _chunk(self, out: SchedulerOutput, r: Request, n: int) -> int:
        out.prefill.append(PrefillChunk(r, r.num_computed, r.num_computed + n))
        return n

    def _reserve(self, r: Request, n_tokens: int, out: SchedulerOutput) -> bool:
        """Pages for r's first n_tokens, preempting the newest running requests while they are short; False
        when r itself had to go."""
        while not self.state.ensure_capacity(r.slot, n_tokens):
            if self.cache is not None and self.cache.evict_one():  # cached pages go before running requests
                continue
            # the newest request that is not a fork waiting for its parent (those go with their parent)
            victim = next(v for v in reversed(self.running) if v.fork_of is None)
            for member in (victim, *victim.pending_forks):
                self._preempt(member, out)
            if victim is r:
                return False
        return True

    def _preempt(self, r: Request, out: SchedulerOutput) -> None:
        out.preempted.append((r, r.slot))
        if self.cache is not None:
            self.cache.done(r)
        # a request scheduled earlier in this step (its decode token or a chunk) runs no more
        out.decode = [d for d in out.decode if d is not r]
        out.prefill = [c for c in out.prefill if c.request is not r]
        self.running.remove(r)
        self.state.release(r.slot)
        r.slot, r.status = -1, Status.WAITING
        r.preempt()
        if r.fork_of is None:  # a pending fork comes back with its parent
            self.add(r)

    def remove(self, request: Request) -> None:
        """Take a finished or aborted request out of its queue and give its slot back."""
        if self.cache is not None:
            self.cache.done(request)
        if request in self.running:
            self.running.remove(request)
        else:
            self.waiting = [e for e in self.waiting if e[-1] is not request]
            heapq.heapify(self.waiting)
        if request.slot >= 0:
            self.state.release(request.slot)
            request.slot = -1


def _cacheable(r: Request) -> bool:
    """Prompt logprobs need every prompt position computed: such a request neither reads the cache nor
    leaves snapshots of a prompt (unless it is a preempted request recomputing, whose logprobs are known)."""
    return r.params.prompt_logprobs is None or r.resume_tokens is not None
