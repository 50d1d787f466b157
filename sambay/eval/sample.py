"""One evaluation prompt with its gold answers, and the scorers that compare a generation with them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Sample:
    """A prompt to complete greedily, and what a correct completion contains.

    task: the task's name (e.g. "niah_single_1"); length: the axis it is reported on (RULER: the target
    context in tokens; Phonebook: entries); index: the sample's number within (task, length), which with
    the seed fixes its content; prompt: the whole text given to the model, answer prefix included;
    answers: the gold values; max_new_tokens: the generation budget; metadata: where needles went, the
    prompt's token count, and the like.
    """

    task: str
    length: int
    index: int
    prompt: str
    answers: tuple[str, ...]
    max_new_tokens: int
    metadata: dict = field(default_factory=dict)


def string_match_all(prediction: str, answers: Sequence[str]) -> float:
    """RULER's metric: the share of gold values found (case-insensitive) in the prediction."""
    text = prediction.lower()
    return sum(a.lower() in text for a in answers) / len(answers) if answers else 0.0


def string_match_part(prediction: str, answers: Sequence[str]) -> float:
    """RULER's QA metric: 1 if any gold answer is found (case-insensitive) in the prediction."""
    text = prediction.lower()
    return float(any(a.lower() in text for a in answers))


def exact_match_first_line(prediction: str, answers: Sequence[str]) -> float:
    """Phonebook's metric: the first line of the prediction, stripped, equals a gold answer."""
    lines = prediction.strip().splitlines()
    first = lines[0].strip() if lines else ""
    return float(first in {a.strip() for a in answers})
