"""`sambay serve` in a subprocess, driven by the official openai client over loopback, against the offline
Generator on the same checkpoint."""

import asyncio
import re
import time

import httpx
import openai
import pytest
import torch

from sambay import SamplingParams, from_pretrained


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url, api_key="none", max_retries=0, timeout=60)


def offline_greedy(offline, prompt, n_tokens, **kw):
    gen, _ = offline
    return gen.generate(prompt, SamplingParams(temperature=0, max_new_tokens=n_tokens, **kw))[0]


def metric(server, name: str, **labels) -> float:
    text = httpx.get(server.base + "/metrics").text
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_models_lists_the_served_model_with_its_max_length(client):
    (card,) = client.models.list().data
    assert card.id == "tiny-chat"
    assert card.model_extra["max_model_len"] == 256


def test_greedy_completion_equals_the_offline_generator(client, offline):
    want = offline_greedy(offline, "what is two plus", 12)
    got = client.completions.create(model="tiny-chat", prompt="what is two plus", max_tokens=12, temperature=0)
    assert got.choices[0].text == want.text
    assert got.choices[0].finish_reason == want.finish_reason
    assert got.usage.prompt_tokens == len(want.prompt_token_ids)
    assert got.usage.completion_tokens == len(want.token_ids)


def test_token_id_prompts_and_prompt_lists_give_one_choice_per_prompt(client, offline):
    _, tok = offline
    prompts = ["the quick brown", "what is two"]
    got = client.completions.create(model="tiny-chat", prompt=[tok.encode(p) for p in prompts], max_tokens=6,
                                    temperature=0, extra_body={"ignore_eos": True})
    assert [c.index for c in got.choices] == [0, 1]
    for choice, p in zip(got.choices, prompts):
        assert choice.text == offline_greedy(offline, p, 6, ignore_eos=True).text


def test_greedy_chat_applies_the_template_and_equals_the_offline_generator(client, offline):
    _, tok = offline
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "what is two plus two?"}]
    want = offline_greedy(offline, tok.apply_chat_template(messages, add_generation_prompt=True), 10)
    got = client.chat.completions.create(model="tiny-chat", messages=messages, max_completion_tokens=10, temperature=0)
    assert got.choices[0].message.role == "assistant"
    assert got.choices[0].message.content == want.text
    assert got.usage.prompt_tokens == len(want.prompt_token_ids)


@pytest.mark.parametrize("endpoint", ["completions", "chat"])
def test_streaming_equals_non_streaming_for_seeded_sampling(client, endpoint):
    kw = dict(model="tiny-chat", max_tokens=16, temperature=1.0, top_p=0.9, seed=11, n=2)
    if endpoint == "completions":
        create, kw["prompt"] = client.completions.create, "héllo"
    else:
        create, kw["messages"] = client.chat.completions.create, [{"role": "user", "content": "héllo"}]
    whole = create(**kw)
    parts, finish, usage = {0: "", 1: ""}, {}, None
    for chunk in create(**kw, stream=True, stream_options={"include_usage": True}):
        if chunk.usage is not None:
            usage = chunk.usage
        for c in chunk.choices:
            parts[c.index] += (c.text if endpoint == "completions" else c.delta.content) or ""
            if c.finish_reason:
                finish[c.index] = c.finish_reason
    texts = [c.text if endpoint == "completions" else c.message.content for c in whole.choices]
    assert [parts[0], parts[1]] == texts
    assert [finish[0], finish[1]] == [c.finish_reason for c in whole.choices]
    assert usage.completion_tokens == whole.usage.completion_tokens
    assert usage.prompt_tokens == whole.usage.prompt_tokens


def test_seeded_requests_reproduce_and_n_completions_differ(client):
    kw = dict(model="tiny-chat", prompt="the quick", max_tokens=12, temperature=1.0, n=3, seed=5,
              extra_body={"ignore_eos": True})
    a, b = client.completions.create(**kw), client.completions.create(**kw)
    assert [c.text for c in a.choices] == [c.text for c in b.choices]
    assert len({c.text for c in a.choices}) > 1
    other = client.completions.create(**{**kw, "seed": 6})
    assert [c.text for c in other.choices] != [c.text for c in a.choices]


