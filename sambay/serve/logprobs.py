"""Log-probabilities in the two shapes OpenAI's API uses: the legacy completions object (`tokens`,
`token_logprobs`, `top_logprobs`, `text_offset`: what lm-evaluation-harness reads, prompt tokens included
under `echo`) and the chat object (`content: [{token, logprob, bytes, top_logprobs}]`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from sambay.engine.sampling import Logprobs

FLOOR = -9999.0  # JSON has no -inf; a token the filters ruled out gets this (as vLLM reports it)


def _finite(value: float) -> float:
    return max(value, FLOOR)


def completion_logprobs(token_ids: Sequence[int], entries: Sequence[Logprobs | None], token_text: Callable[[int], str],
                        text_offset: int = 0) -> dict:
    """One entry per token (None for a prompt's first token, which nothing predicts)."""
    tokens, token_logprobs, top_logprobs, offsets = [], [], [], []
    for token, entry in zip(token_ids, entries):
        text = token_text(token)
        tokens.append(text)
        offsets.append(text_offset)
        text_offset += len(text)
        if entry is None:
            token_logprobs.append(None)
            top_logprobs.append(None)
            continue
        token_logprobs.append(_finite(entry.token_logprob))
        top: dict[str, float] = {}
        for t, lp in entry.top:  # best first: a string two tokens share keeps the better one
            top.setdefault(token_text(t), _finite(lp))
        top.setdefault(text, _finite(entry.token_logprob))
        top_logprobs.append(top)
    return {"tokens": tokens, "token_logprobs": token_logprobs, "top_logprobs": top_logprobs, "text_offset": offsets}


def chat_logprobs(token_ids: Sequence[int], entries: Sequence[Logprobs], token_text: Callable[[int], str]) -> dict:
    def item(token: int, lp: float) -> dict:
        text = token_text(token)
        return {"token": text, "logprob": _finite(lp), "bytes": list(text.encode("utf-8"))}

    return {"content": [{**item(t, e.token_logprob), "top_logprobs": [item(i, lp) for i, lp in e.top]}
                        for t, e in zip(token_ids, entries)]}
