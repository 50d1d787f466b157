"""RULER's aggregation tasks: common words extraction (CWE) and frequent words extraction (FWE).

CWE: a numbered list ``1. word 2. word ...`` of distinct nouns, adjectives and verbs (the ``wonderwords``
word lists); 10 of them ("common") appear 30 times each and the rest 3 times each (6 and 1 for lengths
under 4096), in random order. The model lists the 10 common words. Like RULER, the prompt starts with one
solved example (40 words, repeated 10 and 3 times; 20 words, 3 and 1 under 4096) and a newline::

    Below is a numbered list of words. In these words, some appear more often than others. Memorize the ones that appear most often.
    {numbered list}
    Question: What are the 10 most common words in the above list? Answer: The top 10 words that appear most often in the list are:

(the example ends with its answer, `` 1. w1 2. w2 ... 10. w10``). The haystack size is the number of
distinct words. Generation budget: 120 tokens.

FWE: a text of coded words (random strings of 6 lower-case letters) whose frequencies follow Zipf's law
with exponent 2: from a vocabulary of ``length // 50`` coded words, the ``k``-th appears
``int(N * k**-2 / zeta(2))`` times, the most frequent one being ``...`` (noise the model must ignore),
shuffled and joined with spaces. The model names the 2nd, 3rd and 4th most frequent words::

    Read the following coded text and track the frequency of each coded word. Find the three most frequently appeared coded words. {coded text}
    Question: Do not provide any explanation. Please ignore the dots '....'. What are the three most frequently appeared words in the above coded text? Answer: According to the coded text above, the three most frequently appeared words are:

The haystack size is ``N``. Generation budget: 50 tokens.
"""

from __future__ import annotations

import math
import random
import string

from sambay.eval.ruler.base import Candidate, Rendered, seeded
from sambay.eval.ruler.words import common_words

__all__ = ["CWE_MAX_NEW_TOKENS", "FWE_MAX_NEW_TOKENS", "CommonWordsSampler", "FrequentWordsSampler", "cwe_question",
           "fwe_question"]

CWE_MAX_NEW_TOKENS = 120
FWE_MAX_NEW_TOKENS = 50

NUM_COMMON = 10
CWE_INTRO = ("Below is a numbered list of words. In these words, some appear more often than others. Memorize the "
             "ones that appear most often.")
CWE_QUESTION = "Question: What are the 10 most common words in the above list?"
CWE_ANSWER_PREFIX = "Answer: The top 10 words that appear most often in the list are:"

FWE_WORD_LETTERS = 6
FWE_ALPHA = 2.0
FWE_ZETA = math.pi**2 / 6  # zeta(2)
FWE_NOISE = "..."
FWE_INTRO = ("Read the following coded text and track the frequency of each coded word. Find the three most "
             "frequently appeared coded words.")
FWE_QUESTION = ("Question: Do not provide any explanation. Please ignore the dots '....'. What are the three most "
                "frequently appeared words in the above coded text?")
FWE_ANSWER_PREFIX = "Answer: According to the coded text above, the three most frequently appeared words are:"


def cwe_question(numbered_list: str) -> str:
    """CWE's task text around a numbered list, without the answer prefix."""
    return f"{CWE_INTRO}\n{numbered_list}\n{CWE_QUESTION}"


def fwe_question(coded_text: str) -> str:
    """FWE's task text around a coded text, without the answer prefix."""
    return f"{FWE_INTRO} {coded_text}\n{FWE_QUESTION}"


def _numbered(words: list[str]) -> str:
    return " ".join(f"{i + 1}. {w}" for i, w in enumerate(words))


def _cwe_repeats(length: int) -> tuple[tuple[int, int, int], tuple[int, int]]:
    """((example words, example common repeats, example other repeats), (common repeats, other repeats))."""
    return ((20, 3, 1), (6, 1)) if length < 4096 else ((40, 10, 3), (30, 3))