def test_a_stop_string_across_a_token_boundary_cuts_the_text_there(client, offline):
    _, tok = offline
    want = offline_greedy(offline, "the lazy", 24, ignore_eos=True)
    pieces = [tok.decode([t]) for t in want.token_ids]
    k = next(i for i in range(3, len(pieces) - 1) if pieces[i] and pieces[i + 1] and "\ufffd" not in pieces[i] + pieces[i + 1])
    stop = pieces[k][-1] + pieces[k + 1][0]  # ends in one token, starts in the next
    cut = want.text.find(stop)
    for include, expected in ((False, want.text[:cut]), (True, want.text[:cut + len(stop)])):
        got = client.completions.create(model="tiny-chat", prompt="the lazy", max_tokens=24, temperature=0, stop=[stop],
                                        extra_body={"ignore_eos": True, "include_stop_str_in_output": include})
        assert got.choices[0].text == expected
        assert got.choices[0].finish_reason == "stop"


def test_32_concurrent_streams_each_equal_their_offline_twin(server, offline):
    prompts = [f"{w} {i}" for i, w in enumerate(["what", "the", "quick", "lazy", "fox", "héllo", "two", "four"] * 4)]
    gen, _ = offline
    want = [r.text for r in gen.generate(prompts, SamplingParams(temperature=0, max_new_tokens=10, ignore_eos=True))]

    async def one(client, prompt):
        text = ""
        stream = await client.completions.create(model="tiny-chat", prompt=prompt, max_tokens=10, temperature=0,
                                                 stream=True, extra_body={"ignore_eos": True})
        async for chunk in stream:
            text += chunk.choices[0].text if chunk.choices else ""
        return text

    async def main():
        async with openai.AsyncOpenAI(base_url=server.url, api_key="none", max_retries=0, timeout=120) as client:
            return await asyncio.gather(*(one(client, p) for p in prompts))

    assert asyncio.run(main()) == want


def test_a_client_that_disconnects_mid_stream_aborts_its_request(client, server):
    aborted = metric(server, "sambay:request_success_total", finished_reason="abort")
    stream = client.completions.create(model="tiny-chat", prompt="the", max_tokens=200, temperature=0, stream=True,
                                       extra_body={"ignore_eos": True})
    for i, _ in enumerate(stream):
        if i == 2:
            break
    stream.close()
    deadline = time.monotonic() + 20
    while metric(server, "sambay:request_success_total", finished_reason="abort") <= aborted:
        assert time.monotonic() < deadline, "the abort never showed in /metrics"
        time.sleep(0.05)
    while metric(server, "sambay:num_requests_running") > 0:
        assert time.monotonic() < deadline, "the aborted request kept its slot"
        time.sleep(0.05)


def test_echo_logprobs_are_the_model_log_softmax_in_lm_eval_format(server, chat_model_dir, offline):
    """What lm-evaluation-harness's local-completions sends for loglikelihood, and how it reads the answer."""
    _, tok = offline
    ids = tok.encode("the quick brown fox jumps")
    r = httpx.post(server.url + "/completions", json={"prompt": ids, "max_tokens": 1, "temperature": 0, "logprobs": 1,
                                                      "echo": True, "seed": 1234}).json()
    lp = r["choices"][0]["logprobs"]
    assert len(lp["token_logprobs"]) == len(ids) + 1 and lp["token_logprobs"][0] is None
    model = from_pretrained(chat_model_dir)
    with torch.no_grad():
        want = torch.log_softmax(model(torch.tensor([ids])).logits[0].float(), -1)
    for pos in range(1, len(ids)):
        assert lp["token_logprobs"][pos] == pytest.approx(want[pos - 1, ids[pos]].item(), abs=1e-4)
        assert max(lp["top_logprobs"][pos].values()) == pytest.approx(want[pos - 1].max().item(), abs=1e-4)
    assert lp["tokens"][:len(ids)] == [tok.decode([t]) for t in ids]
    assert r["choices"][0]["text"].startswith("the quick brown fox jumps")
    # lm-eval's greedy check: the last (generated) token of a greedy request is its top token
    assert lp["token_logprobs"][-1] == pytest.approx(max(lp["top_logprobs"][-1].values()), abs=1e-6)


