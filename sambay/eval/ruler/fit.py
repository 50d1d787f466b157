"""Length fitting: the largest haystack whose prompt leaves room for the answer, in the model's tokens.

RULER sizes each haystack so that ``tokens(prompt) + max_new_tokens <= length`` in the evaluated model's
tokenizer, searching over the haystack size (the original searches by bisection; lm-eval grows the first
sample's haystack in fixed steps and shrinks it per sample). Here every sample gets the largest size that
fits: the search starts from a guess (the size found for the previous sample), brackets the boundary by
extrapolating the tokens-per-unit rate (the previous sample's, or estimated), then narrows the bracket by
linear interpolation with a bisection safeguard. Token counts grow almost linearly with the size, so a
sample typically costs 2-3 tokenizations of its prompt (the first sample of a run 4-6).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["DoesNotFit", "Fit", "count_tokens", "fit_largest"]


class DoesNotFit(ValueError):
    """Even the smallest haystack makes the prompt longer than the budget."""


@dataclass(frozen=True)
class Fit:
    """The size found, its prompt's token count, the count at ``size + 1`` when measured (None when
    ``size`` is the largest allowed or was not probed) and how many sizes were measured."""

    size: int
    tokens: int
    tokens_next: int | None
    probes: int
    rate: float | None = None  # tokens per unit between the farthest sizes measured (None after one probe)
    rate_span: int = 0  # how many units apart those sizes are (the wider, the better the rate)


def count_tokens(tokenizer: Any, text: str) -> int:
    """``len(tokenizer.encode(text))``; an ``Encoding`` (the ``tokenizers`` library) counts its ``ids``."""
    ids = tokenizer.encode(text)
    ids = getattr(ids, "ids", ids)
    return len(ids)


def _clamp(n: int, lo: int, hi: int) -> int:
    return max(lo, min(hi, n))


def fit_largest(measure: Callable[[int], int], budget: int, lo: int, hi: int, guess: int | None = None,
                rate: float | None = None) -> Fit:
    """The largest ``n`` in ``[lo, hi]`` with ``measure(n) <= budget``, assuming ``measure`` grows with
    ``n`` (where it does not, some ``n`` at a fit/misfit boundary is returned; it always fits).

    ``guess`` is where the search starts and ``rate`` (tokens per unit) how it extrapolates from there,
    typically both from the previous sample's `Fit`: with them the search usually ends after 2-3 probes.
    Each size is measured at most once. Raises `DoesNotFit` when ``measure(lo) > budget``.
    """
    if lo > hi:
        raise ValueError(f"empty size range [{lo}, {hi}]")
    seen: dict[int, int] = {}

    def probe(n: int) -> int:
        if n not in seen:
            seen[n] = measure(n)
        return seen[n]

    good: tuple[int, int] | None = None  # the largest size known to fit, with its tokens
    bad: tuple[int, int] | None = None  # the smallest size known not to fit
    n = _clamp(lo if guess is None else guess, lo, hi)
    while True:
        t = probe(n)
        old_width = None if good is None or bad is None else bad[0] - good[0]
        if t <= budget:
            good = (n, t) if good is None or n > good[0] else good
        else:
            bad = (n, t) if bad is None or n < bad[0] else bad
        if bad is not None and bad[0] == lo:
            raise DoesNotFit(f"the smallest haystack ({lo}) already gives {bad[1]} tokens, over the budget of "
                             f"{budget}")
        if good is not None and (good[0] == hi or (bad is not None and bad[0] == good[0] + 1)):
            break
        if good is not None and bad is not None:
            # Interpolate inside the bracket; bisect when the last probe did not halve it.
            if old_width is not None and bad[0] - good[0] > old_width / 2:
                n = (good[0] + bad[0]) // 2
            else:
                x = good[0] + (budget - good[1]) * (bad[0] - good[0]) / (bad[1] - good[1])
                n = _clamp(math.floor(x), good[0] + 1, bad[0] - 1)
        elif good is not None:
            n = _extrapolate_up(good, seen, budget, hi, rate)
        else:
            n = _extrapolate_down(bad, seen, budget, lo, rate)
    (n1, t1), (n2, t2) = min(seen.items()), max(seen.items())
    rate = (t2 - t1) / (n2 - n1) if n2 > n1 and t2 > t1 else None
    return Fit(good[0], good[1], seen.get(good[0] + 1), len(seen), rate, n2 - n1 if rate else 0)


def _rate(points: list[tuple[int, int]], fallback: tuple[int, int]) -> float:
    """Tokens per unit from the two given points, else from one point through the origin (an
    overestimate: the template's tokens are counted as haystack)."""
    if len(points) >= 2:
        (n1, t1), (n2, t2) = points[-2], points[-1]
        if n2 != n1 and (t2 - t1) / (n2 - n1) > 0:
            return (t2 - t1) / (n2 - n1)
    n, t = fallback
    return max(t / max(n, 1), 1e-9)


def _extrapolate_up(good: tuple[int, int], seen: dict[int, int], budget: int, hi: int, hint: float | None) -> int:
    """Every size so far fits: probe the first size expected not to (a little past it without a hint)."""
    if hint is not None and hint > 0:
        return _clamp(math.floor(good[0] + (budget - good[1]) / hint) + 1, good[0] + 1, hi)
    rate = _rate(sorted(p for p in seen.items() if p[1] <= budget), good)
    target = good[0] + (budget - good[1]) / rate
    return _clamp(math.ceil(target * 1.01) + 1, good[0] + 1, hi)


def _extrapolate_down(bad: tuple[int, int], seen: dict[int, int], budget: int, lo: int, hint: float | None) -> int:
    """No size fits yet: probe the last size expected to fit (a little below it without a hint)."""
    if hint is not None and hint > 0:
        return _clamp(math.floor(bad[0] - (bad[1] - budget) / hint), lo, bad[0] - 1)
    rate = _rate(sorted(seen.items())[:2], bad)
    target = bad[0] - (bad[1] - budget) / rate
    return _clamp(math.floor(target * 0.99) - 1, lo, bad[0] - 1)
