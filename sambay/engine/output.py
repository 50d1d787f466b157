"""Output processing: sampled token ids in, `RequestOutput`s out: detokenisation, stop tokens and strings,
length limits and streaming deltas. It runs on the host after the step's one sync.

An exception while processing one request's token (a tokenizer that fails on it, say) ends that request
alone, with finish_reason "abort" and the message in `RequestOutput.error`; the others carry on.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from sambay.engine.request import Prefix, Request, RequestOutput, Status
from sambay.engine.sampling import Logprobs
from sambay.engine.text import TextCodec, find_stop, held_back
from sambay.tokenizer.detokenizer import IncrementalDecoder


@dataclass
class _Text:
    decoder: IncrementalDecoder
    text: str = ""
    emitted: int = 0  # characters of `text` already streamed (a possible stop-string prefix is held back)


class OutputProcessor:
    def __init__(self, codec: TextCodec | None):
        self.codec = codec
        self._text: dict[str, _Text] = {}
        self._tokens_sent: dict[str, int] = {}

    def add(self, request: Request) -> None:
        if self.codec is not None:  # by default special tokens are not part of the text (as in vLLM and HF)
            skip = request.params.skip_special_tokens
            self._text[request.key] = _Text(IncrementalDecoder(self.codec, skip_special_tokens=skip))
        self._tokens_sent[request.key] = 0

    def process(self, sampled: list[tuple[Request, int, Logprobs | None]]) -> list[RequestOutput]:
        """Record one token per request and decide whether it finished (sets status and finish_reason)."""
        now = time.perf_counter()
        outputs = []
        for r, token, logprobs in sampled:
            try:
                self._record(r, token, logprobs, now)
            except Exception as e:  # noqa: BLE001 - one request's failure must not end the others
                r.status, r.finish_reason, r.error = Status.ABORTED, "abort", f"{type(e).__name__}: {e}"
                r.metrics.finished_time = now
            outputs.append(self.output(r))
        return outputs

    def _record(self, r: Request, token: int, logprobs: Logprobs | None, now: float) -> None:
        r.output_token_ids.append(token)
        if logprobs is not None:
            r.logprobs.append(logprobs)
        r.metrics.first_token_time = r.metrics.first_token_time or now
        r.metrics.last_token_time = now
        text = self._text.get(r.key)
        if token in r.stop_ids:
            r.finish_reason, r.stop_reason = "stop", token
        elif text is not None:
            piece = text.decoder.push(token)
            text.text += piece
            hit = find_stop(text.text, r.params.stop, len(text.text) - len(piece)) if r.params.stop and piece else None
            if hit is not None:
                start, stop = hit
                text.text = text.text[:start + len(stop) if r.params.include_stop_str_in_output else start]
                r.finish_reason, r.stop_reason = "stop", stop
        if r.finish_reason is None and len(r.output_token_ids) >= r.max_new:
            r.finish_reason = "length"
        if r.finish_reason is not None:
            r.status, r.metrics.finished_time = Status.FINISHED, now
            if text is not None and not isinstance(r.stop_reason, str):
                text.text += text.decoder.flush()  # an incomplete character at the very end

    def output(self, r: Request) -> RequestOutput:
        """The request's output now, with the deltas since the last one (forgets finished requests)."""
        rid = r.key
        text = self._text.get(rid)
        delta_text = ""
        if text is not None:
            hold = 0 if r.finished else held_back(text.text, r.params.stop)
            end = max(text.emitted, len(text.text) - hold)
            delta_text, text.emitted = text.text[text.emitted:end], end
        sent = self._tokens_sent.get(rid, 0)
        self._tokens_sent[rid] = len(r.output_token_ids)
        if r.finished:
            self._text.pop(rid, None)
            self._tokens_sent.pop(rid, None)
        return RequestOutput(
            request_id=r.request_id, index=r.index, prompt_token_ids=r.prompt_token_ids, token_ids=Prefix(r.output_token_ids),
            text=None if text is None else text.text, finished=r.finished, finish_reason=r.finish_reason,
            stop_reason=r.stop_reason, delta_token_ids=r.output_token_ids[sent:], delta_text=delta_text,
            logprobs=Prefix(r.logprobs) if r.params.logprobs is not None else None,
            prompt_logprobs=r.prompt_logprobs if r.params.prompt_logprobs is not None else None, metrics=r.metrics,
            error=r.error)
