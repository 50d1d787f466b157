"""Malformed and hostile requests: each gets the right 4xx, an OpenAI-shaped error that says what is wrong,
and the server stays healthy and correct afterwards."""

import json

import httpx
import pytest

C, CHAT = "/v1/completions", "/v1/chat/completions"
OK_CHAT = [{"role": "user", "content": "hi"}]


def chat(**kw):
    return {"messages": OK_CHAT, **kw}


def comp(**kw):
    return {"prompt": "hi", **kw}


# (name, method, path, body (dict -> JSON; bytes/str -> raw), headers, status, words the message must contain)
CASES = [
    ("truncated JSON", "POST", C, b'{"prompt": ', None, 400, "not valid JSON"),
    ("JSON array body", "POST", C, b"[1, 2]", None, 400, "JSON object"),
    ("JSON string body", "POST", C, b'"hi"', None, 400, "JSON object"),
    ("text/plain content type", "POST", C, json.dumps(comp()).encode(), {"content-type": "text/plain"}, 400, "application/json"),
    ("form content type", "POST", C, b"prompt=hi", {"content-type": "application/x-www-form-urlencoded"}, 400, "application/json"),
    ("invalid UTF-8", "POST", C, b'{"prompt": "\xff\xfe"}', None, 400, "UTF-8"),
    ("NaN temperature", "POST", C, b'{"prompt": "a", "temperature": NaN}', None, 400, "NaN"),
    ("Infinity top_p", "POST", C, b'{"prompt": "a", "top_p": Infinity}', None, 400, "Infinity"),
    ("deep nesting", "POST", C, b'{"prompt": ' + b"[" * 10000 + b"]" * 10000 + b"}", None, 400, "nested"),
    ("negative temperature", "POST", C, comp(temperature=-1), None, 400, "temperature"),
    ("string temperature", "POST", C, comp(temperature="hot"), None, 400, "temperature"),
    ("top_p zero", "POST", C, comp(top_p=0), None, 400, "top_p"),
    ("top_p over one", "POST", C, comp(top_p=1.5), None, 400, "top_p"),
    ("top_k below -1", "POST", C, comp(top_k=-2), None, 400, "top_k"),
    ("min_p over one", "POST", C, comp(min_p=2), None, 400, "min_p"),
    ("n zero", "POST", C, comp(n=0), None, 400, "n"),
    ("huge n", "POST", C, comp(n=100000), None, 400, "n"),
    ("n over the slots", "POST", C, comp(n=100), None, 400, "n = 100"),
    ("negative max_tokens", "POST", C, comp(max_tokens=-1), None, 400, "max_tokens"),
    ("huge max_tokens", "POST", C, comp(max_tokens=10**12), None, 400, "maximum context length is 256"),
    ("fractional max_tokens", "POST", C, comp(max_tokens=1.5), None, 400, "max_tokens"),
    ("boolean max_tokens", "POST", C, comp(max_tokens=True), None, 400, "max_tokens"),
    ("no prompt", "POST", C, {"max_tokens": 3}, None, 400, "prompt"),
    ("empty prompt list", "POST", C, comp(prompt=[]), None, 400, "prompt"),
    ("empty token list", "POST", C, comp(prompt=[[]]), None, 400, "prompt"),
    ("negative token id", "POST", C, comp(prompt=[1, -5]), None, 400, "prompt"),
    ("token id past the vocabulary", "POST", C, comp(prompt=[1, 10**9]), None, 400, "outside the vocabulary"),
    ("mixed prompt list", "POST", C, comp(prompt=[1, "a"]), None, 400, "prompt"),
    ("prompt of null", "POST", C, comp(prompt=None), None, 400, "prompt"),
    ("token prompt over max length", "POST", C, comp(prompt=[5] * 300), None, 400, "256"),
    ("10 MB prompt", "POST", C, comp(prompt="x" * 10_000_000), None, 400, "maximum context length is 256"),
    ("body over the size limit", "POST", C, comp(prompt="x" * (33 << 20)), None, 413, "bytes"),
    ("unknown model", "POST", C, comp(model="gpt-5"), None, 404, "gpt-5"),
    ("model as a number", "POST", C, comp(model=123), None, 400, "model"),
    ("empty stop string", "POST", C, comp(stop=""), None, 400, "stop"),
    ("too many stop strings", "POST", C, comp(stop=["a"] * 100), None, 400, "stop"),
    ("stop as a number", "POST", C, comp(stop=5), None, 400, "stop"),
    ("logit_bias key not an id", "POST", C, comp(logit_bias={"abc": 1}), None, 400, "logit_bias"),
    ("logit_bias value too big", "POST", C, comp(logit_bias={"1": 1000}), None, 400, "logit_bias"),
    ("logit_bias id past the vocabulary", "POST", C, comp(logit_bias={"999999": 1}), None, 400, "logit_bias"),
    ("seed too big", "POST", C, comp(seed=2**70), None, 400, "seed"),
    ("seed as text", "POST", C, comp(seed="x"), None, 400, "seed"),
    ("logprobs over 20", "POST", C, comp(logprobs=21), None, 400, "logprobs"),
    ("suffix", "POST", C, comp(suffix="end"), None, 400, "suffix is not supported"),
    ("best_of over n", "POST", C, comp(best_of=3), None, 400, "best_of"),
    ("stream_options without stream", "POST", C, comp(stream_options={"include_usage": True}), None, 400, "stream=True"),
    ("presence_penalty out of range", "POST", C, comp(presence_penalty=3), None, 400, "presence_penalty"),
    ("frequency_penalty out of range", "POST", C, comp(frequency_penalty=-5), None, 400, "frequency_penalty"),
    ("zero repetition_penalty", "POST", C, comp(repetition_penalty=0), None, 400, "repetition_penalty"),
    ("negative stop token id", "POST", C, comp(stop_token_ids=[-1]), None, 400, "stop_token_ids"),
    ("stop token id past the vocabulary", "POST", C, comp(stop_token_ids=[999999]), None, 400, "stop_token_ids"),
    ("negative min_tokens", "POST", C, comp(min_tokens=-1), None, 400, "min_tokens"),
    ("prompt_logprobs while streaming", "POST", C, comp(prompt_logprobs=1, stream=True), None, 400, "prompt_logprobs"),
    ("echo as text", "POST", C, comp(echo="yes"), None, 400, "echo"),
    ("no messages", "POST", CHAT, {"max_tokens": 3}, None, 400, "messages"),
    ("empty messages", "POST", CHAT, {"messages": []}, None, 400, "messages"),
    ("unknown role", "POST", CHAT, {"messages": [{"role": "wizard", "content": "hi"}]}, None, 400, "role"),
    ("image content", "POST", CHAT, {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
     None, 400, "only text"),
    ("content as a number", "POST", CHAT, {"messages": [{"role": "user", "content": 5}]}, None, 400, "content"),
    ("message not an object", "POST", CHAT, {"messages": ["hi"]}, None, 400, "messages"),
    ("top_logprobs without logprobs", "POST", CHAT, chat(top_logprobs=2), None, 400, "logprobs"),
    ("generation prompt and continue", "POST", CHAT, chat(continue_final_message=True), None, 400, "continue_final_message"),
    ("continue a user message", "POST", CHAT, chat(continue_final_message=True, add_generation_prompt=False), None, 400,
     "assistant"),
    ("chat template in the request", "POST", CHAT, chat(chat_template="{{ 'x' }}"), None, 400, "chat_template"),
    ("structured response format", "POST", CHAT, chat(response_format={"type": "json_schema"}), None, 400, "response_format"),
    ("huge max_completion_tokens", "POST", CHAT, chat(max_completion_tokens=10**9), None, 400, "maximum context length"),
    ("unknown chat model", "POST", CHAT, chat(model="other"), None, 404, "other"),
    ("unknown path", "GET", "/v1/nope", None, None, 404, "Not Found"),
    ("wrong method", "GET", C, None, None, 405, "Method Not Allowed"),
    ("tokenize with prompt and messages", "POST", "/tokenize", {"prompt": "a", "messages": OK_CHAT}, None, 400, "exactly one"),
    ("detokenize a negative id", "POST", "/detokenize", {"tokens": [-1]}, None, 400, "tokens"),
    ("detokenize an id past the vocabulary", "POST", "/detokenize", {"tokens": [10**6]}, None, 400, "vocabulary"),
]


@pytest.fixture(scope="module")
def http(server):
    with httpx.Client(base_url=server.base, timeout=60) as client:
        yield client


def test_the_table_is_large_enough():
    assert len(CASES) >= 50


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_a_bad_request_gets_a_specific_4xx(http, case):
    name, method, path, body, headers, status, words = case
    headers = {"content-type": "application/json", **(headers or {})}
    content = body if isinstance(body, bytes) else None if body is None else json.dumps(body).encode()
    r = http.request(method, path, content=content, headers=headers)
    assert r.status_code == status, r.text[:500]
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert words in error["message"], error
    assert error["code"] == status


def test_the_server_is_healthy_and_correct_after_the_table(http):
    for case in CASES:  # the whole table once more, quickly, then a normal request
        _, method, path, body, headers, _, _ = case
        content = body if isinstance(body, bytes) else None if body is None else json.dumps(body).encode()
        http.request(method, path, content=content, headers={"content-type": "application/json", **(headers or {})})
    assert http.get("/health").status_code == 200
    r = http.post("/v1/completions", json={"prompt": "the", "max_tokens": 3, "temperature": 0, "ignore_eos": True})
    assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 3