def test_prompt_scoring_with_zero_max_tokens_generates_nothing(server, offline):
    _, tok = offline
    ids = tok.encode("what is two")
    r = httpx.post(server.url + "/completions", json={"prompt": ids, "max_tokens": 0, "logprobs": 0, "echo": True}).json()
    choice = r["choices"][0]
    assert choice["text"] == "what is two" and choice["finish_reason"] == "length"
    assert len(choice["logprobs"]["token_logprobs"]) == len(ids)
    assert r["usage"]["completion_tokens"] == 0


def test_chat_logprobs_give_the_sampled_token_and_the_top_n(client):
    got = client.chat.completions.create(model="tiny-chat", messages=[{"role": "user", "content": "hi"}],
                                         max_completion_tokens=5, temperature=0, logprobs=True, top_logprobs=3)
    content = got.choices[0].logprobs.content
    assert len(content) == got.usage.completion_tokens
    for entry in content:
        assert len(entry.top_logprobs) == 3
        assert entry.logprob == pytest.approx(entry.top_logprobs[0].logprob, abs=1e-6)  # greedy: the best token
        assert bytes(entry.bytes).decode("utf-8", errors="replace") == entry.token


def test_tokenize_detokenize_version_health(server, offline):
    _, tok = offline
    t = httpx.post(server.base + "/tokenize", json={"prompt": "the quick brown"}).json()
    assert t["tokens"] == tok.encode("the quick brown") and t["count"] == len(t["tokens"]) and t["max_model_len"] == 256
    chat = httpx.post(server.base + "/tokenize", json={"messages": [{"role": "user", "content": "hi"}]}).json()
    assert chat["tokens"] == tok.encode("<|user|>hi<|end|><|assistant|>")
    assert httpx.post(server.base + "/detokenize", json={"tokens": t["tokens"]}).json() == {"prompt": "the quick brown"}
    assert re.fullmatch(r"\d+\.\d+\.\d+.*", httpx.get(server.base + "/version").json()["version"])
    assert httpx.get(server.base + "/health").status_code == 200


def test_metrics_use_vllm_names_and_count_tokens(server, client):
    before = metric(server, "sambay:generation_tokens_total")
    client.completions.create(model="tiny-chat", prompt="the", max_tokens=4, temperature=0, extra_body={"ignore_eos": True})
    text = httpx.get(server.base + "/metrics").text
    assert metric(server, "sambay:generation_tokens_total") == before + 4
    for name in ("num_requests_running", "num_requests_waiting", "kv_cache_usage_perc", "num_preemptions_total",
                 "prefix_cache_queries_total", "prefix_cache_hits_total", "prefix_cache_snapshot_bytes",
                 "prompt_tokens_total", "time_to_first_token_seconds_bucket", "inter_token_latency_seconds_bucket",
                 "e2e_request_latency_seconds_bucket", "request_queue_time_seconds_bucket"):
        assert f"sambay:{name}{{" in text, name


def test_a_repeated_chat_turn_is_served_from_the_prefix_cache(server, client):
    messages = [{"role": "system", "content": "you are a helpful assistant. " * 4}, {"role": "user", "content": "hi"}]
    first = client.chat.completions.create(model="tiny-chat", messages=messages, max_completion_tokens=6, temperature=0)
    hits = metric(server, "sambay:prefix_cache_hits_total")
    follow = messages + [{"role": "assistant", "content": first.choices[0].message.content},
                         {"role": "user", "content": "and then?"}]
    again = client.chat.completions.create(model="tiny-chat", messages=follow, max_completion_tokens=6, temperature=0)
    assert again.choices[0].message.content is not None
    assert metric(server, "sambay:prefix_cache_hits_total") - hits >= first.usage.prompt_tokens
