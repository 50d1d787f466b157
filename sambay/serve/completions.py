"""POST /v1/completions: prompts (text or token ids) in, completions out, whole or streamed."""

from __future__ import annotations

import time
import uuid

from fastapi import Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from sambay.engine import RequestOutput
from sambay.serve.logprobs import completion_logprobs
from sambay.serve.protocol import CompletionRequest
from sambay.serve.served_model import ServedModel
from sambay.serve.streams import Generation, sse_stream, unless_disconnected


async def create_completion(served: ServedModel, request: Request, body: CompletionRequest) -> Response:
    arrival = time.perf_counter()
    served.check_model(body.model)
    served.check_accepting()
    prompts = []
    for p in body.prompts:
        ids = await served.encode(p, body.add_special_tokens) if isinstance(p, str) else list(p)
        served.check_ids(ids)
        prompts.append(ids)
    # echo + logprobs scores the prompt too (lm-evaluation-harness's loglikelihood requests)
    prompt_logprobs = body.prompt_logprobs if body.prompt_logprobs is not None else (
        body.logprobs if body.echo and body.logprobs is not None else None)
    params = [served.sampling(body, len(ids), body.max_tokens, logprobs=body.logprobs, prompt_logprobs=prompt_logprobs,
                              default_to_context=False) for ids in prompts]
    rid = f"cmpl-{uuid.uuid4().hex}"
    head = {"id": rid, "object": "text_completion", "created": int(time.time()), "model": served.name}
    generation = Generation(served, rid, prompts, params, body.priority, arrival)
    prompt_texts = [served.decode(ids) for ids in prompts] if body.echo else None
    if body.stream:
        return StreamingResponse(sse_stream(_chunks(served, body, generation, head, prompts, prompt_texts)),
                                 media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
    finals = await unless_disconnected(request, generation.finals())
    if finals is None:  # the client went away; its requests are aborted
        return Response(status_code=499)
    choices = []
    for (i, j), out in sorted(finals.items()):
        text = out.text or ""
        logprobs = None
        if body.logprobs is not None:
            ids, entries, offset = out.token_ids, out.logprobs or [], len(prompt_texts[i]) if body.echo else 0
            if body.echo:
                ids, entries, offset = prompts[i] + ids, (out.prompt_logprobs or []) + entries, 0
            logprobs = completion_logprobs(ids, entries, served.token_text, offset)
        if body.echo:
            text = prompt_texts[i] + text
        choices.append({"index": i * body.n + j, "text": text, "logprobs": logprobs,
                        "finish_reason": out.finish_reason, "stop_reason": out.stop_reason,
                        "prompt_logprobs": _prompt_logprobs(prompts[i], out) if body.prompt_logprobs is not None else None})
    return JSONResponse({**head, "choices": choices, "usage": _usage(prompts, finals.values())})


async def _chunks(served: ServedModel, body: CompletionRequest, generation: Generation, head: dict,
                  prompts: list[list[int]], prompt_texts: list[str] | None):
    offsets: dict[tuple[int, int], int] = {}
    finals = {}
    async for i, out in generation:
        key = (i, out.index)
        text = out.delta_text
        first = key not in offsets
        if first:
            offsets[key] = 0
            if body.echo:
                text = prompt_texts[i] + text
        logprobs = None
        if body.logprobs is not None:
            n_new = len(out.delta_token_ids)
            ids, entries = out.delta_token_ids, (out.logprobs or [])[len(out.logprobs or []) - n_new:]
            if body.echo and first:
                ids, entries = prompts[i] + ids, (out.prompt_logprobs or []) + entries
            logprobs = completion_logprobs(ids, entries, served.token_text, offsets[key])
        offsets[key] += len(text)
        if out.finished:
            finals[key] = out
        if text or out.finished or logprobs:
            yield {**head, "choices": [{"index": i * body.n + out.index, "text": text, "logprobs": logprobs,
                                        "finish_reason": out.finish_reason if out.finished else None,
                                        "stop_reason": out.stop_reason if out.finished else None}]}
    if body.stream_options is not None and body.stream_options.include_usage:
        yield {**head, "choices": [], "usage": _usage(prompts, finals.values())}


def _prompt_logprobs(prompt: list[int], out: RequestOutput) -> list | None:
    """vLLM's prompt_logprobs: per prompt token, {token id: {"logprob", "rank"}} for the token and the top-N."""
    if out.prompt_logprobs is None:
        return None
    rows = []
    for token, e in zip(prompt, out.prompt_logprobs):
        if e is None:
            rows.append(None)
            continue
        row = {str(t): {"logprob": max(lp, -9999.0), "rank": r + 1} for r, (t, lp) in enumerate(e.top)}
        row.setdefault(str(token), {"logprob": max(e.token_logprob, -9999.0), "rank": None})
        rows.append(row)
    return rows


def _usage(prompts: list[list[int]], finals) -> dict:
    prompt_tokens = sum(len(p) for p in prompts)
    completion_tokens = sum(len(out.token_ids) for out in finals)
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}