def _word_list(rng: random.Random, distinct: list[str], common_repeats: int, other_repeats: int) -> list[str]:
    words = distinct[:NUM_COMMON] * common_repeats + distinct[NUM_COMMON:] * other_repeats
    rng.shuffle(words)
    return words


class CommonWordsSampler:
    """Candidates of ``ruler_cwe`` at one length and seed."""

    skips_misfits = False

    def __init__(self, name: str, length: int, seed: int):
        self.name, self.length, self.seed = name, length, seed
        self.example_shape, (self.common_repeats, self.other_repeats) = _cwe_repeats(length)

    def first_guess(self, budget: int) -> int:
        entries = budget / 4  # "123. word" is about 4 tokens
        return max(NUM_COMMON + 1, int((entries - NUM_COMMON * self.common_repeats) / self.other_repeats))

    def candidate(self, index: int) -> Candidate:
        ident = ("ruler", self.name, self.seed, self.length, index)
        pool = common_words()
        rng = seeded(*ident, "words")
        n_example, example_common, example_other = self.example_shape
        example_words = rng.sample(pool, n_example)
        example_list = _word_list(rng, example_words, example_common, example_other)
        example = (f"{cwe_question(_numbered(example_list))} {CWE_ANSWER_PREFIX} "
                   f"{_numbered(example_words[:NUM_COMMON])}")
        order = list(pool)
        rng.shuffle(order)  # the sample's words: a prefix of this order, the first ten being the common ones
        answers = tuple(order[:NUM_COMMON])

        def render(size: int) -> Rendered:
            words = _word_list(seeded(*ident, "order", size), order[:size], self.common_repeats, self.other_repeats)
            prompt = f"{example}\n{cwe_question(_numbered(words))} {CWE_ANSWER_PREFIX}"
            metadata = {"distinct_words": size, "common_repeats": self.common_repeats,
                        "other_repeats": self.other_repeats, "example_answers": example_words[:NUM_COMMON],
                        "answer_prefix": CWE_ANSWER_PREFIX}
            return Rendered(prompt, answers, metadata)

        return Candidate(render, NUM_COMMON + 1, len(pool))


def zipf_counts(n: int, vocab_size: int) -> list[int]:
    """FWE's word counts: ``int(n * k**-2 / zeta(2))`` for ranks ``k = 1 .. vocab_size``."""
    return [int(n * k**-FWE_ALPHA / FWE_ZETA) for k in range(1, vocab_size + 1)]


class FrequentWordsSampler:
    """Candidates of ``ruler_fwe`` at one length and seed."""

    skips_misfits = False
    min_words = 100  # enough for the counts of ranks 2-5 to differ

    def __init__(self, name: str, length: int, seed: int):
        self.name, self.length, self.seed = name, length, seed
        self.vocab_size = max(5, length // 50)

    def first_guess(self, budget: int) -> int:
        return max(self.min_words, budget // 2)

    def candidate(self, index: int) -> Candidate:
        ident = ("ruler", self.name, self.seed, self.length, index)
        rng = seeded(*ident, "vocab")
        vocab: list[str] = []
        seen: set[str] = set()
        while len(vocab) < self.vocab_size - 1:
            word = "".join(rng.choices(string.ascii_lowercase, k=FWE_WORD_LETTERS))
            if word not in seen:
                seen.add(word)
                vocab.append(word)
        vocab.insert(0, FWE_NOISE)  # the most frequent "word" is noise
        answers = tuple(vocab[1:4])

        def render(size: int) -> Rendered:
            counts = zipf_counts(size, len(vocab))
            words = [w for w, c in zip(vocab, counts) for _ in range(c)]
            seeded(*ident, "order", size).shuffle(words)
            prompt = f"{fwe_question(' '.join(words))} {FWE_ANSWER_PREFIX}"
            metadata = {"vocab_size": len(vocab), "top_counts": dict(zip(vocab[:5], counts[:5])),
                        "answer_prefix": FWE_ANSWER_PREFIX}
            return Rendered(prompt, answers, metadata)

        return Candidate(render, self.min_words, max(self.min_words, 2 * self.length))
