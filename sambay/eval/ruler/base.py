"""What every RULER task generator provides, and how its randomness is seeded.

A task turns a sample into a *candidate*: a function from a haystack size (noise lines, essay words,
distinct words, documents, ...) to a rendered prompt. Everything random about the sample (keys, values,
needle depths, which words or documents) is drawn from generators seeded by the sample's identity, so
rendering the same size twice gives the same text and the length fitting can try sizes freely.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple, Protocol


class Rendered(NamedTuple):
    """A prompt (answer prefix included), its gold answers and what the generator knows about it."""

    prompt: str
    answers: tuple[str, ...]
    metadata: dict


@dataclass(frozen=True)
class Candidate:
    """One sample at every haystack size in [min_size, max_size]: ``render(size)`` is deterministic."""

    render: Callable[[int], Rendered]
    min_size: int
    max_size: int


class Sampler(Protocol):
    """Makes the candidates of one (task, length, seed) run, in order."""

    #: True when a candidate whose smallest size does not fit may be dropped for the next one (QA
    #: questions whose gold documents alone are too long); otherwise a misfit is an error.
    skips_misfits: bool

    def candidate(self, index: int) -> Candidate:
        """The candidate for sample ``index`` (for samplers that skip misfits: the next one)."""
        ...

    def first_guess(self, budget: int) -> int:
        """A rough haystack size for ``budget`` prompt tokens, where the length search starts."""
        ...


@dataclass(frozen=True)
class TaskSpec:
    """A RULER task: its name, the paper's column, the generation budget and how samples are made.

    ``make_sampler(length, seed, count_tokens)`` returns the sampler of one run; ``count_tokens(text)``
    measures text in the evaluated model's tokenizer.
    """

    name: str
    column: str
    max_new_tokens: int
    unit: str
    make_sampler: Callable[[int, int, Callable[[str], int]], Sampler]


def seeded(*parts: object) -> random.Random:
    """A private generator seeded by ``parts`` (joined into a string: stable across processes and Python
    hash seeds), so that no sample ever touches the global random state."""
    return random.Random("/".join(str(p) for p in parts))
