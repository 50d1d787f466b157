"""A server started with --api-key, --reasoning-parser deepseek_r1 and the folder's generation_config.json."""

import httpx
import openai
import pytest

from sambay import SamplingParams
from sambay.serve.reasoning import split_reasoning

MESSAGES = [{"role": "user", "content": "what is two plus two?"}]


@pytest.fixture(scope="module")
def client(reasoning_server):
    return openai.OpenAI(base_url=reasoning_server.url, api_key="sekrit", max_retries=0, timeout=60)


@pytest.mark.parametrize("key", [None, "wrong", "sekri"])
def test_v1_routes_need_the_api_key(reasoning_server, key):
    headers = {} if key is None else {"Authorization": f"Bearer {key}"}
    r = httpx.post(reasoning_server.url + "/completions", json={"prompt": "a"}, headers=headers)
    assert r.status_code == 401
    assert r.json()["error"]["type"] == "AuthenticationError"
    assert httpx.get(reasoning_server.url + "/models", headers=headers).status_code == 401
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=reasoning_server.url, api_key=key or "x", max_retries=0).models.list()


def test_health_and_metrics_need_no_key(reasoning_server):
    assert httpx.get(reasoning_server.base + "/health").status_code == 200
    assert httpx.get(reasoning_server.base + "/metrics").status_code == 200


def test_the_served_model_name_is_the_id_clients_use(client):
    assert [m.id for m in client.models.list().data] == ["phi-ish"]
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="tiny-chat", prompt="a", max_tokens=1)


def test_fields_left_out_take_the_generation_config_values(client, offline):
    """The folder's generation_config.json says temperature 0: a request without one is greedy."""
    gen, _ = offline
    want = gen.generate("the quick", SamplingParams(temperature=0, max_new_tokens=12, ignore_eos=True))[0].text
    for _ in range(2):
        got = client.completions.create(model="phi-ish", prompt="the quick", max_tokens=12, extra_body={"ignore_eos": True})
        assert got.choices[0].text == want
    sampled = client.completions.create(model="phi-ish", prompt="the quick", max_tokens=12, temperature=1.5, seed=3,
                                        extra_body={"ignore_eos": True})
    assert sampled.choices[0].text != want  # a value the request gives wins


def test_reasoning_is_split_from_the_answer_streamed_or_not(client, offline):
    gen, tok = offline
    think = tok.encode("</think>")
    assert len(think) == 1
    bias = {think[0]: 16}  # makes this random model close its thinking mid-answer
    full = gen.generate(tok.apply_chat_template(MESSAGES),
                        SamplingParams(temperature=0, max_new_tokens=24, logit_bias=bias))[0].text
    assert "</think>" in full.strip("</think>")
    reasoning, content = split_reasoning("deepseek_r1", full)
    kw = dict(model="phi-ish", messages=MESSAGES, max_completion_tokens=24, logit_bias={str(k): v for k, v in bias.items()})
    whole = client.chat.completions.create(**kw).choices[0].message
    assert (whole.model_extra["reasoning_content"], whole.content) == (reasoning, content)
    streamed = {"reasoning_content": "", "content": ""}
    for chunk in client.chat.completions.create(**kw, stream=True):
        for c in chunk.choices:
            for key in streamed:
                streamed[key] += (c.delta.model_extra or {}).get(key) or getattr(c.delta, key, None) or ""
    assert (streamed["reasoning_content"], streamed["content"]) == (reasoning or "", content or "")
