"""Where evaluation prompts run: `LocalBackend` (a sambay Engine in this process) or `RemoteBackend` (a
running `sambay serve`, or any OpenAI-compatible server that returns prompt logprobs under `echo`).

Both offer the same three things, over token ids, batched (every prompt goes to the engine, or in flight to
the server, at once): `generate` (n completions per prompt), `score` (each token's log-probability given
the tokens before it, and whether it was the most likely one), and a tokenizer (`encode` / `decode`).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from dataclasses import dataclass

from sambay.engine import Engine, SamplingParams


@dataclass
class Completion:
    text: str
    token_ids: list[int]  # empty from a server (OpenAI's API returns text)
    finish_reason: str | None
    num_tokens: float  # generated tokens (from a server with n > 1: the mean of the request's completions)


class LocalBackend:
    def __init__(self, model, tokenizer, **engine_options):
        self.engine = Engine(model, tokenizer, **engine_options)
        self.tokenizer = tokenizer
        self.max_model_len = self.engine.max_model_len

    def generate(self, prompts: Sequence[list[int]], params: SamplingParams) -> list[list[Completion]]:
        """-> per prompt, its params.n completions (in index order)."""
        ids = [self.engine.add_request(p, params) for p in prompts]
        done: dict[tuple[str, int], Completion] = {}
        while self.engine.has_unfinished_requests():
            for out in self.engine.step():
                if out.finished:
                    if out.error is not None:
                        raise RuntimeError(f"request {out.request_id} failed: {out.error}")
                    done[out.request_id, out.index] = Completion(out.text or "", out.token_ids, out.finish_reason,
                                                                 len(out.token_ids))
        return [[done[rid, i] for i in range(params.n)] for rid in ids]

    def chat_ids(self, messages: list[dict]) -> list[int]:
        """Token ids of a conversation in the model's chat template, ending with the assistant's cue."""
        return self.tokenizer.encode_chat(messages, add_generation_prompt=True)

    def score(self, sequences: Sequence[list[int]]) -> list[list[tuple[float, bool]]]:
        """-> per sequence, for each token after the first: (log-probability, whether it was the argmax)."""
        params = SamplingParams(max_new_tokens=0, prompt_logprobs=1)
        sequence_of = {self.engine.add_request(s, params): s for s in sequences}
        done = {}
        while self.engine.has_unfinished_requests():
            for out in self.engine.step():
                if out.finished:
                    tokens = sequence_of[out.request_id][1:]
                    done[out.request_id] = [(e.token_logprob, t == e.top[0][0])
                                            for t, e in zip(tokens, out.prompt_logprobs[1:])]
        return [done[rid] for rid in sequence_of]


class RemoteTokenizer:
    """encode / decode through a server's /tokenize and /detokenize."""

    def __init__(self, client, model: str):
        self.client, self.model = client, model

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        r = self.client.post("/tokenize", json={"model": self.model, "prompt": text,
                                                "add_special_tokens": add_special_tokens})
        _check(r)
        return r.json()["tokens"]

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        r = self.client.post("/detokenize", json={"model": self.model, "tokens": list(ids)})
        _check(r)
        return r.json()["prompt"]


class RemoteBackend:
    """An OpenAI-compatible server (`base_url` is the server's root, e.g. http://127.0.0.1:8000)."""

    def __init__(self, base_url: str, api_key: str | None = None, model: str | None = None,
                 concurrency: int = 64, timeout: float = 3600.0):
        import httpx

        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.base_url, self.headers, self.timeout = base_url.rstrip("/"), headers, timeout
        self.client = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout)
        r = self.client.get("/v1/models")
        _check(r)
        cards = r.json()["data"]
        card = next((c for c in cards if model is None or c["id"] == model), None)
        if card is None:
            raise ValueError(f"the server at {base_url} does not serve {model!r} (it serves "
                             f"{', '.join(c['id'] for c in cards)})")
        self.model = card["id"]
        self.max_model_len = int(card.get("max_model_len") or 0) or None
        self.tokenizer = RemoteTokenizer(self.client, self.model)
        self.concurrency = concurrency

    def chat_ids(self, messages: list[dict]) -> list[int]:
        r = self.client.post("/tokenize", json={"model": self.model, "messages": messages, "add_generation_prompt": True})
        _check(r)
        return r.json()["tokens"]

    def _run(self, bodies: list[dict]) -> list[dict]:
        import httpx

        async def main():
            limit = asyncio.Semaphore(self.concurrency)
            async with httpx.AsyncClient(base_url=self.base_url, headers=self.headers, timeout=self.timeout) as c:
                async def one(body):
                    async with limit:
                        r = await c.post("/v1/completions", json={"model": self.model, **body})
                        _check(r)
                        return r.json()
                return await asyncio.gather(*(one(b) for b in bodies))

        return asyncio.run(main())

    def generate(self, prompts: Sequence[list[int]], params: SamplingParams) -> list[list[Completion]]:
        body = {"max_tokens": params.max_new_tokens, "temperature": params.temperature, "top_p": params.top_p,
                "n": params.n, "stop": list(params.stop) or None, "ignore_eos": params.ignore_eos,
                "top_k": params.top_k, "min_p": params.min_p}
        if params.seed is not None:
            body["seed"] = params.seed
        answers = self._run([{**body, "prompt": p} for p in prompts])
        return [[Completion(c["text"], [], c["finish_reason"], a["usage"]["completion_tokens"] / len(a["choices"]))
                 for c in sorted(a["choices"], key=lambda c: c["index"])] for a in answers]

    def score(self, sequences: Sequence[list[int]]) -> list[list[tuple[float, bool]]]:
        answers = self._run([{"prompt": s, "max_tokens": 1, "temperature": 0, "logprobs": 1, "echo": True}
                             for s in sequences])
        out = []
        for s, a in zip(sequences, answers):
            lp = a["choices"][0]["logprobs"]
            rows = []
            for value, top in zip(lp["token_logprobs"][1:len(s)], lp["top_logprobs"][1:len(s)]):
                rows.append((value, math.isclose(value, max(top.values()), abs_tol=1e-6)))
            out.append(rows)
        return out


def _check(response) -> None:
    if response.status_code != 200:
        try:
            message = response.json()["error"]["message"]
        except Exception:  # noqa: BLE001 - whatever the body is, say what came back
            message = response.text[:300]
        raise RuntimeError(f"{response.request.method} {response.request.url.path}: {response.status_code} {message}")
