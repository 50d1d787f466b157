"""RULER's 13 tasks, in RULER's order, with the paper's column names and generation budgets.

Generation budgets (``max_new_tokens``) are RULER's ``tokens_to_generate`` (lm-eval's ``max_gen_toks``):
128 for the needle tasks, 30 for variable tracking, 120 for common words, 50 for frequent words, 32 for QA.
"""

from __future__ import annotations

from collections.abc import Callable

from sambay.eval.ruler import common_words, niah, qa, variable_tracking
from sambay.eval.ruler.base import Sampler, TaskSpec

__all__ = ["COLUMNS", "SPECS", "TASKS", "get_task"]


def _niah(name: str, column: str) -> TaskSpec:
    unit = {"essay": "words", "noise": "noise lines", "needle": "needle lines"}[niah.NEEDLE_TASKS[name].haystack]
    return TaskSpec(name, column, niah.MAX_NEW_TOKENS, unit,
                    lambda length, seed, count: niah.NeedleSampler(name, length, seed))


def _spec(name: str, column: str, max_new_tokens: int, unit: str,
          make: Callable[[str, int, int, Callable[[str], int]], Sampler]) -> TaskSpec:
    return TaskSpec(name, column, max_new_tokens, unit, lambda length, seed, count: make(name, length, seed, count))


SPECS: dict[str, TaskSpec] = {s.name: s for s in [
    _niah("niah_single_1", "S-1"),
    _niah("niah_single_2", "S-2"),
    _niah("niah_single_3", "S-3"),
    _niah("niah_multikey_1", "MK-1"),
    _niah("niah_multikey_2", "MK-2"),
    _niah("niah_multikey_3", "MK-3"),
    _niah("niah_multivalue", "MV"),
    _niah("niah_multiquery", "MQ"),
    _spec("ruler_vt", "VT", variable_tracking.MAX_NEW_TOKENS, "noise lines", variable_tracking.VariableTrackingSampler),
    _spec("ruler_cwe", "CWE", common_words.CWE_MAX_NEW_TOKENS, "distinct words",
          lambda name, length, seed, count: common_words.CommonWordsSampler(name, length, seed)),
    _spec("ruler_fwe", "FWE", common_words.FWE_MAX_NEW_TOKENS, "coded words (Zipf total)",
          lambda name, length, seed, count: common_words.FrequentWordsSampler(name, length, seed)),
    _spec("ruler_qa_squad", "QA-1", qa.MAX_NEW_TOKENS, "documents",
          lambda name, length, seed, count: qa.QASampler(name, length, seed)),
    _spec("ruler_qa_hotpot", "QA-2", qa.MAX_NEW_TOKENS, "documents",
          lambda name, length, seed, count: qa.QASampler(name, length, seed)),
]}

TASKS: list[str] = list(SPECS)
COLUMNS: dict[str, str] = {name: spec.column for name, spec in SPECS.items()}


def get_task(name: str) -> TaskSpec:
    """A task by its RULER name (``niah_single_1``) or the paper's column (``S-1``, case-insensitive)."""
    if name in SPECS:
        return SPECS[name]
    by_column = {c.lower(): n for n, c in COLUMNS.items()}
    if name.lower() in by_column:
        return SPECS[by_column[name.lower()]]
    listing = ", ".join(f"{n} ({c})" for n, c in COLUMNS.items())
    raise ValueError(f"unknown RULER task {name!r}; the tasks are: {listing}")
