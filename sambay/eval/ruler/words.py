"""Random keys and values of RULER's synthetic tasks, each drawn from a caller's ``random.Random``.

* word keys: ``adjective-noun`` pairs (e.g. ``hypnotic-boyhood``) from the word lists bundled with the
  ``wonderwords`` package (read directly from its ``assets`` folder), adjective and noun drawn uniformly;
* numbers: uniform 7-digit integers, 1,000,000 to 9,999,999;
* UUIDs: version-4 UUIDs made from 128 random bits.
"""

from __future__ import annotations

import importlib.resources
import random
import uuid
from functools import cache

__all__ = ["adjectives", "common_words", "nouns", "random_key", "random_number", "random_uuid", "random_value",
           "verbs"]


@cache
def _word_list(kind: str) -> tuple[str, ...]:
    try:
        root = importlib.resources.files("wonderwords")
    except ModuleNotFoundError as e:
        raise ImportError("RULER's word keys come from the `wonderwords` package's word lists: pip install "
                          "wonderwords (part of sambay[eval])") from e
    text = root.joinpath("assets", f"{kind}list.txt").read_text(encoding="utf-8")
    return tuple(sorted({w.strip() for w in text.splitlines() if w.strip()}))


def adjectives() -> tuple[str, ...]:
    return _word_list("adjective")


def nouns() -> tuple[str, ...]:
    return _word_list("noun")


def verbs() -> tuple[str, ...]:
    return _word_list("verb")


@cache
def common_words() -> tuple[str, ...]:
    """The distinct nouns, adjectives and verbs, sorted: the word pool of common-words extraction."""
    return tuple(sorted(set(nouns()) | set(adjectives()) | set(verbs())))


def random_key(rng: random.Random) -> str:
    """An ``adjective-noun`` key."""
    return f"{rng.choice(adjectives())}-{rng.choice(nouns())}"


def random_number(rng: random.Random, digits: int = 7) -> str:
    return str(rng.randint(10 ** (digits - 1), 10**digits - 1))


def random_uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def random_value(rng: random.Random, kind: str) -> str:
    """A random ``"words"`` key, ``"numbers"`` value or ``"uuids"`` value."""
    if kind == "words":
        return random_key(rng)
    if kind == "numbers":
        return random_number(rng)
    if kind == "uuids":
        return random_uuid(rng)
    raise ValueError(f"unknown needle type {kind!r}: expected words, numbers or uuids")
