"""A request's life in the engine, and what `Engine.step` hands back for it.

    WAITING ──admit (slot)──► RUNNING: prefill chunks until the prompt is in the state, then one token a step
                                   └──► FINISHED (stop token / stop string / length) or ABORTED: slot freed
"""

from __future__ import annotations

import enum
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from sambay.engine.sampling import Logprobs, SamplingParams


class Status(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"
    ABORTED = "aborted"


class Prefix(Sequence):
    """The first n items of a list that only grows (a request's tokens or logprobs): taken in O(1) at every
    step, where copying a 4K-token list for each of 256 requests would cost milliseconds of host time.
    Compares equal to the list of the same items, and `+` with a list gives a list; `list(prefix)` copies."""

    __slots__ = ("_items", "_n")

    def __init__(self, items: list, n: int | None = None):
        self._items, self._n = items, len(items) if n is None else n

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, i):
        if isinstance(i, slice):
            return self._items[:self._n][i]
        if not -self._n <= i < self._n:
            raise IndexError("index out of range")
        return self._items[i % self._n]

    def __iter__(self):
        return iter(self._items[:self._n])

    def __eq__(self, other) -> bool:
        if isinstance(other, (list, tuple, Prefix)):
            return len(other) == self._n and all(a == b for a, b in zip(self, other))
        return NotImplemented

    def __add__(self, other) -> list:
        return self._items[:self._n] + list(other)

    def __radd__(self, other) -> list:
        return list(other) + self._items[:self._n]

    def __repr__(self) -> str:
        return repr(self._items[:self._n])


@dataclass
class RequestOutput:
    """One completion's state after an engine step (as vLLM's): everything generated so far, and the delta.

    token_ids: every generated token (a stop token that ended the request included); text: their text (None
    without a tokenizer; stop tokens and strings excluded); delta_token_ids / delta_text: what is new since
    the previous output of this request; finish_reason: None while running, else "stop", "length" or
    "abort"; stop_reason: the stop token id or string that ended it; error: why the engine ended it
    (finish_reason "abort"), when it was not the caller's abort.
    """

    request_id: str
    prompt_token_ids: list[int]
    token_ids: Sequence[int]  # a `Prefix` of the request's tokens (compares equal to a list)
    text: str | None
    finished: bool
    index: int = 0  # which of the request's n completions
    finish_reason: str | None = None
    stop_reason: int | str | None = None
    delta_token_ids: list[int] = field(default_factory=list)
    delta_text: str = ""
    logprobs: Sequence[Logprobs] | None = None  # one per generated token, when the params asked for them
    prompt_logprobs: list[Logprobs | None] | None = None  # one per prompt token (None for the first)
    metrics: RequestMetrics | None = None
    error: str | None = None


@dataclass
class RequestMetrics:
    arrival_time: float  # time.perf_counter() when it was added
    first_scheduled_time: float | None = None
    first_token_time: float | None = None
    last_token_time: float | None = None
    finished_time: float | None = None

    @property
    def time_to_first_token(self) -> float | None:
        return None if self.first_token_time is None else self.first_token_time - self.arrival_time


@dataclass(eq=False)  # identity: requests are found in queues by who they are, not by their fields
class Request:
    """The engine's record of one request. `num_computed` counts the prompt tokens already in its state."""

    request_id: str
    prompt_token_ids: list[int]
    params: SamplingParams
    max_new: int  # max_new_tokens, capped by max_model_len
    stop_ids: frozenset[int]
    priority: int = 0
    arrival: int = 0  # order of arrival (ties in priority are first-come first-served)
    index: int = 0  # completion index (n > 1); the engine's key for it is `key`
    forks: list[Request] = field(default_factory=list)  # completions 1..n-1: they copy this one's state
    fork_of: Request | None = None  # set until the fork has copied its parent's state
    generator: object | None = None  # a seeded request's random generator, kept across a preemption
    status: Status = Status.WAITING
    slot: int = -1
    num_computed: int = 0  # tokens of prefill_tokens already in the state
    state_len: int = 0  # tokens in the state (prefilled, then one more per decode step)
    resume_tokens: list[int] | None = None  # after a preemption: prompt + output so far, to recompute
    snapshot_at: dict[int, int] = field(default_factory=dict)  # prefix-cache snapshot positions -> uses credited
    restored_from: object | None = None  # the prefix-cache entry its state started from
    output_token_ids: list[int] = field(default_factory=list)
    finish_reason: str | None = None
    stop_reason: int | str | None = None
    error: str | None = None  # why the engine aborted it
    logprobs: list[Logprobs] = field(default_factory=list)
    prompt_logprobs: list[Logprobs | None] = field(default_factory=lambda: [None])
    metrics: RequestMetrics = field(default_factory=lambda: RequestMetrics(time.perf_counter()))

    @property
    def key(self) -> str:
        return self.request_id if self.index == 0 else f"{self.request_id}#{self.index}"

    @property
    def prompt_len(self) -> int:
        return len(self.prompt_token_ids)

    @property
    def prefill_tokens(self) -> list[int]:
        """What must be in the state before decoding: the prompt (after a preemption: and the output)."""
        return self.prompt_token_ids if self.resume_tokens is None else self.resume_tokens

    @property
    def prefilling(self) -> bool:
        return self.num_computed < len(self.prefill_tokens)

    @property
    def pending_forks(self) -> list[Request]:
        return [f for f in self.forks if f.fork_of is self and not f.finished]

    def preempt(self) -> None:
        """Lose the state: recompute the prompt and the tokens generated so far when scheduled again."""
        self.num_computed = self.state_len = 0
        if self.fork_of is None:
            self.resume_tokens = self.prompt_token_ids + self.output_token_ids

    @property
    def finished(self) -> bool:
        return self.status is _FINISHED or self.status is _ABORTED  # (Enum lookups are slow in Python 3.11)


_FINISHED, _ABORTED = Status.FINISHED, Status.ABORTED
