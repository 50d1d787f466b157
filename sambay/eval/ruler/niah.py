"""RULER's eight needle-in-a-haystack tasks (S-1 ... MQ).

Each needle is RULER's sentence ``One of the special magic {numbers|uuids} for {key} is: {value}.`` with a
word key (``adjective-noun``) or a UUID key, and 7-digit numbers or UUIDs as values. A task hides
``max(k, q)`` keys with ``v`` values each (one needle per value), then asks for the values of ``q`` of the
keys:

========================  ========  ==========  =======  ===  ===  ===
task                      column    haystack    key      k    v    q
========================  ========  ==========  =======  ===  ===  ===
niah_single_1             S-1       noise       word     1    1    1   (value: number; passkey retrieval)
niah_single_2             S-2       essay       word     1    1    1   (number; vanilla NIAH)
niah_single_3             S-3       essay       word     1    1    1   (UUID)
niah_multikey_1           MK-1      essay       word     4    1    1   (number; 3 distractor needles)
niah_multikey_2           MK-2      needle      word     1    1    1   (number; every line a distractor)
niah_multikey_3           MK-3      needle      UUID     1    1    1   (UUID; every line a distractor)
niah_multivalue           MV        essay       word     1    4    1   (all 4 numbers of the key)
niah_multiquery           MQ        essay       word     4    1    4   (the numbers of all 4 keys)
========================  ========  ==========  =======  ===  ===  ===

Placement, as in RULER: the needle list is shuffled with a fixed ``random.Random(42)``; in the essay they go between sentences at depths drawn without replacement from 40 evenly spaced
percentages (``round(linspace(0, 100, 40))``: needle at sentence ``int(n_sentences * depth / 100)``); in
the noise and needle haystacks they go at random lines. Distractor lines never reuse a real key.

The prompt (plural form)::

    Some special magic {numbers} are hidden within the following text. Make sure to memorize it. I will quiz you about the {numbers} afterwards.
    {context}
    What are all the special magic {numbers} for {query} mentioned in the provided text? The special magic {numbers} for {query} mentioned in the provided text are

i.e. RULER's three-line template, then its answer prefix after a single space. When ``q * v == 1`` (all but
MV and MQ) the text is singular: "A special magic number is hidden ... about the number afterwards.",
"What is the special magic number for ...?" and "... mentioned in the provided text is". Several queried
keys read ``k1, k2, k3, and k4``. Scoring: the share of gold values found in the generation.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from sambay.eval.ruler.base import Candidate, Rendered, seeded
from sambay.eval.ruler.haystacks import NeedleLines, essay, needle_sentence, noise_lines
from sambay.eval.ruler.words import random_value

__all__ = ["DEPTHS", "MAX_NEW_TOKENS", "NEEDLE_TASKS", "NeedleSampler", "NeedleTask", "template"]

MAX_NEW_TOKENS = 128
DEPTHS = tuple(round(100 * i / 39) for i in range(40))  # 0, 3, 5, 8, ..., 97, 100
NEEDLE_ORDER_SEED = 42  # RULER shuffles the needle list with random.Random(42)


@dataclass(frozen=True)
class NeedleTask:
    haystack: str  # "noise", "essay" or "needle"
    type_key: str  # "words" or "uuids"
    type_value: str  # "numbers" or "uuids"
    num_keys: int = 1
    num_values: int = 1
    num_queries: int = 1

    @property
    def keys(self) -> int:
        return max(self.num_keys, self.num_queries)

    @property
    def needles(self) -> int:
        return self.keys * self.num_values

    @property
    def singular(self) -> bool:
        return self.num_queries * self.num_values == 1


NEEDLE_TASKS = {
    "niah_single_1": NeedleTask("noise", "words", "numbers"),
    "niah_single_2": NeedleTask("essay", "words", "numbers"),
    "niah_single_3": NeedleTask("essay", "words", "uuids"),
    "niah_multikey_1": NeedleTask("essay", "words", "numbers", num_keys=4),
    "niah_multikey_2": NeedleTask("needle", "words", "numbers"),
    "niah_multikey_3": NeedleTask("needle", "uuids", "uuids"),
    "niah_multivalue": NeedleTask("essay", "words", "numbers", num_values=4),
    "niah_multiquery": NeedleTask("essay", "words", "numbers", num_queries=4),
}


def template(type_value: str, query: str, singular: bool) -> tuple[str, str, str]:
    """RULER's (first line, question, answer prefix); the prompt is ``first + "\\n" + context + "\\n" +
    question + " " + answer_prefix``."""
    if singular:
        t = type_value[:-1]  # "numbers" -> "number"
        return (f"A special magic {t} is hidden within the following text. Make sure to memorize it. I will quiz "
                f"you about the {t} afterwards.",
                f"What is the special magic {t} for {query} mentioned in the provided text?",
                f"The special magic {t} for {query} mentioned in the provided text is")
    t = type_value
    return (f"Some special magic {t} are hidden within the following text. Make sure to memorize it. I will quiz "
            f"you about the {t} afterwards.",
            f"What are all the special magic {t} for {query} mentioned in the provided text?",
            f"The special magic {t} for {query} mentioned in the provided text are")


def _distinct(rng: random.Random, kind: str, n: int, taken: set[str]) -> list[str]:
    out: list[str] = []
    while len(out) < n:
        x = random_value(rng, kind)
        if x not in taken:
            taken.add(x)
            out.append(x)
    return out


class NeedleSampler:
    """Candidates of one NIAH task at one length and seed."""

    skips_misfits = False

    def __init__(self, name: str, length: int, seed: int):
        self.name, self.length, self.seed = name, length, seed
        self.task = NEEDLE_TASKS[name]
        if self.task.haystack == "essay":
            essay()  # fail early when the data package is missing

    def first_guess(self, budget: int) -> int:
        per_unit = {"essay": 1.4, "noise": 25.0, "needle": 30.0 if self.task.type_key == "words" else 60.0}
        return max(1, int(budget / per_unit[self.task.haystack]))

    def candidate(self, index: int) -> Candidate:
        task = self.task
        ident = ("ruler", self.name, self.seed, self.length, index)
        rng = seeded(*ident, "needles")
        taken: set[str] = set()
        keys = _distinct(rng, task.type_key, task.keys, taken)
        values = [_distinct(rng, task.type_value, task.num_values, taken) for _ in keys]
        needles = [(k, v) for k, vs in zip(keys, values) for v in vs]
        random.Random(NEEDLE_ORDER_SEED).shuffle(needles)
        queried = rng.sample(range(task.keys), task.num_queries)
        queries = [keys[i] for i in queried]
        answers = tuple(v for i in queried for v in values[i])
        query = queries[0] if len(queries) == 1 else ", ".join(queries[:-1]) + ", and " + queries[-1]
        first, question, prefix = template(task.type_value, query, task.singular)
        texts = [needle_sentence(task.type_value, k, v) for k, v in needles]
        depths = sorted(rng.sample(DEPTHS, len(needles))) if task.haystack == "essay" else None
        if task.haystack == "needle":
            lines = NeedleLines(seeded(*ident, "distractors"), task.type_key, task.type_value, taken).lines
        else:
            lines = noise_lines

        def render(size: int) -> Rendered:
            if task.haystack == "essay":
                sentences = essay().sentences(size)
                cuts = [int(len(sentences) * d / 100) for d in depths]
                context, offsets = _between_sentences(sentences, texts, cuts)
                where = [{"depth": d} for d in depths]
            else:
                hay = lines(size)
                at = sorted(seeded(*ident, "lines", size).sample(range(size), len(texts)))
                context, offsets, line_numbers = _at_lines(hay, texts, at)
                where = [{"line": n} for n in line_numbers]
            prompt = f"{first}\n{context}\n{question} {prefix}"
            base = len(first) + 1
            meta_needles = [{"key": k, "value": v, "text": s, "offset": base + o, **w}
                            for (k, v), s, o, w in zip(needles, texts, offsets, where)]
            metadata = {"haystack": task.haystack, "queries": queries, "needles": meta_needles,
                        "answer_prefix": prefix}
            return Rendered(prompt, answers, metadata)

        max_size = self.length if task.haystack != "essay" else essay().n_words
        min_size = 1 if task.haystack == "essay" else len(texts)
        return Candidate(render, min_size, max(min_size, max_size))


def _between_sentences(sentences: list[str], needles: list[str], cuts: list[int]) -> tuple[str, list[int]]:
    """Join sentences with spaces, needle ``i`` before sentence ``cuts[i]`` (cuts ascending); returns the
    text and each needle's offset in it."""
    parts: list[str] = []
    size = -1  # length of " ".join(parts)
    offsets = []
    prev = 0
    for needle, cut in zip(needles, cuts):
        if cut > prev:
            parts.append(" ".join(sentences[prev:cut]))
            size += len(parts[-1]) + 1
            prev = cut
        offsets.append(size + 1)
        parts.append(needle)
        size += len(needle) + 1
    if prev < len(sentences):
        parts.append(" ".join(sentences[prev:]))
    return " ".join(parts), offsets


def _at_lines(lines: list[str], needles: list[str], at: list[int]) -> tuple[str, list[int], list[int]]:
    """Insert needle ``i`` before haystack line ``at[i]`` (ascending); returns the newline-joined text, each
    needle's character offset and line number in it."""
    out: list[str] = []
    offsets, numbers = [], []
    size = 0  # length of "\n".join(out) + "\n" while out is not empty
    prev = 0
    for needle, a in zip(needles, at):
        for line in lines[prev:a]:
            out.append(line)
            size += len(line) + 1
        prev = a
        offsets.append(size)
        numbers.append(len(out))
        out.append(needle)
        size += len(needle) + 1
    out.extend(lines[prev:])
    return "\n".join(out), offsets, numbers
