"""The scheduler: which requests run in the next engine step, and how many prompt tokens each prefills.

Each step spends a token budget (`max_num_batched_tokens`): every running request that has its whole prompt
in the state decodes one token first; what is left goes to prefill chunks, first of running requests whose
prompt is partly prefilled (oldest first), then of waiting requests admitted into free state slots (highest
priority first, then first come, first served). A long prompt is thus spread over several steps while the
others keep decoding, instead of stalling them for its whole prefill.

With a paged state, every scheduled token must have a page: a running request that cannot get one preempts
the newest running request (which may be itself): its slot and pages are freed and it waits again, at the
head of its priority, to recompute its prompt and what it generated so far (vLLM's RECOMPUTE). New
requests are admitted only into pages that are free.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field

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
                 max_chunk: int | None = None):
        if max_num_batched_tokens < 1:
            raise ValueError(f"max_num_batched_tokens must be >= 1 (got {max_num_batched_tokens})")
        self.state = state
        self.max_num_seqs, self.budget, self.max_chunk = max_num_seqs, max_num_batched_tokens, max_chunk
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
                n = min(len(r.prefill_tokens) - r.num_computed, budget, self.max_chunk or budget)
                if self._reserve(r, r.num_computed + n, out):
                    budget -= self._chunk(out, r, n)
        while self.waiting and budget > 0:
            r = self.waiting[0][-1]
            group = [r, *r.pending_forks]  # a request's n completions take their slots together
            n = min(len(r.prefill_tokens), budget, self.max_chunk or budget)
            if (len(self.running) + len(group) > self.max_num_seqs or self.state.free_slots < len(group)
                    or self.state.blocks_for(n) > self.state.free_blocks):
                break
            heapq.heappop(self.waiting)
            for member in group:
                member.slot, member.status = self.state.acquire(), Status.RUNNING
                self.running.append(member)
                out.admitted.append(member)
            self.state.ensure_capacity(r.slot, n)
            budget -= self._chunk(out, r, n)
        return out

    def _chunk(self, out: SchedulerOutput, r: Request, n: int) -> int:
        out.prefill.append(PrefillChunk(r, r.num_computed, r.num_computed + n))
        return n

    def _reserve(self, r: Request, n_tokens: int, out: SchedulerOutput) -> bool:
        """Pages for r's first n_tokens, preempting the newest running requests while they are short; False
        when r itself had to go."""
        while not self.state.ensure_capacity(r.slot, n_tokens):
            # the newest request that is not a fork waiting for its parent (those go with their parent)
            victim = next(v for v in reversed(self.running) if v.fork_of is None)
            for member in (victim, *victim.pending_forks):
                self._preempt(member, out)
            if victim is r:
                return False
        return True

    def _preempt(self, r: Request, out: SchedulerOutput) -> None:
        out.preempted.append((r, r.slot))
        self.running.remove(r)
        self.state.release(r.slot)
        r.slot, r.status = -1, Status.WAITING
        r.preempt()
        if r.fork_of is None:  # a pending fork comes back with its parent
            self.add(r)

    def remove(self, request: Request) -> None:
        """Take a finished or aborted request out of its queue and give its slot back."""
        if request in self.running:
            self.running.remove(request)
        else:
            self.waiting = [e for e in self.waiting if e[-1] is not request]
            heapq.heapify(self.waiting)
        if request.slot >= 0:
            self.state.release(request.slot)
            request.slot = -1
