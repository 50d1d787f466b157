"""The one model a server serves: its engine and tokenizer, the request defaults, and the turning of a request
into prompts and `SamplingParams` (with the length checks and messages vLLM's users know)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from sambay import __version__
from sambay.engine import Engine, SamplingParams
from sambay.interop.errors import ChatTemplateError
from sambay.serve.errors import APIError
from sambay.serve.metrics import ServerMetrics
from sambay.serve.protocol import ChatCompletionRequest, CompletionRequest, SamplingFields


@dataclass
class ServeOptions:
    served_model_name: str
    api_key: str | None = None
    reasoning_parser: str | None = None
    defaults: dict = field(default_factory=dict)  # request field -> value, from generation_config.json
    max_request_bytes: int = 32 << 20
    max_waiting_requests: int = 1024  # more than this many waiting: 429 with Retry-After
    drain_timeout: float = 30.0  # seconds running requests get to finish after SIGTERM


class ServedModel:
    def __init__(self, engine: Engine, tokenizer, options: ServeOptions):
        self.engine, self.tokenizer, self.options = engine, tokenizer, options
        self.name = options.served_model_name
        self.max_model_len = engine.max_model_len
        self.vocab_size = engine.config.vocab_size
        self.created = int(time.time())
        self.version = __version__
        self.draining = False
        self.metrics = ServerMetrics(engine, self.name)
        self.active: set = set()  # the `Generation`s in flight (ended with an error if a drain times out)
        self._max_token_bytes = _max_token_bytes(tokenizer)

    # ------------------------------------------------------------------ checks
    def check_model(self, model: str | None) -> None:
        if model is not None and model != self.name:
            raise APIError(404, f"The model `{model}` does not exist (this server serves `{self.name}`).", "model")

    def check_accepting(self) -> None:
        if self.engine.dead is not None:
            raise APIError(503, f"the engine has stopped after an error: {self.engine.dead}")
        if self.draining:
            raise APIError(503, "the server is shutting down", headers={"Retry-After": "5"})
        waiting = self.engine.stats().num_waiting
        if waiting >= self.options.max_waiting_requests:
            raise APIError(429, f"{waiting} requests are already waiting (this server queues at most "
                           f"{self.options.max_waiting_requests}); retry later", headers={"Retry-After": "1"})

    def _need_tokenizer(self, what: str):
        if self.tokenizer is None:
            raise APIError(400, f"{what} needs a tokenizer; this model was served without one (send token ids)")
        return self.tokenizer

    # ------------------------------------------------------------------ prompts
    async def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        tok = self._need_tokenizer("a text prompt")
        n_bytes = len(text.encode("utf-8", errors="surrogatepass"))
        if n_bytes > 4 * self._max_token_bytes * self.max_model_len + 4096:
            raise APIError(400, f"This model's maximum context length is {self.max_model_len} tokens. However, "
                           f"the prompt has {n_bytes} bytes of text, which is more tokens than that.", "prompt")
        try:
            return await asyncio.to_thread(tok.encode, text, add_special_tokens=add_special_tokens)
        except (ValueError, TypeError) as e:
            raise APIError(400, f"cannot tokenize the prompt: {e}", "prompt") from None

    def check_ids(self, ids: list[int], param: str = "prompt") -> None:
        bad = next((t for t in ids if t >= self.vocab_size), None)
        if bad is not None:
            raise APIError(400, f"{param}: token id {bad} is outside the vocabulary (size {self.vocab_size})", param)

    async def chat_prompt(self, request: ChatCompletionRequest) -> list[int]:
        tok = self._need_tokenizer("chat")
        messages = [m.as_template_message() for m in request.messages]
        kwargs = dict(request.chat_template_kwargs or {})
        for reserved in ("messages", "add_generation_prompt", "tools", "documents"):
            kwargs.pop(reserved, None)
        try:
            text = await asyncio.to_thread(tok.apply_chat_template, messages,
                                           add_generation_prompt=request.add_generation_prompt,
                                           tools=request.tools, **kwargs)
        except ChatTemplateError as e:
            raise APIError(400, f"cannot apply the chat template: {e}", "messages") from None
        if request.continue_final_message:  # the template closes the last turn: reopen it where it ends
            last = messages[-1]["content"]
            end = text.rfind(last) if last else -1
            if end < 0:
                raise APIError(400, "continue_final_message: the chat template does not reproduce the final "
                               "message verbatim", "messages")
            text = text[:end + len(last)]
        return await self.encode(text)

    # ------------------------------------------------------------------ sampling
    def sampling(self, request: SamplingFields, prompt_len: int, max_tokens: int | None, *,
                 logprobs: int | None = None, prompt_logprobs: int | None = None, default_to_context: bool) -> SamplingParams:
        """The request's SamplingParams; 400 when prompt + max_tokens cannot fit max_model_len."""
        left = self.max_model_len - prompt_len
        if left <= 0:
            raise APIError(400, f"This model's maximum context length is {self.max_model_len} tokens. However, "
                           f"your request has {prompt_len} input tokens. Please reduce the length of the input.",
                           "prompt" if isinstance(request, CompletionRequest) else "messages")
        d = self.options.defaults
        if max_tokens is None:
            max_tokens = min(left, d.get("max_tokens", left)) if default_to_context else d.get("max_tokens", 16)
        if max_tokens > left:
            raise APIError(400, f"This model's maximum context length is {self.max_model_len} tokens. However, you "
                           f"requested {prompt_len + max_tokens} tokens ({prompt_len} in the input, {max_tokens} in "
                           "the completion). Please reduce the length of the input or completion.", "max_tokens")
        if request.n > self.engine.max_num_seqs:
            raise APIError(400, f"n = {request.n} is more than this server runs at once ({self.engine.max_num_seqs})", "n")
        bias = None
        if request.logit_bias:
            bias = {int(k): v for k, v in request.logit_bias.items()}
            self.check_ids(list(bias), "logit_bias")
        if request.stop_token_ids:
            self.check_ids(list(request.stop_token_ids), "stop_token_ids")
        if request.stop and self.tokenizer is None:
            raise APIError(400, "stop strings need a tokenizer; this model was served without one", "stop")

        def pick(name):
            value = getattr(request, name)
            return d.get(name) if value is None else value

        temperature, top_p, top_k, min_p, rep = (pick(k) for k in
                                                 ("temperature", "top_p", "top_k", "min_p", "repetition_penalty"))
        try:
            return SamplingParams(
                max_new_tokens=max_tokens, temperature=1.0 if temperature is None else temperature,
                top_p=1.0 if top_p is None else top_p, top_k=0 if top_k is None else top_k,
                min_p=0.0 if min_p is None else min_p, repetition_penalty=1.0 if rep is None else rep,
                presence_penalty=request.presence_penalty, frequency_penalty=request.frequency_penalty,
                logit_bias=bias, seed=None if request.seed is None else request.seed % 2**63,
                stop=request.stops, stop_token_ids=tuple(request.stop_token_ids or ()), ignore_eos=request.ignore_eos,
                include_stop_str_in_output=request.include_stop_str_in_output,
                skip_special_tokens=request.skip_special_tokens, min_tokens=request.min_tokens, logprobs=logprobs,
                prompt_logprobs=prompt_logprobs, n=request.n)
        except ValueError as e:  # a default from generation_config.json out of range, say
            raise APIError(400, str(e)) from None

    # ------------------------------------------------------------------ text of tokens
    def token_text(self, token_id: int) -> str:
        if self.tokenizer is None:
            return f"token_id:{token_id}"
        return self.tokenizer.decode([token_id], skip_special_tokens=False)

    def decode(self, ids: list[int]) -> str:
        return "" if self.tokenizer is None else self.tokenizer.decode(ids, skip_special_tokens=False)

    def model_card(self) -> dict:
        return {"id": self.name, "object": "model", "created": self.created, "owned_by": "sambay", "root": self.name,
                "parent": None, "max_model_len": self.max_model_len, "vocab_size": self.vocab_size}


def _max_token_bytes(tokenizer) -> int:
    """At most how many UTF-8 bytes of text one token stands for (a vocabulary entry's characters, 4 bytes
    each at most): it bounds a prompt's tokens from below, so that a prompt far over max_model_len is refused
    before it is tokenized. Unknown tokenizers get no bound."""
    vocab = getattr(getattr(tokenizer, "backend", None), "get_vocab", None)
    if vocab is None:
        return 1 << 20
    return 4 * max((len(token) for token in vocab(with_added_tokens=True)), default=1)
