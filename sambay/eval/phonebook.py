"""Phonebook lookup ("Repeat After Me", arXiv 2402.01032) in the format of ArchScale's evaluation.

A phonebook of ``n_entries`` lines ``"{full name}: {phone}"``; the phone number has 10 digits, the first
one 6-9, the other nine 0-9. Names are drawn the way the ``names`` package (PyPI ``names==0.3.0``) draws
them: a first name from its male or female census list (gender chosen with equal odds), a last name from
its surname list, each by census frequency (a uniform number in [0, 90) picks the first name whose
cumulative percentage exceeds it), capitalised. The package's bundled lists are read directly, offline.
Unlike the original, the names within one book are distinct, so every query has one answer (with repeated
names about 4 % of the queries of a 1,850-entry book would be ambiguous).

The prompt (the default, non-verbose variant): all entries joined by newlines, a blank line, two entries of
the book repeated as 2-shot examples on two lines, a blank line, then the queried name and a colon::

    Mary Smith: 6123456789
    John Brown: 8765432109
    ...
    Ann Lee: 9988776655
    <blank line>
    John Brown: 8765432109
    Ann Lee: 9988776655
    <blank line>
    Mary Smith:

The query is a third entry (the three are distinct); the answer is its 10-digit number. Prompts are
tokenized without special tokens (no BOS) and decoded greedily for up to 20 new tokens; the first line of
the continuation, stripped, must equal the number exactly.

Length is counted in entries: 1,850 entries is the published "Phonebook 32K" setting (about 32K tokens with
a Llama-2-like 32K-vocabulary tokenizer); 3,700 and 7,400 (double and quadruple) are used here for 64K and
128K length extrapolation. `entries_for_tokens` sizes a book for another tokenizer and target length.
"""

from __future__ import annotations

import importlib.resources
from collections.abc import Sequence
from functools import cache

import numpy as np

from sambay.eval.sample import Sample, exact_match_first_line

TASK = "phonebook"
MAX_NEW_TOKENS = 20  # the generation budget: prompt length + 20 tokens
ENTRIES = {"32K": 1850, "64K": 3700, "128K": 7400}
_NAME_FILES = {"male": "dist.male.first", "female": "dist.female.first", "last": "dist.all.last"}
_PICK_RANGE = 90.0  # the names package draws uniformly in [0, 90) against cumulative percentages


@cache
def _name_table(kind: str) -> tuple[tuple[str, ...], np.ndarray]:
    """(capitalised names, cumulative percentages) of one of the names package's census lists."""
    try:
        root = importlib.resources.files("names")
    except ModuleNotFoundError as e:
        raise ImportError("the Phonebook task needs the `names` package (pip install names, part of "
                          "sambay[eval])") from e
    text = (root / _NAME_FILES[kind]).read_text(encoding="utf-8")
    names, cumulative = [], []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 3:
            names.append(fields[0].capitalize())
            cumulative.append(float(fields[2]))
    return tuple(names), np.asarray(cumulative)


def _pick(rng: np.random.Generator, kind: str, count: int) -> list[str]:
    names, cumulative = _name_table(kind)
    idx = np.searchsorted(cumulative, rng.random(count) * _PICK_RANGE, side="right")
    return [names[i] if i < len(names) else "" for i in idx]


def random_names(rng: np.random.Generator, n: int) -> list[str]:
    """``n`` distinct full names "First Last", census-frequency weighted, in draw order."""
    out: dict[str, None] = {}
    while len(out) < n:
        count = max(16, 2 * (n - len(out)))
        female = rng.random(count) < 0.5
        male_first, female_first = _pick(rng, "male", count), _pick(rng, "female", count)
        last = _pick(rng, "last", count)
        for i in range(count):
            name = f"{female_first[i] if female[i] else male_first[i]} {last[i]}"
            if name not in out:
                out[name] = None
                if len(out) == n:
                    break
    return list(out)


def random_phone(rng: np.random.Generator) -> str:
    """10 digits, the first in 6-9."""
    return str(int(rng.integers(6, 10))) + "".join(str(d) for d in rng.integers(0, 10, 9))


def make_book(n_entries: int, rng: np.random.Generator) -> list[tuple[str, str]]:
    """(name, phone) pairs with distinct names."""
    return [(name, random_phone(rng)) for name in random_names(rng, n_entries)]


def entry(name: str, phone: str) -> str:
    return f"{name}: {phone}"


def build_prompt(book: Sequence[tuple[str, str]], shots: tuple[int, int], query: int) -> str:
    """The book, a blank line, the two shot entries, a blank line, ``"<query name>:"``."""
    lines = "\n".join(entry(*e) for e in book)
    a, b = (entry(*book[i]) for i in shots)
    return f"{lines}\n\n{a}\n{b}\n\n{book[query][0]}:"


def _check(n_entries: int, count: tuple[str, int], seed: int) -> None:
    for name, value, low in (("n_entries", n_entries, 3), (*count, 0), ("seed", seed, 0)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            why = " (two 2-shot entries and a distinct query)" if name == "n_entries" else ""
            raise ValueError(f"phonebook: {name} must be an integer >= {low}{why} (got {value!r})")


def generate_sample(n_entries: int, index: int, seed: int = 0) -> Sample:
    """Sample ``index`` of a length: a fresh book from the generator seeded with (seed, n_entries, index)."""
    _check(n_entries, ("index", index), seed)
    rng = np.random.default_rng([seed, n_entries, index])
    book = make_book(n_entries, rng)
    first_shot, second_shot, query = (int(i) for i in rng.choice(n_entries, size=3, replace=False))
    name, phone = book[query]
    return Sample(task=TASK, length=n_entries, index=index, prompt=build_prompt(book, (first_shot, second_shot), query),
                  answers=(phone,), max_new_tokens=MAX_NEW_TOKENS,
                  metadata={"name": name, "position": query, "shots": [first_shot, second_shot],
                            "n_entries": n_entries, "seed": seed})


def generate_samples(n_entries: int, n: int, seed: int = 0) -> list[Sample]:
    """``n`` Phonebook prompts of ``n_entries`` entries each. Sample i depends only on (seed, n_entries, i),
    so a larger ``n`` extends a smaller one. ``metadata``: the queried ``name``, its 0-based ``position``
    in the book, the ``shots``' positions, ``n_entries`` and ``seed``."""
    _check(n_entries, ("n", n), seed)
    return [generate_sample(n_entries, i, seed) for i in range(n)]


def score(prediction: str, answers: Sequence[str]) -> float:
    """1.0 when the first line of the prediction, stripped, is the number exactly; else 0.0."""
    return exact_match_first_line(prediction, answers)


def entries_for_tokens(target_tokens: int, tokenizer, *, probe_entries: int = 200, seed: int = 0) -> int:
    """The number of entries whose prompt comes to about ``target_tokens`` tokens with ``tokenizer`` (anything
    with ``encode(text, add_special_tokens=False)``), measured on a ``probe_entries``-entry book."""
    if target_tokens < 1:
        raise ValueError(f"target_tokens must be positive (got {target_tokens})")
    probe = generate_sample(probe_entries, 0, seed)
    per_entry = len(tokenizer.encode(probe.prompt, add_special_tokens=False)) / (probe_entries + 3)
    return max(3, int(target_tokens / per_entry))
