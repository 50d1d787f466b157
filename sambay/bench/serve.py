"""`sambay bench serve`: a load generator for an OpenAI-compatible server (`sambay serve`, or any server with
/v1/completions and /v1/models).

Each request of the dataset (`serve_load`) is sent at its time in the arrival schedule, at most
`max_concurrency` at once, as a streamed POST to `{base_url}/v1/completions` (`stream_options.include_usage`
asks for the final usage chunk). The client records when each chunk carrying text arrives; `serve_metrics`
turns those records into TTFT, TPOT, ITL, latency, throughput and goodput. A request that fails (an HTTP
error status, an `{"error": ...}` event, a broken connection, a stream without `data: [DONE]`) is recorded
as failed with its message; it never stops the run.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

import httpx

from sambay.bench.serve_load import BenchRequest
from sambay.bench.serve_metrics import RequestRecord


class ServerError(Exception):
    """The server could not tell what it serves (unreachable, an error status, not an OpenAI model list)."""


@dataclass(frozen=True)
class ServedModel:
    """One entry of GET /v1/models: its id, its vocabulary size when the card gives one, the whole card."""

    id: str
    vocab_size: int | None
    card: dict


def auth_headers(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


def error_message(body: bytes | str, limit: int = 300) -> str:
    """The message of an error response: OpenAI's {"error": {"message"}}, {"error": "..."}, FastAPI's
    {"detail": ...}, else the text itself, cut to `limit` characters."""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    try:
        obj = json.loads(text)
    except json.JSONDecodeError:
        return text.strip()[:limit] or "(empty body)"
    if isinstance(obj, dict):
        err = obj.get("error", obj.get("detail"))
        if isinstance(err, dict) and "message" in err:
            return str(err["message"])[:limit]
        if err is not None:
            return str(err)[:limit]
    return text.strip()[:limit]


def served_model(base_url: str, model: str | None = None, api_key: str | None = None,
                 timeout: float = 30.0) -> ServedModel:
    """The card of `model` (the first model listed when None) from GET {base_url}/v1/models; ServerError
    when the server cannot be asked or does not serve `model`."""
    url = f"{base_url}/v1/models"
    try:
        # trust_env off: the benchmark measures the server, not an HTTP proxy from the environment
        r = httpx.get(url, headers=auth_headers(api_key), timeout=timeout, trust_env=False)
    except httpx.HTTPError as e:
        raise ServerError(f"cannot reach {url}: {e or type(e).__name__}") from None
    if r.status_code != 200:
        raise ServerError(f"GET {url}: HTTP {r.status_code}: {error_message(r.content)}")
    try:
        cards = [c for c in r.json()["data"] if isinstance(c, dict) and isinstance(c.get("id"), str)]
    except (ValueError, KeyError, TypeError):
        raise ServerError(f"GET {url}: not an OpenAI model list") from None
    if not cards:
        raise ServerError(f"GET {url}: the server lists no models")
    card = cards[0] if model is None else next((c for c in cards if c["id"] == model), None)
    if card is None:
        raise ServerError(f"{base_url} does not serve {model!r} (it serves: {', '.join(c['id'] for c in cards)})")
    vocab = card.get("vocab_size")
    vocab = vocab if isinstance(vocab, int) and not isinstance(vocab, bool) and vocab > 0 else None
    return ServedModel(card["id"], vocab, card)


class StreamParser:
    """The server-sent events of one streamed /v1/completions response, fed one line at a time with the time
    it arrived (s, any clock shared with the send time)."""

    def __init__(self) -> None:
        self.content_times: list[float] = []  # arrival of each chunk carrying text
        self.first_choice_time: float | None = None  # of the first chunk with choices, text or not
        self.completion_tokens: int | None = None
        self.prompt_tokens: int | None = None
        self.error: str | None = None  # the first error event, or a malformed event
        self.done = False  # `data: [DONE]` arrived

    def feed(self, line: str, now: float) -> None:
        if not line.startswith("data:"):  # blank separators, `: keep-alive` comments, event:/id: fields
            return
        data = line[5:].strip()
        if data == "[DONE]":
            self.done = True
            return
        try:
            event = json.loads(data)
        except json.JSONDecodeError:
            self._fail(f"malformed event: {data[:100]}")
            return
        if not isinstance(event, dict):
            self._fail(f"malformed event: {data[:100]}")
            return
        if "error" in event:
            self._fail(error_message(json.dumps(event)))
            return
        usage = event.get("usage")
        if isinstance(usage, dict):  # the include_usage chunk (or vLLM's continuous usage: the last one wins)
            self.completion_tokens = _count(usage.get("completion_tokens"), self.completion_tokens)
            self.prompt_tokens = _count(usage.get("prompt_tokens"), self.prompt_tokens)
        choices = event.get("choices")
        if isinstance(choices, list) and choices:
            if self.first_choice_time is None:
                self.first_choice_time = now
            # a chunk with only a finish_reason carries no token: counting it would add a false ITL gap
            if any(isinstance(c, dict) and c.get("text") for c in choices):
                self.content_times.append(now)

    def _fail(self, message: str) -> None:
        if self.error is None:
            self.error = message

    def finish(self, record: RequestRecord, sent: float, ended: float) -> RequestRecord:
        """Fill `record` (sent at `sent`, stream over at `ended`) from what the stream said."""
        record.latency = ended - sent
        if self.prompt_tokens is not None:
            record.prompt_len = self.prompt_tokens
        if self.error is not None:
            record.error = self.error
            return record
        if not self.done:  # the server went away mid-stream; OpenAI streams always end with [DONE]
            record.error = "the stream ended without data: [DONE]"
            return record
        times = self.content_times
        # no chunk had text (every token decoded to nothing): its first chunk is still its first token
        first = times[0] if times else self.first_choice_time
        record.ttft = None if first is None else first - sent
        record.itl = [b - a for a, b in zip(times, times[1:])]
        record.output_tokens = self.completion_tokens if self.completion_tokens is not None else len(times)
        record.success = True
        return record


def _count(value, default: int | None) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else default


def completion_body(request: BenchRequest, model: str, temperature: float, ignore_eos: bool) -> dict:
    body = {"model": model, "prompt": request.prompt, "max_tokens": request.max_tokens, "temperature": temperature,
            "stream": True, "stream_options": {"include_usage": True}}
    if ignore_eos:  # a vLLM extension; left out otherwise so that strict OpenAI servers accept the body
        body["ignore_eos"] = True
    return body


async def send_request(client: httpx.AsyncClient, request: BenchRequest, body: dict, t0: float,
                       timeout: float | None) -> RequestRecord:
    """Stream one completion; its record with times relative to its send (`start` relative to `t0`)."""
    record = RequestRecord(prompt_len=request.prompt_len, max_tokens=request.max_tokens)
    parser = StreamParser()
    sent = time.perf_counter()
    record.start = sent - t0
    try:
        async with asyncio.timeout(timeout), client.stream("POST", "/v1/completions", json=body) as response:
            if response.status_code != 200:
                record.error = f"HTTP {response.status_code}: {error_message(await response.aread())}"
                record.latency = time.perf_counter() - sent
                return record
            # read to the end even after [DONE]: a response left unread closes its connection instead of
            # returning it to the pool, and the next request would pay for a new one
            async for line in response.aiter_lines():
                parser.feed(line, time.perf_counter())
    except TimeoutError:
        record.error = f"no complete response within {timeout:g} s (--timeout)"
        record.latency = time.perf_counter() - sent
        return record
    except Exception as e:  # any failure of one request is that request's result, never the run's
        record.error = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
        record.latency = time.perf_counter() - sent
        return record
    return parser.finish(record, sent, time.perf_counter())


async def run_async(requests: Sequence[BenchRequest], send_times: Sequence[float], *, base_url: str, model: str,
                    api_key: str | None = None, max_concurrency: int | None = None, temperature: float = 0.0,
                    ignore_eos: bool = False, timeout: float | None = None,
                    progress: bool = False) -> tuple[list[RequestRecord], float]:
    """Send `requests[i]` at `send_times[i]` (s from the start; it then waits for a free slot when
    `max_concurrency` are in flight). Returns the records in request order and the duration (s) from the
    start to the last completion."""
    n = len(requests)
    gate = asyncio.Semaphore(max_concurrency) if max_concurrency else contextlib.nullcontext()
    # httpx keeps 100 connections by default: that would cap the concurrency silently, so size the pool
    # to the gate (unbounded without one)
    limits = httpx.Limits(max_connections=max_concurrency, max_keepalive_connections=max_concurrency)
    finished = 0

    async def one(request: BenchRequest, t0: float) -> RequestRecord:
        nonlocal finished
        async with gate:
            record = await send_request(client, request, completion_body(request, model, temperature, ignore_eos),
                                        t0, timeout)
        finished += 1
        if progress and (finished == n or finished % max(1, n // 10) == 0):
            print(f"[bench] {finished}/{n} requests done", file=sys.stderr, flush=True)
        return record

    async with httpx.AsyncClient(base_url=base_url, headers=auth_headers(api_key), limits=limits,
                                 timeout=httpx.Timeout(None), trust_env=False) as client:
        t0 = time.perf_counter()
        tasks = []
        for request, at in zip(requests, send_times):
            # sleep to an absolute time from the start, so that sleeping late never accumulates into drift
            delay = t0 + at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(request, t0)))
        records = await asyncio.gather(*tasks)
        duration = time.perf_counter() - t0
    return list(records), duration


def run(requests: Sequence[BenchRequest], send_times: Sequence[float], **kwargs) -> tuple[list[RequestRecord], float]:
    """`run_async` in a fresh event loop (the keyword arguments are its)."""
    return asyncio.run(run_async(requests, send_times, **kwargs))
