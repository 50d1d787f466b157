"""POST /v1/chat/completions: messages rendered with the model's chat template, the answer whole or streamed,
split into reasoning and content when the server runs a reasoning parser."""

from __future__ import annotations

import time
import uuid

from fastapi import Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from sambay.serve.logprobs import chat_logprobs
from sambay.serve.protocol import ChatCompletionRequest
from sambay.serve.reasoning import ReasoningSplitter, split_reasoning
from sambay.serve.served_model import ServedModel
from sambay.serve.streams import Generation, sse_stream, unless_disconnected


async def create_chat_completion(served: ServedModel, request: Request, body: ChatCompletionRequest) -> Response:
    arrival = time.perf_counter()
    served.check_model(body.model)
    served.check_accepting()
    ids = await served.chat_prompt(body)
    n_top = (body.top_logprobs or 0) if body.logprobs else None
    params = served.sampling(body, len(ids), body.token_limit, logprobs=n_top, default_to_context=True)
    rid = f"chatcmpl-{uuid.uuid4().hex}"
    head = {"id": rid, "object": "chat.completion", "created": int(time.time()), "model": served.name}
    generation = Generation(served, rid, [ids], [params], body.priority, arrival)
    parser = served.options.reasoning_parser
    if body.stream:
        return StreamingResponse(sse_stream(_chunks(served, body, generation, head, len(ids), parser)),
                                 media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
    finals = await unless_disconnected(request, generation.finals())
    if finals is None:
        return Response(status_code=499)
    choices = []
    for (_, j), out in sorted(finals.items()):
        message = {"role": "assistant", "content": out.text}
        if parser is not None:
            message["reasoning_content"], message["content"] = split_reasoning(parser, out.text or "")
        choices.append({"index": j, "message": message,
                        "logprobs": chat_logprobs(out.token_ids, out.logprobs, served.token_text) if body.logprobs else None,
                        "finish_reason": out.finish_reason, "stop_reason": out.stop_reason})
    completion_tokens = sum(len(out.token_ids) for out in finals.values())
    return JSONResponse({**head, "choices": choices, "usage": _usage(len(ids), completion_tokens)})


async def _chunks(served: ServedModel, body: ChatCompletionRequest, generation: Generation, head: dict,
                  prompt_tokens: int, parser: str | None):
    head = {**head, "object": "chat.completion.chunk"}
    splitters: dict[int, ReasoningSplitter] = {}
    completion_tokens = 0

    def chunk(index: int, delta: dict, finish_reason=None, logprobs=None, stop_reason=None) -> dict:
        return {**head, "choices": [{"index": index, "delta": delta, "logprobs": logprobs,
                                     "finish_reason": finish_reason, "stop_reason": stop_reason}]}

    async for _, out in generation:
        j = out.index
        if j not in splitters:  # the first chunk of each choice names the role
            splitters[j] = ReasoningSplitter(parser) if parser else None
            yield chunk(j, {"role": "assistant", "content": ""})
        completion_tokens += len(out.delta_token_ids)
        parts = [(None, out.delta_text)]
        splitter = splitters[j]
        if splitter is not None:
            reasoning, content = splitter.push(out.delta_text)
            if out.finished:
                r2, c2 = splitter.finish()
                reasoning, content = reasoning + r2, content + c2
            parts = [("reasoning_content", reasoning), ("content", content)]
        delta = {}
        for key, text in parts:
            if text:
                delta[key or "content"] = text
        logprobs = None
        if body.logprobs and out.delta_token_ids:
            new = len(out.delta_token_ids)
            logprobs = chat_logprobs(out.delta_token_ids, out.logprobs[-new:], served.token_text)
        if delta or logprobs or out.finished:
            yield chunk(j, delta, out.finish_reason if out.finished else None, logprobs,
                        out.stop_reason if out.finished else None)
    if body.stream_options is not None and body.stream_options.include_usage:
        yield {**head, "choices": [], "usage": _usage(prompt_tokens, completion_tokens)}


def _usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}
